"""Properties of staking and lending over random command sequences (a Hypothesis state machine):
agents stake, unstake, lend, accept, cancel and repay while they spend, earn (commits, awards,
tasks paid by escrow), fail tasks (and are slashed) and time passes by random steps. After every
step: the sum of all balances is 0, no agent or locked account is negative, each agent's stakes
are exactly its ``@stake.<agent>`` balance (no stake spent), every owed amount is within its
terms, and a refusal changed nothing. At the end, past the longest term, every loan has ended
(repaid or defaulted, or cancelled or expired as an offer) and every unstaked stake is back;
folding the log into a fresh exchange and restoring a snapshot both give the same digest."""

from decimal import Decimal
from typing import Final

from core_support import ROSTER, ReplayedMachine
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from exchange.core.config import EconomyConfig, LendingConfig, StakingConfig
from exchange.core.staking import stake_account
from exchange.core.states import ENDED_LOAN_STATES
from protocols import commands as c
from protocols import credit as cr
from protocols import swarm as s
from protocols.ids import ADMIN, EXCHANGE
from protocols.units import NS_PER_S

# Short periods, so that locks end, coolings release, yields pay and loans fall due in a run.
LOCK_S: Final = 3600
TERM_MAX_S: Final = 4 * 3600
CONFIG: Final = EconomyConfig(
    staking=StakingConfig(lock_min_s=LOCK_S, cooling_s=1800, yield_period_s=3600),
    lending=LendingConfig(term_min_s=60, term_max_s=TERM_MAX_S, offer_ttl_s=600),
)

agents = st.sampled_from(ROSTER)
amounts = st.sampled_from(
    [Decimal(0), Decimal("0.000001"), Decimal(99), Decimal(100), Decimal("333.333333"),
     Decimal(1500), Decimal(9000), Decimal(20_000)]
)  # fmt: skip
maybe_amounts = st.one_of(st.none(), amounts)
rates = st.sampled_from([Decimal(0), Decimal("0.01"), Decimal("0.05"), Decimal("0.051")])
terms = st.sampled_from([0, 59, 60, 3600, TERM_MAX_S, TERM_MAX_S + 1])
locks = st.sampled_from([0, LOCK_S - 1, LOCK_S, 2 * LOCK_S])
picks = st.integers(min_value=0, max_value=1000)


class CreditMachine(ReplayedMachine):
    def __init__(self) -> None:
        super().__init__(CONFIG)

    def pick_loan(self, index: int) -> str:
        ids = list(self.ex.lending.loans)
        return ids[index % len(ids)] if ids else "loan-0"

    def pick_stake(self, index: int) -> str:
        ids = list(self.ex.staking.stakes)
        return ids[index % len(ids)] if ids else "stake-0"

    # ----------------------------------------------------------------------- rules

    @rule(step_s=st.sampled_from([1, 59, 600, 1800, 3599, 3600, 7200]))
    def advance(self, step_s: int) -> None:
        self.now_ns += step_s * NS_PER_S
        self.apply(EXCHANGE, c.Tick(request_id=self.rid()))

    @rule(who=agents, to=agents)
    def drain(self, who: str, to: str) -> None:
        """Leaves ``who`` just above its reserve, so that collections fall short."""
        excess = self.ex.ledger.book.balance(who) - 501 * 1_000_000
        if excess > 0 and who != to:
            amount = Decimal(excess).scaleb(-6)
            self.apply(who, c.Transfer(request_id=self.rid(), to=to, amount=amount))

    @rule(who=agents, amount=amounts)
    def earn(self, who: str, amount: Decimal) -> None:
        self.apply(ADMIN, c.Award(request_id=self.rid(), agent=who, amount=amount, source="t"))

    @rule(who=agents, amount=amounts, lock_s=locks)
    def stake(self, who: str, amount: Decimal, lock_s: int) -> None:
        self.apply(who, cr.Stake(request_id=self.rid(), amount=amount, lock_s=lock_s))

    @rule(pick=picks, by_owner=st.booleans(), who=agents)
    def unstake(self, pick: int, by_owner: bool, who: str) -> None:
        stake_id = self.pick_stake(pick)
        record = self.ex.staking.stakes.get(stake_id)
        sender = record.agent if by_owner and record is not None else who
        self.apply(sender, cr.Unstake(request_id=self.rid(), stake_id=stake_id))

    @rule(
        lender=agents,
        borrower=agents,
        principal=amounts,
        rate=rates,
        term_s=terms,
        collateral=st.sampled_from([Decimal(0), Decimal(50), Decimal(9000)]),
    )
    def offer(
        self,
        lender: str,
        borrower: str,
        principal: Decimal,
        rate: Decimal,
        term_s: int,
        collateral: Decimal,
    ) -> None:
        command = cr.OfferLoan(
            request_id=self.rid(),
            borrower=borrower,
            principal=principal,
            rate_per_day=rate,
            term_s=term_s,
            collateral=collateral,
        )
        self.apply(lender, command)

    @rule(pick=picks, by_borrower=st.booleans(), who=agents)
    def accept(self, pick: int, by_borrower: bool, who: str) -> None:
        loan_id = self.pick_loan(pick)
        loan = self.ex.lending.loans.get(loan_id)
        sender = loan.borrower if by_borrower and loan is not None else who
        self.apply(sender, cr.AcceptLoan(request_id=self.rid(), loan_id=loan_id))

    @rule(pick=picks, who=agents)
    def cancel(self, pick: int, who: str) -> None:
        self.apply(who, cr.CancelLoan(request_id=self.rid(), loan_id=self.pick_loan(pick)))

    @rule(pick=picks, by_borrower=st.booleans(), who=agents, amount=maybe_amounts)
    def repay(self, pick: int, by_borrower: bool, who: str, amount: Decimal | None) -> None:
        loan_id = self.pick_loan(pick)
        loan = self.ex.lending.loans.get(loan_id)
        sender = loan.borrower if by_borrower and loan is not None else who
        self.apply(sender, cr.RepayLoan(request_id=self.rid(), loan_id=loan_id, amount=amount))

    @rule(
        manager=agents,
        executor=agents,
        staker=st.booleans(),
        outcome=st.sampled_from(["miss", "lose", "win"]),
    )
    def task(self, manager: str, executor: str, staker: bool, outcome: str) -> None:
        """An auction won by ``executor`` (a staker, if asked and there is one): it misses the
        deadline, loses a dispute, or is paid (which pays ``@fees`` and is an earning)."""
        stakers = sorted({r.agent for r in self.ex.staking.stakes.values()})
        if staker and stakers:
            executor = stakers[ROSTER.index(manager) % len(stakers)]
        if manager == executor:
            return
        announce = s.AnnounceTask(
            request_id=self.rid(), task_type="t", asset="a", deadline_ms=1000, max_cost=Decimal(50)
        )
        reply = self.apply(manager, announce)
        if not reply.ok:
            return
        task_id = self.ex.market.tasks[max(self.ex.market.tasks, key=lambda t: int(t[5:]))].id
        bid = s.Bid(cost=Decimal(40), time_ms=500, confidence=0.5)
        self.apply(executor, s.SubmitBid(request_id=self.rid(), task_id=task_id, bid=bid))
        self.now_ns += 3 * NS_PER_S
        self.apply(EXCHANGE, c.Tick(request_id=self.rid()))
        if outcome == "miss":
            self.now_ns += 61 * NS_PER_S
            self.apply(EXCHANGE, c.Tick(request_id=self.rid()))
            return
        result = s.SubmitResult(request_id=self.rid(), task_id=task_id, success=True, output={})
        self.apply(executor, result)
        score = 0.9 if outcome == "win" else 0.1
        self.apply(manager, s.VerifyTask(request_id=self.rid(), task_id=task_id, score=score))
        escrow_id = self.ex.market.tasks[task_id].escrow_id
        if outcome == "lose" and escrow_id is not None:
            resolve = s.ResolveEscrow(request_id=self.rid(), escrow_id=escrow_id, outcome="refund")
            self.apply(ADMIN, resolve)

    # ----------------------------------------------------------------------- invariants

    @invariant()
    def conserved_and_locked(self) -> None:
        self.ex.check_invariants()  # conservation, no negative, stakes = @stake.<agent>, loans
        for loan in self.ex.lending.loans.values():
            assert 0 <= loan.owed_micro <= loan.principal_micro + loan.interest_micro

    @precondition(lambda self: self.ex.lending.loans or self.ex.staking.stakes)
    @rule()
    def everything_ends(self) -> None:
        """Past the longest term every loan has ended and every unstaked stake is back; the log
        folds into the same state, and so does a snapshot."""
        self.now_ns += (TERM_MAX_S + 600 + 1800 + 1) * NS_PER_S
        self.apply(EXCHANGE, c.Tick(request_id=self.rid()))
        for loan in self.ex.lending.loans.values():
            assert loan.state in ENDED_LOAN_STATES, (loan.id, loan.state)
            event(f"a loan ended {loan.state}")
        assert all(r.state == "locked" for r in self.ex.staking.stakes.values())
        book = self.ex.ledger.book
        for agent in ROSTER:
            staked = sum(r.amount_micro for r in self.ex.staking.of(agent))
            assert book.balance(stake_account(agent)) == staked
        if self.ex.staking.slashed_micro:
            event("a stake was slashed")
        if self.ex.staking.yield_paid_micro:
            event("a yield was paid")
        self.check_replay()


TestCredit = CreditMachine.TestCase
TestCredit.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
