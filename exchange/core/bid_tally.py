"""The running tally of one open auction: who has answered, who is still awaited, the best bid.

Owns: the scoring rule of ECONOMY.md (weights × (1 − cost/max), (1 − time/deadline), confidence,
exactly, in Fractions) and the bookkeeping that makes every answer O(1) whatever the number of
bidders. Must not: know about tasks, holds or escrow (market.py does).

Derived state: a tally follows entirely from a task's weights, eligible list, bids and refusals,
so it is in neither the snapshot nor the digest; the market rebuilds one from the task when it
has none (after a restore). Why keep it at all: without it each bid re-scanned every earlier
answer and the award re-scored every bid, so a 100-bidder round cost ~10k set operations and
~300 Fraction scorings (measured with bench/auction.py: the market was half of the daemon's time).
"""

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction


@dataclass(slots=True)
class BidTally:
    """One open auction's answers so far. Bids are counted in the order they were taken."""

    weight_cost: Fraction
    weight_time: Fraction
    weight_confidence: Fraction
    max_cost_micro: int
    deadline_ms: int
    # Eligible agents (the early close waits for all of them); empty: the window runs its course.
    eligible_count: int
    awaited: set[str]
    answered: set[str] = field(default_factory=set)
    bid_count: int = 0
    best_score: Fraction | None = None
    # Index of the best bid among the bids, in the order taken; -1 while there is none.
    best_index: int = -1

    @classmethod
    def start(
        cls, weights: list[str], eligible: list[str], max_cost_micro: int, deadline_ms: int
    ) -> "BidTally":
        """An empty tally. ``weights``: the announcement's decimal strings (cost, time, conf)."""
        weight_cost, weight_time, weight_confidence = (Fraction(Decimal(w)) for w in weights)
        return cls(
            weight_cost=weight_cost,
            weight_time=weight_time,
            weight_confidence=weight_confidence,
            max_cost_micro=max_cost_micro,
            deadline_ms=deadline_ms,
            eligible_count=len(eligible),
            awaited=set(eligible),
        )

    def score(self, cost_micro: int, time_ms: int, confidence: float) -> Fraction:
        """0.4 × (1 − cost/max) + 0.3 × (1 − time/deadline) + 0.3 × confidence, exactly."""
        return (
            self.weight_cost * (1 - Fraction(cost_micro, self.max_cost_micro))
            + self.weight_time * (1 - Fraction(time_ms, self.deadline_ms))
            + self.weight_confidence * Fraction(confidence)
        )

    def has_answered(self, agent: str) -> bool:
        return agent in self.answered

    def record_bid(self, bidder: str, cost_micro: int, time_ms: int, confidence: float) -> Fraction:
        """Counts a bid (the next in order) and returns its score. The highest score leads;
        an equal score never displaces an earlier bid."""
        score = self.score(cost_micro, time_ms, confidence)
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_index = score, self.bid_count
        self.bid_count += 1
        self._answer(bidder)
        return score

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
