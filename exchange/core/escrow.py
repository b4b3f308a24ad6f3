"""Escrow (seed 2), as ledger rules on the exchange clock: a payment held in ``@escrow`` until it
is released (the payee gets 1 - fee, ``@fees`` the fee less the referral, the referrer its
share), or disputed and resolved by an arbiter, or refunded at its deadline. No escrow stays
locked: a locked one is refunded at its deadline, a disputed one when the dispute times out.

Every escrow is a hold (``Ledger.hold``). An escrow locked by ``escrow.lock`` stands alone; one
made by an auction's award pays for a task, and the task decides what its deadlines and its
arbitration mean (``TaskSide``, in market.py): such an escrow is settled only through its task.

Settled escrows outside tasks are kept for queries up to ``escrow.settled_escrows_kept``; beyond
it the oldest is forgotten with its hold, and its counts move to ``ForgottenEscrows`` (the swarm
metrics read both). A task's escrow is forgotten with its task. A timer of a forgotten escrow
finds nothing and does nothing.
"""

from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import msgspec

from exchange.core import accounts as acc
from exchange.core.config import EscrowConfig
from exchange.core.ledger import Hold, Ledger
from exchange.core.money import scale
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import keep_newest, kept_note
from exchange.core.states import ESCROW, SETTLED_ESCROW_STATES, EscrowEvent, EscrowState
from protocols import swarm as s
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.ids import SYSTEM_SENDERS
from protocols.units import NS_PER_S


# A Struct (mutable, like the dataclass it was) because a snapshot encodes it directly: ~7x faster
# than converting it to builtins first, and the same bytes.
class Escrow(msgspec.Struct):
    id: str
    payer: str
    payee: str
    amount_micro: int
    referrer: str | None
    state: EscrowState
    task_id: str | None
    memo: str = ""
    fee_micro: int = 0
    deadline_ns: int | None = None
    disputed: bool = False


@dataclass(slots=True)
class ForgottenEscrows:
    """What the swarm metrics count of the settled escrows no longer kept."""

    settled: int = 0
    released_micro: int = 0
    disputed: int = 0


class TaskSide(Protocol):
    """What happens to the task an escrow pays for (market.py)."""

    def escrow_disputed(self, escrow: Escrow, resolve_by_ns: int) -> None:
        """The task's escrow is disputed; an arbiter has until ``resolve_by_ns``."""

    def escrow_deadline(self, escrow: Escrow) -> None:
        """The deadline of the task's locked or disputed escrow has passed: settle both."""

    def escrow_resolved(self, escrow: Escrow, outcome: str) -> None:
        """An arbiter released or refunded the task's escrow (already settled)."""


class EscrowsState(msgspec.Struct, frozen=True, kw_only=True):
    escrows: list[Escrow]
    settled_escrows: list[str]
    forgotten_escrows: ForgottenEscrows


class Escrows:
    """The escrow rules, installed into a ledger."""

    def __init__(self, ledger: Ledger, config: EscrowConfig, tasks: TaskSide) -> None:
        self.ledger = ledger
        self.config = config
        self.by_id: dict[str, Escrow] = {}
        # Escrows outside tasks in the order they settled, oldest first: forgotten next.
        self.settled: deque[str] = deque()
        self.forgotten = ForgottenEscrows()
        # The market, which makes the escrows of tasks and settles a task with its escrow.
        self.tasks = tasks

    # ------------------------------------------------------------------------ primitives

    def snapshot(self) -> EscrowsState:
        return EscrowsState(
            escrows=list(self.by_id.values()),
            settled_escrows=list(self.settled),
            forgotten_escrows=self.forgotten,
        )

    def restore(self, state: EscrowsState) -> None:
        self.by_id.update((e.id, e) for e in state.escrows)
        self.settled.extend(state.settled_escrows)
        self.forgotten = state.forgotten_escrows

    def open(
        self, hold: Hold, payee: str, referrer: str | None, task_id: str | None, memo: str
    ) -> Escrow:
        escrow = Escrow(
            id=hold.id,
            payer=hold.account,
            payee=payee,
            amount_micro=hold.amount_micro,
            referrer=referrer,
            state=EscrowState.locked,
            task_id=task_id,
            memo=memo,
        )
        self.by_id[escrow.id] = escrow
        return escrow

    def set_deadline(self, escrow: Escrow, deadline_ns: int) -> None:
        """Sets (or moves) the escrow's deadline. Timers cannot be cancelled, so each carries its
        deadline and a superseded one does nothing when it fires."""
        escrow.deadline_ns = deadline_ns
        self.ledger.add_timer(deadline_ns, "escrow_deadline", f"{escrow.id}@{deadline_ns}")

    def release(self, escrow: Escrow, event: EscrowEvent = EscrowEvent.release) -> None:
        """Pays the payee, less the fee; 15% of the fee to the referrer when there is one."""
        ledger = self.ledger
        hold = ledger.holds[escrow.id]
        fee = scale(escrow.amount_micro, self.config.fee_rate)
        referral = scale(fee, self.config.referral_share) if escrow.referrer else 0
        payments = [(escrow.payee, escrow.amount_micro - fee, "escrow.release")]
        if fee - referral:
            payments.append((acc.FEES, fee - referral, "fee"))
        if referral:
            assert escrow.referrer is not None
            payments.append((escrow.referrer, referral, "referral"))
        ledger.pay_out(hold, payments)
        escrow.state = ESCROW.next(escrow.state, event)
        escrow.fee_micro = fee
        payee = ledger.agents.get(escrow.payee)
        if payee is not None:
            payee.earned_micro += escrow.amount_micro - fee
            if ledger.on_earned is not None:
                ledger.on_earned(payee, escrow.amount_micro - fee)
        if escrow.referrer and (referrer := ledger.agents.get(escrow.referrer)) is not None:
            referrer.earned_micro += referral
        self._settled(escrow)

    def refund(self, escrow: Escrow, event: EscrowEvent = EscrowEvent.refund) -> None:
        self.ledger.void_hold(self.ledger.holds[escrow.id])
        escrow.state = ESCROW.next(escrow.state, event)
        self._settled(escrow)

    def dispute(self, escrow: Escrow, event: EscrowEvent = EscrowEvent.dispute) -> None:
        escrow.state = ESCROW.next(escrow.state, event)
        escrow.disputed = True
        resolve_by_ns = self.ledger.book.now_ns + self.config.dispute_timeout_s * NS_PER_S
        self.set_deadline(escrow, resolve_by_ns)
        if escrow.task_id is not None:
            self.tasks.escrow_disputed(escrow, resolve_by_ns)

    def find(self, escrow_id: str) -> Escrow | Refusal:
        escrow = self.by_id.get(escrow_id)
        if escrow is None:
            return refuse(
                ErrorCode.unknown_escrow,
                f"no escrow {escrow_id!r} "
                + kept_note(self.config.settled_escrows_kept, "settled escrows"),
            )
        return escrow

    def on_deadline(self, ref: str) -> None:
        escrow_id, _, deadline = ref.rpartition("@")
        escrow = self.by_id.get(escrow_id)
        if escrow is None or escrow.deadline_ns != int(deadline):
            return  # forgotten (settled long ago), or the deadline moved
        if escrow.state in SETTLED_ESCROW_STATES:
            return
        if escrow.task_id is not None:
            self.tasks.escrow_deadline(escrow)
        else:
            lapsed = escrow.state == EscrowState.disputed
            self.refund(escrow, EscrowEvent.lapse if lapsed else EscrowEvent.refund)

    # ------------------------------------------------------------------------ forgetting

    def _settled(self, escrow: Escrow) -> None:
        """An escrow outside tasks is kept until ``settled_escrows_kept`` newer ones settled;
        a task's escrow goes with its task (``forget``, from market.py)."""
        if escrow.task_id is not None:
            return
        keep_newest(self.settled, escrow.id, self.config.settled_escrows_kept, self.forget)

    def forget(self, escrow_id: str) -> None:
        escrow = self.by_id.pop(escrow_id)
        assert escrow.state in SETTLED_ESCROW_STATES, f"{escrow.id} is {escrow.state}"
        forgotten = self.forgotten
        forgotten.settled += 1
        forgotten.released_micro += (
            escrow.amount_micro if escrow.state == EscrowState.released else 0
        )
        forgotten.disputed += escrow.disputed
        self.ledger.forget_hold(escrow.id)

    # ------------------------------------------------------------------------ commands

    def lock(self, sender: str, cmd: s.LockEscrow) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        payer = ledger.acting_agent(sender)
        if isinstance(payer, Refusal):
            return payer
        payee = ledger.agent(cmd.payee)
        if isinstance(payee, Refusal):
            return payee
        if cmd.referrer is not None and isinstance(referrer := ledger.agent(cmd.referrer), Refusal):
            return referrer
        if cmd.referrer is not None and cmd.referrer in (payer.id, payee.id):
            return refuse(
                ErrorCode.self_dealing,
                f"the referrer of an escrow is a third agent, not its payer or payee: "
                f"{cmd.referrer} would be paid a share of a fee on its own escrow",
                path="$.referrer",
            )
        amount = ledger.amount(cmd.amount, "amount")
        if isinstance(amount, Refusal):
            return amount
        if (denied := ledger.check_debit(payer, amount)) is not None:
            return denied
        hold = ledger.hold(payer.id, amount, "escrow", expires_at_ns=None, prefix="escrow")
        escrow = self.open(hold, payee.id, cmd.referrer, None, cmd.memo)
        self.set_deadline(escrow, ledger.book.now_ns + cmd.timeout_s * NS_PER_S)
        return self.view(escrow)

    def release_cmd(self, sender: str, cmd: s.ReleaseEscrow) -> msgspec.Struct | Refusal:
        escrow = self.find(cmd.escrow_id)
        if isinstance(escrow, Refusal):
            return escrow
        if sender != escrow.payer and sender not in SYSTEM_SENDERS:
            return refuse(ErrorCode.not_authorized, f"only {escrow.payer} may release {escrow.id}")
        if escrow.task_id is not None:
            # Released here, the task would stay open with its money gone, and its result
            # deadline would then refund an escrow that is already paid out.
            return refuse(
                ErrorCode.not_authorized,
                f"{escrow.id} pays for task {escrow.task_id}: settle it with task.verify (a score "
                "of at least the release threshold releases it), which also closes the task",
            )
        if (not_locked := ESCROW.refusal(escrow.state, EscrowEvent.verify, escrow.id)) is not None:
            return not_locked
        if Decimal(str(cmd.score)) >= self.config.release_threshold:
            self.release(escrow, EscrowEvent.verify)
        else:
            self.dispute(escrow)
        return self.view(escrow)

    def dispute_cmd(self, sender: str, cmd: s.DisputeEscrow) -> msgspec.Struct | Refusal:
        escrow = self.find(cmd.escrow_id)
        if isinstance(escrow, Refusal):
            return escrow
        if sender not in (escrow.payer, escrow.payee) and sender not in SYSTEM_SENDERS:
            return refuse(ErrorCode.not_authorized, f"only a party may dispute {escrow.id}")
        if (not_locked := ESCROW.refusal(escrow.state, EscrowEvent.dispute, escrow.id)) is not None:
            return not_locked
        self.dispute(escrow)
        return self.view(escrow)

    def resolve_cmd(self, sender: str, cmd: s.ResolveEscrow) -> msgspec.Struct | Refusal:
        escrow = self.find(cmd.escrow_id)
        if isinstance(escrow, Refusal):
            return escrow
        if not self._is_arbiter(sender, escrow):
            return refuse(
                ErrorCode.not_authorized,
                f"{sender} may not arbitrate {escrow.id}: arbiters are admin or a treasury agent "
                "that is not a party",
            )
        event = (
            EscrowEvent.resolve_release if cmd.outcome == "release" else EscrowEvent.resolve_refund
        )
        if (not_disputed := ESCROW.refusal(escrow.state, event, escrow.id)) is not None:
            return not_disputed
        if event == EscrowEvent.resolve_release:
            self.release(escrow, event)
        else:
            self.refund(escrow, event)
        if escrow.task_id is not None:
            self.tasks.escrow_resolved(escrow, cmd.outcome)
        return self.view(escrow)

    def _is_arbiter(self, sender: str, escrow: Escrow) -> bool:
        if sender in SYSTEM_SENDERS:
            return True
        agent = self.ledger.agents.get(sender)
        return (
            agent is not None
            and agent.role == "treasury"
            and sender not in (escrow.payer, escrow.payee)
        )

    # ------------------------------------------------------------------------ views

    def view(self, escrow: Escrow) -> s.EscrowView:
        return s.EscrowView(
            escrow_id=escrow.id,
            payer=escrow.payer,
            payee=escrow.payee,
            amount=format_micro(escrow.amount_micro),
            referrer=escrow.referrer,
            state=escrow.state,
            task_id=escrow.task_id,
            fee=format_micro(escrow.fee_micro),
        )
