"""Team pools (seed 1): agents put tokens together to pay for expensive inference.

A pool's tokens sit in ``@pool.<id>``. Each pool spend credits the contributors in proportion to
what they had put in at that moment; closing refunds the rest pro rata, with the rounding
remainder posted to ``@rounding``.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Final

import msgspec

from exchange.core import accounts as acc
from exchange.core.games import compile_game
from exchange.core.ledger import Ledger
from exchange.core.money import split_pro_rata
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import keep_newest, kept_note
from exchange.core.shapley import GameError, shapley
from protocols import commands as c
from protocols import cooperation as coop
from protocols import results as r
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.ids import SYSTEM_SENDERS

# Payouts under 0.01 tokens are not paid out but stay in the pool (seed 2's rule).
payout_min_micro: Final = 10_000


@dataclass(slots=True)
class Pool:
    id: str
    name: str
    creator: str
    min_contribution_micro: int
    target_micro: int | None
    members: list[str]
    contributions: dict[str, int] = field(default_factory=dict)
    credits: dict[str, int] = field(default_factory=dict)
    refunds: dict[str, int] = field(default_factory=dict)
    contributed_micro: int = 0
    spent_micro: int = 0
    closed: bool = False
    # Profit deposited and not yet distributed; payouts under the minimum stay counted here.
    profit_micro: int = 0
    distributed_micro: int = 0


class PoolsState(msgspec.Struct, frozen=True, kw_only=True):
    pools: list[Pool]
    closed_pools: list[str]


class Pools:
    """The pool rules, installed into a ledger as handlers for the pool.* commands."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.pools: dict[str, Pool] = {}
        # Closed pools, oldest first: beyond ``config.closed_pools_kept`` the oldest is forgotten.
        self.closed: deque[str] = deque()

    def snapshot(self) -> PoolsState:
        return PoolsState(pools=list(self.pools.values()), closed_pools=list(self.closed))

    def restore(self, state: PoolsState) -> None:
        self.pools.update((p.id, p) for p in state.pools)
        self.closed.extend(state.closed_pools)

    def find(self, pool_id: str, *, open_only: bool = True) -> Pool | Refusal:
        pool = self.pools.get(pool_id)
        if pool is None:
            return refuse(
                ErrorCode.unknown_pool,
                f"no pool {pool_id!r}; list pools with `exchange pool list` "
                + kept_note(self.ledger.config.closed_pools_kept, "closed pools"),
            )
        if open_only and pool.closed:
            return refuse(ErrorCode.pool_closed, f"pool {pool_id} is closed; create a new pool")
        return pool

    def create(self, sender: str, cmd: c.PoolCreate) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        creator = ledger.acting_agent(sender)
        if isinstance(creator, Refusal):
            return creator
        minimum = ledger.amount(cmd.min_contribution, "min_contribution")
        if isinstance(minimum, Refusal):
            return minimum
        target: int | None = None
        if cmd.target is not None:
            checked_target = ledger.amount(cmd.target, "target")
            if isinstance(checked_target, Refusal):
                return checked_target
            target = checked_target
        pool = Pool(ledger.new_id("pool"), cmd.name, creator.id, minimum, target, [creator.id])
        self.pools[pool.id] = pool
        ledger.book.open(acc.pool_account(pool.id))
        return self.result(pool)

    def join(self, sender: str, cmd: c.PoolJoin) -> msgspec.Struct | Refusal:
        agent = self.ledger.acting_agent(sender)
        if isinstance(agent, Refusal):
            return agent
        pool = self.find(cmd.pool_id)
        if isinstance(pool, Refusal):
            return pool
        if agent.id in pool.members:
            return refuse(ErrorCode.already_pool_member, f"{agent.id} is already in {pool.id}")
        pool.members.append(agent.id)
        return self.result(pool)

    def contribute(self, sender: str, cmd: c.PoolContribute) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        agent = ledger.acting_agent(sender)
        if isinstance(agent, Refusal):
            return agent
        pool = self.find(cmd.pool_id)
        if isinstance(pool, Refusal):
            return pool
        if agent.id not in pool.members:
            return refuse(
                ErrorCode.not_pool_member, f"{agent.id} is not in {pool.id}; join it first"
            )
        amount = ledger.amount(cmd.amount, "amount")
        if isinstance(amount, Refusal):
            return amount
        if amount < pool.min_contribution_micro:
            return refuse(
                ErrorCode.below_min_contribution,
                f"{pool.id} takes at least {format_micro(pool.min_contribution_micro)} tokens a "
                f"contribution; got {format_micro(amount)}",
                limit=format_micro(pool.min_contribution_micro),
                requested=format_micro(amount),
            )
        if (denied := ledger.check_debit(agent, amount)) is not None:
            return denied
        ledger.book.post(agent.id, acc.pool_account(pool.id), amount, "pool.contribute", pool.id)
        pool.contributions[agent.id] = pool.contributions.get(agent.id, 0) + amount
        pool.contributed_micro += amount
        return self.result(pool)

    def spend(self, sender: str, cmd: c.PoolSpend) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        pool = self.find(cmd.pool_id)
        if isinstance(pool, Refusal):
            return pool
        if sender not in SYSTEM_SENDERS and sender not in pool.members:
            return refuse(ErrorCode.not_pool_member, f"{sender} is not in {pool.id}")
        if isinstance(unknown := ledger.known_model(cmd.model), Refusal):
            return unknown
        cost = ledger.cost_micro(cmd.model, cmd.tokens)
        account = acc.pool_account(pool.id)
        balance = ledger.book.balance(account)
        if cost > balance:
            return refuse(
                ErrorCode.insufficient_funds,
                f"{pool.id} holds {format_micro(balance)} tokens and this costs "
                f"{format_micro(cost)}; contribute more or use fewer tokens",
                available=format_micro(balance),
                requested=format_micro(cost),
            )
        if cost:
            ledger.book.post(
                account, acc.llm_account(cmd.model), cost, "pool.spend", cmd.description
            )
            pool.spent_micro += cost
            self._credit(pool, cost)
        return self.result(pool)

    def _credit(self, pool: Pool, cost_micro: int) -> None:
        """Credit for the work, pro rata to contributions now. Credit is a tally, not money: the
        rounding remainder goes to the largest contributor (the earliest among equals)."""
        names = list(pool.contributions)
        shares, remainder = split_pro_rata(cost_micro, [pool.contributions[n] for n in names])
        for name, share in zip(names, shares, strict=True):
            pool.credits[name] = pool.credits.get(name, 0) + share
        if remainder:
            largest = max(names, key=lambda n: pool.contributions[n])
            pool.credits[largest] += remainder

    def close(self, sender: str, cmd: c.PoolClose) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        pool = self.find(cmd.pool_id)
        if isinstance(pool, Refusal):
            return pool
        if sender not in SYSTEM_SENDERS and sender != pool.creator:
            return refuse(
                ErrorCode.not_authorized, f"only {pool.creator} or admin may close {pool.id}"
            )
        account = acc.pool_account(pool.id)
        left = ledger.book.balance(account)
        if left and pool.contributions:
            names = list(pool.contributions)
            shares, remainder = split_pro_rata(left, [pool.contributions[n] for n in names])
            if remainder < 0:
                ledger.book.post(acc.ROUNDING, account, -remainder, "rounding", pool.id)
            for name, share in zip(names, shares, strict=True):
                if share:
                    ledger.book.post(account, name, share, "pool.refund", pool.id)
                    pool.refunds[name] = share
            if remainder > 0:
                ledger.book.post(account, acc.ROUNDING, remainder, "rounding", pool.id)
        assert ledger.book.balance(account) == 0 or not pool.contributions
        pool.closed = True
        keep_newest(self.closed, pool.id, ledger.config.closed_pools_kept, self.pools.pop)
        return self.result(pool)

    def deposit(self, sender: str, cmd: coop.PoolDeposit) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        pool = self.find(cmd.pool_id)
        if isinstance(pool, Refusal):
            return pool
        amount = ledger.amount(cmd.amount, "amount")
        if isinstance(amount, Refusal):
            return amount
        account = acc.pool_account(pool.id)
        if sender in SYSTEM_SENDERS:
            ledger.book.post(acc.MINT, account, amount, "pool.profit", cmd.memo)
        else:
            agent = ledger.acting_agent(sender)
            if isinstance(agent, Refusal):
                return agent
            if (denied := ledger.check_debit(agent, amount)) is not None:
                return denied
            ledger.book.post(agent.id, account, amount, "pool.profit", cmd.memo)
        pool.profit_micro += amount
        return self.result(pool)

    def distribute(self, sender: str, cmd: coop.PoolDistribute) -> msgspec.Struct | Refusal:
        """Pays profit to contributors. Payouts under ``payout_min_micro`` are not paid and stay
        in the pool (still counted as profit), as does the rounding remainder."""
        ledger = self.ledger
        pool = self.find(cmd.pool_id)
        if isinstance(pool, Refusal):
            return pool
        if sender not in SYSTEM_SENDERS and sender != pool.creator:
            return refuse(ErrorCode.not_authorized, f"only {pool.creator} or admin distributes")
        if not pool.contributions:
            return refuse(ErrorCode.pool_empty, f"{pool.id} has no contributors to pay")
        amount = pool.profit_micro
        if cmd.amount is not None:
            asked = ledger.amount(cmd.amount, "amount")
            if isinstance(asked, Refusal):
                return asked
            amount = asked
        if amount <= 0 or amount > pool.profit_micro:
            return refuse(
                ErrorCode.insufficient_funds,
                f"{pool.id} has {format_micro(pool.profit_micro)} tokens of undistributed profit; "
                f"asked to distribute {format_micro(amount)}. Deposit profit with pool.deposit",
                available=format_micro(pool.profit_micro),
            )
        names = list(pool.contributions)
        weights = self._weights(pool, names, cmd)
        if isinstance(weights, Refusal):
            return weights
        shares, remainder = split_pro_rata(amount, weights)
        if remainder < 0:
            # Half-even rounded some shares up: take the excess from the largest share, so the
            # payout never exceeds the profit distributed.
            largest = max(range(len(shares)), key=lambda i: (shares[i], -i))
            shares[largest] += remainder
        account = acc.pool_account(pool.id)
        payouts, paid = [], 0
        for name, weight, share in zip(names, weights, shares, strict=True):
            pays = share >= payout_min_micro
            if pays:
                ledger.book.post(account, name, share, "pool.payout", pool.id)
                ledger.agents[name].earned_micro += share
                paid += share
            payouts.append(
                coop.Payout(
                    agent=name,
                    share=f"{weight / sum(weights):.6f}",
                    amount=format_micro(share),
                    paid=pays,
                )
            )
        pool.profit_micro -= paid
        pool.distributed_micro += paid
        return coop.DistributionResult(
            pool_id=pool.id,
            method=cmd.method,
            distributed=format_micro(amount),
            paid=format_micro(paid),
            kept_in_pool=format_micro(amount - paid),
            payouts=payouts,
        )

    def _weights(
        self, pool: Pool, names: list[str], cmd: coop.PoolDistribute
    ) -> list[int] | Refusal:
        if cmd.method == "proportional":
            return [pool.contributions[n] for n in names]
        if cmd.game is None:
            return refuse(
                ErrorCode.invalid_message, "a Shapley distribution needs a game", path="$.game"
            )
        # The players checked before any work: only the pool's contributors (registered agents,
        # so few) may be in the game, which bounds what the writer computes here.
        named = cmd.game.players if cmd.game.values is None else list(cmd.game.values)
        if sorted(set(named or ())) != sorted(names):
            return refuse(
                ErrorCode.invalid_message,
                f"the game's players must be the contributors {sorted(names)}",
                path="$.game",
            )
        try:
            result = shapley(compile_game(cmd.game), seed=0)
        except GameError as exc:
            return refuse(ErrorCode.invalid_message, str(exc), path="$.game")
        if sorted(result.players) != sorted(names):
            return refuse(
                ErrorCode.invalid_message,
                f"the game's players {sorted(result.players)} must be the contributors "
                f"{sorted(names)}",
                path="$.game",
            )
        value_of = dict(zip(result.players, result.values, strict=True))
        # Shares become integer weights in millionths; a negative Shapley value cannot be paid.
        weights = [round(value_of[n] * 1_000_000) for n in names]
        if min(weights) < 0 or sum(weights) <= 0:
            return refuse(
                ErrorCode.invalid_message,
                "Shapley values must be non-negative with a positive total to split profit",
                path="$.game",
            )
        return weights

    def result(self, pool: Pool) -> r.PoolResult:
        balance = self.ledger.book.balance(acc.pool_account(pool.id))
        return r.PoolResult(
            pool_id=pool.id,
            name=pool.name,
            creator=pool.creator,
            min_contribution=format_micro(pool.min_contribution_micro),
            target=None if pool.target_micro is None else format_micro(pool.target_micro),
            funded=pool.target_micro is not None and pool.contributed_micro >= pool.target_micro,
            closed=pool.closed,
            balance=format_micro(balance),
            contributed=format_micro(pool.contributed_micro),
            spent=format_micro(pool.spent_micro),
            members=list(pool.members),
            contributions={k: format_micro(v) for k, v in pool.contributions.items()},
            credits={k: format_micro(v) for k, v in pool.credits.items()},
            refunds={k: format_micro(v) for k, v in pool.refunds.items()},
            profit=format_micro(pool.profit_micro),
            distributed=format_micro(pool.distributed_micro),
        )
