"""Bodies the workers send or read that ``protocols/`` does not (yet) define.

- Tolerant readers of results the exchange returns for market commands and queries (the task and
  escrow views, the announce result). Their Structs live in the exchange's core, which workers
  must not import; these skip unknown fields and give defaults, so a newer exchange still decodes.
- ``PaperTrade``: what an executor reports as a task's ``output`` and what the treasury, the
  arbiter and risk read back from it.

Pure: Structs, and ``trade_of`` to read a trade back from an output.
"""

from decimal import Decimal
from typing import Any

import msgspec

from protocols.swarm import BidScore


class AnnounceReply(msgspec.Struct, frozen=True, kw_only=True):
    """Result of ``task.announce``."""

    task_id: str
    held: str = ""
    closes_at_ns: int = 0
    eligible: list[str] = []


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    """Result of the ``task`` query and of ``task.verify``/``task.cancel``."""

    task_id: str
    state: str
    manager: str = ""
    task_type: str = ""
    asset: str = ""
    max_cost: str = ""
    deadline_ms: int = 0
    closes_at_ns: int = 0
    eligible: list[str] = []
    bids: list[BidScore] = []
    refused: list[str] = []
    winner: str | None = None
    escrow_id: str | None = None
    escrow_state: str | None = None
    output: dict[str, Any] = {}
    reason: str = ""


class TasksReply(msgspec.Struct, frozen=True, kw_only=True):
    """Result of the ``tasks`` query."""

    tasks: list[TaskView] = []


class EscrowView(msgspec.Struct, frozen=True, kw_only=True):
    """Result of ``escrow.*`` commands and of the ``escrow`` query."""

    escrow_id: str
    state: str
    payer: str = ""
    payee: str = ""
    amount: str = ""
    task_id: str | None = None
    fee: str = ""


class Empty(msgspec.Struct, frozen=True, kw_only=True):
    """A result whose fields the caller does not need (bids, refusals, reports, ballots)."""


class PaperTrade(msgspec.Struct, frozen=True, kw_only=True):
    """A simulated fill, reported as the output of an ``execute`` task."""

    asset: str
    direction: str
    size: Decimal
    fill_price: Decimal
    oracle_price: Decimal
    at_ns: int
    at: str
    executor: str


def trade_of(output: dict[str, Any]) -> PaperTrade | None:
    """The paper trade in a task's output, or None when the output is not one.

    Amounts arrive as decimal strings (or numbers) in JSON, hence the lax conversion.
    """
    try:
        return msgspec.convert(output, PaperTrade, strict=False)
    except msgspec.ValidationError:
        return None
