"""Staking (docs/economy.md, Staking): an agent locks tokens in ``@stake.<agent>`` to back its word.

Owns: the stakes and their lifecycle (``STAKE`` in states.py: locked → cooling → released), the
weight a stake adds to ballots and the bonus it adds to bids, the periodic yield from ``@fees``
and the slash of an executor that failed its task. Must not: move money except by the ledger's
postings (stake, release, yield, slash), or know about tasks beyond the hook the market calls.

Staked tokens are an account of their own, never the agent's balance: they cannot be spent,
transferred, held or pledged while staked, by construction. The sum of an agent's unreleased
stakes is the balance of ``@stake.<agent>`` (``check_invariants``).
"""

from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Final

import msgspec

from exchange.core import accounts as acc
from exchange.core.bid_tally import NO_BONUS
from exchange.core.config import StakingConfig
from exchange.core.ledger import Agent, Ledger
from exchange.core.money import micro_of, scale
from exchange.core.refusals import Refusal, refuse
from exchange.core.states import STAKE, StakeEvent, StakeState
from protocols import credit as cr
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.units import NS_PER_S

_YIELD_REF: Final = "yield"


def stake_account(agent_id: str) -> str:
    return f"@stake.{agent_id}"


class StakeRecord(msgspec.Struct):
    """One stake. ``accrued_from_ns``: since when its yield weight (amount × ns locked) has not
    yet been added to its agent's weight for the period."""

    id: str
    agent: str
    amount_micro: int
    state: StakeState
    staked_at_ns: int
    locked_until_ns: int
    accrued_from_ns: int
    cooling_until_ns: int | None = None


class StakingState(msgspec.Struct, frozen=True, kw_only=True):
    """The staking part of a snapshot. Every field defaults to empty, and an exchange that never
    staked has exactly ``StakingState()``: the digest leaves it out then (machine.py)."""

    stakes: list[StakeRecord] = []
    # Yield weight (µ·ns) accrued this period by agents, from stakes that since changed, as
    # decimal text: a product of micro-tokens and nanoseconds passes 2**64 (msgpack's ints).
    weights: dict[str, str] = {}
    # The ``@fees`` balance after the last payout (or at the first stake): the period's income
    # is what it gained since.
    fees_mark_micro: int = 0
    yield_armed: bool = False
    yield_paid_micro: int = 0
    slashed_micro: int = 0


class Staking:
    """The staking rules, installed into a ledger."""

    # Rebuilt from the stakes on restore: each agent's stake ids, so that its balance, ballots
    # and bids read its own stakes only.
    DERIVED: Final = frozenset({"_of"})

    def __init__(self, ledger: Ledger, config: StakingConfig) -> None:
        self.ledger = ledger
        self.config = config
        self.stakes: dict[str, StakeRecord] = {}
        self.weights: dict[str, int] = {}
        self.fees_mark_micro = 0
        self.yield_armed = False
        self.yield_paid_micro = 0
        self.slashed_micro = 0
        self._of: dict[str, dict[str, None]] = {}
        self._min_micro = micro_of(config.min_stake)
        self._full_micro = micro_of(config.stake_full)

    def snapshot(self) -> StakingState:
        return StakingState(
            stakes=list(self.stakes.values()),
            weights={agent: str(w) for agent, w in self.weights.items()},
            fees_mark_micro=self.fees_mark_micro,
            yield_armed=self.yield_armed,
            yield_paid_micro=self.yield_paid_micro,
            slashed_micro=self.slashed_micro,
        )

    def restore(self, state: StakingState) -> None:
        self.stakes = {s.id: s for s in state.stakes}
        for record in state.stakes:
            self._of.setdefault(record.agent, {})[record.id] = None
        self.weights = {agent: int(w) for agent, w in state.weights.items()}
        self.fees_mark_micro = state.fees_mark_micro
        self.yield_armed = state.yield_armed
        self.yield_paid_micro = state.yield_paid_micro
        self.slashed_micro = state.slashed_micro

    # ------------------------------------------------------------------------ reading

    def of(self, agent_id: str) -> Iterator[StakeRecord]:
        return (self.stakes[stake_id] for stake_id in self._of.get(agent_id, ()))

    def active_micro(self, agent_id: str) -> int:
        """S: the agent's locked stake (cooling stake counts for nothing)."""
        if agent_id not in self._of:
            return 0  # the common case, on every bid and ballot: no stake at all
        return sum(s.amount_micro for s in self.of(agent_id) if s.state == StakeState.locked)

    def total_micro(self, agent_id: str) -> int:
        return sum(s.amount_micro for s in self.of(agent_id))

    def vote_weight(self, agent: Agent) -> Decimal:
        """performance × (1 + min(S / stake_full, 1)), exactly; the performance if S is 0."""
        active = self.active_micro(agent.id)
        if not active:
            return agent.performance
        bonus = min(Decimal(active) / Decimal(self._full_micro), Decimal(1))
        return agent.performance * (1 + bonus)

    def bid_bonus(self, stake_micro: int) -> Fraction:
        """``bid_bonus`` × min(S / stake_full, 1): what a stake adds to a bid's score."""
        if not stake_micro:
            return NO_BONUS
        share = Fraction(min(stake_micro, self._full_micro), self._full_micro)
        return Fraction(self.config.bid_bonus) * share

    # ------------------------------------------------------------------------ commands

    def stake(self, sender: str, cmd: cr.Stake) -> msgspec.Struct | Refusal:
        ledger, config = self.ledger, self.config
        agent = ledger.acting_agent(sender)
        if isinstance(agent, Refusal):
            return agent
        amount = ledger.amount(cmd.amount, "amount")
        if isinstance(amount, Refusal):
            return amount
        if amount < self._min_micro:
            return refuse(
                ErrorCode.parameter_out_of_bounds,
                f"a stake is at least {format_micro(self._min_micro)} tokens, got {cmd.amount}",
                path="$.amount",
            )
        if not config.lock_min_s <= cmd.lock_s <= config.lock_max_s:
            return refuse(
                ErrorCode.parameter_out_of_bounds,
                f"lock_s is {config.lock_min_s} to {config.lock_max_s} seconds, got {cmd.lock_s}",
                path="$.lock_s",
            )
        if (denied := ledger.check_debit(agent, amount)) is not None:
            return denied
        now_ns = ledger.book.now_ns
        record = StakeRecord(
            id=ledger.new_id("stake"),
            agent=agent.id,
            amount_micro=amount,
            state=StakeState.locked,
            staked_at_ns=now_ns,
            locked_until_ns=now_ns + cmd.lock_s * NS_PER_S,
            accrued_from_ns=now_ns,
        )
        ledger.book.post(agent.id, stake_account(agent.id), amount, "stake", record.id)
        self.stakes[record.id] = record
        self._of.setdefault(agent.id, {})[record.id] = None
        if not self.yield_armed:
            self.yield_armed = True
            self.fees_mark_micro = ledger.book.balance(acc.FEES)
            ledger.add_timer(now_ns + config.yield_period_s * NS_PER_S, "stake_yield", _YIELD_REF)
        return self.view(record)

    def unstake(self, sender: str, cmd: cr.Unstake) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        agent = ledger.acting_agent(sender)
        if isinstance(agent, Refusal):
            return agent
        record = self.stakes.get(cmd.stake_id)
        if record is None or record.agent != agent.id:
            return refuse(
                ErrorCode.unknown_stake,
                f"{agent.id} has no stake {cmd.stake_id!r}; list them with `exchange stakes`",
            )
        if (closed := STAKE.refusal(record.state, StakeEvent.unstake, record.id)) is not None:
            return closed
        now_ns = ledger.book.now_ns
        if now_ns < record.locked_until_ns:
            wait_s = -(-(record.locked_until_ns - now_ns) // NS_PER_S)
            return refuse(
                ErrorCode.stake_locked,
                f"{record.id} is locked until {record.locked_until_ns} ns; unstake in {wait_s} s",
                retry_after_s=wait_s,
            )
        self._accrue(record)
        record.state = STAKE.next(record.state, StakeEvent.unstake)
        record.cooling_until_ns = now_ns + self.config.cooling_s * NS_PER_S
        ledger.add_timer(record.cooling_until_ns, "stake_release", record.id)
        return self.view(record)

    # ------------------------------------------------------------------------ timers and hooks

    def on_release(self, stake_id: str) -> None:
        record = self.stakes.get(stake_id)
        if record is None or record.state != StakeState.cooling:
            return
        record.state = STAKE.next(record.state, StakeEvent.release)
        if record.amount_micro:
            self.ledger.book.post(
                stake_account(record.agent),
                record.agent,
                record.amount_micro,
                "stake.release",
                record.id,
            )
        del self.stakes[stake_id]
        owned = self._of[record.agent]
        del owned[stake_id]
        if not owned:
            del self._of[record.agent]

    def on_yield(self, ref: str) -> None:
        """Pays the period's yield (docs/economy.md, Staking) and re-arms while stakes remain."""
        ledger = self.ledger
        book = ledger.book
        for record in self.stakes.values():
            if record.state == StakeState.locked:
                self._accrue(record)
        fees = book.balance(acc.FEES)
        income = max(0, fees - self.fees_mark_micro)
        pool = int(Fraction(income) * Fraction(self.config.yield_share))  # floor, both >= 0
        weights = sorted((agent, w) for agent, w in self.weights.items() if w > 0)
        total = sum(w for _, w in weights)
        if pool and total:
            for agent, weight in weights:
                share = pool * weight // total
                if share:
                    book.post(acc.FEES, agent, share, "stake.yield", ref)
                    self.yield_paid_micro += share
        self.weights.clear()
        self.fees_mark_micro = book.balance(acc.FEES)
        if self.stakes:
            firing = ledger.firing
            start = firing[0] if firing is not None else book.now_ns
            ledger.add_timer(start + self.config.yield_period_s * NS_PER_S, "stake_yield", ref)
        else:
            self.yield_armed = False

    def slash(self, agent_id: str, payee: str, memo: str) -> None:
        """The agent failed a task it won (lost its dispute or missed its deadline): each of its
        stakes, locked or cooling, loses ``slash_share`` of itself to ``payee``."""
        book = self.ledger.book
        for record in sorted(self.of(agent_id), key=lambda s: s.id):
            cut = scale(record.amount_micro, self.config.slash_share)
            if not cut:
                continue
            if record.state == StakeState.locked:
                self._accrue(record)
            book.post(stake_account(agent_id), payee, cut, "stake.slash", f"{record.id} {memo}")
            record.amount_micro -= cut
            self.slashed_micro += cut

    def _accrue(self, record: StakeRecord) -> None:
        now_ns = self.ledger.book.now_ns
        weight = record.amount_micro * (now_ns - record.accrued_from_ns)
        if weight:
            self.weights[record.agent] = self.weights.get(record.agent, 0) + weight
        record.accrued_from_ns = now_ns

    # ------------------------------------------------------------------------ views

    def view(self, record: StakeRecord) -> cr.StakeView:
        return cr.StakeView(
            stake_id=record.id,
            agent=record.agent,
            amount=format_micro(record.amount_micro),
            state=record.state,
            staked_at_ns=record.staked_at_ns,
            locked_until_ns=record.locked_until_ns,
            cooling_until_ns=record.cooling_until_ns,
        )

    def stakes_result(self, agent: Agent) -> cr.StakesResult:
        return cr.StakesResult(
            agent=agent.id,
            active=format_micro(self.active_micro(agent.id)),
            total=format_micro(self.total_micro(agent.id)),
            vote_weight=str(self.vote_weight(agent)),
            stakes=[self.view(s) for s in self.of(agent.id)],
        )

    def check(self) -> None:
        """Each agent's unreleased stakes are exactly its ``@stake.<agent>`` balance."""
        totals: dict[str, int] = {}
        for record in self.stakes.values():
            assert record.amount_micro >= 0, record
            totals[record.agent] = totals.get(record.agent, 0) + record.amount_micro
        book = self.ledger.book
        for account, balance in book.balances.items():
            if account.startswith("@stake."):
                owner = account.removeprefix("@stake.")
                assert balance == totals.get(owner, 0), f"{account} {balance} != stakes {totals}"
