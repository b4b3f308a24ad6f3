"""Compute futures (docs/economy.md, Compute futures): each worked example of the economy docs,
margin calls and liquidation, lapses, resale, and a refusal with its code for every bad request.

Prices move only as they do live: by a governance vote the operator proposes and all approve.
"""

import json
from decimal import Decimal
from typing import Any

import pytest
from core_support import Harness, restored

from exchange.core.futures import future_account, margin_account
from protocols import commands as c
from protocols import futures as fu
from protocols import queries as q
from protocols import swarm as s
from protocols.ids import ADMIN

MICRO = 1_000_000
START = 10_000 * MICRO
ROSTER = ("builder", "claude", "lambda", "observer", "spark", "zero")
HOUR = 3600
D = Decimal


def bal(h: Harness, account: str) -> int:
    return h.ex.ledger.book.balance(account)


def set_price(h: Harness, model: str, price: str) -> None:
    """The operator proposes a price and every agent approves: it applies at once."""
    outcome = h.apply(
        ADMIN,
        s.ProposeVote(
            request_id=h.rid(),
            title="price",
            kind="supermajority",
            action=s.ModelPriceAction(model=model, price=Decimal(price)),
        ),
    )
    assert outcome.ok, outcome.reply
    proposal_id = json.loads(outcome.reply)["result"]["proposal_id"]
    for voter in ROSTER:
        h.ok(voter, s.CastVote, proposal_id=proposal_id, ballot=s.Ballot(choice="yes"))
    assert h.ex.ledger.prices_micro[model] == Decimal(price) * MICRO


def written(h: Harness, writer: str = "claude", **fields: Any) -> dict[str, Any]:
    """claude writes 10,000 claude-opus tokens at 15 per 1K (notional 150), expiring in 2 h."""
    args: dict[str, Any] = {
        "model": "claude-opus",
        "tokens": 10_000,
        "price": Decimal(15),
        "expires_in_s": 2 * HOUR,
    }
    return h.ok(writer, fu.WriteFuture, **(args | fields))


def taken(h: Harness, buyer: str = "builder") -> str:
    future_id: str = written(h)["future_id"]
    view = h.ok(buyer, fu.TakeFuture, future_id=future_id, price=Decimal(150))
    assert view["state"] == "open" and view["holder"] == buyer
    return future_id


def settle_at_expiry(h: Harness, future_id: str) -> dict[str, Any]:
    h.advance(2 * HOUR)
    h.tick()
    return h.query(fu.FutureQuery(future_id=future_id))


def test_writing_holds_the_margin_and_taking_holds_the_notional() -> None:
    h = Harness()
    view = written(h)
    assert (view["notional"], view["margin"], view["state"]) == ("150", "150", "offered")
    assert bal(h, "claude") == START - 150 * MICRO
    assert bal(h, margin_account(view["future_id"])) == 150 * MICRO
    h.ok("builder", fu.TakeFuture, future_id=view["future_id"], price=Decimal(150))
    assert bal(h, "builder") == START - 150 * MICRO
    assert bal(h, future_account(view["future_id"])) == 150 * MICRO
    for agent in ("claude", "builder"):
        assert h.query(q.BalanceQuery(agent=agent))["in_futures"] == "150"
    assert "in_futures" not in h.query(q.BalanceQuery(agent="zero"))  # left out at 0
    h.ex.check_invariants()


@pytest.mark.parametrize(
    ("price", "to_holder", "to_writer"),
    [("15", 150, 150), ("18", 180, 120), ("12", 120, 180), ("40", 300, 0)],
)
def test_settlement_pays_the_holder_the_spot_value_within_the_margin(
    price: str, to_holder: int, to_writer: int
) -> None:
    """The worked examples: F = 150, margin 150; the holder gets min(S, 300). (At 40 the margin
    checks find the writer can pay; the call is then returned with the rest at settlement.)"""
    h = Harness()
    future_id = taken(h)
    set_price(h, "claude-opus", price)
    view = settle_at_expiry(h, future_id)
    if price == "40":
        # A check at 1 h called for 400 − 150 + 150 − 150 = 250: margin 400, the holder gets 400.
        to_holder, to_writer = 400, 150
    assert view["state"] == "settled"
    assert (view["to_holder"], view["to_writer"]) == (str(to_holder), str(to_writer))
    assert bal(h, "builder") == START - 150 * MICRO + to_holder * MICRO
    assert bal(h, "claude") - START == (to_writer - 150 - (250 if price == "40" else 0)) * MICRO
    assert bal(h, future_account(future_id)) == bal(h, margin_account(future_id)) == 0
    h.ex.check_invariants()


def test_a_margin_call_the_writer_cannot_meet_liquidates_at_spot() -> None:
    """The docs' third example: the price goes to 28, the writer is called for 130 and cannot pay
    it above its reserve, so the future settles at once: the holder gets 280, the writer 20."""
    h = Harness()
    future_id = taken(h)
    h.drain_to("claude", 500 + 100)  # after the margin of 150: 450 < reserve + 130
    set_price(h, "claude-opus", "28")
    h.advance(HOUR)
    h.tick()
    view = h.query(fu.FutureQuery(future_id=future_id))
    assert view["state"] == "liquidated"
    assert (view["spot"], view["to_holder"], view["to_writer"]) == ("280", "280", "20")
    assert bal(h, "claude") == 620 * MICRO
    h.ex.check_invariants()


def test_a_margin_call_the_writer_can_meet_tops_the_margin_up() -> None:
    h = Harness()
    future_id = taken(h)
    set_price(h, "claude-opus", "28")
    h.advance(HOUR)
    h.tick()
    view = h.query(fu.FutureQuery(future_id=future_id))
    assert (view["state"], view["margin"]) == ("open", "280")
    assert bal(h, margin_account(future_id)) == 280 * MICRO
    assert settle_at_expiry(h, future_id)["to_holder"] == "280"


def test_an_offer_nobody_takes_lapses_and_returns_the_margin() -> None:
    h = Harness()
    future_id = written(h)["future_id"]
    view = settle_at_expiry(h, future_id)
    assert (view["state"], view["margin"]) == ("lapsed", "0")
    assert bal(h, "claude") == START
    h.refused("builder", fu.TakeFuture, "future_not_open", future_id=future_id, price=D(150))


def test_the_exchange_writes_from_what_its_model_account_was_paid() -> None:
    h = Harness()
    h.refused(
        "builder",
        fu.BuyFuture,
        "insufficient_funds",
        model="claude-opus",
        tokens=10_000,
        expires_in_s=HOUR,
    )
    for _ in range(3):  # 3 × 75 = 225 tokens paid to @llm.claude-opus
        h.ok("claude", c.LlmRequest, task_type="coding", tokens=5000)
    inference_cost = h.ex.metric_inputs().cost_total_micro
    view = h.ok("builder", fu.BuyFuture, model="claude-opus", tokens=10_000, expires_in_s=HOUR)
    assert (view["writer"], view["holder"], view["state"]) == (
        "@llm.claude-opus",
        "builder",
        "open",
    )
    assert bal(h, "@llm.claude-opus") == 75 * MICRO
    set_price(h, "claude-opus", "12")
    h.advance(HOUR)
    h.tick()
    ended = h.query(fu.FutureQuery(future_id=view["future_id"]))
    assert (ended["to_holder"], ended["to_writer"]) == ("120", "180")
    assert bal(h, "@llm.claude-opus") == (75 + 180) * MICRO
    # The swarm metrics count what was paid for inference, not the exchange's futures.
    assert h.ex.metric_inputs().cost_total_micro == inference_cost == 225 * MICRO
    assert h.ex.futures.llm_net_micro == 30 * MICRO
    assert restored(h.ex).futures.llm_net_micro == 30 * MICRO
    h.ex.check_invariants()


def test_a_holder_resells_to_a_named_agent_at_the_listed_price() -> None:
    h = Harness()
    future_id = taken(h)
    h.ok("builder", fu.ListFuture, future_id=future_id, price=Decimal(160), to="lambda")
    h.refused("spark", fu.TakeFuture, "not_authorized", future_id=future_id, price=D(160))
    h.refused("lambda", fu.TakeFuture, "price_mismatch", future_id=future_id, price=D(150))
    view = h.ok("lambda", fu.TakeFuture, future_id=future_id, price=Decimal(160))
    assert view["holder"] == "lambda" and view["listing_price"] is None
    assert bal(h, "builder") == START - 150 * MICRO + 160 * MICRO
    assert settle_at_expiry(h, future_id)["to_holder"] == "150"
    assert bal(h, "lambda") == START - 160 * MICRO + 150 * MICRO
    h.refused("lambda", fu.ListFuture, "future_not_open", future_id=future_id, price=D(1))


def test_a_future_survives_a_restart_and_is_in_the_digest() -> None:
    h = Harness()
    before = h.ex.digest()
    future_id = taken(h)
    assert h.ex.digest() != before
    again = restored(h.ex)
    assert again.digest() == h.ex.digest() and again.snapshot() == h.ex.snapshot()
    assert again.futures.by_id[future_id] == h.ex.futures.by_id[future_id]


def test_every_bad_request_is_refused_with_its_code() -> None:
    h = Harness()
    base = {"model": "claude-opus", "tokens": 10_000, "price": D(15), "expires_in_s": HOUR}
    h.refused("claude", fu.WriteFuture, "self_dealing", **base, buyer="claude")
    h.refused("claude", fu.WriteFuture, "unknown_agent", **base, buyer="nobody")
    h.refused("claude", fu.WriteFuture, "unknown_model", **(base | {"model": "gpt-9"}))
    h.refused("claude", fu.WriteFuture, "parameter_out_of_bounds", **(base | {"expires_in_s": 5}))
    h.refused("claude", fu.WriteFuture, "amount_must_be_positive", **(base | {"price": D(0)}))
    h.refused(
        "claude",
        fu.WriteFuture,
        "amount_must_be_positive",
        **(base | {"price": D("0.000001"), "tokens": 1}),
    )
    h.refused(ADMIN, fu.WriteFuture, "not_authorized", **base)
    h.drain_to("claude", 600)
    h.refused("claude", fu.WriteFuture, "reserve_would_be_breached", **base)
    h.refused("builder", fu.TakeFuture, "unknown_future", future_id="future-9", price=D(1))
    future_id = written(h, "lambda", buyer="builder")["future_id"]
    h.refused("lambda", fu.TakeFuture, "self_dealing", future_id=future_id, price=D(150))
    h.refused("spark", fu.TakeFuture, "not_authorized", future_id=future_id, price=D(150))
    h.refused("builder", fu.TakeFuture, "price_mismatch", future_id=future_id, price=D(149))
    h.refused("builder", fu.ListFuture, "future_not_open", future_id=future_id, price=D(1))
    h.ok("builder", fu.TakeFuture, future_id=future_id, price=D(150))
    h.refused("spark", fu.ListFuture, "not_authorized", future_id=future_id, price=D(1))
    h.refused("spark", fu.TakeFuture, "future_not_open", future_id=future_id, price=D(150))
    h.refused(
        "builder", fu.ListFuture, "self_dealing", future_id=future_id, price=D(1), to="lambda"
    )
    h.refused("builder", fu.ListFuture, "amount_must_be_positive", future_id=future_id, price=D(0))
