"""The running tally of an open auction: the same winner as scoring every bid at the end, ties to
the earlier bid, the early close once every eligible agent answered, and the economy's example."""

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from exchange.core.bid_tally import BidTally

WEIGHTS = ["0.4", "0.3", "0.3"]

bids = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=1000),  # cost_micro (max 1000)
        st.integers(min_value=1, max_value=60_000),  # time_ms (deadline 60 s)
        st.sampled_from([0.0, 0.25, 0.5, 0.8, 0.9, 1.0]),  # few values, so scores tie
    ),
    max_size=40,
)


@given(bids)
def test_the_leader_is_the_highest_score_and_the_earliest_among_equals(
    offers: list[tuple[int, int, float]],
) -> None:
    tally = BidTally.start(WEIGHTS, [], max_cost_micro=1000, deadline_ms=60_000)
    texts = [tally.record_bid(f"a{i}", *offer) for i, offer in enumerate(offers)]
    if not offers:
        assert tally.best_index == -1
        return
    # The reference: the formula in Fractions, every bid scored at the end.
    scores = [Fraction(4, 10) * (1 - Fraction(c, 1000)) for c, _, _ in offers]
    scores = [
        s + Fraction(3, 10) * (1 - Fraction(t, 60_000)) + Fraction(3, 10) * Fraction(conf)
        for s, (_, t, conf) in zip(scores, offers, strict=True)
    ]
    expected = max(range(len(offers)), key=lambda i: (scores[i], -i))
    assert tally.best_index == expected
    assert texts == [display(score) for score in scores]


@given(
    st.sampled_from([["0.4", "0.3", "0.3"], ["1", "0", "0"], ["0.333333", "0.333333", "0.333334"]]),
    st.integers(1, 10**9),
    st.integers(1, 10**6),
    st.data(),
)
def test_the_integer_score_equals_the_fraction_formula(
    weights: list[str], max_cost_micro: int, deadline_ms: int, data: st.DataObject
) -> None:
    cost = data.draw(st.integers(0, max_cost_micro))
    time_ms = data.draw(st.integers(0, deadline_ms))
    confidence = data.draw(st.floats(0.0, 1.0))
    tally = BidTally.start(weights, [], max_cost_micro=max_cost_micro, deadline_ms=deadline_ms)
    w_cost, w_time, w_conf = (Fraction(w) for w in weights)
    expected = (
        w_cost * (1 - Fraction(cost, max_cost_micro))
        + w_time * (1 - Fraction(time_ms, deadline_ms))
        + w_conf * Fraction(confidence)
    )
    assert tally.score(cost, time_ms, confidence) == expected
    assert tally.record_bid("a", cost, time_ms, confidence) == display(expected)


def display(score: Fraction) -> str:
    """The 6-place text of a score, as the market showed it before scores were integers."""
    text = format(Decimal(round(score * 10**6)).scaleb(-6), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def test_the_economy_example_a_wins_at_062_over_b_at_052() -> None:
    # docs/economy.md: max cost 100, deadline 1,000 ms. A: 50, 500 ms, 0.9 -> 0.62. B: 30, 800 ms,
    # 0.6 -> 0.52. A wins (B bids second; a later, lower bid never displaces the leader).
    tally = BidTally.start(WEIGHTS, ["A", "B"], max_cost_micro=100_000_000, deadline_ms=1_000)
    assert tally.record_bid("A", 50_000_000, 500, 0.9) == "0.62"
    assert tally.record_bid("B", 30_000_000, 800, 0.6) == "0.52"
    assert tally.best_index == 0 and tally.everyone_answered


def test_everyone_answered_only_when_each_eligible_agent_bid_or_refused() -> None:
    tally = BidTally.start(WEIGHTS, ["a", "b", "c"], max_cost_micro=10, deadline_ms=10)
    tally.record_bid("a", 1, 1, 0.5)
    tally.record_bid("outsider", 1, 1, 0.5)  # Not eligible: counts as a bid, not as awaited.
    assert not tally.everyone_answered
    tally.record_refusal("b")
    assert not tally.everyone_answered and tally.has_answered("b")
    tally.record_bid("c", 2, 2, 0.5)
    assert tally.everyone_answered


def test_no_eligible_list_never_closes_early() -> None:
    tally = BidTally.start(WEIGHTS, [], max_cost_micro=10, deadline_ms=10)
    tally.record_bid("a", 1, 1, 0.5)
    assert not tally.everyone_answered
