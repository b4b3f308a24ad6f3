"""The oracle's pure parts: the seeded random walk and the price CSV parser."""

import argparse
import itertools
import random
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.errors import ConfigError
from agents.roles import oracle
from agents.roles.oracle import PriceRow, RandomWalk, RandomWalkSettings, parse_price_csv

START = {"BTC": Decimal(50_000), "ETH": Decimal(3_000)}


def _walk(seed: int, settings: RandomWalkSettings | None = None) -> RandomWalk:
    return RandomWalk(START, settings or RandomWalkSettings(), random.Random(seed))


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def test_walk_is_deterministic_per_seed() -> None:
    walk_a, walk_b, walk_c = _walk(7), _walk(7), _walk(8)
    steps_a = [walk_a.step() for _ in range(50)]
    assert steps_a == [walk_b.step() for _ in range(50)]
    assert steps_a != [walk_c.step() for _ in range(50)]


def test_walk_moves_every_asset_in_order_with_six_decimals_at_most() -> None:
    walk = _walk(1)
    for _ in range(200):
        step = walk.step()
        assert [asset for asset, _ in step] == ["BTC", "ETH"]
        for _, price in step:
            assert price > 0
            assert _places(price) <= 6


@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=40))
def test_walk_never_reaches_zero(seed: int, regime_ticks: int) -> None:
    settings = RandomWalkSettings(
        volatility_bps=Decimal(500), trend_bps=Decimal(300), regime_ticks=regime_ticks
    )
    walk = RandomWalk({"X": Decimal("0.01")}, settings, random.Random(seed))
    for _ in range(100):
        ((_, price),) = walk.step()
        assert price >= oracle.PRICE_MIN


def test_walk_without_noise_follows_its_trend_regimes() -> None:
    # No noise: each regime moves the price by exactly trend_bps per tick, up, down or flat.
    settings = RandomWalkSettings(volatility_bps=Decimal(0), trend_bps=Decimal(10), regime_ticks=5)
    walk = RandomWalk({"X": Decimal(100)}, settings, random.Random(3))
    prices = [Decimal(100)] + [walk.step()[0][1] for _ in range(100)]
    moves = {(b - a) / a * 10_000 for a, b in itertools.pairwise(prices)}
    rounded = {round(move) for move in moves}
    assert rounded <= {-10, 0, 10}
    assert len(rounded) >= 2


def test_csv_asset_price_rows_are_a_tick_apart() -> None:
    rows = parse_price_csv("asset,price\nBTC,100\nETH,2.5\n", tick_ms=200)
    assert rows == [
        PriceRow(offset_ms=0, asset="BTC", price=Decimal(100)),
        PriceRow(offset_ms=200, asset="ETH", price=Decimal("2.5")),
    ]


def test_csv_without_header_and_with_blank_lines() -> None:
    rows = parse_price_csv("BTC,100\n\nBTC,101\n", tick_ms=50)
    assert [r.offset_ms for r in rows] == [0, 50]


def test_csv_at_in_milliseconds_keeps_spacing() -> None:
    rows = parse_price_csv("at,asset,price\n1000,BTC,1\n1250,ETH,2\n1250,BTC,3\n", tick_ms=999)
    assert [r.offset_ms for r in rows] == [0, 250, 250]


def test_csv_at_in_rfc3339() -> None:
    text = "2026-01-01T00:00:00Z,BTC,1\n2026-01-01T00:00:01.5+00:00,BTC,2\n"
    assert [r.offset_ms for r in parse_price_csv(text, tick_ms=1)] == [0, 1500]


def test_csv_prices_are_rounded_to_six_places() -> None:
    (row,) = parse_price_csv("BTC,0.12345678\n", tick_ms=1)
    assert row.price == Decimal("0.123457")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no rows"),
        ("asset,price\n", "no rows"),
        ("BTC\n", "expected 2 columns"),
        ("BTC,1\nETH,2,3\n", "row 2 has 3 columns"),
        ("BTC,abc\n", "row 1: price must be a decimal"),
        ("BTC,-1\n", "row 1: price must be positive"),
        ("BTC,NaN\n", "row 1: price must be finite"),
        ("B.TC,1\n", "row 1: asset"),
        ("200,BTC,1\n100,BTC,2\n", "row 2: at goes backwards"),
        ("yesterday,BTC,1\n", "row 1: at must be milliseconds or an RFC 3339"),
        ("2026-01-01T00:00:00,BTC,1\n", "no time zone"),
    ],
)
def test_csv_errors_name_the_row(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_price_csv(text, tick_ms=100)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    oracle.add_arguments(parser)
    return parser.parse_args(argv)


def test_options_start_prices_known_given_and_default() -> None:
    options = oracle.options_from_args(
        _args("--assets", "BTC,DOGE", "--start-price", "ETH=2000.5", "--tick-ms", "200")
    )
    assert options.tick_ms == 200
    assert options.start_prices == {
        "BTC": Decimal(50_000),
        "DOGE": Decimal(100),
        "ETH": Decimal("2000.5"),
    }
    assert options.replay is None


def test_options_read_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("at_ms,asset,price\n0,BTC,1\n10,BTC,2\n", encoding="utf-8")
    options = oracle.options_from_args(_args("--csv", str(path), "--loop"))
    assert options.loop
    assert options.replay is not None and len(options.replay) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ("--tick-ms", "0"),
        ("--assets", ""),
        ("--start-price", "BTC"),
        ("--start-price", "BTC=-1"),
        ("--volatility-bps", "x"),
        ("--csv", "/nonexistent/prices.csv"),
    ],
)
def test_bad_options_are_config_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        oracle.options_from_args(_args(*argv))
