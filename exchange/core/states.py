"""The state machines of the rules: each a set of states, the events that move them, and one
table from (state, event) to the next state, the way h11 keeps its connection states.

Owns: ``TaskState``, ``EscrowState``, ``HoldState``, ``ProposalState``, ``ActionState``, their
events and their tables, and ``Machine``, the one function that moves a state or refuses the move.
A rule never assigns a state string: it asks its machine for ``next(state, event)``, which
asserts the move is in the table (a move a rule makes on its own), or first ``refusal(...)``,
which refuses a move a command asked for with the machine's code. So an illegal transition is
either a refusal with a code or a broken invariant (``internal_error``), never a silent state.

States are ``StrEnum``s: they encode to the same strings as before, so replies, snapshots and
digests are unchanged.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Generic, TypeVar

from exchange.core.refusals import Refusal, refuse
from protocols.errors import ErrorCode

S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class Machine(Generic[S, E]):
    """One state machine: its table, and the code that refuses a move a command asked for."""

    name: str
    table: Mapping[tuple[S, E], S]
    refused_with: ErrorCode
    # Events whose refusal has a code of its own (an arbiter's resolve needs a dispute).
    event_codes: Mapping[E, ErrorCode] = field(default_factory=dict)

    def next(self, state: S, event: E) -> S:
        """The state after ``event``. A move not in the table is a broken invariant."""
        moved = self.table.get((state, event))
        assert moved is not None, f"a {self.name} that is {state} cannot take {event}"
        return moved

    def refusal(self, state: S, event: E, subject: str, hint: str = "") -> Refusal | None:
        """None if ``event`` may happen in ``state``, else the refusal that says why not."""
        if (state, event) in self.table:
            return None
        allowed = sorted(s.value for s, e in self.table if e == event)
        message = f"{subject} is {state}; {event} needs it {' or '.join(allowed)}"
        code = self.event_codes.get(event, self.refused_with)
        return refuse(code, message + (f"; {hint}" if hint else ""))

    def states(self) -> frozenset[S]:
        return frozenset(s for pair in self.table.items() for s in (pair[0][0], pair[1]))


# ----------------------------------------------------------------------------- tasks


class TaskState(StrEnum):
    open = "open"
    awarded = "awarded"
    informed = "informed"
    disputed = "disputed"
    completed = "completed"
    failed = "failed"
    expired = "expired"
    refunded = "refunded"
    unawarded = "unawarded"
    cancelled = "cancelled"


class TaskEvent(StrEnum):
    award = "award"
    no_bids = "no_bids"
    cancel = "cancel"
    inform = "inform"
    fail = "fail"
    expire = "expire"
    verify = "verify"  # the manager's score releases
    dispute = "dispute"  # the manager's score disputes
    release = "release"  # the escrow was released without a verify (silence, arbitration)
    refund = "refund"  # the escrow was refunded (its deadline, arbitration)


_T, _TE = TaskState, TaskEvent
TASK: Final[Machine[TaskState, TaskEvent]] = Machine(
    "task",
    {
        (_T.open, _TE.award): _T.awarded,
        (_T.open, _TE.no_bids): _T.unawarded,
        (_T.open, _TE.cancel): _T.cancelled,
        (_T.awarded, _TE.cancel): _T.cancelled,
        (_T.awarded, _TE.inform): _T.informed,
        (_T.awarded, _TE.fail): _T.failed,
        (_T.awarded, _TE.expire): _T.expired,
        (_T.informed, _TE.verify): _T.completed,
        (_T.informed, _TE.dispute): _T.disputed,
        # A party may dispute a task's escrow directly, so arbitration can settle a task that
        # is still awarded or informed as well as one its manager disputed.
        (_T.awarded, _TE.release): _T.completed,
        (_T.informed, _TE.release): _T.completed,
        (_T.disputed, _TE.release): _T.completed,
        (_T.awarded, _TE.refund): _T.refunded,
        (_T.informed, _TE.refund): _T.refunded,
        (_T.disputed, _TE.refund): _T.refunded,
    },
    ErrorCode.task_closed,
)
# Tasks whose work was done or failed (the success-rate metric counts these).
WORK_FINISHED_STATES: Final = frozenset(
    {TaskState.completed, TaskState.failed, TaskState.expired, TaskState.refunded}
)


# ----------------------------------------------------------------------------- escrows


class EscrowState(StrEnum):
    locked = "locked"
    disputed = "disputed"
    released = "released"
    refunded = "refunded"


class EscrowEvent(StrEnum):
    verify = "verify"  # the payer's score releases a stand-alone escrow (escrow.release)
    release = "release"  # its task was verified, or its manager stayed silent
    refund = "refund"  # its task ended unpaid (cancelled, failed, expired, lapsed)
    dispute = "dispute"  # a party disputes it (escrow.dispute)
    task_dispute = "task_dispute"  # its task's manager scored the result below the threshold
    resolve_release = "resolve_release"  # an arbiter's decision
    resolve_refund = "resolve_refund"
    lapse = "lapse"  # a dispute unresolved by its deadline is refunded


_E, _EE = EscrowState, EscrowEvent
ESCROW: Final[Machine[EscrowState, EscrowEvent]] = Machine(
    "escrow",
    {
        (_E.locked, _EE.verify): _E.released,
        (_E.locked, _EE.release): _E.released,
        (_E.locked, _EE.refund): _E.refunded,
        (_E.locked, _EE.dispute): _E.disputed,
        # A party may dispute a task's escrow directly; its task still settles it.
        (_E.disputed, _EE.release): _E.released,
        (_E.disputed, _EE.refund): _E.refunded,
        (_E.locked, _EE.task_dispute): _E.disputed,
        (_E.disputed, _EE.task_dispute): _E.disputed,
        (_E.disputed, _EE.resolve_release): _E.released,
        (_E.disputed, _EE.resolve_refund): _E.refunded,
        (_E.disputed, _EE.lapse): _E.refunded,
    },
    ErrorCode.escrow_not_locked,
    {
        _EE.resolve_release: ErrorCode.escrow_not_disputed,
        _EE.resolve_refund: ErrorCode.escrow_not_disputed,
    },
)
SETTLED_ESCROW_STATES: Final = frozenset({EscrowState.released, EscrowState.refunded})


# ----------------------------------------------------------------------------- holds


class HoldState(StrEnum):
    open = "open"
    posted = "posted"
    voided = "voided"


class HoldEvent(StrEnum):
    post = "post"
    void = "void"


HOLD: Final[Machine[HoldState, HoldEvent]] = Machine(
    "hold",
    {
        (HoldState.open, HoldEvent.post): HoldState.posted,
        (HoldState.open, HoldEvent.void): HoldState.voided,
    },
    ErrorCode.authorization_closed,
)


# ----------------------------------------------------------------------------- votes


class ProposalState(StrEnum):
    open = "open"
    closed = "closed"


class ProposalEvent(StrEnum):
    cast = "cast"
    close = "close"


PROPOSAL: Final[Machine[ProposalState, ProposalEvent]] = Machine(
    "proposal",
    {
        (ProposalState.open, ProposalEvent.cast): ProposalState.open,
        (ProposalState.open, ProposalEvent.close): ProposalState.closed,
    },
    ErrorCode.proposal_closed,
)


class ActionState(StrEnum):
    """What became of a proposal's action (governance: docs/economy.md)."""

    none = ""
    pending = "pending"
    awaiting_ratification = "awaiting_ratification"
    applied = "applied"
    not_applied = "not_applied"
    vetoed = "vetoed"


class ActionEvent(StrEnum):
    approved = "approved"  # approved; the operator must ratify
    apply = "apply"  # approved, and the operator's own proposal: applied at once
    ratify = "ratify"  # the operator applies it
    veto = "veto"  # the operator refuses it
    drop = "drop"  # rejected, no quorum, or its target gone when applied


_A, _AE = ActionState, ActionEvent
ACTION: Final[Machine[ActionState, ActionEvent]] = Machine(
    "action",
    {
        (_A.pending, _AE.approved): _A.awaiting_ratification,
        (_A.pending, _AE.apply): _A.applied,
        (_A.pending, _AE.drop): _A.not_applied,
        (_A.awaiting_ratification, _AE.ratify): _A.applied,
        (_A.awaiting_ratification, _AE.veto): _A.vetoed,
        (_A.awaiting_ratification, _AE.drop): _A.not_applied,
    },
    ErrorCode.not_ratifiable,
)

# ----------------------------------------------------------------------------- coalitions


class CoalitionState(StrEnum):
    active = "active"
    intact = "intact"
    broken = "broken"


class CoalitionEvent(StrEnum):
    end_intact = "end_intact"
    end_broken = "end_broken"


COALITION: Final[Machine[CoalitionState, CoalitionEvent]] = Machine(
    "coalition",
    {
        (CoalitionState.active, CoalitionEvent.end_intact): CoalitionState.intact,
        (CoalitionState.active, CoalitionEvent.end_broken): CoalitionState.broken,
    },
    ErrorCode.invalid_message,
)

# A pool is open or closed: a bool (``Pool.closed``), kept so since it is part of the digest.

# ----------------------------------------------------------------------------- futures


class FutureState(StrEnum):
    offered = "offered"
    open = "open"
    settled = "settled"
    liquidated = "liquidated"
    lapsed = "lapsed"


class FutureEvent(StrEnum):
    take = "take"
    settle = "settle"
    liquidate = "liquidate"
    lapse = "lapse"


FUTURE: Final[Machine[FutureState, FutureEvent]] = Machine(
    "future",
    {
        (FutureState.offered, FutureEvent.take): FutureState.open,
        (FutureState.offered, FutureEvent.lapse): FutureState.lapsed,
        (FutureState.open, FutureEvent.settle): FutureState.settled,
        (FutureState.open, FutureEvent.liquidate): FutureState.liquidated,
    },
    ErrorCode.future_not_open,
)
ENDED_FUTURE_STATES: Final = frozenset(
    {FutureState.settled, FutureState.liquidated, FutureState.lapsed}
)


# ----------------------------------------------------------------------------- stakes


class StakeState(StrEnum):
    locked = "locked"
    cooling = "cooling"
    released = "released"


class StakeEvent(StrEnum):
    unstake = "unstake"  # the owner, once the lock is over
    release = "release"  # the cooling's timer returns it


STAKE: Final[Machine[StakeState, StakeEvent]] = Machine(
    "stake",
    {
        (StakeState.locked, StakeEvent.unstake): StakeState.cooling,
        (StakeState.cooling, StakeEvent.release): StakeState.released,
    },
    ErrorCode.stake_closed,
)

# ----------------------------------------------------------------------------- loans


class LoanState(StrEnum):
    offered = "offered"
    active = "active"
    repaid = "repaid"
    defaulted = "defaulted"
    cancelled = "cancelled"
    expired = "expired"


class LoanEvent(StrEnum):
    accept = "accept"  # the borrower
    cancel = "cancel"  # either party, before acceptance
    lapse = "lapse"  # the offer's timer
    repay = "repay"  # the borrower pays (in part or in full)
    settle = "settle"  # owed reaches 0
    default = "default"  # the due timer could not collect everything


_L, _LE = LoanState, LoanEvent
LOAN: Final[Machine[LoanState, LoanEvent]] = Machine(
    "loan",
    {
        (_L.offered, _LE.accept): _L.active,
        (_L.offered, _LE.cancel): _L.cancelled,
        (_L.offered, _LE.lapse): _L.expired,
        (_L.active, _LE.repay): _L.active,
        (_L.active, _LE.settle): _L.repaid,
        (_L.active, _LE.default): _L.defaulted,
        # A defaulted loan is still owed until recovered; it stays defaulted, owed 0 at the end.
        (_L.defaulted, _LE.repay): _L.defaulted,
        (_L.defaulted, _LE.settle): _L.defaulted,
    },
    ErrorCode.loan_closed,
)
# The loans that end no more: forgotten past ``lending.ended_loans_kept`` (with owed 0).
ENDED_LOAN_STATES: Final = frozenset({_L.repaid, _L.cancelled, _L.expired, _L.defaulted})

MACHINES: Final = (TASK, ESCROW, HOLD, PROPOSAL, ACTION, COALITION, FUTURE, STAKE, LOAN)
