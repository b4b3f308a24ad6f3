"""Risk: marks the swarm's paper positions to market, raises alerts, and votes on limits.

- Positions come from executors' results on ``swarm.task.*.inform.*`` (a ``PaperTrade`` output),
  counted only from the executor the task was awarded to (``swarm.task.*.award``). ``Portfolio``
  (pure) nets them per asset and marks them with the latest oracle prices.
- ``RiskMonitor`` (pure) compares the marks with ``exposure_max`` (gross notional) and
  ``drawdown_max`` (fall of the profit and loss from its peak). Crossing a limit emits one
  ``risk_alert`` signal on ``swarm.signal.<risk>.risk_alert.<asset>`` (direction ``exit``, for the
  asset that contributes most); the alert re-arms once the measure is back under 90% of its limit,
  so a breach is not announced on every tick.
- Votes: on ``swarm.vote.*.open``, ``decide_ballot`` (pure) votes on proposals that change rate
  limits: ``no`` to raising any limit while exposure is at or above ``vote_no_above`` of its limit,
  ``yes`` otherwise; it abstains from proposals about other things. The current limits come from
  ``exchange.query.limits``; the ballot goes to ``swarm.vote.<proposal>.cast.<risk>``.
"""

import argparse
import random
from decimal import Decimal
from typing import Final, Literal

import msgspec
from nats.aio.msg import Msg

from agents import limits
from agents.bounded import BoundedDict, BoundedSet
from agents.clock import rfc3339
from agents.messages import trade_of
from agents.prices import PriceBook
from agents.roles.base import BuiltRole, RoleSpec, parse_decimal, parse_fraction
from agents.runtime import WorkerContext
from protocols import subjects
from protocols.client_errors import RefusedError
from protocols.queries import LimitsQuery
from protocols.results import LimitsResult
from protocols.swarm import (
    AgentSignal,
    Ballot,
    Choice,
    LimitsAction,
    PriceUpdate,
    TaskAward,
    TaskReport,
    VoteOpened,
)

# An alert re-arms once its measure is back under this share of its limit.
REARM_RATIO: Final = Decimal("0.9")
_VOTE_KINDS: Final = frozenset({"plurality", "supermajority", "consensus"})

_price_decoder: Final = msgspec.json.Decoder(PriceUpdate)
_award_decoder: Final = msgspec.json.Decoder(TaskAward)
_report_decoder: Final = msgspec.json.Decoder(TaskReport)
_vote_decoder: Final = msgspec.json.Decoder(VoteOpened)


class Position(msgspec.Struct, kw_only=True):
    """Net units held (negative: short) and the cash paid for them (negative: received)."""

    units: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)


class Marks(msgspec.Struct, frozen=True, kw_only=True):
    exposure: Decimal
    pnl: Decimal
    exposure_by_asset: dict[str, Decimal]
    pnl_by_asset: dict[str, Decimal]


class Portfolio:
    """Paper positions per asset. Pure."""

    def __init__(self) -> None:
        self.positions: BoundedDict[str, Position] = BoundedDict(limits.positions_max)

    def apply(self, asset: str, direction: str, size: Decimal, fill_price: Decimal) -> None:
        signed = size if direction == "long" else -size
        position = self.positions.get(asset) or Position()
        position.units += signed
        position.cost += signed * fill_price
        self.positions[asset] = position

    def mark(self, prices: PriceBook) -> Marks:
        """Gross exposure and profit and loss at the latest prices (an asset without a price
        yet is marked at its average cost, so it adds exposure but no profit or loss)."""
        exposure_by_asset: dict[str, Decimal] = {}
        pnl_by_asset: dict[str, Decimal] = {}
        for asset, position in self.positions.items():
            latest = prices.latest(asset)
            if latest is not None:
                price = latest.price
            elif position.units:
                price = position.cost / position.units
            else:
                price = Decimal(0)
            exposure_by_asset[asset] = abs(position.units) * price
            pnl_by_asset[asset] = position.units * price - position.cost
        return Marks(
            exposure=sum(exposure_by_asset.values(), Decimal(0)),
            pnl=sum(pnl_by_asset.values(), Decimal(0)),
            exposure_by_asset=exposure_by_asset,
            pnl_by_asset=pnl_by_asset,
        )


AlertKind = Literal["exposure", "drawdown"]


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    kind: AlertKind
    asset: str
    confidence: float
    value: Decimal
    limit: Decimal


class RiskMonitor:
    """Limits on exposure and drawdown, with one alert per breach. Pure."""

    def __init__(self, *, exposure_max: Decimal, drawdown_max: Decimal) -> None:
        assert exposure_max > 0 and drawdown_max > 0, (exposure_max, drawdown_max)
        self.exposure_max = exposure_max
        self.drawdown_max = drawdown_max
        self._peak_pnl = Decimal(0)
        self._breached: dict[AlertKind, bool] = {"exposure": False, "drawdown": False}

    def exposure_ratio(self, marks: Marks) -> Decimal:
        return marks.exposure / self.exposure_max

    def evaluate(self, marks: Marks) -> list[Alert]:
        """The alerts these marks raise now (each breach once, until it clears)."""
        self._peak_pnl = max(self._peak_pnl, marks.pnl)
        drawdown = self._peak_pnl - marks.pnl
        alerts = []
        exposure_alert = self._check("exposure", marks.exposure, self.exposure_max)
        if exposure_alert and marks.exposure_by_asset:
            asset = max(marks.exposure_by_asset, key=lambda a: (marks.exposure_by_asset[a], a))
            alerts.append(self._alert("exposure", asset, marks.exposure, self.exposure_max))
        drawdown_alert = self._check("drawdown", drawdown, self.drawdown_max)
        if drawdown_alert and marks.pnl_by_asset:
            asset = min(marks.pnl_by_asset, key=lambda a: (marks.pnl_by_asset[a], a))
            alerts.append(self._alert("drawdown", asset, drawdown, self.drawdown_max))
        return alerts

    def _check(self, kind: AlertKind, value: Decimal, limit: Decimal) -> bool:
        """True when ``value`` has just crossed ``limit``; re-arms under ``REARM_RATIO``."""
        if self._breached[kind]:
            if value < limit * REARM_RATIO:
                self._breached[kind] = False
            return False
        if value > limit:
            self._breached[kind] = True
            return True
        return False

    @staticmethod
    def _alert(kind: AlertKind, asset: str, value: Decimal, limit: Decimal) -> Alert:
        # 0.5 just past the limit, 1.0 at one and a half times it.
        confidence = min(1.0, round(0.5 + float((value - limit) / limit), 4))
        return Alert(kind=kind, asset=asset, confidence=confidence, value=value, limit=limit)


def raises_limits(action: LimitsAction, current: LimitsResult | None) -> bool:
    """Whether the action raises any limit above ``current`` (unknown limits: assume it does)."""
    proposed = {
        "burst": action.burst,
        "hourly": action.hourly,
        "daily": action.daily,
    }
    for name, value in proposed.items():
        if value is None:
            continue
        if current is None or value > Decimal(getattr(current, name)):
            return True
    # A lower reserve lets the agent spend more: that is raising a limit too.
    return action.reserve is not None and (
        current is None or action.reserve < Decimal(current.reserve)
    )


def decide_ballot(
    opened: VoteOpened,
    *,
    exposure_ratio: Decimal,
    vote_no_above: Decimal,
    current: LimitsResult | None,
) -> Ballot | None:
    """Risk's vote, or None when it has no view (it then does not vote). Pure."""
    if opened.kind not in _VOTE_KINDS or not isinstance(opened.action, LimitsAction):
        return None
    choice: Choice = "yes"
    if raises_limits(opened.action, current) and exposure_ratio >= vote_no_above:
        choice = "no"
    return Ballot(choice=choice)


class RiskOptions(msgspec.Struct, frozen=True, kw_only=True):
    exposure_max: Decimal = Decimal(5_000)
    drawdown_max: Decimal = Decimal(200)
    vote_no_above: Decimal = Decimal("0.8")


class RiskWorker:
    def __init__(self, options: RiskOptions) -> None:
        self._options = options
        self._prices = PriceBook()
        self._portfolio = Portfolio()
        self._monitor = RiskMonitor(
            exposure_max=options.exposure_max, drawdown_max=options.drawdown_max
        )
        self._winners: BoundedDict[str, str] = BoundedDict(limits.tracked_tasks_max)
        self._counted: BoundedSet[str] = BoundedSet(limits.handled_ids_max)
        self._voted: BoundedSet[str] = BoundedSet(limits.tracked_proposals_max)

    async def setup(self, ctx: WorkerContext) -> None:
        async def on_price(msg: Msg) -> None:
            update = ctx.decode(_price_decoder, msg)
            if update is None or msg.subject != subjects.price(update.asset):
                return
            self._prices.observe(update.asset, update.price, update.at_ns)
            if update.asset in self._portfolio.positions:
                await self._evaluate(ctx)

        async def on_award(msg: Msg) -> None:
            award = ctx.decode(_award_decoder, msg)
            if award is not None and award.winner is not None:
                self._winners[award.task_id] = award.winner

        async def on_inform(msg: Msg) -> None:
            parsed = subjects.parse_task_message(msg.subject)
            report = ctx.decode(_report_decoder, msg)
            if parsed is None or report is None:
                return
            if self._winners.get(parsed.task_id) != parsed.sender:
                return
            await self._count(ctx, parsed.task_id, report)

        async def on_vote(msg: Msg) -> None:
            opened = ctx.decode(_vote_decoder, msg)
            if opened is not None:
                await self._vote(ctx, opened)

        await ctx.subscribe(subjects.price("*"), on_price)
        await ctx.subscribe(subjects.task_award("*"), on_award)
        await ctx.subscribe(subjects.task_message("*", "inform", "*"), on_inform)
        await ctx.subscribe(subjects.vote_open("*"), on_vote)

    async def _count(self, ctx: WorkerContext, task_id: str, report: TaskReport) -> None:
        trade = trade_of(report.output)
        if trade is None or task_id in self._counted:
            return
        self._counted.add(task_id)
        self._portfolio.apply(trade.asset, trade.direction, trade.size, trade.fill_price)
        ctx.log.info(
            "position_opened",
            task_id=task_id,
            asset=trade.asset,
            direction=trade.direction,
            size=str(trade.size),
            fill_price=str(trade.fill_price),
        )
        await self._evaluate(ctx)

    async def _evaluate(self, ctx: WorkerContext) -> None:
        marks = self._portfolio.mark(self._prices)
        for alert in self._monitor.evaluate(marks):
            signal = AgentSignal(
                confidence=alert.confidence,
                direction="exit",
                metadata={
                    "scanner": "risk",
                    "kind": alert.kind,
                    "value": str(alert.value.quantize(Decimal("0.01"))),
                    "limit": str(alert.limit),
                },
                agent_id=ctx.agent_id,
                signal_type="risk_alert",
                asset=alert.asset,
                timestamp=rfc3339(ctx.now_ns()),
            )
            if await ctx.bus.publish_signal("risk_alert", alert.asset, signal):
                ctx.log.warning(
                    "risk_alert_emitted",
                    kind=alert.kind,
                    asset=alert.asset,
                    value=str(alert.value.quantize(Decimal("0.01"))),
                    limit=str(alert.limit),
                )

    async def _vote(self, ctx: WorkerContext, opened: VoteOpened) -> None:
        if opened.proposal_id in self._voted:
            return
        if opened.eligible and ctx.agent_id not in opened.eligible:
            return
        current = None
        if isinstance(opened.action, LimitsAction):
            try:
                query = LimitsQuery(agent=opened.action.agent)
                current = await ctx.bus.query("limits", query, LimitsResult)
            except RefusedError as exc:
                ctx.log.info("limits_unknown", agent=opened.action.agent, code=exc.code)
        ratio = self._monitor.exposure_ratio(self._portfolio.mark(self._prices))
        ballot = decide_ballot(
            opened,
            exposure_ratio=ratio,
            vote_no_above=self._options.vote_no_above,
            current=current,
        )
        self._voted.add(opened.proposal_id)
        if ballot is None:
            ctx.log.info("vote_skipped", proposal_id=opened.proposal_id, kind=opened.kind)
            return
        try:
            await ctx.bus.cast(opened.proposal_id, ballot)
        except RefusedError as exc:
            ctx.log.info("vote_refused", proposal_id=opened.proposal_id, code=exc.code)
            return
        ctx.log.info(
            "vote_cast",
            proposal_id=opened.proposal_id,
            choice=ballot.choice,
            exposure_ratio=str(ratio.quantize(Decimal("0.0001"))),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exposure-max",
        default="5000",
        help="gross notional that raises an alert (default: %(default)s)",
    )
    parser.add_argument(
        "--drawdown-max",
        default="200",
        help="fall of profit and loss from its peak that raises an alert (default: %(default)s)",
    )
    parser.add_argument(
        "--vote-no-above",
        type=float,
        default=0.8,
        help="vote no on raising limits at this share of exposure_max (default: %(default)s)",
    )


def options_from_args(args: argparse.Namespace) -> RiskOptions:
    """Raises ConfigError for bad options."""
    return RiskOptions(
        exposure_max=parse_decimal(args.exposure_max, "exposure_max"),
        drawdown_max=parse_decimal(args.drawdown_max, "drawdown_max"),
        vote_no_above=Decimal(str(parse_fraction(args.vote_no_above, "vote_no_above"))),
    )


def build(args: argparse.Namespace, rng: random.Random) -> BuiltRole:
    del rng  # Risk's decisions depend only on prices, results and proposals.
    return BuiltRole(worker=RiskWorker(options_from_args(args)))


ROLE: Final = RoleSpec(
    name="risk",
    summary="mark paper positions to market, emit risk_alert signals, vote on limit changes",
    exchange_role="risk",
    add_arguments=add_arguments,
    build=build,
)
