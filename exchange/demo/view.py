"""What the auction demo shows: a pure model of the auctions seen on the bus, and its rendering.

``AuctionBoard.observe(subject, payload)`` folds each swarm message into the board; the
``render_*`` functions turn the board into rich tables. No I/O and no NATS here.
"""

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import msgspec
from rich.console import Group
from rich.table import Table
from rich.text import Text

from exchange.render import Column, fit_columns

events_shown_max: Final = 12
auctions_shown_max: Final = 10
_STATE_STYLE: Final = {
    "announced": "cyan",
    "awarded": "yellow",
    "informed": "yellow",
    "disputed": "bold red",
    "completed": "green",
    "refunded": "magenta",
    "unawarded": "dim",
    "failed": "red",
    "expired": "red",
    "cancelled": "dim",
}


@dataclass(slots=True)
class Auction:
    task_id: str
    asset: str = ""
    manager: str = ""
    max_cost: str = ""
    state: str = "announced"
    bids: list[dict[str, Any]] = field(default_factory=list)
    winner: str | None = None
    cost: str | None = None
    paid: str = "0"
    fee: str = "0"
    refunded: str = "0"
    disputed: bool = False
    reason: str = ""


@dataclass(slots=True)
class AuctionBoard:
    auctions: dict[str, Auction] = field(default_factory=dict)
    events: deque[str] = field(default_factory=lambda: deque(maxlen=events_shown_max))
    signals_seen: int = 0

    def observe(self, subject: str, payload: bytes) -> None:
        """Folds one message from ``swarm.>`` into the board; unknown shapes are ignored."""
        parts = subject.split(".")
        try:
            body = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return
        if not isinstance(body, dict):
            return
        if parts[:2] == ["swarm", "signal"] and len(parts) == 5:
            self.signals_seen += 1
            if parts[3] == "risk_alert":
                self.events.append(f"[red]risk alert[/] {parts[4]} from {parts[2]}")
            return
        if parts[:3] == ["swarm", "task", "cfp"]:
            auction = self._auction(body.get("task_id", "?"))
            auction.asset, auction.manager = body.get("asset", ""), body.get("manager", "")
            auction.max_cost = body.get("max_cost", "")
            self.events.append(
                f"[cyan]cfp[/] {auction.task_id} {auction.asset} max {auction.max_cost} "
                f"from {auction.manager}"
            )
            return
        if parts[:2] != ["swarm", "task"] or len(parts) != 4:
            return
        auction = self._auction(parts[2])
        kind = parts[3]
        if kind == "award":
            self._on_award(auction, body)
        elif kind == "disputed":
            auction.state, auction.disputed = "disputed", True
            self.events.append(f"[bold red]dispute[/] {auction.task_id}: escrow held for arbiter")
        elif kind == "closed":
            auction.state = body.get("state", auction.state)
            auction.paid, auction.fee = body.get("paid", "0"), body.get("fee", "0")
            auction.refunded, auction.reason = body.get("refunded", "0"), body.get("reason", "")
            self.events.append(
                f"[{_STATE_STYLE.get(auction.state, 'white')}]{auction.state}[/] "
                f"{auction.task_id}: paid {auction.paid}, fee {auction.fee}, "
                f"refunded {auction.refunded} ({auction.reason})"
            )

    def _on_award(self, auction: Auction, body: dict[str, Any]) -> None:
        auction.bids = list(body.get("bids", []))
        auction.winner, auction.cost = body.get("winner"), body.get("cost")
        if auction.winner is None:
            auction.state = "unawarded"
            return
        auction.state = "awarded"
        scores = ", ".join(f"{b['bidder']} {b['score']}" for b in auction.bids)
        self.events.append(
            f"[yellow]award[/] {auction.task_id} → [bold]{auction.winner}[/] at {auction.cost} "
            f"(scores: {scores}); escrow locked"
        )

    def _auction(self, task_id: str) -> Auction:
        return self.auctions.setdefault(task_id, Auction(task_id))

    def closed(self) -> list[Auction]:
        final = ("completed", "refunded", "unawarded", "failed", "expired", "cancelled")
        return [a for a in self.auctions.values() if a.state in final]


# The board's columns in order of importance: at 80 columns the task, its state, the winner and
# the bids fit whole; a wider terminal adds the rest. Kept columns are never cropped.
_BOARD_COLUMNS: Final = (
    Column("task", keep=True),
    Column("state", keep=True),
    Column("winner", keep=True),
    Column("bids: score", keep=True),
    Column("paid", justify="right"),
    Column("asset"),
    Column("fee", justify="right"),
    Column("max", justify="right"),
)
_BOARD_ORDER: Final = ("task", "asset", "max", "bids: score", "winner", "state", "paid", "fee")


def render_board(board: AuctionBoard, *, width_chars: int = 80) -> Group:
    """The live board, with the columns that fit ``width_chars`` (the console's width)."""
    rows: list[dict[str, str]] = []
    for auction in list(board.auctions.values())[-auctions_shown_max:]:
        bids = "\n".join(
            f"[bold green]{b['bidder']}: {b['score']} ✓[/]"
            if b.get("accepted")
            else f"{b['bidder']}: {b['score']}"
            for b in auction.bids
        )
        style = _STATE_STYLE.get(auction.state, "white")
        rows.append(
            {
                "task": auction.task_id,
                "asset": auction.asset,
                "max": auction.max_cost,
                "bids: score": bids,
                "winner": auction.winner or "",
                "state": f"[{style}]{auction.state}[/]",
                "paid": auction.paid,
                "fee": auction.fee,
            }
        )
    widths = {
        column.key: max(
            [
                len(column.key),
                *(
                    Text.from_markup(line).cell_len
                    for row in rows
                    for line in row[column.key].split("\n")
                ),
            ]
        )
        for column in _BOARD_COLUMNS
    }
    # The heavy box draws a border between columns and at both edges: one character each.
    chosen = fit_columns(_BOARD_COLUMNS, widths, width_chars=width_chars - 1)
    shown = [c for key in _BOARD_ORDER for c in chosen if c.key == key]
    table = Table(title="Contract Net auctions (live)")
    for column in shown:
        table.add_column(
            column.key,
            justify=column.justify,
            no_wrap=True,
            min_width=widths[column.key] if column.keep else None,
            overflow="ellipsis",
        )
    for row in rows:
        table.add_row(*(row[column.key] for column in shown))
    events = Text.from_markup("\n".join(board.events) or "waiting for signals…")
    return Group(table, Text(f"signals seen: {board.signals_seen}", style="dim"), events)


def render_balances(
    start: dict[str, Decimal], end: dict[str, Decimal], roles: dict[str, str]
) -> Table:
    table = Table(title="Balances")
    for column in ("agent", "role", "start", "end", "change"):
        table.add_column(
            column, justify="right" if column in ("start", "end", "change") else "left"
        )
    for agent in sorted(end):
        change = end[agent] - start.get(agent, Decimal(0))
        style = "green" if change > 0 else "red" if change < 0 else "dim"
        table.add_row(
            agent,
            roles.get(agent, ""),
            str(start.get(agent, "")),
            str(end[agent]),
            f"[{style}]{change:+}[/]",
        )
    return table


def render_summary(board: AuctionBoard) -> Table:
    closed = board.closed()
    fees = sum((Decimal(a.fee) for a in closed), Decimal(0))
    paid = sum((Decimal(a.paid) for a in closed), Decimal(0))
    wins: dict[str, int] = {}
    for auction in closed:
        if auction.state == "completed" and auction.winner:
            wins[auction.winner] = wins.get(auction.winner, 0) + 1
    table = Table(title="Auctions")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("auctions closed", str(len(closed)))
    table.add_row("completed (escrow released)", str(sum(a.state == "completed" for a in closed)))
    table.add_row("disputed", str(sum(a.disputed for a in closed)))
    table.add_row("refunded", str(sum(a.state == "refunded" for a in closed)))
    table.add_row("paid to executors", str(paid))
    table.add_row("fees", str(fees))
    table.add_row("wins", ", ".join(f"{k} {v}" for k, v in sorted(wins.items())) or "—")
    return table


def render_metrics(metrics: list[dict[str, Any]]) -> Table:
    table = Table(title="Swarm metrics")
    for column in ("metric", "value", "target", "warning", "status"):
        table.add_column(column)
    colours = {"ok": "green", "watch": "yellow", "warning": "bold red", "no_data": "dim"}
    for m in metrics:
        value = "—" if m["value"] is None else f"{m['value']:.3f}"
        status = m["status"]
        table.add_row(
            m["name"], value, m["target"], m["warning"], f"[{colours.get(status, '')}]{status}[/]"
        )
    return table
