"""Swarm metrics: the Gini coefficient against known values and the double-sum definition, and
every metric's status at and around its thresholds, including the two-sided band."""

import itertools
from decimal import Decimal
from fractions import Fraction

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core.swarm_metrics import (
    DEFAULT_RULES,
    HigherIsBetter,
    LowerIsBetter,
    MetricReading,
    SwarmMetricInputs,
    SwarmMetricRules,
    WithinBand,
    evaluate,
    gini,
    signal_conversion,
    status_of,
    task_success_rate,
)


def by_name(inputs: SwarmMetricInputs) -> dict[str, MetricReading]:
    return {reading.name: reading for reading in evaluate(inputs)}


# --- Gini ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earnings", "expected"),
    [
        ([5, 5, 5, 5], Fraction(0)),
        ([0, 0, 0, 10], Fraction(3, 4)),
        ([0, 7], Fraction(1, 2)),
        ([42], Fraction(0)),
        ([1, 2, 3, 4], Fraction(1, 4)),
        ([3, 1, 2], Fraction(2, 9)),
    ],
)
def test_gini_known_values(earnings: list[int], expected: Fraction) -> None:
    assert gini(earnings) == expected


def test_gini_without_data() -> None:
    assert gini([]) is None
    assert gini([0, 0, 0]) is None


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=30), st.integers(1, 1000))
def test_gini_matches_the_double_sum_and_ignores_scale(earnings: list[int], scale: int) -> None:
    n = len(earnings)
    total = sum(earnings)
    result = gini(earnings)
    if total == 0:
        assert result is None
        return
    double_sum = sum(abs(a - b) for a, b in itertools.product(earnings, repeat=2))
    assert result == Fraction(double_sum, 2 * n * n) / Fraction(total, n)
    assert Fraction(0) <= result <= Fraction(n - 1, n)
    assert gini([amount * scale for amount in earnings]) == result


# --- Status -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successful", "total", "status"),
    [
        (91, 100, "ok"),
        (90, 100, "watch"),
        (80, 100, "watch"),
        (75, 100, "watch"),
        (74, 100, "warning"),
        (0, 0, "no_data"),
    ],
)
def test_task_success_rate_status(successful: int, total: int, status: str) -> None:
    reading = by_name(SwarmMetricInputs(tasks_total=total, tasks_successful=successful))
    assert reading["task_success_rate"].status == status


@pytest.mark.parametrize(
    ("coordination", "total", "status"),
    [
        (14, 100, "ok"),
        (15, 100, "watch"),
        (25, 100, "watch"),
        (26, 100, "warning"),
        (0, 0, "no_data"),
    ],
)
def test_coordination_overhead_status(coordination: int, total: int, status: str) -> None:
    inputs = SwarmMetricInputs(cost_total_micro=total, coordination_cost_micro=coordination)
    assert by_name(inputs)["coordination_overhead"].status == status


@pytest.mark.parametrize(
    ("earnings", "status"),
    [
        ([5, 5, 5, 5], "ok"),
        ([1, 2, 3, 4], "ok"),
        ([0, 0, 1, 1], "watch"),
        ([0, 0, 0, 10], "warning"),
        ([], "no_data"),
        ([0, 0], "no_data"),
    ],
)
def test_earnings_gini_status(earnings: list[int], status: str) -> None:
    inputs = SwarmMetricInputs(earnings_micro_by_agent=tuple(earnings))
    assert by_name(inputs)["earnings_gini"].status == status


@pytest.mark.parametrize(
    ("acted_on", "emitted", "status"),
    [
        (4, 100, "warning"),
        (5, 100, "watch"),
        (19, 100, "watch"),
        (20, 100, "ok"),
        (40, 100, "ok"),
        (41, 100, "watch"),
        (60, 100, "watch"),
        (61, 100, "warning"),
        (0, 0, "no_data"),
    ],
)
def test_signal_conversion_band(acted_on: int, emitted: int, status: str) -> None:
    inputs = SwarmMetricInputs(signals_emitted=emitted, signals_acted_on=acted_on)
    assert by_name(inputs)["signal_conversion"].status == status


@pytest.mark.parametrize(
    ("intact", "formed", "disputes", "settlements", "stability", "dispute"),
    [
        (9, 10, 1, 100, "ok", "ok"),
        (7, 10, 3, 100, "watch", "watch"),
        (5, 10, 6, 100, "warning", "warning"),
    ],
)
def test_stability_and_disputes(
    intact: int, formed: int, disputes: int, settlements: int, stability: str, dispute: str
) -> None:
    readings = by_name(
        SwarmMetricInputs(
            coalitions_formed=formed,
            coalitions_intact=intact,
            escrow_settlements=settlements,
            escrow_disputes=disputes,
        )
    )
    assert readings["coalition_stability"].status == stability
    assert readings["escrow_dispute_rate"].status == dispute


def test_comparisons_are_exact_at_the_boundary() -> None:
    # 27/30 is exactly 90%, which does not beat "> 90%"; a float sum could land either side.
    rule = DEFAULT_RULES.task_success_rate
    assert status_of(task_success_rate(27, 30), rule) == "watch"
    assert status_of(signal_conversion(1, 5), DEFAULT_RULES.signal_conversion) == "ok"


def test_evaluate_lists_every_metric_in_table_order_with_text_thresholds() -> None:
    readings = evaluate(SwarmMetricInputs(tasks_total=4, tasks_successful=3))
    assert [r.name for r in readings] == [
        "task_success_rate",
        "coordination_overhead",
        "earnings_gini",
        "coalition_stability",
        "signal_conversion",
        "escrow_dispute_rate",
    ]
    assert readings[0] == MetricReading(
        name="task_success_rate", value=0.75, target="> 90%", warning="< 75%", status="watch"
    )
    assert (readings[2].target, readings[2].warning) == ("< 0.4", "> 0.6")
    assert (readings[4].target, readings[4].warning) == ("20%–40%", "< 5% or > 60%")
    assert all(r.value is None and r.status == "no_data" for r in readings[1:])


def test_rules_are_configurable_and_validated() -> None:
    rules = msgspec.convert(
        {"task_success_rate": {"target_above": "0.95", "warning_below": "0.5"}}, SwarmMetricRules
    )
    assert rules.task_success_rate == HigherIsBetter(
        target_above=Decimal("0.95"), warning_below=Decimal("0.5")
    )
    readings = evaluate(SwarmMetricInputs(tasks_total=100, tasks_successful=93), rules)
    assert readings[0].status == "watch"
    with pytest.raises(ValueError, match="warning_below <= target_above"):
        HigherIsBetter(target_above=Decimal("0.5"), warning_below=Decimal("0.9"))
    with pytest.raises(ValueError, match="target_below <= warning_above"):
        LowerIsBetter(target_below=Decimal("0.5"), warning_above=Decimal("0.1"))
    with pytest.raises(ValueError, match="warning_below <= target_min"):
        WithinBand(
            target_min=Decimal("0.2"),
            target_max=Decimal("0.1"),
            warning_below=Decimal("0.05"),
            warning_above=Decimal("0.6"),
        )


def test_inconsistent_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="tasks_successful: expected at most tasks_total = 1"):
        SwarmMetricInputs(tasks_total=1, tasks_successful=2)
    with pytest.raises(ValueError, match="signals_emitted: expected a count >= 0"):
        SwarmMetricInputs(signals_emitted=-1)
    with pytest.raises(ValueError, match="earnings"):
        SwarmMetricInputs(earnings_micro_by_agent=(5, -1))
    with pytest.raises(msgspec.ValidationError, match=r"\$\.escrow_disputes"):
        msgspec.json.decode(b'{"escrow_disputes": -3}', type=SwarmMetricInputs)
