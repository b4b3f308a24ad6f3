"""What every role module provides to the CLI, and small option parsers they share.

A role module defines its options (argparse), builds its worker from them, and keeps its decisions
in pure classes. This module holds the ``RoleSpec`` the registry lists and the parsing helpers
(assets, decimals) so every role spells and checks options the same way. No I/O.
"""

import argparse
import random
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Final

import msgspec

from agents import limits
from agents.errors import ConfigError
from agents.runtime import Worker

# A subject token other than an agent id (protocols.ids.Token): assets and task types.
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_:-]{1,64}$")


class BuiltRole(msgspec.Struct, frozen=True, kw_only=True):
    """A worker ready to run. ``capabilities`` are the task types it bids on (its heartbeat says
    them; they should match the capabilities the agent is registered with)."""

    worker: Worker
    capabilities: tuple[str, ...] = ()


class RoleSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One role as the CLI offers it.

    ``exchange_role`` is the role to register the agent with at the exchange (``agent.register``);
    it differs from ``name`` only for ``arbiter``, which is a treasury that only arbitrates.
    """

    name: str
    summary: str
    exchange_role: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace, random.Random], BuiltRole]


def parse_token(text: str, what: str) -> str:
    """Raises ConfigError unless ``text`` can be one token of a NATS subject."""
    if not _TOKEN_RE.match(text):
        raise ConfigError(
            f"{what} must be 1-64 characters of A-Z a-z 0-9 _ : - (it appears in NATS "
            f"subjects), got {text!r}"
        )
    return text


def parse_tokens(text: str, what: str) -> tuple[str, ...]:
    """A comma-separated list of tokens, duplicates removed, order kept. Raises ConfigError."""
    tokens = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if len(tokens) > limits.assets_max:
        raise ConfigError(f"at most {limits.assets_max} {what}s, got {len(tokens)}")
    return tuple(parse_token(t, what) for t in tokens)


def parse_decimal(text: str, what: str, *, positive: bool = True) -> Decimal:
    """A finite decimal with at most six places (positive unless told). Raises ConfigError."""
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ConfigError(f"{what} must be a decimal number, got {text!r}") from exc
    if not value.is_finite():
        raise ConfigError(f"{what} must be finite, got {text!r}")
    if value != value.quantize(Decimal(1).scaleb(-limits.decimals_max)):
        raise ConfigError(f"{what} has more than {limits.decimals_max} decimal places: {text!r}")
    if positive and value <= 0:
        raise ConfigError(f"{what} must be positive, got {text!r}")
    if not positive and value < 0:
        raise ConfigError(f"{what} must not be negative, got {text!r}")
    return value


def parse_fraction(value: float, what: str) -> float:
    """Raises ConfigError unless 0 <= value <= 1."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what} must be between 0 and 1, got {value}")
    return value
