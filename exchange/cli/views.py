"""Which columns each network verb's tables show at a terminal, in order of importance.

Owns: one ``View`` per verb whose result holds a list of objects worth choosing columns for (the
others read well with ``exchange.render``'s defaults). The first columns are the ones that fit
80 columns; a wider terminal shows the next ones as they fit. Must not: change what ``--json``
prints (views only shape tables).
"""

from typing import Final

from exchange.render import Column, View

_AMOUNT_CHARS_MAX: Final = 14

VIEWS: Final[dict[str, View]] = {
    "tasks": View(
        rows={
            "tasks": (
                Column("task_id", keep=True),
                Column("state", keep=True),
                Column("winner"),
                Column("asset", width_max=8),
                Column("max_cost", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("manager", width_max=14),
                Column("closes_at_ns"),
                Column("task_type", width_max=14),
                Column("escrow_state"),
                Column("bids", justify="right"),
                Column("escrow_id"),
                Column("deadline_ms", justify="right"),
                Column("reason", width_max=32),
            )
        }
    ),
    "agents": View(
        rows={
            "agents": (
                Column("agent", keep=True),
                Column("role", width_max=12),
                Column("level"),
                Column("balance", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("primary_llm", width_max=16),
                Column("performance", justify="right"),
                Column("base_rate", justify="right"),
                Column("capabilities", width_max=30),
                Column("preferences", width_max=30),
            )
        }
    ),
    "history": View(
        rows={
            "entries": (
                Column("seq", keep=True, justify="right"),
                Column("at_ns", keep=True),
                Column("kind", keep=True),
                Column("amount", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("balance", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("counterparty", width_max=14),
                Column("memo", width_max=40),
            )
        }
    ),
    "signals recent": View(
        rows={
            "signals": (
                Column("seq", keep=True, justify="right"),
                Column("at_ns", keep=True),
                Column("sender", keep=True),
                Column("signal_type", width_max=14),
                Column("asset", width_max=8),
                Column("direction"),
                Column("confidence", justify="right"),
                Column("scanner", width_max=14),
            )
        }
    ),
    # The raw counters behind the metrics (``inputs``) are for programs: --json.
    "metrics": View(
        hidden=frozenset({"inputs"}),
        rows={
            "metrics": (
                Column("name", keep=True),
                Column("value", justify="right"),
                Column("status", keep=True),
                Column("target", width_max=16),
                Column("warning", width_max=16),
            )
        },
    ),
    "stakes": View(
        rows={
            "stakes": (
                Column("stake_id", keep=True),
                Column("state", keep=True),
                Column("amount", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("locked_until_ns"),
                Column("cooling_until_ns"),
                Column("staked_at_ns"),
                Column("agent"),
            )
        }
    ),
    "loans": View(
        rows={
            "loans": (
                Column("loan_id", keep=True),
                Column("state", keep=True),
                Column("lender", width_max=14),
                Column("borrower", width_max=14),
                Column("owed", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("due_at_ns"),
                Column("principal", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("rate_per_day", justify="right"),
                Column("interest", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("collateral", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("paid", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("term_s", justify="right"),
            )
        }
    ),
    "task show": View(
        rows={
            "bids": (
                Column("bidder", keep=True),
                Column("score", justify="right"),
                Column("accepted"),
                Column("cost", justify="right", width_max=_AMOUNT_CHARS_MAX),
                Column("time_ms", justify="right"),
                Column("confidence", justify="right"),
            )
        }
    ),
}
