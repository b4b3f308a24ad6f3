"""Inference spending (one-step and authorize/settle) and the rate limits around it: prices,
per-task preferences, burst, reserve, sliding hourly and daily windows, their order, and hold
expiry through timers. Numbers from docs/economy.md; every refusal leaves the digest unchanged."""

from decimal import Decimal
from typing import Any

import pytest
from core_support import D, Harness, tokens_for_cost

from exchange.core.config import EconomyConfig, LimitsConfig
from protocols import commands as c
from protocols import queries as q
from protocols.errors import ErrorCode
from protocols.ids import ADMIN, EXCHANGE
from protocols.units import NS_PER_S

GEMINI = D(2)


def llm(
    h: Harness, agent: str, tokens: int, task_type: str = "code", **fields: object
) -> dict[str, Any]:
    return h.ok(agent, c.LlmRequest, task_type=task_type, tokens=tokens, **fields)


def gemini_tokens(cost: Decimal | int | str) -> int:
    """gemini-pro (observer's model) costs 2 per 1,000, so any cost in 0.002 steps is exact."""
    return tokens_for_cost(GEMINI, D(cost))


# ---------------------------------------------------------------------------------- prices


def test_5000_tokens_of_claude_opus_cost_75() -> None:
    h = Harness()
    result = llm(h, "claude", 5000)
    assert result == {
        "agent": "claude",
        "model": "claude-opus",
        "tokens": 5000,
        "cost": "75",
        "balance": "9925",
    }
    assert h.account("@llm.claude-opus") == 75
    assert h.query(q.BalanceQuery(agent="claude"))["spent"] == "75"


def test_5000_tokens_of_llama_cost_half_a_token() -> None:
    h = Harness()
    result = llm(h, "zero", 5000)
    assert (result["model"], result["cost"], result["balance"]) == ("llama3.2", "0.5", "9999.5")
    assert h.account("@llm.llama3.2") == D("0.5")


@pytest.mark.parametrize(
    ("model", "tokens", "cost"),
    [
        ("claude-opus", 1, "0.015"),
        ("claude-sonnet", 1000, "3"),
        ("gemini-pro", 50_000, "100"),
        ("qwen2.5-coder", 1, "0.0001"),
        ("llama3.2", 7, "0.0007"),
        ("claude-opus", 33_333, "499.995"),
    ],
)
def test_cost_is_price_times_tokens_over_1000_exactly(model: str, tokens: int, cost: str) -> None:
    h = Harness()
    assert llm(h, "lambda", tokens, model=model)["cost"] == cost


def test_preferred_model_per_task_type_falls_back_to_the_primary() -> None:
    h = Harness()
    assert llm(h, "builder", 1000, task_type="planning")["model"] == "claude-sonnet"
    assert llm(h, "builder", 1000, task_type="code")["model"] == "qwen2.5-coder"
    assert llm(h, "spark", 1000, task_type="chat")["model"] == "llama3.2"
    assert llm(h, "spark", 1000, task_type="planning")["model"] == "claude-sonnet"


def test_a_named_model_overrides_the_preference() -> None:
    h = Harness()
    result = llm(h, "builder", 1000, task_type="planning", model="gemini-pro")
    assert (result["model"], result["cost"]) == ("gemini-pro", "2")


def test_an_unknown_model_is_refused() -> None:
    h = Harness()
    error = h.refused(
        "claude", c.LlmRequest, ErrorCode.unknown_model, task_type="x", tokens=10, model="gpt-9"
    )
    assert "gpt-9" in error["message"]
    assert "claude-opus" in error["message"]
    h.refused(
        "claude",
        c.LlmAuthorize,
        ErrorCode.unknown_model,
        task_type="x",
        tokens=10,
        model="gpt-9",
    )


@pytest.mark.parametrize("sender", [ADMIN, EXCHANGE])
def test_system_senders_hold_no_balance_to_spend(sender: str) -> None:
    h = Harness()
    h.refused(sender, c.LlmRequest, ErrorCode.not_authorized, task_type="x", tokens=10)


def test_an_unregistered_sender_cannot_spend() -> None:
    h = Harness()
    h.refused("nobody", c.LlmRequest, ErrorCode.unknown_agent, task_type="x", tokens=10)


# ---------------------------------------------------------------------------------- limits
# Limit tests spend as observer on gemini-pro, where every amount below is a whole token count.

OBS = "observer"


def spend(h: Harness, cost: Decimal | int | str, agent: str = OBS) -> dict[str, Any]:
    result = llm(h, agent, gemini_tokens(cost), model="gemini-pro")
    assert D(result["cost"]) == D(cost)
    return result


def refused_spend(h: Harness, code: str, cost: Decimal | int | str) -> dict[str, Any]:
    return h.refused(OBS, c.LlmRequest, code, task_type="x", tokens=gemini_tokens(cost))


def test_a_single_spend_of_660_breaks_the_burst_limit() -> None:
    h = Harness()
    error = h.refused(
        "claude", c.LlmRequest, ErrorCode.burst_limit_exceeded, task_type="x", tokens=44_000
    )
    assert (error["limit"], error["used"], error["requested"]) == ("500", "0", "660")
    assert "retry_after_s" not in error


def test_a_spend_of_exactly_the_burst_is_allowed() -> None:
    h = Harness()
    spend(h, 500)


def test_balance_1000_and_a_debit_of_501_breaks_the_reserve() -> None:
    h = Harness()
    h.drain_to("claude", 1000)
    # A transfer is a debit the agent initiates: the reserve applies, the burst does not.
    error = h.refused(
        "claude", c.Transfer, ErrorCode.reserve_would_be_breached, to="zero", amount=D(501)
    )
    assert (error["limit"], error["used"], error["requested"]) == ("500", "1000", "501")
    h.ok("claude", c.Transfer, to="zero", amount=D(500))
    assert h.balance("claude") == 500


def test_balance_1000_and_an_inference_spend_of_501_breaks_the_reserve() -> None:
    # With the default burst of 500, a spend of 501 is a burst refusal (burst is checked first),
    # so the inference form of the worked example needs a larger burst.
    h = Harness()
    h.ok(ADMIN, c.SetLimits, agent=OBS, limits=c.LimitsSpec(burst=D(1000)))
    h.drain_to(OBS, 1000)
    error = refused_spend(h, ErrorCode.reserve_would_be_breached, 501)
    assert (error["limit"], error["used"], error["requested"]) == ("500", "1000", "501")
    assert spend(h, 500)["balance"] == "500"


def spend_810_this_hour(h: Harness) -> None:
    h.at(0)
    spend(h, 300)
    h.at(600)
    spend(h, 300)
    h.at(1200)
    spend(h, 210)
    h.at(1800)


def test_810_spent_this_hour_and_195_asked_breaks_the_hourly_limit() -> None:
    h = Harness()
    spend_810_this_hour(h)
    error = refused_spend(h, ErrorCode.hourly_limit_exceeded, 195)
    assert (error["limit"], error["used"], error["requested"]) == ("1000", "810", "195")
    # 5 too many: the first spend (300, at 0 s) frees enough when it leaves the window at 3600 s.
    assert error["retry_after_s"] == 1800
    assert "retry in 1800 s" in error["message"]
    # 190 still fits exactly.
    spend(h, 190)
    assert h.limits(OBS)["hourly_remaining"] == "0"


@pytest.mark.parametrize(
    ("asked", "retry_after_s"),
    [
        ("300", 1800),  # 110 too many: the 300 spent at 0 s covers it.
        ("480", 1800),  # 290 too many: still only the first spend.
        ("490", 1800),  # 300 too many: the first spend covers it exactly.
        ("500", 2400),  # 310 too many: needs the spends at 0 s and at 600 s to leave.
    ],
)
def test_retry_after_names_when_enough_capacity_frees(asked: str, retry_after_s: int) -> None:
    h = Harness()
    spend_810_this_hour(h)
    error = refused_spend(h, ErrorCode.hourly_limit_exceeded, asked)
    assert error["retry_after_s"] == retry_after_s
    # And it is right: a nanosecond earlier it is still refused; at that moment it is admitted.
    h.advance(retry_after_s - 1e-9)
    refused_spend(h, ErrorCode.hourly_limit_exceeded, asked)
    h.at(1800 + retry_after_s)
    spend(h, asked)


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    h = Harness()
    h.at(0.25)
    spend(h, 500)
    spend(h, 500)
    h.at(10)
    error = refused_spend(h, ErrorCode.hourly_limit_exceeded, "0.002")
    # Frees at 3600.25 s, that is 3590.25 s from now: rounded up to 3591.
    assert error["retry_after_s"] == 3591


def test_the_hourly_window_frees_capacity_exactly_after_3600_s() -> None:
    h = Harness()
    h.at(100)
    spend(h, 500)
    spend(h, 500)
    assert h.limits(OBS)["hourly_used"] == "1000"
    h.at(100 + 3600 - 1e-9)
    refused_spend(h, ErrorCode.hourly_limit_exceeded, "0.002")
    assert h.limits(OBS)["hourly_remaining"] == "0"
    h.at(100 + 3600)
    assert h.limits(OBS)["hourly_used"] == "0"
    spend(h, 500)
    assert h.limits(OBS)["daily_used"] == "1500"


def test_the_daily_limit_with_default_limits() -> None:
    h = Harness()
    h.award(OBS, 20_000)
    # 1,000 an hour for ten hours fills the daily 10,000 without breaking the hourly limit.
    for hour in range(10):
        h.at(hour * 3600)
        spend(h, 500)
        spend(h, 500)
    h.at(10 * 3600)
    limits = h.limits(OBS)
    assert (limits["hourly_used"], limits["daily_used"]) == ("0", "10000")
    error = refused_spend(h, ErrorCode.daily_limit_exceeded, 100)
    assert (error["limit"], error["used"], error["requested"]) == ("10000", "10000", "100")
    # The first spends leave the day window at 86,400 s, 50,400 s from now.
    assert error["retry_after_s"] == 86_400 - 36_000
    h.at(86_400)
    spend(h, 100)


def test_limits_are_checked_burst_reserve_hourly_daily_in_that_order() -> None:
    h = Harness()
    # A spend of 600 breaks every limit at once; lift them one by one.
    h.ok(
        ADMIN,
        c.SetLimits,
        agent=OBS,
        limits=c.LimitsSpec(burst=D(100), reserve=D(9500), hourly=D(50), daily=D(60)),
    )
    refused_spend(h, ErrorCode.burst_limit_exceeded, 600)
    h.ok(ADMIN, c.SetLimits, agent=OBS, limits=c.LimitsSpec(burst=D(1000)))
    refused_spend(h, ErrorCode.reserve_would_be_breached, 600)
    h.ok(ADMIN, c.SetLimits, agent=OBS, limits=c.LimitsSpec(reserve=D(1)))
    refused_spend(h, ErrorCode.hourly_limit_exceeded, 600)
    h.ok(ADMIN, c.SetLimits, agent=OBS, limits=c.LimitsSpec(hourly=D(5000)))
    error = refused_spend(h, ErrorCode.daily_limit_exceeded, 600)
    # Asking more than the whole window can ever hold: no retry time is given.
    assert "retry_after_s" not in error
    assert "retry in" not in error["message"]
    h.ok(ADMIN, c.SetLimits, agent=OBS, limits=c.LimitsSpec(daily=D(600)))
    spend(h, 600)


def test_limits_are_per_agent_and_set_limits_reports_them() -> None:
    h = Harness()
    result = h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(hourly=D("2.5")))
    assert result == {
        "agent": "zero",
        "burst": "500",
        "reserve": "500",
        "hourly": "2.5",
        "daily": "10000",
        "hourly_used": "0",
        "daily_used": "0",
        "hourly_remaining": "2.5",
        "daily_remaining": "10000",
    }
    assert h.limits("claude")["hourly"] == "1000"
    llm(h, "zero", 25_000)  # 2.5 tokens of llama3.2
    h.refused("zero", c.LlmRequest, ErrorCode.hourly_limit_exceeded, task_type="x", tokens=1)
    llm(h, "claude", 1)


def test_limits_from_the_config_and_at_registration() -> None:
    h = Harness(EconomyConfig(limits=LimitsConfig(burst=D(10))))
    assert h.limits("claude")["burst"] == "10"
    h.ok(
        ADMIN,
        c.RegisterAgent,
        agent="scout-1",
        base_rate=D(50),
        primary_llm="gemini-pro",
        limits=c.LimitsSpec(burst=D(1)),
    )
    assert (h.limits("scout-1")["burst"], h.limits("scout-1")["hourly"]) == ("1", "1000")


@pytest.mark.parametrize("sender", ["claude", "nobody"])
def test_only_the_operator_sets_limits(sender: str) -> None:
    h = Harness()
    limits = c.LimitsSpec(burst=D(10_000))
    h.refused(sender, c.SetLimits, ErrorCode.not_authorized, agent="claude", limits=limits)


def test_set_limits_refusals() -> None:
    h = Harness()
    limits = c.LimitsSpec(burst=D(1))
    h.refused(ADMIN, c.SetLimits, ErrorCode.unknown_agent, agent="nobody", limits=limits)
    limits = c.LimitsSpec(daily=D("0.0000001"))
    error = h.refused(ADMIN, c.SetLimits, ErrorCode.too_many_decimals, agent="zero", limits=limits)
    assert error["path"] == "$.limits.daily"


def test_transfers_do_not_count_as_spends() -> None:
    h = Harness()
    h.ok("claude", c.Transfer, to="zero", amount=D(2000))
    assert h.limits("claude")["hourly_used"] == "0"


# ---------------------------------------------------------------------------------- authorize


def authorize(h: Harness, agent: str, tokens: int, **fields: object) -> dict[str, Any]:
    return h.ok(agent, c.LlmAuthorize, task_type="code", tokens=tokens, **fields)


def settle(h: Harness, sender: str, authorization_id: str, tokens: int) -> dict[str, Any]:
    return h.ok(sender, c.LlmSettle, authorization_id=authorization_id, tokens=tokens)


def refused_settle(
    h: Harness, code: str, cost: Decimal | int | str, auth: str = "auth-1"
) -> dict[str, Any]:
    tokens = gemini_tokens(cost)
    return h.refused(OBS, c.LlmSettle, code, authorization_id=auth, tokens=tokens)


def test_authorize_holds_the_estimate_and_settle_below_releases_the_rest() -> None:
    h = Harness()
    held = authorize(h, "claude", 10_000)
    assert held == {
        "authorization_id": "auth-1",
        "agent": "claude",
        "model": "claude-opus",
        "tokens": 10_000,
        "held": "150",
        "expires_at_ns": 300 * NS_PER_S,
    }
    assert h.balance("claude") == 9850
    assert h.account("@escrow") == 150
    assert h.query(q.BalanceQuery(agent="claude"))["held"] == "150"
    assert h.limits("claude")["hourly_used"] == "150"
    done = settle(h, "claude", "auth-1", 6000)
    assert done == {
        "authorization_id": "auth-1",
        "agent": "claude",
        "model": "claude-opus",
        "tokens": 6000,
        "cost": "90",
        "released": "60",
        "balance": "9910",
    }
    assert h.account("@escrow") == 0
    assert h.account("@llm.claude-opus") == 90
    assert h.limits("claude")["hourly_used"] == "90"
    assert h.query(q.BalanceQuery(agent="claude"))["spent"] == "90"


def test_settle_with_zero_tokens_releases_everything() -> None:
    h = Harness()
    authorize(h, "claude", 10_000)
    done = settle(h, "claude", "auth-1", 0)
    assert (done["cost"], done["released"], done["balance"]) == ("0", "150", "10000")
    assert h.limits("claude")["hourly_used"] == "0"


def test_settle_above_the_hold_pays_the_difference_under_limits() -> None:
    h = Harness()
    authorize(h, "claude", 10_000)
    done = settle(h, "claude", "auth-1", 20_000)
    assert (done["cost"], done["released"], done["balance"]) == ("300", "0", "9700")
    assert h.account("@llm.claude-opus") == 300
    assert h.account("@escrow") == 0
    assert h.limits("claude")["hourly_used"] == "300"


def test_settle_above_the_hold_is_refused_beyond_the_burst() -> None:
    h = Harness()
    authorize(h, OBS, gemini_tokens(100))
    error = refused_settle(h, ErrorCode.burst_limit_exceeded, 501)
    assert error["requested"] == "501"
    # The hold is still open and can be settled within its limits.
    assert settle(h, OBS, "auth-1", gemini_tokens(500))["cost"] == "500"


def test_settle_above_the_hold_is_refused_beyond_the_hourly_limit() -> None:
    h = Harness()
    spend(h, 450)
    spend(h, 450)
    authorize(h, OBS, gemini_tokens(50))
    # 950 used: settling at 200 needs 150 more (1,100); at 100 it needs 50 more (1,000).
    error = refused_settle(h, ErrorCode.hourly_limit_exceeded, 200)
    assert (error["used"], error["requested"]) == ("950", "150")
    assert settle(h, OBS, "auth-1", gemini_tokens(100))["cost"] == "100"
    assert h.limits(OBS)["hourly_used"] == "1000"


def test_settle_above_the_hold_is_refused_beyond_the_reserve() -> None:
    h = Harness()
    h.drain_to(OBS, 700)
    authorize(h, OBS, gemini_tokens(100))
    # Balance 600 with 100 held; settling at 250 needs 150 more and would leave 450 < 500.
    error = refused_settle(h, ErrorCode.reserve_would_be_breached, 250)
    assert (error["used"], error["requested"]) == ("600", "150")
    assert settle(h, OBS, "auth-1", gemini_tokens(200))["balance"] == "500"


def test_settle_above_the_hold_after_it_left_the_window_counts_the_extra_now() -> None:
    """The extra paid at settle time is a spend now, even when the hold's own spend (counted at
    authorization time) has already left the hourly window."""
    h = Harness()
    authorize(h, OBS, gemini_tokens("1.5"), timeout_s=7200)
    h.at(3700)
    settle(h, OBS, "auth-1", gemini_tokens(495))
    assert h.limits(OBS)["hourly_used"] == "493.5"
    spend(h, 450)
    error = refused_spend(h, ErrorCode.hourly_limit_exceeded, 450)
    assert error["used"] == "943.5"


def test_an_unsettled_authorization_expires_and_is_voided_by_a_later_command() -> None:
    h = Harness()
    authorize(h, "claude", 10_000, timeout_s=60)
    assert h.ex.next_timer_ns() == 60 * NS_PER_S
    h.at(59.999)
    h.ok("zero", c.Transfer, to="spark", amount=D(1))
    assert h.balance("claude") == 9850
    h.at(60)
    # Any command at or past the deadline fires the timer first; its postings ride with it.
    outcome = h.send("zero", c.Transfer, to="spark", amount=D(1))
    assert outcome.ok
    voids = [p for p in outcome.postings if p.kind == "void.llm"]
    assert [(p.debit, p.credit, p.amount_micro) for p in voids] == [
        ("@escrow", "claude", 150_000_000)
    ]
    assert h.balance("claude") == 10_000
    assert h.account("@escrow") == 0
    assert h.limits("claude")["hourly_used"] == "0"
    error = h.refused(
        "claude", c.LlmSettle, ErrorCode.authorization_closed, authorization_id="auth-1", tokens=1
    )
    assert "voided" in error["message"]


def test_a_tick_voids_an_expired_authorization() -> None:
    h = Harness()
    authorize(h, "claude", 10_000)
    h.at(1000)
    outcome = h.tick()
    assert [p.kind for p in outcome.postings] == ["void.llm"]
    assert h.balance("claude") == 10_000
    assert h.ex.next_timer_ns() is None


def test_a_refused_command_still_fires_due_timers() -> None:
    h = Harness()
    authorize(h, "claude", 10_000, timeout_s=1)
    h.at(2)
    outcome = h.send("claude", c.Transfer, to="nobody", amount=D(1))
    assert outcome.code == ErrorCode.unknown_agent
    assert [p.kind for p in outcome.postings] == ["void.llm"]
    assert h.balance("claude") == 10_000


def test_settle_twice_is_authorization_closed() -> None:
    h = Harness()
    authorize(h, "claude", 10_000)
    settle(h, "claude", "auth-1", 100)
    error = h.refused(
        "claude", c.LlmSettle, ErrorCode.authorization_closed, authorization_id="auth-1", tokens=1
    )
    assert "posted" in error["message"]


def test_settle_of_an_unknown_or_foreign_authorization() -> None:
    h = Harness()
    authorize(h, "claude", 10_000)
    for sender, auth in (("claude", "auth-99"), ("lambda", "auth-1"), ("nobody", "auth-1")):
        h.refused(
            sender, c.LlmSettle, ErrorCode.unknown_authorization, authorization_id=auth, tokens=1
        )
    # The operator may settle for the agent.
    assert settle(h, ADMIN, "auth-1", 1000)["cost"] == "15"


def test_authorize_is_checked_against_every_limit() -> None:
    h = Harness()
    ask = {"task_type": "x", "model": "gemini-pro"}
    h.refused(OBS, c.LlmAuthorize, ErrorCode.burst_limit_exceeded, tokens=gemini_tokens(501), **ask)
    authorize(h, OBS, gemini_tokens(500))
    authorize(h, OBS, gemini_tokens(500))
    # Open holds count as spends in the window.
    h.refused(OBS, c.LlmAuthorize, ErrorCode.hourly_limit_exceeded, tokens=1, **ask)
    h.refused(OBS, c.LlmRequest, ErrorCode.hourly_limit_exceeded, tokens=1, **ask)
    h.drain_to(OBS, 600)
    h.ok(ADMIN, c.SetLimits, agent=OBS, limits=c.LimitsSpec(hourly=D(5000)))
    h.refused(
        OBS, c.LlmAuthorize, ErrorCode.reserve_would_be_breached, tokens=gemini_tokens(101), **ask
    )


def test_authorizing_a_free_model_is_refused() -> None:
    models = dict(EconomyConfig().models, free=D(0))
    h = Harness(EconomyConfig(models=models))
    h.refused(
        "claude",
        c.LlmAuthorize,
        ErrorCode.amount_must_be_positive,
        task_type="x",
        tokens=100,
        model="free",
    )
    # Spending it in one step is fine and posts nothing.
    outcome = h.send("claude", c.LlmRequest, task_type="x", tokens=100, model="free")
    assert outcome.ok
    assert outcome.postings == ()


def test_only_the_configured_number_of_closed_authorizations_is_kept() -> None:
    h = Harness(EconomyConfig(closed_authorizations_kept=2))
    ids = [
        h.ok("claude", c.LlmAuthorize, task_type="code", tokens=1000)["authorization_id"]
        for _ in range(3)
    ]
    for auth_id in ids:
        h.ok("claude", c.LlmSettle, authorization_id=auth_id, tokens=500)
    assert ids[0] not in h.ex.ledger.holds and list(h.ex.ledger.closed_authorizations) == ids[1:]
    refusal = h.refused(
        "claude", c.LlmSettle, "unknown_authorization", authorization_id=ids[0], tokens=1
    )
    assert "the last 2 closed ones are kept" in refusal["message"]
    h.refused("claude", c.LlmSettle, "authorization_closed", authorization_id=ids[1], tokens=1)
    h.ex.check_invariants()
