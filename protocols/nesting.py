"""How deep a JSON body nests, measured before decoding it.

Owns: ``depth_beyond`` and the protocol's bound ``MESSAGE_DEPTH_MAX``. Why a bound at all:
msgspec decodes nested values recursively, so a body 3,000 levels deep raises RecursionError in
the decoder instead of a DecodeError, which a receiver that catches only DecodeError does not
survive. No message of the protocol nests more than 5 levels; 64 leaves room for free-form
payloads. The exchange refuses deeper bodies with ``invalid_message``; agents drop them.
"""

from array import array
from itertools import accumulate
from typing import Final

MESSAGE_DEPTH_MAX: Final = 64

_not_brackets: Final = bytes(byte for byte in range(256) if byte not in b"[]{}")
_bracket_steps: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def nesting_depth(body: bytes) -> int:
    """How deep arrays and objects nest in the JSON ``body``, strings skipped: ``[{}]`` is 2.

    Escaped backslashes, then escaped quotes, are dropped (pairs from the left, as a JSON parser
    reads them), so every quote left delimits a string; the text between the odd and even
    quotes is then outside strings. All of it is C-speed passes over the bytes, but for the
    running sum over the brackets that remain.
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    steps = outside_strings.translate(_bracket_steps, _not_brackets)
    return max(accumulate(array("b", steps)), default=0)


def depth_beyond(body: bytes, depth_max: int = MESSAGE_DEPTH_MAX) -> int | None:
    """The body's depth when it nests deeper than ``depth_max``, else None.

    Only a body with more opening brackets than the bound can nest beyond it, and counting them
    is C-speed: ordinary messages (a transfer has one) skip the scan.
    """
    if body.count(b"{") + body.count(b"[") <= depth_max:
        return None
    depth = nesting_depth(body)
    return depth if depth > depth_max else None
