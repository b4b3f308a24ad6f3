"""What a worker knows about prices: the oracle's updates it has seen, per asset, bounded.

Pure (no I/O, no clock): times come in with the updates. Prices are ``Decimal`` with at most six
decimal places, never floats, so a fill price compared with an oracle price is compared exactly.
"""

from collections import deque
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

import msgspec

from agents import limits
from agents.bounded import BoundedDict

_PRICE_QUANTUM: Final = Decimal(1).scaleb(-limits.decimals_max)
BPS_PER_UNIT: Final = Decimal(10_000)
BPS_QUANTUM: Final = Decimal("0.01")
# How far ahead of a fill's time a price may be stamped and still count (clocks of two processes).
CLOCK_SKEW_NS: Final = 50_000_000


def quantize(value: Decimal) -> Decimal:
    """``value`` rounded half-even to six decimal places (the wire's precision), without trailing
    zeros and never in exponent notation (``51000``, not ``5.1E+4``)."""
    rounded = value.quantize(_PRICE_QUANTUM, rounding=ROUND_HALF_EVEN).normalize()
    exponent = rounded.as_tuple().exponent
    assert isinstance(exponent, int), rounded
    return rounded.quantize(Decimal(1)) if exponent > 0 else rounded


def slippage_bps(fill_price: Decimal, reference_price: Decimal) -> Decimal:
    """How far a fill is from a reference, in basis points of the reference (never negative)."""
    assert reference_price > 0, reference_price
    return abs(fill_price - reference_price) / reference_price * BPS_PER_UNIT


class PricePoint(msgspec.Struct, frozen=True):
    at_ns: int
    price: Decimal


class PriceBook:
    """The latest price of each asset and a bounded history of the recent ones.

    At most ``assets_max`` assets are tracked (the least recently updated is forgotten first) and
    ``history_max`` points per asset.
    """

    def __init__(
        self,
        *,
        history_max: int = limits.price_history_per_asset_max,
        assets_max: int = limits.assets_max,
    ) -> None:
        assert history_max > 0, history_max
        self._history_max = history_max
        self._history: BoundedDict[str, deque[PricePoint]] = BoundedDict(assets_max)

    def observe(self, asset: str, price: Decimal, at_ns: int) -> None:
        """Records an update. Non-positive or non-finite prices are ignored (a bad oracle)."""
        if not price.is_finite() or price <= 0:
            return
        points = self._history.get(asset)
        if points is None:
            points = deque(maxlen=self._history_max)
        points.append(PricePoint(at_ns, price))
        # Setting again marks the asset as recently updated for the eviction order.
        self._history[asset] = points

    def latest(self, asset: str) -> PricePoint | None:
        points = self._history.get(asset)
        return points[-1] if points else None

    def assets(self) -> list[str]:
        return sorted(self._history)

    def between(self, asset: str, start_ns: int, end_ns: int) -> list[PricePoint]:
        """The points of ``asset`` with ``start_ns <= at_ns <= end_ns``, oldest first."""
        points = self._history.get(asset) or ()
        return [p for p in points if start_ns <= p.at_ns <= end_ns]

    def closest_slippage_bps(
        self, asset: str, fill_price: Decimal, at_ns: int, lookback_ns: int
    ) -> Decimal | None:
        """The smallest slippage of ``fill_price`` against any price of ``asset`` published in the
        ``lookback_ns`` before ``at_ns`` (the prices the executor could have filled at); None when
        no such price is known.

        ``CLOCK_SKEW_NS`` after ``at_ns`` is allowed too, for processes whose clocks differ a
        little. Only prices before the fill count: with a longer window, a fill far off the
        market could match a price the market reached later in a trend.
        """
        window = self.between(asset, at_ns - lookback_ns, at_ns + CLOCK_SKEW_NS)
        if not window:
            return None
        return min(slippage_bps(fill_price, p.price) for p in window).quantize(BPS_QUANTUM)
