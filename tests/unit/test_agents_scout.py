"""The scout's momentum detector: when a window of prices becomes a signal, and how confident."""

import argparse
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.errors import ConfigError
from agents.roles import scout
from agents.roles.scout import MomentumDetector


def _detector(window: int = 5, threshold_bps: int = 50) -> MomentumDetector:
    return MomentumDetector(window_prices=window, threshold_bps=Decimal(threshold_bps))


def _feed(detector: MomentumDetector, asset: str, prices: list[str]) -> list[scout.Momentum]:
    found = []
    for price in prices:
        momentum = detector.observe(asset, Decimal(price))
        if momentum is not None:
            found.append(momentum)
    return found


def test_nothing_before_the_window_is_full() -> None:
    assert _feed(_detector(window=5), "BTC", ["100", "110", "120", "130"]) == []


def test_a_rise_past_the_threshold_is_a_long_signal() -> None:
    # 100 -> 100.5 over the window: exactly the 50 bps threshold, confidence 0.5.
    (momentum,) = _feed(_detector(), "BTC", ["100", "100.1", "100.2", "100.3", "100.5"])
    assert momentum.direction == "long"
    assert momentum.return_bps == Decimal("50.00")
    assert momentum.confidence == 0.5
    assert momentum.price == Decimal("100.5")


def test_a_fall_is_a_short_signal_and_strength_caps_confidence() -> None:
    (momentum,) = _feed(_detector(), "ETH", ["100", "99", "98", "97", "96"])
    assert momentum.direction == "short"
    assert momentum.return_bps == Decimal("-400.00")
    assert momentum.confidence == 1.0


def test_confidence_grows_with_strength() -> None:
    (momentum,) = _feed(_detector(), "X", ["100", "100", "100", "100", "100.75"])
    assert momentum.confidence == 0.75


def test_below_threshold_no_signal() -> None:
    assert _feed(_detector(), "BTC", ["100", "100.1", "100.2", "100.3", "100.49"]) == []


def test_after_a_signal_a_fresh_window_is_needed() -> None:
    detector = _detector(window=3)
    assert len(_feed(detector, "BTC", ["100", "101", "102"])) == 1
    # The window restarts from 102: two more prices complete it.
    assert _feed(detector, "BTC", ["103"]) == []
    assert len(_feed(detector, "BTC", ["104"])) == 1


def test_assets_are_independent() -> None:
    detector = _detector(window=3)
    assert _feed(detector, "A", ["100", "101"]) == []
    assert _feed(detector, "B", ["100", "90"]) == []
    assert [m.asset for m in _feed(detector, "A", ["102"])] == ["A"]


def test_bad_prices_are_ignored() -> None:
    detector = _detector(window=2)
    assert detector.observe("A", Decimal(0)) is None
    assert detector.observe("A", Decimal("NaN")) is None
    assert _feed(detector, "A", ["100", "110"])


@given(st.lists(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**9), places=6)))
def test_confidence_is_always_a_probability(prices: list[Decimal]) -> None:
    detector = _detector(window=4, threshold_bps=10)
    for price in prices:
        momentum = detector.observe("A", price)
        if momentum is not None:
            assert 0.5 <= momentum.confidence <= 1.0
            assert (momentum.direction == "long") == (momentum.return_bps > 0)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    scout.add_arguments(parser)
    return parser.parse_args(argv)


def test_options() -> None:
    options = scout.options_from_args(_args("--assets", "BTC,ETH", "--threshold-bps", "25"))
    assert options.assets == ("BTC", "ETH")
    assert options.threshold_bps == Decimal(25)
    assert scout.options_from_args(_args()).assets == ()


@pytest.mark.parametrize(
    "argv", [("--window-prices", "1"), ("--threshold-bps", "0"), ("--assets", "a b")]
)
def test_bad_options(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        scout.options_from_args(_args(*argv))
