"""The treasury's pure decisions: which signals become tasks, how results are scored, and how an
arbiter rules on a dispute."""

import argparse
from decimal import Decimal

import pytest

from agents.errors import ConfigError
from agents.messages import PaperTrade
from agents.prices import PriceBook
from agents.roles import treasury
from agents.roles.arbiter import arbitrate, fill_slippage_bps
from agents.roles.treasury import AnnouncePolicy, AnnounceSettings, Verifier


def _policy(**settings: object) -> AnnouncePolicy:
    return AnnouncePolicy(AnnounceSettings(**settings))  # type: ignore[arg-type]


def test_weak_signals_are_skipped() -> None:
    policy = _policy(confidence_min=0.7)
    assert policy.consider("BTC", 0.69, now_ms=0) == "weak_signal"
    assert policy.consider("BTC", 0.7, now_ms=0) == "announce"


def test_cooldown_is_per_asset_and_starts_at_the_decision() -> None:
    policy = _policy(cooldown_ms=1000)
    assert policy.consider("BTC", 0.9, now_ms=0) == "announce"
    assert policy.consider("BTC", 0.9, now_ms=999) == "cooling_down"
    assert policy.consider("ETH", 0.9, now_ms=999) == "announce"
    assert policy.consider("BTC", 0.9, now_ms=1000) == "announce"


def test_open_tasks_and_budget_are_capped() -> None:
    policy = _policy(open_tasks_max=2, budget_max=Decimal(30), max_cost=Decimal(20), cooldown_ms=10)
    assert policy.consider("A", 1.0, now_ms=0) == "announce"
    policy.announced("task-1", "A", now_ms=0)
    assert policy.committed() == Decimal(20)
    # A second task would commit 40 > 30.
    assert policy.consider("B", 1.0, now_ms=0) == "over_budget"
    policy.closed("task-1")
    assert policy.consider("B", 1.0, now_ms=0) == "announce"

    roomy = _policy(open_tasks_max=1, budget_max=Decimal(1000))
    roomy.announced("task-1", "A", now_ms=0)
    assert roomy.consider("B", 1.0, now_ms=0) == "too_many_open_tasks"
    assert roomy.closed("task-unknown") is None


def test_size_is_the_notional_at_the_latest_price() -> None:
    policy = _policy(notional=Decimal(1000))
    assert policy.size_for(Decimal(50_000)) == Decimal("0.02")
    assert policy.size_for(Decimal(3)) == Decimal("333.333333")
    assert policy.size_for(None) == Decimal(1)
    assert policy.size_for(Decimal(10) ** 12) == Decimal("0.000001")


def _trade(fill: str, at_ns: int = 1_000_000_000) -> PaperTrade:
    return PaperTrade(
        asset="BTC",
        direction="long",
        size=Decimal(1),
        fill_price=Decimal(fill),
        oracle_price=Decimal(fill),
        at_ns=at_ns,
        at="",
        executor="exec-a",
    )


def _book(*points: tuple[int, str]) -> PriceBook:
    book = PriceBook()
    for at_ns, price in points:
        book.observe("BTC", Decimal(price), at_ns)
    return book


def test_slippage_is_against_the_closest_price_before_the_fill() -> None:
    book = _book((900_000_000, "100"), (1_000_000_000, "101"), (5_000_000_000, "110"))
    assert fill_slippage_bps(_trade("101"), book, lookback_ms=200) == Decimal(0)
    # 100.2 is 20 bps from 100 and 79 bps from 101: the closer price counts.
    assert fill_slippage_bps(_trade("100.2"), book, lookback_ms=200) == Decimal(20)
    # Only prices within the lookback count.
    assert fill_slippage_bps(_trade("110", at_ns=9_000_000_000), book, lookback_ms=100) is None
    # A price the market reached after the fill does not excuse it.
    late = fill_slippage_bps(_trade("110", at_ns=4_000_000_000), book, lookback_ms=10_000)
    assert late == Decimal("891.09")
    # A price stamped a few milliseconds after the fill (another process's clock) still counts.
    assert fill_slippage_bps(_trade("110", at_ns=4_990_000_000), book, lookback_ms=1) == 0


def test_verifier_scores_slippage() -> None:
    verifier = Verifier(slippage_bps_max=Decimal(100))
    assert verifier.judge(_trade("1"), Decimal(0)).score == 1.0
    assert verifier.judge(_trade("1"), Decimal(30)).score == 0.7
    assert verifier.judge(_trade("1"), Decimal(31)).score == 0.69
    assert verifier.judge(_trade("1"), Decimal(250)).score == 0.0
    unverifiable = verifier.judge(_trade("1"), None)
    assert (unverifiable.score, unverifiable.reason) == (0.7, "no_price_near_fill")
    assert verifier.judge(None, None).score == 0.0


def test_verifier_disputes_the_nth_result_on_purpose() -> None:
    verifier = Verifier(slippage_bps_max=Decimal(100), dispute_nth=2)
    scores = [verifier.judge(_trade("1"), Decimal(0)) for _ in range(3)]
    assert [j.score for j in scores] == [1.0, 0.3, 1.0]
    assert scores[1].reason == "deliberate_dispute"


@pytest.mark.parametrize(
    ("trade", "slippage", "outcome", "reason"),
    [
        (None, None, "refund", "output_not_a_trade"),
        (_trade("1"), None, "release", "no_price_near_fill"),
        (_trade("1"), Decimal(50), "release", "fill_within_tolerance"),
        (_trade("1"), Decimal("50.01"), "refund", "fill_off_market"),
    ],
)
def test_arbitration(
    trade: PaperTrade | None, slippage: Decimal | None, outcome: str, reason: str
) -> None:
    assert arbitrate(trade, slippage, release_slippage_bps=Decimal(50)) == (outcome, reason)


def _parse(role: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    spec = treasury.ROLE if role == "treasury" else treasury.ARBITER_ROLE
    spec.add_arguments(parser)
    return parser.parse_args(argv)


def test_treasury_options() -> None:
    options = treasury.options_from_args(
        _parse("treasury", "--bid-window-ms", "300", "--max-cost", "12.5", "--dispute-nth", "1")
    )
    assert options.announce and not options.arbitrate
    assert options.settings.max_cost == Decimal("12.5")
    assert options.dispute_nth == 1


def test_arbiter_only_arbitrates() -> None:
    options = treasury.options_from_args(_parse("arbiter", "--release-slippage-bps", "25"))
    assert options.arbitrate and not options.announce
    assert options.release_slippage_bps == Decimal(25)
    assert options.settings == AnnounceSettings()


@pytest.mark.parametrize(
    "argv",
    [
        ("--no-announce",),
        ("--confidence-min", "2"),
        ("--max-cost", "0"),
        ("--deadline-ms", "0"),
        ("--open-tasks-max", "0"),
        ("--dispute-nth", "-1"),
        ("--task-type", "a.b"),
        ("--bid-window-ms", "1"),
    ],
)
def test_bad_treasury_options(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        treasury.options_from_args(_parse("treasury", *argv))
