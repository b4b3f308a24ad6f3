"""Exact arithmetic on micro-tokens: conversions from config Decimals, rounding, pro-rata splits.

Rounding is half-even to the micro-token. A split returns its rounding remainder explicitly so the
caller posts it to a named account: nothing appears or vanishes.
"""

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

from protocols.amounts import MICRO_PER_TOKEN


def micro_of(tokens: Decimal) -> int:
    """Trusted Decimal tokens (from config) to micro-tokens, half-even."""
    return round_half_even(tokens * MICRO_PER_TOKEN)


def round_half_even(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


def split_pro_rata(total_micro: int, weights: Sequence[int]) -> tuple[list[int], int]:
    """Splits ``total_micro`` in proportion to ``weights`` (each share rounded half-even).

    Returns (shares, remainder) with ``sum(shares) + remainder == total_micro``. The remainder may
    be negative by at most ``len(weights)`` micro-tokens when half-even rounds several shares up.
    """
    weight_sum = sum(weights)
    assert weight_sum > 0, "a pro-rata split needs a positive total weight"
    assert all(w >= 0 for w in weights)
    shares = [_div_half_even(total_micro * w, weight_sum) for w in weights]
    remainder = total_micro - sum(shares)
    assert abs(remainder) <= len(weights)
    return shares, remainder


def _div_half_even(numerator: int, denominator: int) -> int:
    """Integer division rounded half-even, for non-negative numerator and positive denominator."""
    quotient, rest = divmod(numerator, denominator)
    twice = 2 * rest
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def scale(amount_micro: int, factor: Decimal) -> int:
    """``amount × factor``, rounded half-even to the micro-token."""
    return round_half_even(amount_micro * factor)
