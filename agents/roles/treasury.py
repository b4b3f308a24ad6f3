"""Treasury: the Contract Net manager, and (as ``arbiter``) the judge of disputed escrows.

As a manager (``--announce``, the default):
- listens to ``swarm.signal.*.opportunity.*``. ``AnnouncePolicy`` (pure) turns a strong signal
  (confidence at least ``confidence_min``) into a task, unless the asset is cooling down
  (``cooldown_ms`` since its last task), ``open_tasks_max`` tasks are open, or their max costs
  would pass ``budget_max``. The task is announced with ``exchange.cmd.<id>.task.announce``: type
  ``execute``, the signal's asset, a size worth ``notional`` at the latest price, and the signal;
- follows its tasks on ``swarm.task.*.award`` and ``swarm.task.*.closed``;
- when an executor informs (``swarm.task.*.inform.*``), reads the result from the exchange
  (``exchange.query.task``) and scores it with ``Verifier`` (pure): the fill's slippage against the
  prices this treasury saw just before the fill, 1.0 for none and 0 at ``slippage_bps_max``.
  ``--dispute-nth N`` deliberately scores the Nth result low, so a demo shows one dispute. The
  score goes to ``task.verify``: at least 0.7 releases the escrow, below disputes it;
- reconciles: tasks whose events it missed (a reconnect) are looked up periodically.

As an arbiter (``--arbitrate``; the ``arbiter`` role is a treasury with only this) it runs
``roles.arbiter.Arbiter``, which resolves the disputed escrows this agent is not a party to.
"""

import argparse
import random
from decimal import Decimal
from typing import Final, Literal

import msgspec
from nats.aio.msg import Msg

from agents import limits
from agents.bounded import BoundedDict, BoundedSet
from agents.config import check_interval_ms
from agents.errors import ConfigError
from agents.messages import PaperTrade, trade_of
from agents.prices import PriceBook, quantize
from agents.roles.arbiter import Arbiter, add_judge_arguments, fill_slippage_bps
from agents.roles.base import (
    BuiltRole,
    RoleSpec,
    parse_decimal,
    parse_fraction,
    parse_token,
)
from agents.runtime import WorkerContext
from protocols import subjects
from protocols.client import new_request_id
from protocols.client_errors import RefusedError
from protocols.queries import TaskQuery
from protocols.swarm import (
    DURATION_MS_MAX,
    AgentSignal,
    AnnounceResult,
    AnnounceTask,
    PriceUpdate,
    TaskAward,
    TaskClosed,
    TaskView,
    VerifyTask,
)

# docs/economy.md, "Escrow": a verification score at or above this releases.
RELEASE_SCORE_MIN: Final = 0.7
# A result this treasury cannot check (no price seen near the fill) is accepted at the threshold.
UNVERIFIABLE_SCORE: Final = RELEASE_SCORE_MIN
# What --dispute-nth gives the chosen result: clearly below the threshold.
DISPUTE_SCORE: Final = 0.3
# Task states from which nothing more happens (the task is closed).
FINAL_STATES: Final = frozenset(
    {"completed", "refunded", "failed", "expired", "unawarded", "cancelled"}
)
# How long after an inform the exchange may still show the task as awarded (it applies the
# executor's report and our query in arrival order, which NATS does not fix across subjects).
_INFORM_WAIT_ATTEMPTS: Final = 10
_INFORM_WAIT_S: Final = 0.05

_signal_decoder: Final = msgspec.json.Decoder(AgentSignal)
_award_decoder: Final = msgspec.json.Decoder(TaskAward)
_closed_decoder: Final = msgspec.json.Decoder(TaskClosed)
_price_decoder: Final = msgspec.json.Decoder(PriceUpdate)


class AnnounceSettings(msgspec.Struct, frozen=True, kw_only=True):
    task_type: str = "execute"
    confidence_min: float = 0.7
    cooldown_ms: int = 5_000
    open_tasks_max: int = 3
    budget_max: Decimal = Decimal(100)
    max_cost: Decimal = Decimal(20)
    deadline_ms: int = 2_000
    bid_window_ms: int = 300
    notional: Decimal = Decimal(1000)


class OpenTask(msgspec.Struct, kw_only=True):
    asset: str
    max_cost: Decimal
    announced_ms: int
    winner: str | None = None


Verdict = Literal["announce", "weak_signal", "cooling_down", "too_many_open_tasks", "over_budget"]


class AnnouncePolicy:
    """Which signals become tasks, and the open tasks' budget. Pure: time comes in as ms."""

    def __init__(self, settings: AnnounceSettings) -> None:
        self.settings = settings
        self.open_tasks: BoundedDict[str, OpenTask] = BoundedDict(limits.tracked_tasks_max)
        self._last_announce_ms: BoundedDict[str, int] = BoundedDict(limits.assets_max)

    def consider(self, asset: str, confidence: float, now_ms: int) -> Verdict:
        """Whether to announce a task for this signal now; ``announce`` starts its cooldown."""
        settings = self.settings
        if confidence < settings.confidence_min:
            return "weak_signal"
        last_ms = self._last_announce_ms.get(asset)
        if last_ms is not None and now_ms - last_ms < settings.cooldown_ms:
            return "cooling_down"
        if len(self.open_tasks) >= settings.open_tasks_max:
            return "too_many_open_tasks"
        if self.committed() + settings.max_cost > settings.budget_max:
            return "over_budget"
        # The cooldown starts at the decision, so a refused announcement is not retried at once.
        self._last_announce_ms[asset] = now_ms
        return "announce"

    def committed(self) -> Decimal:
        return sum((t.max_cost for t in self.open_tasks.values()), Decimal(0))

    def announced(self, task_id: str, asset: str, now_ms: int) -> None:
        self.open_tasks[task_id] = OpenTask(
            asset=asset, max_cost=self.settings.max_cost, announced_ms=now_ms
        )

    def closed(self, task_id: str) -> OpenTask | None:
        return self.open_tasks.pop(task_id)

    def size_for(self, price: Decimal | None) -> Decimal:
        """Units of the asset worth ``notional`` at ``price`` (one unit when no price is known)."""
        if price is None or price <= 0:
            return Decimal(1)
        return max(
            Decimal(1).scaleb(-limits.decimals_max), quantize(self.settings.notional / price)
        )


class Judgement(msgspec.Struct, frozen=True, kw_only=True):
    score: float
    reason: str
    slippage_bps: Decimal | None = None


class Verifier:
    """Scores results: ``1 - slippage / slippage_bps_max``, floored at 0. Pure apart from the
    count of results it has judged (for ``dispute_nth``)."""

    def __init__(self, *, slippage_bps_max: Decimal, dispute_nth: int = 0) -> None:
        assert slippage_bps_max > 0, slippage_bps_max
        assert dispute_nth >= 0, dispute_nth
        self._slippage_bps_max = slippage_bps_max
        self._dispute_nth = dispute_nth
        self.judged = 0

    def judge(self, trade: PaperTrade | None, slippage_bps: Decimal | None) -> Judgement:
        self.judged += 1
        if trade is None:
            return Judgement(score=0.0, reason="output_not_a_trade")
        if self.judged == self._dispute_nth:
            return Judgement(score=DISPUTE_SCORE, reason="deliberate_dispute", slippage_bps=None)
        if slippage_bps is None:
            return Judgement(score=UNVERIFIABLE_SCORE, reason="no_price_near_fill")
        score = max(Decimal(0), 1 - slippage_bps / self._slippage_bps_max)
        return Judgement(score=round(float(score), 4), reason="slippage", slippage_bps=slippage_bps)


class TreasuryOptions(msgspec.Struct, frozen=True, kw_only=True):
    announce: bool = True
    arbitrate: bool = False
    settings: AnnounceSettings = AnnounceSettings()
    slippage_bps_max: Decimal = Decimal(100)
    match_window_ms: int = 500
    dispute_nth: int = 0
    release_slippage_bps: Decimal = Decimal(50)
    reconcile_interval_ms: int = 1_000
    arbitrate_interval_ms: int = 1_000


class TreasuryWorker:
    def __init__(self, options: TreasuryOptions) -> None:
        self._options = options
        self._policy = AnnouncePolicy(options.settings)
        self._verifier = Verifier(
            slippage_bps_max=options.slippage_bps_max, dispute_nth=options.dispute_nth
        )
        self._prices = PriceBook()
        self._verified: BoundedSet[str] = BoundedSet(limits.handled_ids_max)
        self._arbiter = Arbiter(
            self._prices,
            release_slippage_bps=options.release_slippage_bps,
            match_window_ms=options.match_window_ms,
        )

    async def setup(self, ctx: WorkerContext) -> None:
        async def on_price(msg: Msg) -> None:
            update = ctx.decode(_price_decoder, msg)
            if update is not None and msg.subject == subjects.price(update.asset):
                self._prices.observe(update.asset, update.price, update.at_ns)

        await ctx.subscribe(subjects.price("*"), on_price)
        if self._options.announce:
            await self._setup_manager(ctx)
        if self._options.arbitrate:
            interval_ms = self._options.arbitrate_interval_ms
            ctx.every(interval_ms, lambda: self._arbiter.sweep(ctx), name="arbitrate")

    async def _setup_manager(self, ctx: WorkerContext) -> None:
        async def on_signal(msg: Msg) -> None:
            parsed = subjects.parse_signal(msg.subject)
            signal = ctx.decode(_signal_decoder, msg)
            if signal is not None and parsed is not None and parsed.sender != ctx.agent_id:
                await self._on_signal(ctx, parsed.asset, signal)

        async def on_award(msg: Msg) -> None:
            award = ctx.decode(_award_decoder, msg)
            if award is None or award.manager != ctx.agent_id:
                return
            task = self._policy.open_tasks.get(award.task_id)
            if task is not None:
                task.winner = award.winner
            ctx.log.info(
                "task_awarded", task_id=award.task_id, winner=award.winner, cost=award.cost
            )

        async def on_closed(msg: Msg) -> None:
            closed = ctx.decode(_closed_decoder, msg)
            if closed is not None and self._policy.closed(closed.task_id) is not None:
                ctx.log.info(
                    "task_closed",
                    task_id=closed.task_id,
                    state=closed.state,
                    winner=closed.winner,
                    paid=closed.paid,
                    refunded=closed.refunded,
                    reason=closed.reason,
                )

        async def on_inform(msg: Msg) -> None:
            parsed = subjects.parse_task_message(msg.subject)
            if parsed is not None and parsed.task_id in self._policy.open_tasks:
                task_id = parsed.task_id
                await ctx.spawn(lambda: self._verify(ctx, task_id), name=f"verify:{task_id}")

        await ctx.subscribe(subjects.signal("*", "opportunity", "*"), on_signal)
        await ctx.subscribe(subjects.task_award("*"), on_award)
        await ctx.subscribe(subjects.task_closed("*"), on_closed)
        await ctx.subscribe(subjects.task_message("*", "inform", "*"), on_inform)
        ctx.every(
            self._options.reconcile_interval_ms, lambda: self._reconcile(ctx), name="reconcile"
        )

    async def _on_signal(self, ctx: WorkerContext, asset: str, signal: AgentSignal) -> None:
        verdict = self._policy.consider(asset, signal.confidence, ctx.monotonic_ms())
        if verdict != "announce":
            ctx.log.debug("signal_skipped", asset=asset, verdict=verdict)
            return
        settings = self._options.settings
        latest = self._prices.latest(asset)
        size = self._policy.size_for(None if latest is None else latest.price)
        command = AnnounceTask(
            request_id=new_request_id("announce"),
            task_type=settings.task_type,
            asset=asset,
            deadline_ms=settings.deadline_ms,
            max_cost=settings.max_cost,
            payload={
                "signal": {
                    "direction": signal.direction,
                    "confidence": signal.confidence,
                    "scanner": signal.metadata.get("scanner"),
                },
                "size": str(size),
            },
            bid_window_ms=settings.bid_window_ms,
        )
        try:
            reply = await ctx.bus.command("task.announce", command, AnnounceResult)
        except RefusedError as exc:
            ctx.log.warning(
                "task_announce_refused", asset=asset, code=exc.code, message=exc.message
            )
            return
        self._policy.announced(reply.task_id, asset, ctx.monotonic_ms())
        ctx.log.info(
            "task_announced",
            task_id=reply.task_id,
            asset=asset,
            direction=signal.direction,
            size=str(size),
            max_cost=str(settings.max_cost),
            eligible=reply.eligible,
        )

    async def _verify(self, ctx: WorkerContext, task_id: str) -> None:
        if task_id in self._verified:
            return
        view = await ctx.bus.query("task", TaskQuery(task_id=task_id), TaskView)
        for _ in range(_INFORM_WAIT_ATTEMPTS):
            if view.state != "awarded":
                break
            # The exchange has not applied the executor's report yet; it is a few ms behind.
            if await ctx.wait_stop_requested(_INFORM_WAIT_S):
                return
            view = await ctx.bus.query("task", TaskQuery(task_id=task_id), TaskView)
        if view.state != "informed" or task_id in self._verified:
            return
        self._verified.add(task_id)
        trade = trade_of(view.output)
        slippage = (
            None
            if trade is None
            else fill_slippage_bps(trade, self._prices, self._options.match_window_ms)
        )
        judgement = self._verifier.judge(trade, slippage)
        command = VerifyTask(request_id=f"verify:{task_id}", task_id=task_id, score=judgement.score)
        try:
            verified = await ctx.bus.command("task.verify", command, TaskView)
        except RefusedError as exc:
            ctx.log.warning(
                "task_verify_refused", task_id=task_id, code=exc.code, message=exc.message
            )
            return
        ctx.log.info(
            "task_verified",
            task_id=task_id,
            score=judgement.score,
            reason=judgement.reason,
            slippage_bps=None if judgement.slippage_bps is None else str(judgement.slippage_bps),
            state=verified.state,
        )

    async def _reconcile(self, ctx: WorkerContext) -> None:
        """Looks up open tasks old enough to have news, in case their events were missed."""
        settings = self._options.settings
        stale_ms = settings.bid_window_ms + settings.deadline_ms
        now_ms = ctx.monotonic_ms()
        due = [
            task_id
            for task_id, task in self._policy.open_tasks.items()
            if now_ms - task.announced_ms > stale_ms
        ]
        for task_id in due[: limits.arbitration_batch_max]:
            try:
                view = await ctx.bus.query("task", TaskQuery(task_id=task_id), TaskView)
            except RefusedError as exc:
                self._policy.closed(task_id)
                ctx.log.warning("task_forgotten", task_id=task_id, code=exc.code)
                continue
            if view.state in FINAL_STATES:
                self._policy.closed(task_id)
                ctx.log.info("task_closed", task_id=task_id, state=view.state, reason=view.reason)
            elif view.state == "informed" and task_id not in self._verified:
                await self._verify(ctx, task_id)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    manager = parser.add_argument_group("manager")
    manager.add_argument(
        "--no-announce",
        dest="announce",
        action="store_false",
        help="do not announce tasks (arbitrate only, with --arbitrate)",
    )
    manager.add_argument("--task-type", default="execute", help="(default: %(default)s)")
    manager.add_argument(
        "--confidence-min",
        type=float,
        default=0.7,
        help="weakest signal that makes a task (default: %(default)s)",
    )
    manager.add_argument(
        "--cooldown-ms",
        type=int,
        default=5_000,
        help="time between tasks for one asset (default: %(default)s)",
    )
    manager.add_argument("--open-tasks-max", type=int, default=3, help="(default: %(default)s)")
    manager.add_argument(
        "--budget-max", default="100", help="max cost of all open tasks (default: %(default)s)"
    )
    manager.add_argument(
        "--max-cost", default="20", help="max cost per task (default: %(default)s)"
    )
    manager.add_argument("--deadline-ms", type=int, default=2_000, help="(default: %(default)s)")
    manager.add_argument("--bid-window-ms", type=int, default=300, help="(default: %(default)s)")
    manager.add_argument(
        "--notional", default="1000", help="order size in price units (default: %(default)s)"
    )
    manager.add_argument(
        "--slippage-bps-max",
        default="100",
        help="slippage that scores 0; 30%% of it scores 0.7 (default: %(default)s)",
    )
    manager.add_argument(
        "--dispute-nth",
        type=int,
        default=0,
        help="score the Nth result 0.3 on purpose, for demos (default: never)",
    )
    manager.add_argument("--reconcile-ms", type=int, default=1_000, help="(default: %(default)s)")
    judge = parser.add_argument_group("arbiter")
    judge.add_argument(
        "--arbitrate",
        action="store_true",
        help="resolve disputed escrows this agent is not a party to",
    )
    add_judge_arguments(judge)


def _add_arbiter_arguments(parser: argparse.ArgumentParser) -> None:
    add_judge_arguments(parser.add_argument_group("arbiter"))
    # The manager's options keep their defaults: an arbiter never announces.
    manager_defaults = argparse.ArgumentParser(add_help=False)
    add_arguments(manager_defaults)
    defaults = vars(manager_defaults.parse_args([]))
    parser.set_defaults(**(defaults | {"announce": False, "arbitrate": True}))


def options_from_args(args: argparse.Namespace) -> TreasuryOptions:
    """Raises ConfigError for bad options."""
    for name in ("cooldown_ms", "bid_window_ms", "match_window_ms", "arbitrate_ms", "reconcile_ms"):
        check_interval_ms(name, getattr(args, name))
    if not 1 <= args.deadline_ms <= DURATION_MS_MAX:
        raise ConfigError(f"deadline_ms must be positive (at most a week), got {args.deadline_ms}")
    if not 1 <= args.open_tasks_max <= limits.tracked_tasks_max:
        raise ConfigError(
            f"open_tasks_max must be 1..{limits.tracked_tasks_max}, got {args.open_tasks_max}"
        )
    if args.dispute_nth < 0:
        raise ConfigError(f"dispute_nth must be 0 (never) or more, got {args.dispute_nth}")
    settings = AnnounceSettings(
        task_type=parse_token(args.task_type, "task type"),
        confidence_min=parse_fraction(args.confidence_min, "confidence_min"),
        cooldown_ms=args.cooldown_ms,
        open_tasks_max=args.open_tasks_max,
        budget_max=parse_decimal(args.budget_max, "budget_max"),
        max_cost=parse_decimal(args.max_cost, "max_cost"),
        deadline_ms=args.deadline_ms,
        bid_window_ms=args.bid_window_ms,
        notional=parse_decimal(args.notional, "notional"),
    )
    if not args.announce and not args.arbitrate:
        raise ConfigError("--no-announce without --arbitrate leaves the treasury nothing to do")
    return TreasuryOptions(
        announce=args.announce,
        arbitrate=args.arbitrate,
        settings=settings,
        slippage_bps_max=parse_decimal(args.slippage_bps_max, "slippage_bps_max"),
        match_window_ms=args.match_window_ms,
        dispute_nth=args.dispute_nth,
        release_slippage_bps=parse_decimal(
            args.release_slippage_bps, "release_slippage_bps", positive=False
        ),
        reconcile_interval_ms=args.reconcile_ms,
        arbitrate_interval_ms=args.arbitrate_ms,
    )


def build(args: argparse.Namespace, rng: random.Random) -> BuiltRole:
    del rng  # The treasury's judgements are deterministic; --dispute-nth is the demo's knob.
    return BuiltRole(worker=TreasuryWorker(options_from_args(args)))


def _build_arbiter(args: argparse.Namespace, rng: random.Random) -> BuiltRole:
    del rng
    return BuiltRole(worker=TreasuryWorker(options_from_args(args)))


ROLE: Final = RoleSpec(
    name="treasury",
    summary="announce Contract Net tasks for strong signals, verify results (and arbitrate)",
    exchange_role="treasury",
    add_arguments=add_arguments,
    build=build,
)

ARBITER_ROLE: Final = RoleSpec(
    name="arbiter",
    summary="a treasury that only resolves disputed escrows it is not a party to",
    exchange_role="treasury",
    add_arguments=_add_arbiter_arguments,
    build=_build_arbiter,
)
