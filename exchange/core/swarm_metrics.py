"""Swarm health metrics of docs/economy.md ("Swarm metrics"): formulas, thresholds and status.

This module owns the six metric formulas, their default target and warning thresholds, and the
status rule. It takes plain counts and per-agent earnings (integers, micro-tokens) and returns
frozen readings. It must not read the ledger, do I/O, or read clocks; whoever holds the counts
passes them in.

Status rule (one of four):
- ``ok``: the target is met.
- ``watch``: the target is missed but the warning level is not passed (the gap in between).
- ``warning``: the warning level is passed.
- ``no_data``: the denominator is 0 (no tasks, no cost, nobody has earned, ...).
Single-sided comparisons are strict, as the table writes them: a success rate of exactly 90% is
``watch`` (the target is "> 90%"), exactly 75% is ``watch`` too (the warning is "< 75%"). The
signal-conversion band 20-40% includes its ends. Comparisons are exact: ratios are computed as
fractions of integers and thresholds are ``Decimal``, so 27/30 is exactly 0.9; the reported
``value`` is that fraction rounded to a float.
"""

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Annotated, Final, Literal

import msgspec

__all__ = [
    "DEFAULT_RULES",
    "HigherIsBetter",
    "LowerIsBetter",
    "MetricReading",
    "MetricRule",
    "MetricStatus",
    "SwarmMetricInputs",
    "SwarmMetricRules",
    "WithinBand",
    "coalition_stability",
    "coordination_overhead",
    "escrow_dispute_rate",
    "evaluate",
    "gini",
    "signal_conversion",
    "status_of",
    "task_success_rate",
]

MetricStatus = Literal["ok", "watch", "warning", "no_data"]
Count = Annotated[int, msgspec.Meta(ge=0)]
# Bounds the O(n log n) Gini sort; far above any swarm this exchange runs.
AGENTS_MAX: Final = 1_000_000


class HigherIsBetter(msgspec.Struct, frozen=True, kw_only=True, tag="higher_is_better"):
    """ok when value > ``target_above``; warning when value < ``warning_below``."""

    target_above: Decimal
    warning_below: Decimal

    def __post_init__(self) -> None:
        if not self.warning_below <= self.target_above:
            raise ValueError(
                f"expected warning_below <= target_above, got {self.warning_below}"
                f" > {self.target_above}"
            )


class LowerIsBetter(msgspec.Struct, frozen=True, kw_only=True, tag="lower_is_better"):
    """ok when value < ``target_below``; warning when value > ``warning_above``."""

    target_below: Decimal
    warning_above: Decimal

    def __post_init__(self) -> None:
        if not self.target_below <= self.warning_above:
            raise ValueError(
                f"expected target_below <= warning_above, got {self.target_below}"
                f" > {self.warning_above}"
            )


class WithinBand(msgspec.Struct, frozen=True, kw_only=True, tag="within_band"):
    """ok when ``target_min`` <= value <= ``target_max``; warning when value < ``warning_below``
    or value > ``warning_above``."""

    target_min: Decimal
    target_max: Decimal
    warning_below: Decimal
    warning_above: Decimal

    def __post_init__(self) -> None:
        bounds = (self.warning_below, self.target_min, self.target_max, self.warning_above)
        if not all(low <= high for low, high in pairwise(bounds)):
            raise ValueError(
                "expected warning_below <= target_min <= target_max <= warning_above,"
                f" got {[str(bound) for bound in bounds]}"
            )


MetricRule = HigherIsBetter | LowerIsBetter | WithinBand


class SwarmMetricRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The thresholds of every metric, as fractions (0.9 is 90%); defaults are docs/economy.md's."""

    task_success_rate: HigherIsBetter = HigherIsBetter(
        target_above=Decimal("0.90"), warning_below=Decimal("0.75")
    )
    coordination_overhead: LowerIsBetter = LowerIsBetter(
        target_below=Decimal("0.15"), warning_above=Decimal("0.25")
    )
    earnings_gini: LowerIsBetter = LowerIsBetter(
        target_below=Decimal("0.4"), warning_above=Decimal("0.6")
    )
    coalition_stability: HigherIsBetter = HigherIsBetter(
        target_above=Decimal("0.80"), warning_below=Decimal("0.60")
    )
    signal_conversion: WithinBand = WithinBand(
        target_min=Decimal("0.20"),
        target_max=Decimal("0.40"),
        warning_below=Decimal("0.05"),
        warning_above=Decimal("0.60"),
    )
    escrow_dispute_rate: LowerIsBetter = LowerIsBetter(
        target_below=Decimal("0.02"), warning_above=Decimal("0.05")
    )


DEFAULT_RULES: Final = SwarmMetricRules()


class SwarmMetricInputs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The counts behind the metrics. Each numerator is a subset of its denominator.

    ``escrow_settlements`` counts escrows that ended (released or refunded);
    ``escrow_disputes`` counts those of them that were disputed on the way.
    Raises ``ValueError`` (``msgspec.ValidationError`` when decoded) when a count is negative or
    a numerator exceeds its denominator.
    """

    tasks_total: Count = 0
    tasks_successful: Count = 0
    cost_total_micro: Count = 0
    coordination_cost_micro: Count = 0
    earnings_micro_by_agent: tuple[Count, ...] = ()
    coalitions_formed: Count = 0
    coalitions_intact: Count = 0
    signals_emitted: Count = 0
    signals_acted_on: Count = 0
    escrow_settlements: Count = 0
    escrow_disputes: Count = 0

    def __post_init__(self) -> None:
        # msgspec checks Meta(ge=0) only when decoding; a Struct built in Python lands here too.
        counts = msgspec.structs.asdict(self)
        earnings = counts.pop("earnings_micro_by_agent")
        for name, count in counts.items():
            if count < 0:
                raise ValueError(f"{name}: expected a count >= 0, got {count}")
        if len(earnings) > AGENTS_MAX:
            raise ValueError(f"earnings_micro_by_agent: expected <= {AGENTS_MAX} agents")
        if any(amount < 0 for amount in earnings):
            raise ValueError("earnings_micro_by_agent: expected earnings >= 0 micro-tokens")
        for part, whole in (
            ("tasks_successful", "tasks_total"),
            ("coordination_cost_micro", "cost_total_micro"),
            ("coalitions_intact", "coalitions_formed"),
            ("signals_acted_on", "signals_emitted"),
            ("escrow_disputes", "escrow_settlements"),
        ):
            if counts[part] > counts[whole]:
                raise ValueError(
                    f"{part}: expected at most {whole} = {counts[whole]}, got {counts[part]}"
                )


class MetricReading(msgspec.Struct, frozen=True, kw_only=True):
    """One metric: its ``value`` as a fraction (None without data), its thresholds as text for
    people (e.g. "> 90%"), and its status."""

    name: str
    value: float | None
    target: str
    warning: str
    status: MetricStatus


# --- Formulas: each returns an exact fraction, or None when the denominator is 0 ----------------


def _ratio(part: int, whole: int) -> Fraction | None:
    assert 0 <= part <= whole, "a ratio's part lies within its whole"
    return Fraction(part, whole) if whole else None


def task_success_rate(successful: int, total: int) -> Fraction | None:
    """Successful tasks / all tasks."""
    return _ratio(successful, total)


def coordination_overhead(coordination_cost_micro: int, cost_total_micro: int) -> Fraction | None:
    """Coordination cost / total cost, both in micro-tokens."""
    return _ratio(coordination_cost_micro, cost_total_micro)


def coalition_stability(intact: int, formed: int) -> Fraction | None:
    """Coalitions kept intact / coalitions formed."""
    return _ratio(intact, formed)


def signal_conversion(acted_on: int, emitted: int) -> Fraction | None:
    """Signals acted on / signals emitted."""
    return _ratio(acted_on, emitted)


def escrow_dispute_rate(disputes: int, settlements: int) -> Fraction | None:
    """Disputed settlements / settlements."""
    return _ratio(disputes, settlements)


def gini(earnings_micro: Sequence[int]) -> Fraction | None:
    """The Gini coefficient: sum_i sum_j |x_i - x_j| / (2 n^2 mean), exactly.

    All equal gives 0; one agent holding everything gives (n - 1) / n. None when there are no
    agents or nobody has earned anything (mean 0: there is no distribution to judge).
    With x sorted ascending, sum_i sum_j |x_i - x_j| = 2 sum_k (2k - n + 1) x_k (k from 0), which
    makes it O(n log n) and exact in integers.
    """
    n = len(earnings_micro)
    total = sum(earnings_micro)
    if n == 0 or total == 0:
        return None
    assert all(amount >= 0 for amount in earnings_micro), "earnings are never negative"
    ranked_sum = sum((2 * k - n + 1) * amount for k, amount in enumerate(sorted(earnings_micro)))
    # 2 n^2 mean = 2 n total; the double sum is 2 * ranked_sum.
    result = Fraction(ranked_sum, n * total)
    assert 0 <= result <= Fraction(n - 1, n), "the Gini coefficient lies in [0, (n-1)/n]"
    return result


# --- Status ------------------------------------------------------------------------------------


def status_of(value: Fraction | None, rule: MetricRule) -> MetricStatus:
    """The status of ``value`` under ``rule``; see the module docstring for the rule."""
    if value is None:
        return "no_data"
    if isinstance(rule, HigherIsBetter):
        if value > Fraction(rule.target_above):
            return "ok"
        return "warning" if value < Fraction(rule.warning_below) else "watch"
    if isinstance(rule, LowerIsBetter):
        if value < Fraction(rule.target_below):
            return "ok"
        return "warning" if value > Fraction(rule.warning_above) else "watch"
    if Fraction(rule.target_min) <= value <= Fraction(rule.target_max):
        return "ok"
    if value < Fraction(rule.warning_below) or value > Fraction(rule.warning_above):
        return "warning"
    return "watch"


def _as_text(threshold: Decimal, as_percent: bool) -> str:
    # normalize() drops trailing zeros: Decimal("0.90") * 100 reads "90", not "90.00".
    if as_percent:
        return f"{(threshold * 100).normalize():f}%"
    return f"{threshold.normalize():f}"


def _describe(rule: MetricRule, as_percent: bool) -> tuple[str, str]:
    """(target, warning) as text for people, e.g. ("> 90%", "< 75%")."""
    if isinstance(rule, HigherIsBetter):
        return (
            f"> {_as_text(rule.target_above, as_percent)}",
            f"< {_as_text(rule.warning_below, as_percent)}",
        )
    if isinstance(rule, LowerIsBetter):
        return (
            f"< {_as_text(rule.target_below, as_percent)}",
            f"> {_as_text(rule.warning_above, as_percent)}",
        )
    return (
        f"{_as_text(rule.target_min, as_percent)}–{_as_text(rule.target_max, as_percent)}",
        f"< {_as_text(rule.warning_below, as_percent)} or > "
        f"{_as_text(rule.warning_above, as_percent)}",
    )


def _reading(
    name: str, value: Fraction | None, rule: MetricRule, *, as_percent: bool = True
) -> MetricReading:
    target, warning = _describe(rule, as_percent)
    return MetricReading(
        name=name,
        value=None if value is None else float(value),
        target=target,
        warning=warning,
        status=status_of(value, rule),
    )


def evaluate(
    inputs: SwarmMetricInputs, rules: SwarmMetricRules = DEFAULT_RULES
) -> list[MetricReading]:
    """All six readings, in docs/economy.md's table order."""
    return [
        _reading(
            "task_success_rate",
            task_success_rate(inputs.tasks_successful, inputs.tasks_total),
            rules.task_success_rate,
        ),
        _reading(
            "coordination_overhead",
            coordination_overhead(inputs.coordination_cost_micro, inputs.cost_total_micro),
            rules.coordination_overhead,
        ),
        _reading(
            "earnings_gini",
            gini(inputs.earnings_micro_by_agent),
            rules.earnings_gini,
            as_percent=False,
        ),
        _reading(
            "coalition_stability",
            coalition_stability(inputs.coalitions_intact, inputs.coalitions_formed),
            rules.coalition_stability,
        ),
        _reading(
            "signal_conversion",
            signal_conversion(inputs.signals_acted_on, inputs.signals_emitted),
            rules.signal_conversion,
        ),
        _reading(
            "escrow_dispute_rate",
            escrow_dispute_rate(inputs.escrow_disputes, inputs.escrow_settlements),
            rules.escrow_dispute_rate,
        ),
    ]
