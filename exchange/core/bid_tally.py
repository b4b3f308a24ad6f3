"""The running tally of one open auction: who has answered, who is still awaited, the best bid.

Owns: the scoring rule of docs/economy.md (w × (1 − cost/max), (1 − time/deadline), confidence,
exactly, in Fractions) and the bookkeeping that makes every answer O(1) whatever the number of
bidders. Must not: know about tasks, holds or escrow (market.py does).

Derived state: a tally follows entirely from a task's weights, eligible list, bids and refusals,
so it is in neither the snapshot nor the digest; the market rebuilds one from the task when it
has none (after a restore). Why keep it at all: without it each bid re-scanned every earlier
answer and the award re-scored every bid, so a 100-bidder round cost ~10k set operations and
~300 Fraction scorings (measured with bench/auction.py: the market was half of the daemon's time).
"""

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Final

from protocols.amounts import format_micro

# Score display: 6 decimal places, like an amount.
_score_display_scale: int = 10**6
# A bid with no stake term (docs/economy.md, Staking); market and staking use it too.
NO_BONUS: Final = Fraction(0)


@dataclass(slots=True)
class BidTally:
    """One open auction's answers so far. Bids are counted in the order they were taken.

    Scores are exact rationals kept as integers: a bid's score is ``num / (den × unit)``, where
    ``den`` is its confidence's (binary) denominator and ``unit`` one constant of the task. The
    same value as the Fraction formula (``score``), for a tenth of the cost: Fractions normalise
    by gcd at every step, and were a fifth of the daemon's time at 100 bidders.
    """

    # Weights as integers over a common denominator ``weight_scale``.
    weight_cost: int
    weight_time: int
    weight_confidence: int
    weight_scale: int
    max_cost_micro: int
    deadline_ms: int
    # Eligible agents (the early close waits for all of them); empty: the window runs its course.
    eligible_count: int
    awaited: set[str]
    answered: set[str] = field(default_factory=set)
    bid_count: int = 0
    # The leading bid's score as num / den (over ``unit``), and its index among the bids in the
    # order taken; -1 while there is none.
    best_num: int = 0
    best_den: int = 1
    best_index: int = -1

    @classmethod
    def start(
        cls, weights: list[str], eligible: list[str], max_cost_micro: int, deadline_ms: int
    ) -> "BidTally":
        """An empty tally. ``weights``: the announcement's decimal strings (cost, time, conf)."""
        assert max_cost_micro > 0 and deadline_ms > 0, (max_cost_micro, deadline_ms)
        exact = [Fraction(Decimal(w)) for w in weights]
        weight_scale = math.lcm(*(w.denominator for w in exact))
        weight_cost, weight_time, weight_confidence = (
            w.numerator * (weight_scale // w.denominator) for w in exact
        )
        return cls(
            weight_cost=weight_cost,
            weight_time=weight_time,
            weight_confidence=weight_confidence,
            weight_scale=weight_scale,
            max_cost_micro=max_cost_micro,
            deadline_ms=deadline_ms,
            eligible_count=len(eligible),
            awaited=set(eligible),
        )

    @property
    def unit(self) -> int:
        return self.weight_scale * self.max_cost_micro * self.deadline_ms

    def score(
        self, cost_micro: int, time_ms: int, confidence: float, bonus: Fraction = NO_BONUS
    ) -> Fraction:
        """0.4 × (1 − cost/max) + 0.3 × (1 − time/deadline) + 0.3 × confidence + bonus, exactly
        (``bonus``: the bidder's stake term, docs/economy.md, Staking)."""
        num, den = self._score_ratio(cost_micro, time_ms, confidence, bonus)
        return Fraction(num, den * self.unit)

    def _score_ratio(
        self, cost_micro: int, time_ms: int, confidence: float, bonus: Fraction = NO_BONUS
    ) -> tuple[int, int]:
        """The score times ``unit``, as num / den (den: the confidence's power of two, times
        the bonus's denominator when there is a bonus)."""
        max_cost, deadline = self.max_cost_micro, self.deadline_ms
        confidence_num, confidence_den = confidence.as_integer_ratio()
        whole = (
            self.weight_cost * (max_cost - cost_micro) * deadline
            + self.weight_time * (deadline - time_ms) * max_cost
        )
        num = whole * confidence_den + self.weight_confidence * max_cost * deadline * confidence_num
        if not bonus:
            return num, confidence_den
        # num/den + bonus, over the same unit: (num × b_den + b_num × unit × den) / (den × b_den).
        return (
            num * bonus.denominator + bonus.numerator * self.unit * confidence_den,
            confidence_den * bonus.denominator,
        )

    def has_answered(self, agent: str) -> bool:
        return agent in self.answered

    def record_bid(
        self,
        bidder: str,
        cost_micro: int,
        time_ms: int,
        confidence: float,
        bonus: Fraction = NO_BONUS,
    ) -> str:
        """Counts a bid (the next in order); returns its score rounded to 6 places, as text.

        The highest score leads; an equal score never displaces an earlier bid.
        """
        num, den = self._score_ratio(cost_micro, time_ms, confidence, bonus)
        if self.best_index < 0 or num * self.best_den > self.best_num * den:
            self.best_num, self.best_den, self.best_index = num, den, self.bid_count
        self.bid_count += 1
        self._answer(bidder)
        return _display(num, den * self.unit)

    def record_refusal(self, agent: str) -> None:
        self._answer(agent)

    @property
    def everyone_answered(self) -> bool:
        """True once every eligible agent has bid or refused (never with no eligible list)."""
        return self.eligible_count > 0 and not self.awaited

    def _answer(self, agent: str) -> None:
        assert agent not in self.answered, f"{agent} answered twice"
        self.answered.add(agent)
        self.awaited.discard(agent)


def _display(num: int, den: int) -> str:
    """num / den (>= 0) rounded half to even at 6 places, as ``round`` rounds a Fraction."""
    quotient, remainder = divmod(num * _score_display_scale, den)
    if 2 * remainder > den or (2 * remainder == den and quotient % 2 == 1):
        quotient += 1
    return format_micro(quotient)
