"""Executor: bids in Contract Net auctions for the task types it can do, and executes what it wins.

- Listens on ``swarm.task.cfp.<task_type>`` for each capability. ``BidPolicy`` (pure) answers a
  call for proposals with a ``Bid`` from the executor's profile (cost as a fraction of the max
  cost, time, confidence, each with seeded jitter) or a ``RefuseTask`` with a reason (no price yet
  for the asset, at capacity, deadline too short). Bids and refusals are requests on
  ``swarm.task.<task>.propose|refuse.<executor>``, answered by the exchange.
- On ``swarm.task.<task>.award`` naming it, executes: ``paper_trade`` (pure) fills the task's
  order at the latest oracle price for its asset (moved against the executor by its
  ``slippage_bps``, a profile of execution quality), after the ``time_ms`` it promised. It reports
  ``inform`` with the fill as output, or ``failure`` with a reason (no price, no size).
- Awards are broadcast once; one missed during a reconnect would cost the task. So every bid is
  remembered until its award is seen, and a periodic reconciliation asks the exchange
  (``exchange.query.task``) about bids whose window closed without news.

Several executors with different profiles compete; ``--seed`` makes each one's jitter repeatable.
"""

import argparse
import hashlib
import random
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import anyio
import msgspec
from nats.aio.msg import Msg

from agents import limits
from agents.bounded import BoundedDict, BoundedSet
from agents.clock import rfc3339
from agents.config import check_interval_ms
from agents.errors import ConfigError
from agents.messages import PaperTrade
from agents.prices import BPS_PER_UNIT, PriceBook, PricePoint, quantize
from agents.roles.base import BuiltRole, RoleSpec, parse_decimal, parse_fraction, parse_tokens
from agents.runtime import WorkerContext
from protocols import subjects
from protocols.client_errors import RefusedError
from protocols.queries import TaskQuery
from protocols.swarm import (
    DURATION_MS_MAX,
    Bid,
    CallForProposals,
    PriceUpdate,
    RefuseTask,
    TaskAward,
    TaskReport,
    TaskView,
)
from protocols.units import MS_PER_S, NS_PER_MS

COST_MIN: Final = Decimal(1).scaleb(-limits.decimals_max)
_cfp_decoder: Final = msgspec.json.Decoder(CallForProposals)
_award_decoder: Final = msgspec.json.Decoder(TaskAward)
_price_decoder: Final = msgspec.json.Decoder(PriceUpdate)


class ExecutorProfile(msgspec.Struct, frozen=True, kw_only=True):
    """How an executor bids and how well it executes."""

    capabilities: tuple[str, ...] = ("execute",)
    cost_fraction: float = 0.5
    time_ms: int = 200
    confidence: float = 0.8
    jitter: float = 0.1
    slippage_bps: Decimal = Decimal(0)
    capacity: int = 4


class BidPolicy:
    """Answers calls for proposals from a profile. Pure; jitter from the given seeded RNG."""

    def __init__(self, agent_id: str, profile: ExecutorProfile, rng: random.Random) -> None:
        self._agent_id = agent_id
        self._profile = profile
        self._rng = rng

    def answer(
        self, cfp: CallForProposals, *, price_known: bool, busy: int, completed: int
    ) -> Bid | RefuseTask:
        """A bid, or a refusal saying why. ``busy`` counts tasks being executed now."""
        profile = self._profile
        if cfp.task_type not in profile.capabilities:
            return RefuseTask(reason=f"{self._agent_id} does not do {cfp.task_type} tasks")
        if not price_known:
            return RefuseTask(reason=f"no price known for {cfp.asset} yet")
        if busy >= profile.capacity:
            return RefuseTask(reason=f"at capacity ({busy} tasks running)")
        if profile.time_ms > cfp.deadline_ms:
            return RefuseTask(
                reason=f"needs {profile.time_ms} ms, the deadline is {cfp.deadline_ms} ms"
            )
        try:
            max_cost = Decimal(cfp.max_cost)
        except InvalidOperation:
            return RefuseTask(reason=f"max_cost {cfp.max_cost!r} is not a number")
        if not max_cost.is_finite() or max_cost < COST_MIN:
            return RefuseTask(reason=f"max_cost {cfp.max_cost!r} leaves nothing to bid")
        cost_factor = Decimal(f"{profile.cost_fraction * (1 + self._jitter()):.6f}")
        cost = min(max_cost, max(COST_MIN, quantize(max_cost * cost_factor)))
        time_ms = min(cfp.deadline_ms, max(1, round(profile.time_ms * (1 + self._jitter()))))
        confidence = min(1.0, max(0.0, round(profile.confidence + self._jitter() / 2, 4)))
        return Bid(
            cost=cost,
            time_ms=time_ms,
            confidence=confidence,
            capability_proof=self._proof(completed),
        )

    def _jitter(self) -> float:
        return self._rng.uniform(-self._profile.jitter, self._profile.jitter)

    def _proof(self, completed: int) -> str:
        # Seed 2's "hash of recent performance record": here the executor's id and tally.
        record = f"{self._agent_id}:{completed}".encode()
        return hashlib.sha256(record).hexdigest()[:32]


class TradeFailure(msgspec.Struct, frozen=True):
    reason: str


def paper_trade(
    cfp: CallForProposals,
    price: PricePoint | None,
    *,
    executor: str,
    slippage_bps: Decimal,
    at_ns: int,
) -> PaperTrade | TradeFailure:
    """The fill of an ``execute`` task at ``price``, or why it cannot be filled. Pure.

    The order is ``payload.size`` units of the task's asset, in ``payload.signal.direction``
    (``long`` when absent). Slippage moves the fill against the executor: up for a long, down for
    a short.
    """
    if price is None:
        return TradeFailure(f"no price known for {cfp.asset}")
    size = _decimal_field(cfp.payload, "size")
    if size is None or size <= 0:
        return TradeFailure("the task's payload has no positive size")
    signal = cfp.payload.get("signal")
    direction = signal.get("direction") if isinstance(signal, dict) else None
    direction = direction if direction in ("long", "short") else "long"
    adverse = 1 if direction == "long" else -1
    fill_price = quantize(price.price * (1 + adverse * slippage_bps / BPS_PER_UNIT))
    return PaperTrade(
        asset=cfp.asset,
        direction=direction,
        size=quantize(size),
        fill_price=fill_price,
        oracle_price=price.price,
        at_ns=at_ns,
        at=rfc3339(at_ns),
        executor=executor,
    )


def _decimal_field(payload: dict[str, Any], name: str) -> Decimal | None:
    value = payload.get(name)
    if not isinstance(value, str | int):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


class _PendingBid(msgspec.Struct, frozen=True, kw_only=True):
    cfp: CallForProposals
    time_ms: int


class ExecutorWorker:
    def __init__(
        self,
        profile: ExecutorProfile,
        rng: random.Random,
        *,
        reconcile_interval_ms: int = 1000,
        reconcile_after_ms: int = 1000,
    ) -> None:
        self._profile = profile
        self._rng = rng
        self._reconcile_interval_ms = reconcile_interval_ms
        self._reconcile_after_ns = reconcile_after_ms * NS_PER_MS
        self._prices = PriceBook()
        self._pending: BoundedDict[str, _PendingBid] = BoundedDict(limits.tracked_tasks_max)
        self._started: BoundedSet[str] = BoundedSet(limits.handled_ids_max)
        self._busy = 0
        self._completed = 0
        self._policy: BidPolicy | None = None

    async def setup(self, ctx: WorkerContext) -> None:
        self._policy = BidPolicy(ctx.agent_id, self._profile, self._rng)

        async def on_price(msg: Msg) -> None:
            update = ctx.decode(_price_decoder, msg)
            if update is not None and msg.subject == subjects.price(update.asset):
                self._prices.observe(update.asset, update.price, update.at_ns)

        async def on_cfp(msg: Msg) -> None:
            cfp = ctx.decode(_cfp_decoder, msg)
            if cfp is not None and cfp.manager != ctx.agent_id:
                await self._answer(ctx, cfp)

        async def on_award(msg: Msg) -> None:
            award = ctx.decode(_award_decoder, msg)
            if award is not None:
                await self._on_award(ctx, award)

        await ctx.subscribe(subjects.price("*"), on_price)
        await ctx.subscribe(subjects.task_award("*"), on_award)
        for task_type in self._profile.capabilities:
            await ctx.subscribe(subjects.task_cfp(task_type), on_cfp)
        ctx.every(self._reconcile_interval_ms, lambda: self._reconcile(ctx), name="reconcile")

    async def _answer(self, ctx: WorkerContext, cfp: CallForProposals) -> None:
        assert self._policy is not None
        answer = self._policy.answer(
            cfp,
            price_known=self._prices.latest(cfp.asset) is not None,
            busy=self._busy,
            completed=self._completed,
        )
        try:
            if isinstance(answer, Bid):
                # Remembered before the request, so an award racing the reply is not missed.
                self._pending[cfp.task_id] = _PendingBid(cfp=cfp, time_ms=answer.time_ms)
                await ctx.bus.propose(cfp.task_id, answer)
                ctx.log.info(
                    "bid_submitted",
                    task_id=cfp.task_id,
                    cost=str(answer.cost),
                    time_ms=answer.time_ms,
                    confidence=answer.confidence,
                )
            else:
                await ctx.bus.refuse(cfp.task_id, answer)
                ctx.log.info("task_declined", task_id=cfp.task_id, reason=answer.reason)
        except RefusedError as exc:
            self._pending.pop(cfp.task_id)
            ctx.log.info("answer_refused", task_id=cfp.task_id, code=exc.code, message=exc.message)

    async def _on_award(self, ctx: WorkerContext, award: TaskAward) -> None:
        pending = self._pending.get(award.task_id)
        if pending is None:
            return
        if award.winner != ctx.agent_id:
            self._pending.pop(award.task_id)
            ctx.log.info("bid_lost", task_id=award.task_id, winner=award.winner)
            return
        ctx.log.info("task_won", task_id=award.task_id, cost=award.cost)
        await self._start(ctx, award.task_id, pending)

    async def _start(self, ctx: WorkerContext, task_id: str, pending: _PendingBid) -> None:
        if task_id in self._started:
            return
        self._started.add(task_id)
        self._pending.pop(task_id)
        self._busy += 1
        await ctx.spawn(lambda: self._execute(ctx, pending), name=f"execute:{task_id}")

    async def _execute(self, ctx: WorkerContext, pending: _PendingBid) -> None:
        cfp = pending.cfp
        try:
            # The work takes the time the bid promised; a stop request lets it finish.
            await anyio.sleep(pending.time_ms / MS_PER_S)
            outcome = paper_trade(
                cfp,
                self._prices.latest(cfp.asset),
                executor=ctx.agent_id,
                slippage_bps=self._profile.slippage_bps,
                at_ns=ctx.now_ns(),
            )
            try:
                if isinstance(outcome, PaperTrade):
                    output = msgspec.to_builtins(outcome)
                    await ctx.bus.inform(cfp.task_id, TaskReport(output=output))
                    self._completed += 1
                    ctx.log.info(
                        "task_executed",
                        task_id=cfp.task_id,
                        asset=outcome.asset,
                        direction=outcome.direction,
                        size=str(outcome.size),
                        fill_price=str(outcome.fill_price),
                    )
                else:
                    await ctx.bus.report_failure(cfp.task_id, TaskReport(reason=outcome.reason))
                    ctx.log.warning("task_failed", task_id=cfp.task_id, reason=outcome.reason)
            except RefusedError as exc:
                ctx.log.warning(
                    "report_refused", task_id=cfp.task_id, code=exc.code, message=exc.message
                )
        finally:
            self._busy -= 1

    async def _reconcile(self, ctx: WorkerContext) -> None:
        """Asks the exchange about bids whose auction should have closed without an award seen."""
        now_ns = ctx.now_ns()
        overdue = [
            (task_id, pending)
            for task_id, pending in self._pending.items()
            if now_ns > pending.cfp.closes_at_ns + self._reconcile_after_ns
        ]
        for task_id, pending in overdue[: limits.arbitration_batch_max]:
            try:
                view = await ctx.bus.query("task", TaskQuery(task_id=task_id), TaskView)
            except RefusedError as exc:
                self._pending.pop(task_id)
                ctx.log.info("bid_forgotten", task_id=task_id, code=exc.code)
                continue
            if view.state == "open":
                continue
            if view.winner == ctx.agent_id and view.state == "awarded":
                ctx.log.info("award_recovered", task_id=task_id)
                await self._start(ctx, task_id, pending)
            else:
                self._pending.pop(task_id)
                ctx.log.info("bid_settled", task_id=task_id, state=view.state, winner=view.winner)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capabilities",
        default="execute",
        help="comma-separated task types to bid on (default: %(default)s)",
    )
    parser.add_argument(
        "--cost-fraction",
        type=float,
        default=0.5,
        help="bid this fraction of the max cost (default: %(default)s)",
    )
    parser.add_argument(
        "--time-ms", type=int, default=200, help="promised time per task (default: %(default)s)"
    )
    parser.add_argument(
        "--confidence", type=float, default=0.8, help="bid confidence (default: %(default)s)"
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.1,
        help="relative seeded jitter on cost, time and confidence (default: %(default)s)",
    )
    parser.add_argument(
        "--slippage-bps",
        default="0",
        help="fills move this much against the executor, in bps (default: %(default)s)",
    )
    parser.add_argument(
        "--capacity", type=int, default=4, help="tasks executed at once (default: %(default)s)"
    )
    parser.add_argument(
        "--reconcile-ms",
        type=int,
        default=1000,
        help="how often to ask about bids with no award seen (default: %(default)s)",
    )


def profile_from_args(args: argparse.Namespace) -> ExecutorProfile:
    """Raises ConfigError for bad options."""
    capabilities = parse_tokens(args.capabilities, "task type")
    if not capabilities:
        raise ConfigError("--capabilities names no task type")
    if not 0 < args.cost_fraction <= 1:
        raise ConfigError(f"cost_fraction must be in (0, 1], got {args.cost_fraction}")
    if not 1 <= args.time_ms <= DURATION_MS_MAX:
        raise ConfigError(f"time_ms must be positive (at most a week), got {args.time_ms}")
    if not 1 <= args.capacity <= limits.tasks_in_flight_max:
        raise ConfigError(f"capacity must be 1..{limits.tasks_in_flight_max}, got {args.capacity}")
    return ExecutorProfile(
        capabilities=capabilities,
        cost_fraction=args.cost_fraction,
        time_ms=args.time_ms,
        confidence=parse_fraction(args.confidence, "confidence"),
        jitter=parse_fraction(args.jitter, "jitter"),
        slippage_bps=parse_decimal(args.slippage_bps, "slippage_bps", positive=False),
        capacity=args.capacity,
    )


def build(args: argparse.Namespace, rng: random.Random) -> BuiltRole:
    profile = profile_from_args(args)
    check_interval_ms("reconcile_ms", args.reconcile_ms)
    worker = ExecutorWorker(profile, rng, reconcile_interval_ms=args.reconcile_ms)
    return BuiltRole(worker=worker, capabilities=profile.capabilities)


ROLE: Final = RoleSpec(
    name="executor",
    summary="bid on swarm.task.cfp.<type>, execute won tasks as paper trades, report the result",
    exchange_role="executor",
    add_arguments=add_arguments,
    build=build,
)
