"""Arbitration of disputed escrows, and the fill check the treasury shares with it.

A manager is a party to its own tasks' escrows, so another treasury agent (the ``arbiter`` role,
or a treasury run with ``--arbitrate``) settles its disputes. ``Arbiter.sweep`` polls
``exchange.query.tasks`` for disputed tasks this agent is not a party to and resolves each escrow
with ``escrow.resolve`` (request id ``resolve:<escrow>``, so a retry is applied once), ruling with
``arbitrate`` (pure): release when the fill is within ``release_slippage_bps`` of a price the
arbiter saw in the ``match_window_ms`` before the fill, refund when it is not.

The arbiter polls because the exchange publishes no event when a task is disputed.
"""

import argparse
from decimal import Decimal
from typing import Literal

from agents import limits
from agents.bounded import BoundedSet
from agents.messages import PaperTrade, trade_of
from agents.prices import PriceBook
from agents.runtime import WorkerContext
from protocols.client_errors import RefusedError
from protocols.queries import TasksQuery
from protocols.swarm import EscrowView, ResolveEscrow, TasksResult, TaskView
from protocols.units import NS_PER_MS

Outcome = Literal["release", "refund"]


def fill_slippage_bps(trade: PaperTrade, prices: PriceBook, lookback_ms: int) -> Decimal | None:
    """Slippage of the fill against the prices seen in the ``lookback_ms`` before it."""
    return prices.closest_slippage_bps(
        trade.asset, trade.fill_price, trade.at_ns, lookback_ms * NS_PER_MS
    )


def arbitrate(
    trade: PaperTrade | None, slippage_bps: Decimal | None, *, release_slippage_bps: Decimal
) -> tuple[Outcome, str]:
    """An arbiter's ruling on a disputed result: the outcome and why. Pure.

    A result that is not a trade is refunded. One the arbiter cannot check (no price seen near
    the fill) is released: the manager disputed without evidence the arbiter can confirm.
    """
    if trade is None:
        return "refund", "output_not_a_trade"
    if slippage_bps is None:
        return "release", "no_price_near_fill"
    if slippage_bps <= release_slippage_bps:
        return "release", "fill_within_tolerance"
    return "refund", "fill_off_market"


class Arbiter:
    """Finds the disputes this agent may settle and settles each once."""

    def __init__(
        self, prices: PriceBook, *, release_slippage_bps: Decimal, match_window_ms: int
    ) -> None:
        self._prices = prices
        self._release_slippage_bps = release_slippage_bps
        self._match_window_ms = match_window_ms
        self._settled: BoundedSet[str] = BoundedSet(limits.handled_ids_max)

    async def sweep(self, ctx: WorkerContext) -> None:
        """One poll of the disputed tasks. Raises BusError when the exchange does not answer."""
        query = TasksQuery(state="disputed", limit=limits.arbitration_batch_max)
        disputed = await ctx.bus.query("tasks", query, TasksResult)
        for view in disputed.tasks:
            escrow_id = view.escrow_id
            if escrow_id is None or escrow_id in self._settled:
                continue
            if ctx.agent_id in (view.manager, view.winner):
                # A party may not arbitrate its own escrow; another treasury will.
                self._settled.add(escrow_id)
                continue
            await self._resolve(ctx, view, escrow_id)

    async def _resolve(self, ctx: WorkerContext, view: TaskView, escrow_id: str) -> None:
        trade = trade_of(view.output)
        slippage = (
            None if trade is None else fill_slippage_bps(trade, self._prices, self._match_window_ms)
        )
        outcome, reason = arbitrate(
            trade, slippage, release_slippage_bps=self._release_slippage_bps
        )
        command = ResolveEscrow(
            request_id=f"resolve:{escrow_id}", escrow_id=escrow_id, outcome=outcome
        )
        # Settled whatever the reply: a refusal (already resolved, not authorized) will not change.
        self._settled.add(escrow_id)
        try:
            escrow = await ctx.bus.command("escrow.resolve", command, EscrowView)
        except RefusedError as exc:
            ctx.log.warning(
                "escrow_resolve_refused", escrow_id=escrow_id, code=exc.code, message=exc.message
            )
            return
        ctx.log.info(
            "escrow_resolved",
            task_id=view.task_id,
            escrow_id=escrow_id,
            outcome=outcome,
            reason=reason,
            slippage_bps=None if slippage is None else str(slippage),
            state=escrow.state,
        )


def add_judge_arguments(group: argparse._ArgumentGroup) -> None:
    """The options an arbiter and a verifying treasury share."""
    group.add_argument(
        "--release-slippage-bps",
        default="50",
        help="an arbiter releases fills within this of the market (default: %(default)s)",
    )
    group.add_argument(
        "--match-window-ms",
        type=int,
        default=500,
        help="prices published this long before a fill are compared with it (default: %(default)s)",
    )
    group.add_argument("--arbitrate-ms", type=int, default=1_000, help="(default: %(default)s)")
