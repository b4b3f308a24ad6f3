"""Contract Net auctions (seed 2), as ledger rules on the exchange clock.

A task's life: ``open`` (max cost held from the manager, bids taken) → ``awarded`` (the hold shrunk
to the winning cost and turned into an escrow) or ``unawarded`` (no bid: hold voided) → the
executor reports ``informed`` or ``failed`` → the manager verifies: ``completed`` (released, fee
taken) or ``disputed`` → an arbiter resolves to ``completed`` or ``refunded``. Deadlines refund, so
no escrow stays locked: an unreported result after ``deadline + grace`` is refunded; an unresolved
dispute after ``dispute_timeout_s`` is refunded; an informed task the manager never verifies is
released after ``dispute_timeout_s`` (silence accepts delivered work). The escrow itself, its fee
and referral, is escrow.py's; the market is its ``TaskSide``.

Finished tasks are kept for queries up to ``auction.finished_tasks_kept``; beyond it the oldest is
forgotten with its escrow and hold, and its counts move to ``ForgottenTasks`` (the swarm metrics
read both). Timers of a forgotten task find nothing and do nothing.
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

import msgspec

from exchange.core.bid_tally import NO_BONUS, BidTally
from exchange.core.config import EconomyConfig
from exchange.core.escrow import Escrow, Escrows
from exchange.core.ledger import Agent, Ledger
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import keep_newest, kept_note
from exchange.core.states import (
    TASK,
    WORK_FINISHED_STATES,
    EscrowEvent,
    EscrowState,
    TaskEvent,
    TaskState,
)
from protocols import results as r
from protocols import subjects
from protocols import swarm as s
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.ids import SYSTEM_SENDERS
from protocols.units import NS_PER_MS, NS_PER_S

bids_per_task_max: Final = 1000
# Task states the swarm metrics count as finished work (not unawarded or cancelled ones).
# Performance scores stay within these bounds, so one agent's vote weight cannot run away.
performance_min: Final = Decimal(0)
performance_max: Final = Decimal(5)


def _no_stake(agent_id: str) -> int:
    return 0


def _no_bonus(stake_micro: int) -> Fraction:
    return NO_BONUS


def _no_slash(executor: str, payee: str, memo: str) -> None:
    return None


# BidRecord and Task are Structs (mutable, like the dataclasses they were) because a snapshot
# encodes them directly: ~7x faster than converting each to builtins first, and the same bytes. An
# exchange keeps up to finished_tasks_kept finished tasks with all their bids.
# omit_defaults: ``stake_micro`` is encoded only when the bidder had a stake, so the snapshot and
# digest of an exchange that never staked are what they were (``score`` is set on every bid).
class BidRecord(msgspec.Struct, omit_defaults=True):
    bidder: str
    cost_micro: int
    time_ms: int
    confidence: float
    proof: str
    seq: int
    score: str = ""
    # The bidder's active stake when it bid: its score's stake term (docs/economy.md, Staking).
    stake_micro: int = 0


class Task(msgspec.Struct):
    id: str
    manager: str
    task_type: str
    asset: str
    deadline_ms: int
    max_cost_micro: int
    payload: dict[str, Any]
    weights: list[str]
    referrer: str | None
    eligible: list[str]
    closes_at_ns: int
    hold_id: str
    state: TaskState = TaskState.open
    bids: list[BidRecord] = msgspec.field(default_factory=list)
    refused: list[str] = msgspec.field(default_factory=list)
    winner: str | None = None
    escrow_id: str | None = None
    result_due_at_ns: int | None = None
    output: dict[str, Any] = msgspec.field(default_factory=dict)
    reason: str = ""


@dataclass(slots=True)
class ForgottenTasks:
    """What the swarm metrics count of the finished tasks no longer kept."""

    finished: int = 0  # in WORK_FINISHED_STATES
    completed: int = 0
    on_signal: int = 0  # announced with a "signal" in the payload


class MarketState(msgspec.Struct, frozen=True, kw_only=True):
    tasks: list[Task]
    finished_tasks: list[str]
    forgotten_tasks: ForgottenTasks


class Market:
    """Contract Net rules, installed into a ledger; the escrows of tasks are made in ``escrows``."""

    def __init__(self, ledger: Ledger, config: EconomyConfig) -> None:
        self.ledger = ledger
        # Every escrow, the tasks' and the stand-alone ones: the market makes the escrows of its
        # tasks and is told when one is disputed, resolved or runs out (TaskSide).
        self.escrows = Escrows(ledger, config.escrow, tasks=self)
        self.escrow_config = config.escrow
        self.auction_config = config.auction
        self.tasks: dict[str, Task] = {}
        # Ids in the order the tasks finished, oldest first: the ones forgotten next.
        self.finished_tasks: deque[str] = deque()
        self.forgotten = ForgottenTasks()
        # Open tasks' answers so far (derived, not in the snapshot: see bid_tally.py).
        self._tallies: dict[str, BidTally] = {}
        # Staking's hooks (machine.py): a bidder's active stake, the score term of a stake, and
        # the slash of an executor that lost its dispute or missed its deadline (to the manager).
        self.stake_of: Callable[[str], int] = _no_stake
        self.stake_bonus: Callable[[int], Fraction] = _no_bonus
        self.on_executor_failed: Callable[[str, str, str], None] = _no_slash

    # ------------------------------------------------------------------------ the escrows' TaskSide

    def snapshot(self) -> MarketState:
        return MarketState(
            tasks=list(self.tasks.values()),
            finished_tasks=list(self.finished_tasks),
            forgotten_tasks=self.forgotten,
        )

    def restore(self, state: MarketState) -> None:
        self.tasks.update((t.id, t) for t in state.tasks)
        self.finished_tasks.extend(state.finished_tasks)
        self.forgotten = state.forgotten_tasks

    def escrow_disputed(self, escrow: Escrow, resolve_by_ns: int) -> None:
        task = self.tasks.get(escrow.task_id or "")
        if task is not None:
            self.ledger.publish(
                subjects.task_disputed(task.id),
                s.TaskDisputed(
                    task_id=task.id,
                    escrow_id=escrow.id,
                    manager=task.manager,
                    winner=task.winner,
                    amount=format_micro(escrow.amount_micro),
                    resolve_by_ns=resolve_by_ns,
                ),
            )

    def escrow_deadline(self, escrow: Escrow) -> None:
        task = self.tasks.get(escrow.task_id or "")
        if escrow.state == EscrowState.disputed:
            self.escrows.refund(escrow, EscrowEvent.lapse)
            if task is not None:
                self._close_task(task, TaskEvent.refund, "dispute unresolved by its deadline")
        elif task is not None and task.state == TaskState.informed:
            self.escrows.release(escrow)
            self._performance(task.winner, +1)
            self._close_task(task, TaskEvent.release, "the manager did not verify in time")
        else:
            self.escrows.refund(escrow)
            if task is not None:
                self._close_task(task, TaskEvent.refund, "escrow deadline passed")

    def escrow_resolved(self, escrow: Escrow, outcome: str) -> None:
        task = self.tasks.get(escrow.task_id or "")
        if task is None:
            return
        if outcome == "release":
            self._performance(task.winner, +1)
            self._close_task(task, TaskEvent.release, "released by arbitration")
        else:
            self._performance(task.winner, -1)
            self.on_executor_failed(task.winner or "", task.manager, task.id)
            self._close_task(task, TaskEvent.refund, "refunded by arbitration")

    # ------------------------------------------------------------------------ forgetting

    def _finished(self, task: Task) -> None:
        keep_newest(
            self.finished_tasks, task.id, self.auction_config.finished_tasks_kept, self._forget
        )

    def _forget(self, task_id: str) -> None:
        old = self.tasks.pop(task_id)
        forgotten = self.forgotten
        forgotten.finished += old.state in WORK_FINISHED_STATES
        forgotten.completed += old.state == "completed"
        forgotten.on_signal += "signal" in old.payload
        if old.escrow_id is not None:
            self.escrows.forget(old.escrow_id)
        self.ledger.forget_hold(old.hold_id)

    # ------------------------------------------------------------------------ Contract Net

    def announce(self, sender: str, cmd: s.AnnounceTask) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        manager = ledger.acting_agent(sender)
        if isinstance(manager, Refusal):
            return manager
        max_cost = ledger.amount(cmd.max_cost, "max_cost")
        if isinstance(max_cost, Refusal):
            return max_cost
        weights = cmd.weights or s.Weights(
            cost=self.auction_config.cost_weight,
            time=self.auction_config.time_weight,
            confidence=self.auction_config.confidence_weight,
        )
        if (
            weights.cost + weights.time + weights.confidence != 1
            or min(weights.cost, weights.time, weights.confidence) < 0
        ):
            return refuse(
                ErrorCode.invalid_message,
                "weights must be non-negative and sum to 1 (default 0.4 / 0.3 / 0.3)",
                path="$.weights",
            )
        if cmd.referrer is not None and isinstance(referrer := ledger.agent(cmd.referrer), Refusal):
            return referrer
        if cmd.referrer == manager.id:
            return refuse(
                ErrorCode.self_dealing,
                f"{manager.id} may not refer its own task (it would be paid back part of its fee)",
                path="$.referrer",
            )
        if (denied := ledger.check_debit(manager, max_cost)) is not None:
            return denied
        now_ns = ledger.book.now_ns
        window_ms = cmd.bid_window_ms or self.auction_config.bid_window_ms
        hold = ledger.hold(manager.id, max_cost, "task", expires_at_ns=None, prefix="escrow")
        eligible = sorted(
            a.id
            for a in ledger.agents.values()
            if cmd.task_type in a.capabilities and a.id != manager.id
        )
        task = Task(
            id=ledger.new_id("task"),
            manager=manager.id,
            task_type=cmd.task_type,
            asset=cmd.asset,
            deadline_ms=cmd.deadline_ms,
            max_cost_micro=max_cost,
            payload=dict(cmd.payload),
            weights=[str(weights.cost), str(weights.time), str(weights.confidence)],
            referrer=cmd.referrer,
            eligible=eligible,
            closes_at_ns=now_ns + window_ms * NS_PER_MS,
            hold_id=hold.id,
        )
        self.tasks[task.id] = task
        ledger.add_timer(task.closes_at_ns, "auction_close", task.id)
        ledger.publish(
            subjects.task_cfp(task.task_type),
            s.CallForProposals(
                task_id=task.id,
                manager=task.manager,
                task_type=task.task_type,
                asset=task.asset,
                deadline_ms=task.deadline_ms,
                max_cost=format_micro(max_cost),
                payload=task.payload,
                weights=weights,
                closes_at_ns=task.closes_at_ns,
                eligible=eligible,
            ),
        )
        return s.AnnounceResult(
            task_id=task.id,
            held=format_micro(max_cost),
            closes_at_ns=task.closes_at_ns,
            eligible=eligible,
        )

    def find_task(self, task_id: str) -> Task | Refusal:
        task = self.tasks.get(task_id)
        if task is None:
            return refuse(
                ErrorCode.unknown_task,
                f"no task {task_id!r}; see `exchange tasks` "
                + kept_note(self.auction_config.finished_tasks_kept, "finished tasks"),
            )
        return task

    def _open_for_answers(self, sender: str, task_id: str) -> tuple[Agent, Task] | Refusal:
        ledger = self.ledger
        bidder = ledger.acting_agent(sender)
        if isinstance(bidder, Refusal):
            return bidder
        task = self.find_task(task_id)
        if isinstance(task, Refusal):
            return task
        if task.state != TaskState.open or ledger.book.now_ns >= task.closes_at_ns:
            return refuse(
                ErrorCode.bid_window_closed,
                f"the bid window of {task.id} is closed ({task.state}); watch swarm.task.cfp.* "
                "for the next task",
            )
        if bidder.id == task.manager:
            return refuse(ErrorCode.not_eligible, f"{bidder.id} manages {task.id}")
        if self._tally(task).has_answered(bidder.id):
            return refuse(ErrorCode.duplicate_bid, f"{bidder.id} already answered {task.id}")
        if len(task.bids) >= bids_per_task_max:
            return refuse(ErrorCode.overloaded, f"{task.id} has its maximum of bids")
        return bidder, task

    def propose(self, sender: str, cmd: s.SubmitBid) -> msgspec.Struct | Refusal:
        checked = self._open_for_answers(sender, cmd.task_id)
        if isinstance(checked, Refusal):
            return checked
        bidder, task = checked
        if bidder.id == task.referrer:
            return refuse(
                ErrorCode.self_dealing,
                f"{bidder.id} referred {task.id} and would be paid a referral of its own fee; a "
                "referrer may not bid on the task it referred",
            )
        cost = self.ledger.amount(cmd.bid.cost, "cost")
        if isinstance(cost, Refusal):
            return cost
        if cost > task.max_cost_micro:
            return refuse(
                ErrorCode.bid_exceeds_max_cost,
                f"{task.id} pays at most {format_micro(task.max_cost_micro)}; bid "
                f"{format_micro(cost)}",
                limit=format_micro(task.max_cost_micro),
                requested=format_micro(cost),
            )
        if cmd.bid.time_ms > task.deadline_ms:
            return refuse(
                ErrorCode.bid_exceeds_deadline,
                f"{task.id} must be done within {task.deadline_ms} ms; bid {cmd.bid.time_ms} ms",
            )
        record = BidRecord(
            bidder=bidder.id,
            cost_micro=cost,
            time_ms=cmd.bid.time_ms,
            confidence=cmd.bid.confidence,
            proof=cmd.bid.capability_proof,
            seq=self.ledger.book.seq,
            stake_micro=self.stake_of(bidder.id),
        )
        tally = self._tally(task)
        stake = record.stake_micro
        record.score = tally.record_bid(
            record.bidder,
            record.cost_micro,
            record.time_ms,
            record.confidence,
            self.stake_bonus(stake) if stake else NO_BONUS,
        )
        task.bids.append(record)
        if tally.everyone_answered:
            self._award(task)
        return r.Result()

    def refuse_task(self, sender: str, cmd: s.SubmitRefusal) -> msgspec.Struct | Refusal:
        checked = self._open_for_answers(sender, cmd.task_id)
        if isinstance(checked, Refusal):
            return checked
        bidder, task = checked
        task.refused.append(bidder.id)
        tally = self._tally(task)
        tally.record_refusal(bidder.id)
        if tally.everyone_answered:
            self._award(task)
        return r.Result()

    def _tally(self, task: Task) -> BidTally:
        """The open ``task``'s tally, rebuilt from its bids and refusals if there is none."""
        tally = self._tallies.get(task.id)
        if tally is None:
            tally = BidTally.start(
                task.weights, task.eligible, task.max_cost_micro, task.deadline_ms
            )
            for bid in task.bids:
                tally.record_bid(
                    bid.bidder,
                    bid.cost_micro,
                    bid.time_ms,
                    bid.confidence,
                    self.stake_bonus(bid.stake_micro),
                )
            for agent in task.refused:
                tally.record_refusal(agent)
            self._tallies[task.id] = tally
        return tally

    def on_auction_close(self, task_id: str) -> None:
        task = self.tasks.get(task_id)  # None: finished early and forgotten since
        if task is not None and task.state == TaskState.open:
            self._award(task)

    def _award(self, task: Task) -> None:
        ledger = self.ledger
        hold = ledger.holds[task.hold_id]
        if not task.bids:
            ledger.void_hold(hold)
            self._publish_award(task, None)
            self._close_task(task, TaskEvent.no_bids, "no bids")
            return
        # Highest score wins; among equal scores the earlier bid (lower seq).
        winner = task.bids[self._tally(task).best_index]
        del self._tallies[task.id]
        ledger.shrink_hold(hold, winner.cost_micro)
        escrow = self.escrows.open(hold, winner.bidder, task.referrer, task.id, task.task_type)
        now_ns = ledger.book.now_ns
        task.state = TASK.next(task.state, TaskEvent.award)
        task.winner, task.escrow_id = winner.bidder, escrow.id
        task.result_due_at_ns = (
            now_ns + task.deadline_ms * NS_PER_MS + self.escrow_config.result_grace_s * NS_PER_S
        )
        ledger.add_timer(task.result_due_at_ns, "task_result_due", task.id)
        self._publish_award(task, winner)

    def _publish_award(self, task: Task, winner: BidRecord | None) -> None:
        self.ledger.publish(
            subjects.task_award(task.id),
            s.TaskAward(
                task_id=task.id,
                manager=task.manager,
                winner=None if winner is None else winner.bidder,
                cost=None if winner is None else format_micro(winner.cost_micro),
                escrow_id=task.escrow_id,
                result_due_at_ns=task.result_due_at_ns,
                bids=self.bid_scores(task),
            ),
        )

    def bid_scores(self, task: Task) -> list[s.BidScore]:
        return [
            s.BidScore(
                bidder=b.bidder,
                cost=format_micro(b.cost_micro),
                time_ms=b.time_ms,
                confidence=b.confidence,
                score=b.score,
                accepted=b.bidder == task.winner,
            )
            for b in task.bids
        ]

    def report(self, sender: str, cmd: s.SubmitResult) -> msgspec.Struct | Refusal:
        task = self.find_task(cmd.task_id)
        if isinstance(task, Refusal):
            return task
        if sender != task.winner:
            return refuse(ErrorCode.not_task_executor, f"{sender} was not awarded {task.id}")
        event = TaskEvent.inform if cmd.success else TaskEvent.fail
        if (
            closed := TASK.refusal(task.state, event, task.id, "not awaiting a result")
        ) is not None:
            return closed
        task.output, task.reason = dict(cmd.output), cmd.reason
        escrow = self.escrows.by_id[task.escrow_id or ""]
        if cmd.success:
            task.state = TASK.next(task.state, TaskEvent.inform)
            # The manager now has until the dispute timeout to verify; silence releases.
            self.escrows.set_deadline(
                escrow,
                self.ledger.book.now_ns + self.escrow_config.dispute_timeout_s * NS_PER_S,
            )
        else:
            self.escrows.refund(escrow)
            self._performance(task.winner, -1)
            self._close_task(task, TaskEvent.fail, cmd.reason or "the executor reported failure")
        return r.Result()

    def verify(self, sender: str, cmd: s.VerifyTask) -> msgspec.Struct | Refusal:
        task = self.find_task(cmd.task_id)
        if isinstance(task, Refusal):
            return task
        if sender != task.manager and sender not in SYSTEM_SENDERS:
            return refuse(ErrorCode.not_authorized, f"only {task.manager} verifies {task.id}")
        hint = "a result is verified after the executor's inform"
        if (closed := TASK.refusal(task.state, TaskEvent.verify, task.id, hint)) is not None:
            return closed
        escrow = self.escrows.by_id[task.escrow_id or ""]
        if Decimal(str(cmd.score)) >= self.escrow_config.release_threshold:
            self.escrows.release(escrow)
            self._performance(task.winner, +1)
            self._close_task(task, TaskEvent.verify, f"verified at {cmd.score}")
        else:
            task.state = TASK.next(task.state, TaskEvent.dispute)
            self.escrows.dispute(escrow, EscrowEvent.task_dispute)
        return self.task_view(task)

    def cancel(self, sender: str, cmd: s.CancelTask) -> msgspec.Struct | Refusal:
        task = self.find_task(cmd.task_id)
        if isinstance(task, Refusal):
            return task
        if sender != task.manager and sender not in SYSTEM_SENDERS:
            return refuse(ErrorCode.not_authorized, f"only {task.manager} cancels {task.id}")
        if (late := TASK.refusal(task.state, TaskEvent.cancel, task.id, "too late")) is not None:
            return late
        if task.state == TaskState.open:
            self.ledger.void_hold(self.ledger.holds[task.hold_id])
        else:
            self.escrows.refund(self.escrows.by_id[task.escrow_id or ""])
        self._close_task(task, TaskEvent.cancel, cmd.reason or "cancelled by the manager")
        return self.task_view(task)

    def on_result_due(self, task_id: str) -> None:
        task = self.tasks.get(task_id)  # None: finished and forgotten since
        if task is not None and task.state == TaskState.awarded:
            self.escrows.refund(self.escrows.by_id[task.escrow_id or ""])
            self._performance(task.winner, -1)
            self.on_executor_failed(task.winner or "", task.manager, task.id)
            self._close_task(task, TaskEvent.expire, "no result by the deadline")

    def _performance(self, agent_id: str | None, direction: int) -> None:
        agent = self.ledger.agents.get(agent_id or "")
        if agent is None:
            return
        moved = agent.performance + direction * self.escrow_config.performance_step
        agent.performance = min(performance_max, max(performance_min, moved))

    def _close_task(self, task: Task, event: TaskEvent, reason: str) -> None:
        task.state = state = TASK.next(task.state, event)
        task.reason = reason
        self._tallies.pop(task.id, None)
        escrow = self.escrows.by_id.get(task.escrow_id or "")
        paid = fee = refunded = 0
        if escrow is not None:
            if escrow.state == EscrowState.released:
                paid, fee = escrow.amount_micro - escrow.fee_micro, escrow.fee_micro
            elif escrow.state == EscrowState.refunded:
                refunded = escrow.amount_micro
        elif state in (TaskState.unawarded, TaskState.cancelled):
            refunded = task.max_cost_micro
        self.ledger.publish(
            subjects.task_closed(task.id),
            s.TaskClosed(
                task_id=task.id,
                state=state,
                winner=task.winner,
                paid=format_micro(paid),
                fee=format_micro(fee),
                refunded=format_micro(refunded),
                reason=reason,
            ),
        )
        self._finished(task)

    # ------------------------------------------------------------------------ views

    def task_view(self, task: Task) -> s.TaskView:
        escrow = self.escrows.by_id.get(task.escrow_id or "")
        return s.TaskView(
            task_id=task.id,
            manager=task.manager,
            task_type=task.task_type,
            asset=task.asset,
            state=task.state,
            max_cost=format_micro(task.max_cost_micro),
            deadline_ms=task.deadline_ms,
            closes_at_ns=task.closes_at_ns,
            eligible=list(task.eligible),
            bids=self.bid_scores(task),
            refused=list(task.refused),
            winner=task.winner,
            escrow_id=task.escrow_id,
            escrow_state=None if escrow is None else escrow.state,
            output=task.output,
            reason=task.reason,
            payload=task.payload,
        )
