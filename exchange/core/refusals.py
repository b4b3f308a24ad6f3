"""What a rule answers instead of a result when it says no, and the two reply envelopes.

Owns: ``Refusal``, ``refuse``, ``refusal_reply``, ``result_reply``. Every rule module and the
state machines (states.py) use them; the ledger re-exports them for the modules that import them
from there.
"""

from typing import Any, Final

import msgspec

from protocols import results as r
from protocols.errors import ErrorCode

_encoder: Final = msgspec.json.Encoder()


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """What a handler returns instead of a result when a rule says no."""

    body: r.ErrorBody


def refuse(code: ErrorCode, message: str, **details: Any) -> Refusal:
    return Refusal(body=r.ErrorBody(code=code.value, message=message, **details))


def refusal_reply(body: r.ErrorBody) -> bytes:
    return _encoder.encode(r.Envelope(ok=False, error=body))


def result_reply(result: msgspec.Struct) -> bytes:
    return b'{"ok":true,"result":' + _encoder.encode(result) + b"}"
