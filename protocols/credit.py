"""Staking and lending (docs/economy.md, Staking and Lending): an agent locks tokens to back its
word, and agents lend each other tokens for a term at an interest rate.

Commands on ``exchange.cmd.<sender>.<verb>``, queries on ``exchange.query.<verb>``:

- ``stake``: the sender locks an amount for ``lock_s`` seconds; ``stake.unstake`` starts its
  cooling once the lock is over.
- ``loan.offer``: the sender (the lender) offers a loan; its principal is held at once.
- ``loan.accept``: the borrower accepts it (its collateral is held, the principal paid to it).
- ``loan.cancel``: either party withdraws an offer not yet accepted.
- ``loan.repay``: the borrower repays some or all of what it owes.
"""

from decimal import Decimal
from typing import Annotated, Final

import msgspec

from protocols.commands import StrictCommand
from protocols.ids import AgentRef, Name, Text
from protocols.queries import Query
from protocols.results import Result

# Bounds of the wire; the economy's own bounds (config) are checked by the rules, with a refusal
# that names them (``parameter_out_of_bounds``), so a term of 0 is a refusal, not a bad message.
Seconds = Annotated[int, msgspec.Meta(ge=0, le=10 * 365 * 86_400)]

STAKE_STATES: Final = ("locked", "cooling", "released")
StakeStateName = Annotated[
    str,
    msgspec.Meta(description="the stake's state", extra_json_schema={"enum": list(STAKE_STATES)}),
]
LOAN_STATES: Final = ("offered", "active", "repaid", "defaulted", "cancelled", "expired")
LoanStateName = Annotated[
    str,
    msgspec.Meta(description="the loan's state", extra_json_schema={"enum": list(LOAN_STATES)}),
]


class Stake(StrictCommand, frozen=True, kw_only=True):
    """Locks ``amount`` tokens of the sender's balance in ``@stake.<sender>`` for ``lock_s``."""

    amount: Decimal
    lock_s: Seconds


class Unstake(StrictCommand, frozen=True, kw_only=True):
    """Starts the cooling of one of the sender's stakes, once its lock is over; at the end of the
    cooling what is left of it returns to the sender's balance."""

    stake_id: Name


class OfferLoan(StrictCommand, frozen=True, kw_only=True):
    """The sender offers ``borrower`` a loan of ``principal`` at simple interest ``rate_per_day``
    for ``term_s`` seconds, against ``collateral`` of the borrower's (0: none). The principal is
    held from the sender until the borrower accepts, either cancels, or the offer lapses."""

    borrower: AgentRef
    principal: Decimal
    rate_per_day: Decimal
    term_s: Seconds
    collateral: Decimal = Decimal(0)


class AcceptLoan(StrictCommand, frozen=True, kw_only=True):
    """The borrower accepts an offered loan: its collateral is held and the principal paid to it."""

    loan_id: Name


class CancelLoan(StrictCommand, frozen=True, kw_only=True):
    """The lender or the borrower withdraws an offered loan; the principal returns to the lender."""

    loan_id: Name
    reason: Text = ""


class RepayLoan(StrictCommand, frozen=True, kw_only=True):
    """The borrower pays its lender ``amount`` of what it owes (all of it if absent)."""

    loan_id: Name
    amount: Decimal | None = None


class StakesQuery(Query, frozen=True, kw_only=True):
    agent: AgentRef


class LoanQuery(Query, frozen=True, kw_only=True):
    loan_id: Name


class LoansQuery(Query, frozen=True, kw_only=True):
    """The loans kept, newest last; with ``agent``, those it lent or borrowed."""

    agent: AgentRef | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class StakeView(Result, frozen=True, kw_only=True):
    """A stake. ``cooling_until_ns`` is set once it is cooling."""

    stake_id: str
    agent: str
    amount: str
    state: StakeStateName
    staked_at_ns: int
    locked_until_ns: int
    cooling_until_ns: int | None


class StakesResult(Result, frozen=True, kw_only=True):
    """An agent's stakes, its active stake (the locked ones) and what its ballots weigh now."""

    agent: str
    active: str
    total: str
    vote_weight: str
    stakes: list[StakeView]


class LoanView(Result, frozen=True, kw_only=True):
    """A loan. ``owed`` is what the borrower still owes (principal + interest − paid);
    ``due_at_ns`` is set once accepted."""

    loan_id: str
    lender: str
    borrower: str
    principal: str
    rate_per_day: str
    term_s: int
    interest: str
    collateral: str
    state: LoanStateName
    owed: str
    paid: str
    collateral_taken: str
    offer_expires_at_ns: int
    due_at_ns: int | None


class LoansResult(Result, frozen=True, kw_only=True):
    loans: list[LoanView]
