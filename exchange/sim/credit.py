"""Staking, lending, futures and hired tasks in a simulated day: the scenario's ``[credit]``
plans as timed commands, and what each agent's credit (and each task) came to
(docs/simulation.md, Credit).

This module owns turning ``CreditSettings`` into events (with the hourly ticks that let the
exchange's timers fire on time) and reading an agent's credit and a task's end off the ledger's
postings, publications and state. It decides nothing economic: stakes, loans, futures and the
task market's announce, bid, report and verify are the ledger's commands, refused or applied by
its rules; fees, yields and slashes are what those rules then post.
"""

from collections.abc import Iterator
from typing import Final

from exchange.core.machine import Exchange
from exchange.sim.plan import CreditAction
from exchange.sim.result import CreditOutcome, TaskOutcome
from exchange.sim.scenario import CreditSettings, TaskPlan
from protocols import commands as c
from protocols import credit as cr
from protocols import futures as fu
from protocols import swarm as s
from protocols.amounts import micro_of_text
from protocols.ids import EXCHANGE
from protocols.units import MS_PER_HOUR, NS_PER_HOUR, NS_PER_MS, NS_PER_S, S_PER_HOUR

__all__ = ["credit_events", "credit_outcome", "task_outcomes"]

# Kinds of postings an agent's credit is read from (the ledger's own names).
REPAY_KINDS: Final = frozenset({"loan.repay", "loan.collect", "loan.recovery"})
# A hired task's auction is open this long; the engine then ticks the exchange, whose closing
# timer awards the task to its one bidder. Short, so the award is at once, and well within the
# hour (the plans are in hours).
task_bid_window_ms: Final = 1_000
# The market trades work on an asset; nothing in the simulated day depends on which.
TASK_ASSET: Final = "sim"


def credit_events(
    credit: CreditSettings, *, start_ns: int, hours: int
) -> Iterator[tuple[int, CreditAction]]:
    """(at_ns, action) of every credit command within the run, and a tick at every hour."""
    if not credit.enabled:
        return
    for hour in range(1, hours + 1):
        # At the end of each hour, a millisecond before the next begins (the run's last one
        # included), so the ticks fall inside the run.
        at_ns = start_ns + hour * NS_PER_HOUR - NS_PER_MS
        yield at_ns, CreditAction(EXCHANGE, "tick", c.Tick(request_id=f"tick-{hour}"))
    for index, stake in enumerate(credit.stakes):
        at_ns = start_ns + stake.at_hour * NS_PER_HOUR
        lock_s = stake.lock_hours * S_PER_HOUR
        command = cr.Stake(request_id=f"stake-{index}", amount=stake.amount, lock_s=lock_s)
        yield at_ns, CreditAction(stake.agent, "stake", command)
        if stake.unstake:
            # Its id is the ledger's; the engine fills it in when the stake is made.
            unstake = cr.Unstake(request_id=f"unstake-{index}", stake_id=f"?stake-{index}")
            yield at_ns + lock_s * NS_PER_S, CreditAction(stake.agent, "stake.unstake", unstake)
    for index, loan in enumerate(credit.loans):
        at_ns = start_ns + loan.at_hour * NS_PER_HOUR
        offer = cr.OfferLoan(
            request_id=f"loan-{index}",
            borrower=loan.borrower,
            principal=loan.principal,
            rate_per_day=loan.rate_per_day,
            term_s=loan.term_hours * S_PER_HOUR,
            collateral=loan.collateral,
        )
        yield at_ns, CreditAction(loan.lender, "loan.offer", offer)
        accept = cr.AcceptLoan(request_id=f"accept-{index}", loan_id=f"?loan-{index}")
        yield at_ns + NS_PER_MS, CreditAction(loan.borrower, "loan.accept", accept)
        if loan.repay_at_hour is not None:
            repay = cr.RepayLoan(request_id=f"repay-{index}", loan_id=f"?loan-{index}")
            at_repay = start_ns + loan.repay_at_hour * NS_PER_HOUR
            yield at_repay, CreditAction(loan.borrower, "loan.repay", repay)
    for index, future in enumerate(credit.futures):
        buy = fu.BuyFuture(
            request_id=f"future-{index}",
            model=future.model,
            tokens=future.tokens,
            expires_in_s=future.expires_hours * S_PER_HOUR,
        )
        at_ns = start_ns + future.at_hour * NS_PER_HOUR
        yield at_ns, CreditAction(future.agent, "future.buy", buy)
    for index, task in enumerate(credit.tasks):
        yield from _task_events(index, task, start_ns)


def _task_events(index: int, task: TaskPlan, start_ns: int) -> Iterator[tuple[int, CreditAction]]:
    """A hired task through the real market (docs/economy.md, Contract Net): the manager
    announces it (its price held in escrow), the executor bids the price and the whole deadline,
    and a tick at the window's close lets the exchange award it. ``delivered``: at the deadline
    the executor reports success and the manager verifies it (score 1), which releases the escrow
    less the exchange's fee. ``missed``: nothing more is sent; the exchange's result deadline
    (award + deadline + its result grace) refunds the manager and slashes the executor, fired by
    the next command or hourly tick."""
    task_id = f"?task-{index}"  # the ledger's id, filled in by the engine once announced
    at_ns = start_ns + task.at_hour * NS_PER_HOUR
    deadline_ms = task.deadline_hours * MS_PER_HOUR
    announce = s.AnnounceTask(
        request_id=f"task-{index}",
        task_type=task.task_type,
        asset=TASK_ASSET,
        deadline_ms=deadline_ms,
        max_cost=task.price,
        bid_window_ms=task_bid_window_ms,
    )
    yield at_ns, CreditAction(task.manager, "task.announce", announce)
    bid = s.Bid(cost=task.price, time_ms=deadline_ms, confidence=1.0)
    propose = s.SubmitBid(request_id=f"bid-{index}", task_id=task_id, bid=bid)
    yield at_ns + NS_PER_MS, CreditAction(task.executor, "task.propose", propose)
    closes_ns = at_ns + task_bid_window_ms * NS_PER_MS
    yield closes_ns, CreditAction(EXCHANGE, "tick", c.Tick(request_id=f"award-{index}"))
    if task.outcome == "delivered":
        done_ns = at_ns + deadline_ms * NS_PER_MS
        report = s.SubmitResult(request_id=f"result-{index}", task_id=task_id, success=True)
        yield done_ns, CreditAction(task.executor, "task.report", report)
        verify = s.VerifyTask(request_id=f"verify-{index}", task_id=task_id, score=1.0)
        yield done_ns + NS_PER_MS, CreditAction(task.manager, "task.verify", verify)


def credit_outcome(
    agent: str, kinds: dict[str, int], slashed_micro: int, exchange: Exchange
) -> CreditOutcome:
    """``kinds``: the agent's postings summed by kind (credits positive, debits negative).
    ``slashed_micro``: what its stakes lost to slashes, posted from ``@stake.<agent>``, not from
    its balance, so not in ``kinds`` (what a slash paid it, as a task's manager, is)."""
    lending = exchange.lending
    lent = sum(
        loan.principal_micro
        for loan in lending.loans.values()
        if loan.lender == agent and loan.due_at_ns is not None
    )
    lent_out = lending.lent_micro(agent)
    return CreditOutcome(
        agent=agent,
        staked_micro=exchange.staking.total_micro(agent),
        yield_micro=kinds.get("stake.yield", 0),
        slashed_micro=slashed_micro,
        borrowed_micro=kinds.get("loan.principal", 0),
        repaid_micro=-sum(v for k, v in kinds.items() if k in REPAY_KINDS and v < 0),
        lent_micro=lent,
        received_micro=sum(v for k, v in kinds.items() if k in REPAY_KINDS and v > 0)
        + kinds.get("loan.collateral", 0),
        collateral_lost_micro=sum(
            loan.collateral_taken_micro for loan in lending.loans.values() if loan.borrower == agent
        ),
        owed_micro=lending.owed_micro(agent),
        lent_out_micro=lent_out,
        defaults=lending.defaults.get(agent, 0),
        futures_net_micro=sum(v for k, v in kinds.items() if k.startswith("future.")),
        slash_received_micro=kinds.get("stake.slash", 0),
    )


def task_outcomes(
    plans: list[TaskPlan],
    ids: dict[str, str],
    closed: dict[str, s.TaskClosed],
    slashed_micro: dict[str, int],
    exchange: Exchange,
) -> list[TaskOutcome]:
    """Each planned task as the market ended it. ``ids``: the engine's placeholders to the
    ledger's ids (``?task-<n>`` -> ``task-7``); ``closed``: the market's ``TaskClosed``
    announcements by task id (what it paid, kept as fee and refunded); ``slashed_micro``: the
    executor's stake slashed to the manager, by task id."""
    rows: list[TaskOutcome] = []
    for index, plan in enumerate(plans):
        task_id = ids.get(f"?task-{index}", "")
        end = closed.get(task_id)
        # Not closed: refused when announced (no id), or still running when the run ended.
        task = exchange.market.tasks.get(task_id)
        state = str(end.state) if end is not None else "" if task is None else str(task.state)
        rows.append(
            TaskOutcome(
                task_id=task_id,
                manager=plan.manager,
                executor=plan.executor,
                task_type=plan.task_type,
                planned=plan.outcome,
                state=state,
                price_micro=plan.price_micro,
                paid_micro=0 if end is None else micro_of_text(end.paid),
                fee_micro=0 if end is None else micro_of_text(end.fee),
                refunded_micro=0 if end is None else micro_of_text(end.refunded),
                slashed_micro=slashed_micro.get(task_id, 0),
            )
        )
    return rows
