"""Identifier rules. Agent ids appear as NATS subject tokens, so no dots, spaces or wildcards."""

import re
from typing import Annotated, Final

import msgspec

AGENT_ID_PATTERN: Final = r"^[a-z0-9_-]{1,64}$"
_agent_id_re: Final = re.compile(AGENT_ID_PATTERN)
ADMIN: Final = "admin"
# The daemon's own identity, used for timer commands it feeds itself.
EXCHANGE: Final = "exchange"
SYSTEM_SENDERS: Final = frozenset({ADMIN, EXCHANGE})
# The metering gateway's identity (docs/gateway.md): it may authorize, settle and release
# inference holds on behalf of agents, and nothing else; it holds no balance and is no admin.
GATEWAY: Final = "gateway"

# A pattern's "$" also matches before a final newline under Python's re (which msgspec and
# jsonschema use), so every pattern ends "$(?!\n)": "btc\n" must not pass as a subject token.
# Loose on the wire (so an oversize id is an invalid_message and a malformed one an
# invalid_agent_id with a helpful message); the core applies AGENT_ID_PATTERN where ids are made.
AgentRef = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[!-~]+$(?!\n)")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
# A subject token other than an agent id (task type, asset, model): no dots, spaces or wildcards.
Token = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_:-]+$(?!\n)")
]
# Model names never appear in subjects, and real ones have dots ("llama3.2").
ModelName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$(?!\n)")
]


def is_agent_id(value: str) -> bool:
    # fullmatch: with match, "$" also matches before a trailing newline ("claude\n").
    return _agent_id_re.fullmatch(value) is not None
