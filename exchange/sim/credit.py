"""Staking, lending and futures in a simulated day: the scenario's ``[credit]`` plans as timed
commands, and what each agent's credit came to (docs/simulation.md, Credit).

This module owns turning ``CreditSettings`` into events (with the hourly ticks that let the
exchange's timers fire on time) and reading an agent's credit off the ledger's postings and
state. It decides nothing economic: stakes, loans and futures are the ledger's commands, refused
or applied by its rules.
"""

from collections.abc import Iterator
from typing import Final

from exchange.core.machine import Exchange
from exchange.sim.plan import CreditAction
from exchange.sim.result import CreditOutcome
from exchange.sim.scenario import CreditSettings
from protocols import commands as c
from protocols import credit as cr
from protocols import futures as fu
from protocols.ids import EXCHANGE
from protocols.units import NS_PER_HOUR, NS_PER_MS, NS_PER_S, S_PER_HOUR

__all__ = ["credit_events", "credit_outcome"]

# Kinds of postings an agent's credit is read from (the ledger's own names).
REPAY_KINDS: Final = frozenset({"loan.repay", "loan.collect", "loan.recovery"})


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


def credit_outcome(agent: str, kinds: dict[str, int], exchange: Exchange) -> CreditOutcome:
    """``kinds``: the agent's postings summed by kind (credits positive, debits negative)."""
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
        slashed_micro=-kinds.get("stake.slash", 0),
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
    )
