"""Lending (docs/economy.md, Lending): one agent lends another tokens for a term at simple interest,
optionally against collateral.

Owns: the loans and their lifecycle (``LOAN`` in states.py: offered → active → repaid or
defaulted; offered → cancelled or expired), the collection at the due time, the default (the
collateral to the lender, the borrower's record marked) and the recovery from later earnings.
Must not: move money except through the ledger (holds for the offered principal and the
collateral, postings for repayments), or let a loan start without both parties: the lender's
offer holds its principal, and only the borrower's ``loan.accept`` takes it.
"""

from collections import deque
from collections.abc import Iterator
from decimal import Decimal
from typing import Final

import msgspec

from exchange.core.config import LendingConfig
from exchange.core.ledger import Agent, Ledger
from exchange.core.market import performance_min
from exchange.core.money import round_half_even, scale
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import keep_newest, kept_note
from exchange.core.states import LOAN, LoanEvent, LoanState
from protocols import credit as cr
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.ids import SYSTEM_SENDERS
from protocols.units import NS_PER_S

S_PER_DAY: Final = 86_400
# States in which a loan's debt is counted (owed by the borrower, lent by the lender).
_OWING: Final = frozenset({LoanState.active, LoanState.defaulted})


class Loan(msgspec.Struct):
    id: str
    lender: str
    borrower: str
    principal_micro: int
    rate_per_day: str
    term_s: int
    interest_micro: int
    collateral_micro: int
    offer_hold: str
    offer_expires_at_ns: int
    state: LoanState = LoanState.offered
    collateral_hold: str | None = None
    due_at_ns: int | None = None
    # What the borrower paid (repayments, the due collection, recoveries) and what its
    # collateral paid the lender.
    paid_micro: int = 0
    collateral_taken_micro: int = 0

    @property
    def owed_micro(self) -> int:
        if self.state not in _OWING:
            return 0
        return (
            self.principal_micro
            + self.interest_micro
            - self.paid_micro
            - self.collateral_taken_micro
        )


class LendingState(msgspec.Struct, frozen=True, kw_only=True):
    """The lending part of a snapshot: ``LendingState()`` for an exchange that never lent, which
    the digest then leaves out (machine.py)."""

    loans: list[Loan] = []
    ended_loans: list[str] = []
    defaults: dict[str, int] = {}


class Lending:
    """The lending rules, installed into a ledger."""

    # Rebuilt from the loans on restore: borrower → its defaulted loans still owed, oldest
    # first; and agent → the loans it is a party to that have not ended (a balance query reads
    # those only, not every loan kept).
    DERIVED: Final = frozenset({"_recovering", "_open"})

    def __init__(self, ledger: Ledger, config: LendingConfig) -> None:
        self.ledger = ledger
        self.config = config
        self.loans: dict[str, Loan] = {}
        self.ended_loans: deque[str] = deque()
        self.defaults: dict[str, int] = {}
        self._recovering: dict[str, list[str]] = {}
        self._open: dict[str, dict[str, None]] = {}

    def snapshot(self) -> LendingState:
        return LendingState(
            loans=list(self.loans.values()),
            ended_loans=list(self.ended_loans),
            defaults=dict(self.defaults),
        )

    def restore(self, state: LendingState) -> None:
        self.loans = {loan.id: loan for loan in state.loans}
        self.ended_loans = deque(state.ended_loans)
        self.defaults = dict(state.defaults)
        ended = set(self.ended_loans)
        for loan in self.loans.values():
            if loan.id not in ended:
                self._opened(loan)
            if loan.state == LoanState.defaulted and loan.owed_micro:
                self._recovering.setdefault(loan.borrower, []).append(loan.id)

    # ------------------------------------------------------------------------ reading

    def _open_loans(self, agent_id: str) -> Iterator[Loan]:
        return (self.loans[loan_id] for loan_id in self._open.get(agent_id, ()))

    def owed_micro(self, agent_id: str) -> int:
        return sum(x.owed_micro for x in self._open_loans(agent_id) if x.borrower == agent_id)

    def lent_micro(self, agent_id: str) -> int:
        """What the agent has out: owed to it, and principal it has offered."""
        return sum(
            x.owed_micro + (x.principal_micro if x.state == LoanState.offered else 0)
            for x in self._open_loans(agent_id)
            if x.lender == agent_id
        )

    def find(self, loan_id: str) -> Loan | Refusal:
        loan = self.loans.get(loan_id)
        if loan is not None:
            return loan
        return refuse(
            ErrorCode.unknown_loan,
            f"no loan {loan_id!r}; list loans with `exchange loans` "
            + kept_note(self.config.ended_loans_kept, "ended loans"),
        )

    # ------------------------------------------------------------------------ commands

    def offer(self, sender: str, cmd: cr.OfferLoan) -> msgspec.Struct | Refusal:
        ledger, config = self.ledger, self.config
        lender = ledger.acting_agent(sender)
        if isinstance(lender, Refusal):
            return lender
        borrower = ledger.agent(cmd.borrower)
        if isinstance(borrower, Refusal):
            return borrower
        if borrower.id == lender.id:
            return refuse(ErrorCode.self_dealing, "an agent cannot lend to itself")
        principal = ledger.amount(cmd.principal, "principal")
        if isinstance(principal, Refusal):
            return principal
        rate = cmd.rate_per_day
        if not rate.is_finite() or not 0 <= rate <= config.rate_max_per_day:
            return refuse(
                ErrorCode.parameter_out_of_bounds,
                f"rate_per_day is 0 to {config.rate_max_per_day}, got {rate}",
                path="$.rate_per_day",
            )
        if not config.term_min_s <= cmd.term_s <= config.term_max_s:
            return refuse(
                ErrorCode.parameter_out_of_bounds,
                f"term_s is {config.term_min_s} to {config.term_max_s} seconds, got {cmd.term_s}",
                path="$.term_s",
            )
        collateral = 0
        if cmd.collateral != 0:
            checked = ledger.amount(cmd.collateral, "collateral")
            if isinstance(checked, Refusal):
                return checked
            collateral = checked
        interest = round_half_even(Decimal(principal) * rate * cmd.term_s / S_PER_DAY)
        if (denied := ledger.check_debit(lender, principal)) is not None:
            return denied
        now_ns = ledger.book.now_ns
        hold = ledger.hold(lender.id, principal, "loan", expires_at_ns=None)
        loan = Loan(
            id=ledger.new_id("loan"),
            lender=lender.id,
            borrower=borrower.id,
            principal_micro=principal,
            rate_per_day=str(rate),
            term_s=cmd.term_s,
            interest_micro=interest,
            collateral_micro=collateral,
            offer_hold=hold.id,
            offer_expires_at_ns=now_ns + config.offer_ttl_s * NS_PER_S,
        )
        self.loans[loan.id] = loan
        self._opened(loan)
        ledger.add_timer(loan.offer_expires_at_ns, "loan_offer_expiry", loan.id)
        return self.view(loan)

    def accept(self, sender: str, cmd: cr.AcceptLoan) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        found = self._borrowers_loan(sender, cmd.loan_id, LoanEvent.accept, "is offered to")
        if isinstance(found, Refusal):
            return found
        borrower, loan = found
        if loan.collateral_micro:
            denied = ledger.check_debit(borrower, loan.collateral_micro)
            if denied is not None:
                return denied
            collateral = ledger.hold(
                borrower.id, loan.collateral_micro, "loan.collateral", expires_at_ns=None
            )
            loan.collateral_hold = collateral.id
        ledger.post_hold(
            ledger.holds[loan.offer_hold], borrower.id, loan.principal_micro, "loan.principal"
        )
        loan.state = LOAN.next(loan.state, LoanEvent.accept)
        loan.due_at_ns = ledger.book.now_ns + loan.term_s * NS_PER_S
        ledger.add_timer(loan.due_at_ns, "loan_due", loan.id)
        return self.view(loan)

    def cancel(self, sender: str, cmd: cr.CancelLoan) -> msgspec.Struct | Refusal:
        loan = self.find(cmd.loan_id)
        if isinstance(loan, Refusal):
            return loan
        if sender not in (loan.lender, loan.borrower) and sender not in SYSTEM_SENDERS:
            return refuse(
                ErrorCode.not_authorized, f"only {loan.lender} or {loan.borrower} cancel {loan.id}"
            )
        if (closed := LOAN.refusal(loan.state, LoanEvent.cancel, loan.id)) is not None:
            return closed
        self._withdraw(loan, LoanEvent.cancel)
        return self.view(loan)

    def repay(self, sender: str, cmd: cr.RepayLoan) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        found = self._borrowers_loan(sender, cmd.loan_id, LoanEvent.repay, "is owed by")
        if isinstance(found, Refusal):
            return found
        borrower, loan = found
        owed = loan.owed_micro
        if not owed:
            return refuse(ErrorCode.loan_closed, f"{loan.id} is {loan.state} and owes nothing")
        amount = owed
        if cmd.amount is not None:
            asked = ledger.amount(cmd.amount, "amount")
            if isinstance(asked, Refusal):
                return asked
            amount = min(asked, owed)
        if (denied := ledger.check_debit(borrower, amount)) is not None:
            return denied
        self._pay(loan, amount, "loan.repay")
        return self.view(loan)

    def _borrowers_loan(
        self, sender: str, loan_id: str, event: LoanEvent, relation: str
    ) -> tuple[Agent, Loan] | Refusal:
        """The acting borrower and its loan, if the loan is the sender's and may take ``event``
        (``relation`` words the refusal of anyone else: "is offered to", "is owed by")."""
        borrower = self.ledger.acting_agent(sender)
        if isinstance(borrower, Refusal):
            return borrower
        loan = self.find(loan_id)
        if isinstance(loan, Refusal):
            return loan
        if loan.borrower != borrower.id:
            return refuse(ErrorCode.not_authorized, f"{loan.id} {relation} {loan.borrower}")
        if (closed := LOAN.refusal(loan.state, event, loan.id)) is not None:
            return closed
        return borrower, loan

    # ------------------------------------------------------------------------ timers and hooks

    def on_offer_expiry(self, loan_id: str) -> None:
        loan = self.loans.get(loan_id)
        if loan is not None and loan.state == LoanState.offered:
            self._withdraw(loan, LoanEvent.lapse)

    def on_due(self, loan_id: str) -> None:
        """Collects what the borrower can pay above its reserve; the rest is a default."""
        ledger = self.ledger
        loan = self.loans.get(loan_id)
        if loan is None or loan.state != LoanState.active:
            return
        borrower = ledger.agents[loan.borrower]
        free = ledger.book.balance(borrower.id) - borrower.limits.reserve_micro
        collect = min(loan.owed_micro, max(0, free))
        if collect:
            self._pay(loan, collect, "loan.collect")
        if loan.state != LoanState.active:
            return  # repaid
        loan.state = LOAN.next(loan.state, LoanEvent.default)
        owed = loan.owed_micro
        if loan.collateral_hold is not None:
            hold = ledger.holds[loan.collateral_hold]
            take = min(hold.amount_micro, owed)
            ledger.post_hold(hold, loan.lender, take, "loan.collateral")
            loan.collateral_taken_micro = take
        borrower.performance = max(
            performance_min, borrower.performance - self.config.default_penalty
        )
        self.defaults[borrower.id] = self.defaults.get(borrower.id, 0) + 1
        if loan.owed_micro:
            self._recovering.setdefault(borrower.id, []).append(loan.id)
        else:
            self._ended(loan)

    def recover(self, agent: Agent, earned_micro: int) -> None:
        """The ledger's earnings hook: ``recovery_share`` of an earning of a borrower in default
        goes to its lenders, oldest defaulted loan first, up to what is owed."""
        queue = self._recovering.get(agent.id)
        if not queue:
            return
        budget = scale(earned_micro, self.config.recovery_share)
        while budget and queue:
            loan = self.loans[queue[0]]
            pay = min(budget, loan.owed_micro)
            self._pay(loan, pay, "loan.recovery")
            budget -= pay

    # ------------------------------------------------------------------------ moving money

    def _pay(self, loan: Loan, amount_micro: int, kind: str) -> None:
        """The borrower pays the lender ``amount_micro`` (> 0, at most owed)."""
        ledger = self.ledger
        assert 0 < amount_micro <= loan.owed_micro, (amount_micro, loan)
        ledger.book.post(loan.borrower, loan.lender, amount_micro, kind, loan.id)
        loan.paid_micro += amount_micro
        loan.state = LOAN.next(loan.state, LoanEvent.repay)
        if loan.owed_micro:
            return
        loan.state = LOAN.next(loan.state, LoanEvent.settle)
        if loan.collateral_hold is not None and loan.state == LoanState.repaid:
            ledger.void_hold(ledger.holds[loan.collateral_hold])
        queue = self._recovering.get(loan.borrower)
        if queue and loan.id in queue:
            queue.remove(loan.id)
            if not queue:
                del self._recovering[loan.borrower]
        self._ended(loan)

    def _withdraw(self, loan: Loan, event: LoanEvent) -> None:
        self.ledger.void_hold(self.ledger.holds[loan.offer_hold])
        loan.state = LOAN.next(loan.state, event)
        self._ended(loan)

    def _opened(self, loan: Loan) -> None:
        for party in (loan.lender, loan.borrower):
            self._open.setdefault(party, {})[loan.id] = None

    def _ended(self, loan: Loan) -> None:
        for party in (loan.lender, loan.borrower):
            still = self._open[party]
            del still[loan.id]
            if not still:
                del self._open[party]
        keep_newest(self.ended_loans, loan.id, self.config.ended_loans_kept, self._forget)

    def _forget(self, loan_id: str) -> None:
        loan = self.loans.pop(loan_id)
        for hold_id in (loan.offer_hold, loan.collateral_hold):
            if hold_id is not None:
                self.ledger.forget_hold(hold_id)

    # ------------------------------------------------------------------------ views

    def view(self, loan: Loan) -> cr.LoanView:
        return cr.LoanView(
            loan_id=loan.id,
            lender=loan.lender,
            borrower=loan.borrower,
            principal=format_micro(loan.principal_micro),
            rate_per_day=loan.rate_per_day,
            term_s=loan.term_s,
            interest=format_micro(loan.interest_micro),
            collateral=format_micro(loan.collateral_micro),
            state=loan.state,
            owed=format_micro(loan.owed_micro),
            paid=format_micro(loan.paid_micro),
            collateral_taken=format_micro(loan.collateral_taken_micro),
            offer_expires_at_ns=loan.offer_expires_at_ns,
            due_at_ns=loan.due_at_ns,
        )

    def loans_result(self, agent_id: str | None, limit: int) -> cr.LoansResult:
        loans = [
            x for x in self.loans.values() if agent_id is None or agent_id in (x.lender, x.borrower)
        ]
        return cr.LoansResult(loans=[self.view(x) for x in loans[-limit:]])

    def check(self) -> None:
        """Every loan's debt is within what it could be; an offered loan's principal is held."""
        for loan in self.loans.values():
            assert loan.owed_micro >= 0, loan
            if loan.state == LoanState.offered:
                assert self.ledger.holds[loan.offer_hold].state == "open", loan
