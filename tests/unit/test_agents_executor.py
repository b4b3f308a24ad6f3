"""The executor's pure decisions: its answer to a call for proposals, and its paper trades."""

import argparse
import random
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.errors import ConfigError
from agents.messages import PaperTrade, trade_of
from agents.prices import PricePoint
from agents.roles import executor
from agents.roles.executor import BidPolicy, ExecutorProfile, TradeFailure, paper_trade
from protocols.swarm import Bid, CallForProposals, RefuseTask, Weights


def _cfp(**changes: Any) -> CallForProposals:
    fields: dict[str, Any] = {
        "task_id": "task-1",
        "manager": "treasury",
        "task_type": "execute",
        "asset": "BTC",
        "deadline_ms": 1000,
        "max_cost": "20",
        "payload": {"signal": {"direction": "long"}, "size": "0.02"},
        "weights": Weights(),
        "closes_at_ns": 0,
        "eligible": ["exec-a"],
    } | changes
    return CallForProposals(**fields)


def _policy(seed: int = 1, **profile: Any) -> BidPolicy:
    return BidPolicy("exec-a", ExecutorProfile(**profile), random.Random(seed))


def _answer(policy: BidPolicy, cfp: CallForProposals | None = None, **state: Any) -> Any:
    values = {"price_known": True, "busy": 0, "completed": 0} | state
    return policy.answer(cfp or _cfp(), **values)


def test_bid_from_profile_without_jitter() -> None:
    bid = _answer(_policy(jitter=0.0, cost_fraction=0.5, time_ms=200, confidence=0.8))
    assert isinstance(bid, Bid)
    assert bid.cost == Decimal(10)
    assert bid.time_ms == 200
    assert bid.confidence == 0.8
    assert len(bid.capability_proof) == 32


def test_bids_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    first = [_answer(_policy(seed=5)) for _ in range(3)]
    again = [_answer(_policy(seed=5)) for _ in range(3)]
    other = _answer(_policy(seed=6))
    assert first == again
    assert other != first[0]


@given(
    st.integers(min_value=0, max_value=2**32),
    st.floats(min_value=0.01, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
    st.integers(min_value=1, max_value=5000),
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**6), places=6),
)
def test_a_bid_always_fits_the_task(
    seed: int, fraction: float, jitter: float, time_ms: int, max_cost: Decimal
) -> None:
    policy = _policy(seed, cost_fraction=fraction, jitter=jitter, time_ms=min(time_ms, 1000))
    bid = _answer(policy, _cfp(max_cost=str(max_cost)))
    assert isinstance(bid, Bid)
    assert Decimal("0.000001") <= bid.cost <= max_cost
    exponent = bid.cost.as_tuple().exponent
    assert isinstance(exponent, int) and exponent >= -6
    assert 1 <= bid.time_ms <= 1000
    assert 0.0 <= bid.confidence <= 1.0


@pytest.mark.parametrize(
    ("cfp_changes", "state", "profile", "reason"),
    [
        ({"task_type": "analyze"}, {}, {}, "does not do analyze tasks"),
        ({}, {"price_known": False}, {}, "no price known for BTC"),
        ({}, {"busy": 4}, {"capacity": 4}, "at capacity"),
        ({"deadline_ms": 100}, {}, {"time_ms": 200}, "needs 200 ms"),
        ({"max_cost": "abc"}, {}, {}, "is not a number"),
        ({"max_cost": "0"}, {}, {}, "leaves nothing to bid"),
    ],
)
def test_refusals_say_why(
    cfp_changes: dict[str, Any], state: dict[str, Any], profile: dict[str, Any], reason: str
) -> None:
    answer = _answer(_policy(**profile), _cfp(**cfp_changes), **state)
    assert isinstance(answer, RefuseTask)
    assert reason in answer.reason


def _price(value: str) -> PricePoint:
    return PricePoint(at_ns=5, price=Decimal(value))


def test_paper_trade_fills_at_the_oracle_price() -> None:
    trade = paper_trade(
        _cfp(), _price("50000"), executor="exec-a", slippage_bps=Decimal(0), at_ns=1_000
    )
    assert trade == PaperTrade(
        asset="BTC",
        direction="long",
        size=Decimal("0.02"),
        fill_price=Decimal(50_000),
        oracle_price=Decimal(50_000),
        at_ns=1_000,
        at="1970-01-01T00:00:00.000001Z",
        executor="exec-a",
    )


@pytest.mark.parametrize(("direction", "fill"), [("long", "101"), ("short", "99")])
def test_slippage_moves_the_fill_against_the_executor(direction: str, fill: str) -> None:
    cfp = _cfp(payload={"signal": {"direction": direction}, "size": "1"})
    trade = paper_trade(cfp, _price("100"), executor="e", slippage_bps=Decimal(100), at_ns=0)
    assert isinstance(trade, PaperTrade)
    assert trade.direction == direction
    assert trade.fill_price == Decimal(fill)


def test_direction_defaults_to_long() -> None:
    cfp = _cfp(payload={"size": 3})
    trade = paper_trade(cfp, _price("10"), executor="e", slippage_bps=Decimal(0), at_ns=0)
    assert isinstance(trade, PaperTrade) and trade.direction == "long"


@pytest.mark.parametrize(
    ("payload", "price", "reason"),
    [
        ({"size": "1"}, None, "no price known for BTC"),
        ({}, "10", "no positive size"),
        ({"size": "-1"}, "10", "no positive size"),
        ({"size": "lots"}, "10", "no positive size"),
        ({"size": [1]}, "10", "no positive size"),
    ],
)
def test_paper_trade_failures(payload: dict[str, Any], price: str | None, reason: str) -> None:
    point = None if price is None else _price(price)
    outcome = paper_trade(
        _cfp(payload=payload), point, executor="e", slippage_bps=Decimal(0), at_ns=0
    )
    assert isinstance(outcome, TradeFailure)
    assert reason in outcome.reason


def test_a_reported_trade_reads_back_from_json_builtins() -> None:
    trade = paper_trade(
        _cfp(), _price("123.456789"), executor="e", slippage_bps=Decimal(0), at_ns=9
    )
    assert isinstance(trade, PaperTrade)
    output = msgspec.json.decode(msgspec.json.encode(msgspec.to_builtins(trade)))
    assert trade_of(output) == trade
    assert trade_of({"asset": "BTC"}) is None


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    executor.add_arguments(parser)
    return parser.parse_args(argv)


def test_profile_options() -> None:
    profile = executor.profile_from_args(
        _args("--capabilities", "execute,hedge", "--slippage-bps", "150", "--cost-fraction", "0.3")
    )
    assert profile.capabilities == ("execute", "hedge")
    assert profile.slippage_bps == Decimal(150)
    assert profile.cost_fraction == 0.3


@pytest.mark.parametrize(
    "argv",
    [
        ("--capabilities", ""),
        ("--cost-fraction", "0"),
        ("--cost-fraction", "1.5"),
        ("--time-ms", "0"),
        ("--confidence", "1.2"),
        ("--capacity", "0"),
        ("--slippage-bps", "-1"),
    ],
)
def test_bad_profile_options(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        executor.profile_from_args(_args(*argv))
