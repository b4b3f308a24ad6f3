"""Risk's positions, alerts and ballots, and the analyst's simulated model: their pure logic."""

import argparse
import random
from decimal import Decimal

import pytest

from agents.errors import ConfigError
from agents.prices import PriceBook
from agents.roles import analyst, risk
from agents.roles.analyst import SimulatedModel, count_tokens, facts_of, prompt_of
from agents.roles.risk import Portfolio, RiskMonitor, decide_ballot, raises_limits
from protocols.results import LimitsResult
from protocols.swarm import BidScore, ContractAction, LimitsAction, TaskAward, VoteOpened


def _prices(**latest: str) -> PriceBook:
    book = PriceBook()
    for asset, price in latest.items():
        book.observe(asset, Decimal(price), 0)
    return book


def test_portfolio_nets_positions_and_marks_them() -> None:
    portfolio = Portfolio()
    portfolio.apply("BTC", "long", Decimal(2), Decimal(100))
    portfolio.apply("BTC", "short", Decimal(1), Decimal(110))
    portfolio.apply("ETH", "short", Decimal(3), Decimal(10))
    marks = portfolio.mark(_prices(BTC="120", ETH="8"))
    # BTC: 1 unit, paid 200 - 110 = 90, worth 120. ETH: -3 units, received 30, worth -24.
    assert marks.exposure_by_asset == {"BTC": Decimal(120), "ETH": Decimal(24)}
    assert marks.pnl_by_asset == {"BTC": Decimal(30), "ETH": Decimal(6)}
    assert (marks.exposure, marks.pnl) == (Decimal(144), Decimal(36))


def test_an_unpriced_position_is_marked_at_cost() -> None:
    portfolio = Portfolio()
    portfolio.apply("SOL", "long", Decimal(4), Decimal(5))
    marks = portfolio.mark(PriceBook())
    assert (marks.exposure, marks.pnl) == (Decimal(20), Decimal(0))


def test_exposure_alerts_once_and_rearms_under_ninety_percent() -> None:
    monitor = RiskMonitor(exposure_max=Decimal(100), drawdown_max=Decimal(1000))
    portfolio = Portfolio()
    portfolio.apply("BTC", "long", Decimal(1), Decimal(100))
    assert monitor.evaluate(portfolio.mark(_prices(BTC="100"))) == []
    (alert,) = monitor.evaluate(portfolio.mark(_prices(BTC="120")))
    assert (alert.kind, alert.asset, alert.confidence) == ("exposure", "BTC", 0.7)
    assert monitor.evaluate(portfolio.mark(_prices(BTC="130"))) == []
    assert monitor.evaluate(portfolio.mark(_prices(BTC="95"))) == []  # still above 90
    assert monitor.evaluate(portfolio.mark(_prices(BTC="89"))) == []  # re-armed
    assert [a.kind for a in monitor.evaluate(portfolio.mark(_prices(BTC="101")))] == ["exposure"]


def test_drawdown_from_the_peak_alerts_on_the_worst_asset() -> None:
    monitor = RiskMonitor(exposure_max=Decimal(10**9), drawdown_max=Decimal(50))
    portfolio = Portfolio()
    portfolio.apply("BTC", "long", Decimal(1), Decimal(100))
    portfolio.apply("ETH", "long", Decimal(1), Decimal(100))
    assert monitor.evaluate(portfolio.mark(_prices(BTC="200", ETH="100"))) == []  # peak 100
    (alert,) = monitor.evaluate(portfolio.mark(_prices(BTC="160", ETH="80")))
    assert (alert.kind, alert.asset, alert.value) == ("drawdown", "ETH", Decimal(60))
    assert alert.confidence == 0.7


def _limits(**values: str) -> LimitsResult:
    fields = {"burst": "500", "reserve": "500", "hourly": "1000", "daily": "10000"} | values
    return LimitsResult(
        agent="treasury",
        hourly_used="0",
        daily_used="0",
        hourly_remaining="0",
        daily_remaining="0",
        **fields,
    )


@pytest.mark.parametrize(
    ("action", "raises"),
    [
        (LimitsAction(agent="t", burst=Decimal(600)), True),
        (LimitsAction(agent="t", burst=Decimal(400)), False),
        (LimitsAction(agent="t", hourly=Decimal(1000)), False),
        (LimitsAction(agent="t", daily=Decimal(20_000)), True),
        (LimitsAction(agent="t", reserve=Decimal(100)), True),
        (LimitsAction(agent="t", reserve=Decimal(900)), False),
        (LimitsAction(agent="t"), False),
    ],
)
def test_raises_limits(action: LimitsAction, raises: bool) -> None:
    assert raises_limits(action, _limits()) is raises


def test_unknown_current_limits_count_as_raised() -> None:
    assert raises_limits(LimitsAction(agent="t", burst=Decimal(1)), None)


def _opened(action: object, kind: str = "plurality") -> VoteOpened:
    return VoteOpened(
        proposal_id="p-1",
        proposer="treasury",
        title="raise limits",
        kind=kind,
        options=[],
        quorum=0,
        closes_at_ns=0,
        eligible=[],
        action=action,  # type: ignore[arg-type]
    )


def test_ballots_follow_exposure() -> None:
    raise_burst = _opened(LimitsAction(agent="treasury", burst=Decimal(900)))
    high = decide_ballot(
        raise_burst, exposure_ratio=Decimal("0.8"), vote_no_above=Decimal("0.8"), current=_limits()
    )
    low = decide_ballot(
        raise_burst, exposure_ratio=Decimal("0.2"), vote_no_above=Decimal("0.8"), current=_limits()
    )
    assert high is not None and high.choice == "no"
    assert low is not None and low.choice == "yes"
    lower_burst = _opened(LimitsAction(agent="treasury", burst=Decimal(100)))
    lowering = decide_ballot(
        lower_burst, exposure_ratio=Decimal(5), vote_no_above=Decimal("0.8"), current=_limits()
    )
    assert lowering is not None and lowering.choice == "yes"


@pytest.mark.parametrize(
    "opened",
    [
        _opened(ContractAction(name="default", budget=Decimal(1))),
        _opened(None),
        _opened(LimitsAction(agent="t", burst=Decimal(1)), kind="approval"),
    ],
)
def test_no_view_no_vote(opened: VoteOpened) -> None:
    ballot = decide_ballot(
        opened, exposure_ratio=Decimal(0), vote_no_above=Decimal(1), current=None
    )
    assert ballot is None


def test_risk_options() -> None:
    parser = argparse.ArgumentParser()
    risk.add_arguments(parser)
    options = risk.options_from_args(parser.parse_args(["--exposure-max", "1000"]))
    assert options.exposure_max == Decimal(1000)
    assert options.vote_no_above == Decimal("0.8")
    with pytest.raises(ConfigError):
        risk.options_from_args(parser.parse_args(["--drawdown-max", "0"]))


def _award() -> TaskAward:
    bids = [
        BidScore(bidder="a", cost="10", time_ms=200, confidence=0.8, score="0.61", accepted=True),
        BidScore(bidder="b", cost="12", time_ms=100, confidence=0.7, score="0.59", accepted=False),
    ]
    return TaskAward(
        task_id="task-3",
        manager="treasury",
        winner="a",
        cost="10",
        escrow_id="escrow-3",
        result_due_at_ns=0,
        bids=bids,
    )


def test_simulated_model_is_deterministic_and_counts_tokens_from_length() -> None:
    award = _award()
    first = SimulatedModel(random.Random(4)).complete(prompt_of(award), facts_of(award))
    again = SimulatedModel(random.Random(4)).complete(prompt_of(award), facts_of(award))
    assert first == again
    assert "task-3" in first.text
    assert first.tokens == count_tokens(prompt_of(award)) + count_tokens(first.text)
    texts = {
        SimulatedModel(random.Random(seed)).complete("p", facts_of(award)).text
        for seed in range(20)
    }
    assert len(texts) > 1


def test_token_count() -> None:
    assert count_tokens("") == 1
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2


def test_facts_name_the_best_and_runner_up_scores() -> None:
    facts = facts_of(_award())
    assert (facts["best_score"], facts["runner_up"], facts["bidders"]) == ("0.61", "0.59", "2")


def test_analyst_options() -> None:
    parser = argparse.ArgumentParser()
    analyst.add_arguments(parser)
    options = analyst.options_from_args(parser.parse_args(["--model", "llama3.2"]))
    assert options.model == "llama3.2"
    bad_options = (
        ["--estimate-tokens", "0"],
        ["--every-nth", "0"],
        ["--reports-dir", "/nope"],
        ["--model", "a b"],
    )
    for bad in bad_options:
        with pytest.raises(ConfigError):
            analyst.options_from_args(parser.parse_args(bad))
