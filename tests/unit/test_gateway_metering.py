"""The metering gateway's rules in the core (issue 18): holds on behalf of agents, per model input
and output prices, requests and tokens per minute, the model allowlist, and who may send them."""

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core_support import Harness, remembered_rows_of, restored
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.config import parse_config
from exchange.core.machine import Exchange
from exchange.core.metering import metered_cost_micro
from protocols import commands as c
from protocols import queries as q
from protocols.errors import ErrorCode
from protocols.ids import ADMIN, GATEWAY

D = Decimal
PRICED = parse_config("[models]\ngpt-x = { input = 2.5, output = 10 }\n")


def authorize(h: Harness, agent: str = "zero", **fields: object) -> dict[str, object]:
    fields = {"model": "gpt-x", "prompt_tokens": 100, "max_tokens": 100} | fields
    return h.ok(GATEWAY, c.GatewayAuthorize, agent=agent, **fields)


def test_cost_is_input_and_output_prices_rounded_half_even_once() -> None:
    # 2.5 tokens/1K in = 2_500_000 micro/1K; 10/1K out.
    assert metered_cost_micro(2_500_000, 10_000_000, 1, 1) == 12_500
    assert metered_cost_micro(1, 1, 1, 0) == 0  # 0.001 micro rounds to 0
    assert metered_cost_micro(1, 1, 1, 1) == 0  # 0.002
    assert metered_cost_micro(500, 0, 1, 0) == 0  # 0.5 rounds half to even (0)
    assert metered_cost_micro(1500, 0, 1, 0) == 2  # 1.5 rounds half to even (2)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 1000),
    st.integers(0, 1000),
)
def test_cost_is_monotone_so_usage_never_costs_more_than_its_worst_case(
    price_in: int, price_out: int, prompt: int, completion: int, more_in: int, more_out: int
) -> None:
    used = metered_cost_micro(price_in, price_out, prompt, completion)
    worst = metered_cost_micro(price_in, price_out, prompt + more_in, completion + more_out)
    assert 0 <= used <= worst
    exact = D(price_in * prompt + price_out * completion) / 1000
    assert abs(D(used) - exact) <= D("0.5")


def test_authorize_holds_the_worst_case_and_settle_charges_usage_exactly() -> None:
    h = Harness(PRICED)
    before = h.balance("zero")
    auth = authorize(h, prompt_tokens=1000, max_tokens=500)
    assert auth["held"] == "7.5"  # 1000 × 2.5/1K + 500 × 10/1K
    assert h.balance("zero") == before - D("7.5")
    done = h.ok(
        GATEWAY,
        c.GatewaySettle,
        authorization_id=auth["authorization_id"],
        prompt_tokens=800,
        completion_tokens=100,
    )
    assert done["cost"] == "3"  # 800 × 2.5/1K + 100 × 10/1K
    assert done["released"] == "4.5"
    assert done["unpaid"] == "0"
    assert h.balance("zero") == before - 3
    assert h.account("@llm.gpt-x") == 3
    h.ex.check_invariants()


def test_a_single_price_model_charges_both_kinds_of_token_alike() -> None:
    h = Harness()
    auth = authorize(h, model="gemini-pro", prompt_tokens=1000, max_tokens=1000)
    assert auth["held"] == "4"
    done = h.ok(
        GATEWAY,
        c.GatewaySettle,
        authorization_id=auth["authorization_id"],
        prompt_tokens=500,
        completion_tokens=250,
    )
    assert done["cost"] == "1.5"


def test_release_refunds_everything_and_an_expired_hold_is_voided() -> None:
    h = Harness(PRICED)
    before = h.balance("zero")
    auth = authorize(h)
    gone = h.ok(GATEWAY, c.GatewayRelease, authorization_id=auth["authorization_id"])
    assert gone["released"] == auth["held"]
    assert h.balance("zero") == before
    authorize(h, timeout_s=5)
    h.advance(6)
    h.tick()
    assert h.balance("zero") == before
    assert h.ex.ledger.open_holds == {}
    h.ex.check_invariants()


def test_only_the_gateway_or_admin_meters_and_an_agent_cannot_settle_a_metered_hold() -> None:
    h = Harness(PRICED)
    h.refused(
        "zero",
        c.GatewayAuthorize,
        ErrorCode.not_authorized,
        agent="zero",
        model="gpt-x",
        prompt_tokens=1,
        max_tokens=1,
    )
    auth = authorize(h)
    auth_id = auth["authorization_id"]
    h.refused(
        "zero",
        c.GatewaySettle,
        ErrorCode.not_authorized,
        authorization_id=auth_id,
        prompt_tokens=0,
        completion_tokens=0,
    )
    # llm.settle does not know a gateway hold: the agent cannot settle it low.
    h.refused(
        "zero", c.LlmSettle, ErrorCode.unknown_authorization, authorization_id=auth_id, tokens=0
    )
    h.ok(ADMIN, c.GatewayRelease, authorization_id=auth_id)
    h.refused(GATEWAY, c.GatewayRelease, ErrorCode.authorization_closed, authorization_id=auth_id)
    h.refused(GATEWAY, c.GatewayRelease, ErrorCode.unknown_authorization, authorization_id="gw-99")
    # The gateway acts for agents only: it is not an admin.
    h.refused(GATEWAY, c.Award, ErrorCode.not_authorized, agent="zero", amount=D(1), source="x")


def test_model_allowlist() -> None:
    h = Harness(PRICED)
    result = h.ok(
        ADMIN,
        c.SetLimits,
        agent="zero",
        limits=c.LimitsSpec(),
        rates=c.RatesSpec(models=["gpt-x"]),
    )
    assert result["rates"]["models"] == ["gpt-x"]
    error = h.refused(
        GATEWAY,
        c.GatewayAuthorize,
        ErrorCode.model_not_allowed,
        agent="zero",
        model="llama3.2",
        prompt_tokens=1,
        max_tokens=1,
    )
    assert "gpt-x" in error["message"]
    authorize(h)
    h.refused(
        ADMIN,
        c.SetLimits,
        ErrorCode.unknown_model,
        agent="zero",
        limits=c.LimitsSpec(),
        rates=c.RatesSpec(models=["no-such-model"]),
    )


def test_requests_per_minute_slide_with_the_command_stamps() -> None:
    h = Harness(PRICED)
    h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(), rates=c.RatesSpec(rpm=3))
    for second in (0, 10, 20):
        h.at(second)
        authorize(h, prompt_tokens=1, max_tokens=1)
    h.at(30)
    error = h.refused(
        GATEWAY,
        c.GatewayAuthorize,
        ErrorCode.rate_limited_rpm,
        agent="zero",
        model="gpt-x",
        prompt_tokens=1,
        max_tokens=1,
    )
    assert error["retry_after_s"] == 30  # the request at 0 s leaves the window at 60 s
    h.at(59.9)
    h.refused(
        GATEWAY,
        c.GatewayAuthorize,
        ErrorCode.rate_limited_rpm,
        agent="zero",
        model="gpt-x",
        prompt_tokens=1,
        max_tokens=1,
    )
    h.at(60)
    authorize(h, prompt_tokens=1, max_tokens=1)
    assert h.limits("zero")["rates"]["requests_used"] == 3


def test_tokens_per_minute_count_the_worst_case_then_the_usage() -> None:
    h = Harness(PRICED)
    h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(), rates=c.RatesSpec(tpm=1000))
    first = authorize(h, prompt_tokens=100, max_tokens=500)  # 600 counted
    h.advance(1)
    h.refused(
        GATEWAY,
        c.GatewayAuthorize,
        ErrorCode.rate_limited_tpm,
        agent="zero",
        model="gpt-x",
        prompt_tokens=100,
        max_tokens=400,
    )
    h.ok(
        GATEWAY,
        c.GatewaySettle,
        authorization_id=first["authorization_id"],
        prompt_tokens=100,
        completion_tokens=50,
    )  # now 150
    assert h.limits("zero")["rates"]["tokens_used"] == 150
    second = authorize(h, prompt_tokens=100, max_tokens=400)  # 650
    h.ok(GATEWAY, c.GatewayRelease, authorization_id=second["authorization_id"])  # 150 again
    assert h.limits("zero")["rates"]["tokens_used"] == 150
    never = h.refused(
        GATEWAY,
        c.GatewayAuthorize,
        ErrorCode.rate_limited_tpm,
        agent="zero",
        model="gpt-x",
        prompt_tokens=1,
        max_tokens=1000,
    )
    assert "retry_after_s" not in never  # it can never fit: no retry time
    h.at(61)
    assert h.limits("zero")["rates"]["tokens_used"] == 0


def test_a_refusal_that_evicts_old_requests_leaves_the_digest_as_it_was() -> None:
    h = Harness(PRICED)
    h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(), rates=c.RatesSpec(tpm=100))
    authorize(h, prompt_tokens=10, max_tokens=10)
    h.at(61)  # the request left the minute; only a command evicts it
    h.refused(  # checked after the eviction: it can never fit
        GATEWAY,
        c.GatewayAuthorize,
        ErrorCode.rate_limited_tpm,
        agent="zero",
        model="gpt-x",
        prompt_tokens=50,
        max_tokens=51,
    )


def test_money_limits_apply_to_the_worst_case() -> None:
    h = Harness(PRICED)
    # The default burst is 500 tokens: 100_000 output tokens at 10/1K is 1000.
    h.refused(
        GATEWAY,
        c.GatewayAuthorize,
        ErrorCode.burst_limit_exceeded,
        agent="zero",
        model="gpt-x",
        prompt_tokens=0,
        max_tokens=100_000,
    )


def test_a_usage_above_the_hold_is_charged_as_far_as_the_balance_goes() -> None:
    h = Harness(PRICED)
    h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(reserve=D("0.000001")))
    h.drain_to("zero", 1, sink="claude")
    auth = authorize(h, prompt_tokens=0, max_tokens=10)  # holds 0.1
    done = h.ok(
        GATEWAY,
        c.GatewaySettle,
        authorization_id=auth["authorization_id"],
        prompt_tokens=1000,
        completion_tokens=0,
    )  # costs 2.5: 0.1 held, 0.9 left in the balance, 1.5 unpaid
    assert (done["cost"], done["unpaid"], done["balance"]) == ("1", "1.5", "0")
    h.ex.check_invariants()


def test_gateway_state_survives_a_snapshot_and_the_digest_of_an_unmetered_exchange_stays() -> None:
    plain = Harness(PRICED)
    assert Harness(PRICED).ex.digest() == plain.ex.digest()
    h = Harness(PRICED)
    h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(), rates=c.RatesSpec(rpm=5, tpm=900))
    auth = authorize(h)
    assert h.ex.digest() != plain.ex.digest()
    again = restored(h.ex)
    assert again.digest() == h.ex.digest()
    assert again.snapshot() == h.ex.snapshot()
    h.ex = again
    h.ok(
        GATEWAY,
        c.GatewaySettle,
        authorization_id=auth["authorization_id"],
        prompt_tokens=10,
        completion_tokens=10,
    )
    assert h.limits("zero")["rates"] == {
        "rpm": 5,
        "tpm": 900,
        "models": [],
        "requests_used": 1,
        "tokens_used": 20,
    }


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["authorize", "settle", "release", "wait"]),
            st.integers(0, 400),
            st.integers(0, 400),
        ),
        max_size=60,
    ),
    st.integers(1, 8),
    st.integers(200, 2000),
)
def test_admission_never_exceeds_a_window_and_spend_equals_usage(
    steps: list[tuple[str, int, int]], rpm: int, tpm: int
) -> None:
    h = Harness(PRICED)
    rates = c.RatesSpec(rpm=rpm, tpm=tpm)
    h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(), rates=rates)
    start = h.balance("zero")
    # Every admitted request: [at_ns, tokens counted (worst case, then usage, or 0 if released)].
    admitted: dict[str, list[int]] = {}
    open_ids: list[str] = []
    charged = 0
    minute = 60 * 10**9
    for action, a, b in steps:
        h.advance(a / 100)
        if action == "authorize":
            outcome = h.send(
                GATEWAY,
                c.GatewayAuthorize,
                agent="zero",
                model="gpt-x",
                prompt_tokens=a,
                max_tokens=b,
            )
            if outcome.ok:
                auth_id = outcome.reply.split(b'"authorization_id":"')[1].split(b'"')[0].decode()
                admitted[auth_id] = [h.now_ns, a + b]
                open_ids.append(auth_id)
                # At every admission: at most rpm requests and tpm tokens in the last minute.
                inside = [n for at, n in admitted.values() if at > h.now_ns - minute]
                assert len(inside) <= rpm
                assert sum(inside) <= tpm
            else:
                assert outcome.code in {
                    ErrorCode.rate_limited_rpm,
                    ErrorCode.rate_limited_tpm,
                    ErrorCode.amount_must_be_positive,
                }, outcome.reply
        elif action == "settle" and open_ids:
            auth_id = open_ids.pop(0)
            done = h.ok(
                GATEWAY,
                c.GatewaySettle,
                authorization_id=auth_id,
                prompt_tokens=a // 2,
                completion_tokens=b // 2,
            )
            admitted[auth_id][1] = a // 2 + b // 2
            charged += metered_cost_micro(2_500_000, 10_000_000, a // 2, b // 2)
            assert done["unpaid"] == "0"
        elif action == "release" and open_ids:
            auth_id = open_ids.pop(0)
            h.ok(GATEWAY, c.GatewayRelease, authorization_id=auth_id)
            admitted[auth_id][1] = 0
        h.ex.check_invariants()
    for auth_id in open_ids:
        h.ok(GATEWAY, c.GatewayRelease, authorization_id=auth_id)
    assert start - h.balance("zero") == D(charged).scaleb(-6)


def test_a_required_gateway_refuses_self_reported_inference_and_settles_older_holds() -> None:
    """With ``[gateway] required``, an agent cannot report its own token counts: ``llm`` and
    ``llm.authorize`` are refused (nothing changes), the gateway's holds work as before, and a
    self-reported hold opened before the switch can still be settled."""
    open_config = PRICED
    required = parse_config(
        "[models]\ngpt-x = { input = 2.5, output = 10 }\n[gateway]\nrequired = true\n"
    )
    assert required.gateway.required and not open_config.gateway.required
    h = Harness(open_config)
    start = h.balance("zero")
    older = h.ok("zero", c.LlmAuthorize, task_type="research", tokens=1000, model="gpt-x")
    h.ex = Exchange.restore(required, h.ex.snapshot(), remembered_rows_of(h.ex))
    error = h.refused("zero", c.LlmRequest, "gateway_required", task_type="research", tokens=10)
    assert "exchange gateway key" in error["message"]
    h.refused("zero", c.LlmAuthorize, "gateway_required", task_type="research", tokens=10)
    settled = h.ok("zero", c.LlmSettle, authorization_id=older["authorization_id"], tokens=400)
    assert D(settled["cost"]) == 1  # 400 tokens at 2.5 per 1,000; the rest of the hold is freed
    assert h.balance("zero") == start - 1
    auth = authorize(h)
    done = h.ok(
        GATEWAY,
        c.GatewaySettle,
        authorization_id=auth["authorization_id"],
        prompt_tokens=100,
        completion_tokens=10,
    )
    assert D(done["cost"]) == D(metered_cost_micro(2_500_000, 10_000_000, 100, 10)).scaleb(-6)
    h.ex.check_invariants()


# ---------------------------------------------------------------------------------- quotas

ODD = parse_config("[models]\nodd = { input = 0.000001, output = 0.000003 }\nfree = 0\n")


def quota(h: Harness, agent: str = "zero", **fields: object) -> dict[str, Any]:
    fields = {"model": "gpt-x", "requests": 10, "tokens": 1000, "min_tokens": 100} | fields
    return h.ok(GATEWAY, c.GatewayQuota, agent=agent, **fields)


def quota_settle(h: Harness, quota_id: object, usage: list[tuple[int, int]]) -> dict[str, Any]:
    return h.ok(GATEWAY, c.GatewayQuotaSettle, quota_id=quota_id, usage=usage)


def refused_quota(h: Harness, code: str, agent: str = "zero", **fields: object) -> dict[str, Any]:
    fields = {"model": "gpt-x", "requests": 10, "tokens": 1000, "min_tokens": 100} | fields
    return h.refused(GATEWAY, c.GatewayQuota, code, agent=agent, **fields)


def set_rates(h: Harness, **rates: Any) -> None:
    h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(), rates=c.RatesSpec(**rates))


def test_a_quota_is_granted_whole_holding_its_tokens_at_the_higher_price_plus_1_a_request() -> None:
    h = Harness(PRICED)
    h.at(5)
    before = h.balance("zero")
    grant = quota(h, requests=10, tokens=1000, admit_s=3, timeout_s=30)
    assert grant["quota_id"] == "gq-1"
    assert (grant["requests"], grant["tokens"]) == (10, 1000)
    # 1000 tokens at 10/1K (the output price, the higher), plus 1 micro-token a request.
    assert grant["held"] == "10.00001"
    assert (grant["input_per_1k"], grant["output_per_1k"]) == ("2.5", "10")
    assert grant["admit_until_ns"] == 8 * 10**9
    assert grant["expires_at_ns"] == 35 * 10**9
    assert h.balance("zero") == before - D("10.00001")
    assert h.limits("zero")["hourly_used"] == "10.00001"
    h.ex.check_invariants()


def test_a_quota_is_cut_to_the_requests_left_in_the_minute() -> None:
    h = Harness(PRICED)
    set_rates(h, rpm=5)
    authorize(h)
    authorize(h)
    grant = quota(h, requests=10)
    assert grant["requests"] == 3
    assert grant["held"] == "10.000003"  # the hold is the grant's
    h.advance(1)
    error = refused_quota(h, ErrorCode.rate_limited_rpm)
    assert (error["limit"], error["used"], error["requested"]) == ("5", "5", "1")
    # The two requests leave at 60 s; the quota counts from the end of its admission (2 s).
    assert error["retry_after_s"] == 59
    h.at(60)
    assert quota(h, requests=10)["requests"] == 2


def test_a_quota_is_cut_to_the_tokens_left_in_the_minute_and_refused_below_min_tokens() -> None:
    h = Harness(PRICED)
    set_rates(h, tpm=1000)
    authorize(h)  # 200 tokens
    error = refused_quota(h, ErrorCode.rate_limited_tpm, tokens=900, min_tokens=801)
    assert (error["limit"], error["used"], error["requested"]) == ("1000", "200", "801")
    assert error["retry_after_s"] == 60
    grant = quota(h, tokens=5000, min_tokens=800)
    assert (grant["requests"], grant["tokens"]) == (10, 800)
    assert h.limits("zero")["rates"]["tokens_used"] == 1000
    error = refused_quota(h, ErrorCode.rate_limited_tpm, tokens=1, min_tokens=1)
    assert error["retry_after_s"] == 60


def test_short_money_grants_the_most_it_can_hold_and_no_money_refuses() -> None:
    h = Harness(PRICED)
    # The default burst is 500 tokens: 100_000 tokens at 10/1K is 1000. A part of c requests
    # holds 2000 + 98_000 (c - 1) / 19 tokens: 10 requests hold 484.21, 11 would hold 535.78.
    grant = quota(h, requests=20, tokens=100_000, min_tokens=2000)
    assert (grant["requests"], grant["tokens"], grant["held"]) == (10, 48_421, "484.21001")
    # One request's worth when no more fits: 20 of 30,000 tokens each, burst at 500.
    grant = quota(h, requests=20, tokens=600_000, min_tokens=30_000)
    assert (grant["requests"], grant["tokens"], grant["held"]) == (1, 30_000, "300.000001")
    error = refused_quota(h, ErrorCode.burst_limit_exceeded, tokens=100_000, min_tokens=100_000)
    assert error["requested"] == "1000.000001"
    h.drain_to("zero", 505, sink="claude")  # the reserve is 500
    error = refused_quota(h, ErrorCode.reserve_would_be_breached, min_tokens=1000)
    assert error["requested"] == "10.000001"


def test_quota_refusals() -> None:
    h = Harness(ODD)
    set_rates(h, models=["odd", "free"])
    refused_quota(h, ErrorCode.model_not_allowed, model="llama3.2")
    refused_quota(h, ErrorCode.amount_must_be_positive, model="free")
    h.refused(
        "zero",
        c.GatewayQuota,
        ErrorCode.not_authorized,
        agent="zero",
        model="odd",
        requests=1,
        tokens=1,
        min_tokens=1,
    )
    refused_quota(h, ErrorCode.unknown_agent, agent="nobody", model="odd")
    refused_quota(h, ErrorCode.unknown_model, model="nope")
    error = refused_quota(h, ErrorCode.parameter_out_of_bounds, model="odd", min_tokens=1001)
    assert "min_tokens (1001) must be <= tokens (1000)" in error["message"]
    error = refused_quota(
        h, ErrorCode.parameter_out_of_bounds, model="odd", admit_s=10, timeout_s=9
    )
    assert error["path"] == "$.timeout_s"
    assert h.ex.ledger.open_holds == {}


def test_quota_settle_charges_each_request_rounded_on_its_own() -> None:
    h = Harness(ODD)
    before = h.balance("zero")
    # 1 micro-token per 1K prompt tokens, 3 per 1K completion tokens.
    grant = quota(h, model="odd", requests=3, tokens=3000, min_tokens=1)
    assert grant["held"] == "0.000012"  # 3000 × 3/1K = 9, plus 3
    done = quota_settle(h, grant["quota_id"], [(1500, 0), (1500, 0), (0, 500)])
    # 1.5 → 2 twice (half to even) and 1.5 → 2: 6, where the sums (3000, 500) would cost 4.5.
    assert done["cost"] == "0.000006"
    assert done["released"] == "0.000006"
    assert (done["requests"], done["prompt_tokens"], done["completion_tokens"]) == (3, 3000, 500)
    assert (done["unpaid"], done["agent"], done["model"]) == ("0", "zero", "odd")
    assert h.balance("zero") == before - D("0.000006")
    assert D(done["balance"]) == h.balance("zero")
    assert h.account("@llm.odd") == D("0.000006")
    assert h.query(q.BalanceQuery(agent="zero"))["spent"] == "0.000006"
    assert h.limits("zero")["hourly_used"] == "0.000006"
    h.ex.check_invariants()


def test_the_worst_split_of_a_quota_never_costs_more_than_its_hold() -> None:
    h = Harness(ODD)
    grant = quota(h, model="odd", requests=4, tokens=2000, min_tokens=1)
    held = D(grant["held"])  # 2000 × 3/1K = 6, plus 4
    # Each request rounds half up to even where it can: 500 completion tokens cost 1.5 → 2.
    done = quota_settle(h, grant["quota_id"], [(0, 500)] * 4)
    assert D(done["cost"]) == D("0.000008") <= held
    assert done["unpaid"] == "0"


def test_quota_settle_gives_unused_requests_and_tokens_back_to_the_minute() -> None:
    h = Harness(PRICED)
    set_rates(h, rpm=4, tpm=1000)
    first = quota(h, requests=4, tokens=1000, min_tokens=1)
    assert h.limits("zero")["rates"]["requests_used"] == 4
    refused_quota(h, ErrorCode.rate_limited_rpm)
    quota_settle(h, first["quota_id"], [(100, 50)])
    assert h.limits("zero")["rates"] | {"models": []} == {
        "rpm": 4,
        "tpm": 1000,
        "models": [],
        "requests_used": 1,
        "tokens_used": 150,
    }
    second = quota(h, requests=4, tokens=1000, min_tokens=1)
    assert (second["requests"], second["tokens"]) == (3, 850)
    quota_settle(h, second["quota_id"], [])  # nothing admitted: everything back
    assert h.limits("zero")["rates"]["requests_used"] == 1


def test_a_quota_closes_once_and_only_by_quota_settle() -> None:
    h = Harness(PRICED)
    grant = quota(h, requests=2)
    quota_id = grant["quota_id"]
    auth = authorize(h)
    error = h.refused(
        GATEWAY,
        c.GatewaySettle,
        ErrorCode.unknown_authorization,
        authorization_id=quota_id,
        prompt_tokens=1,
        completion_tokens=1,
    )
    assert "gateway.quota_settle" in error["message"]
    h.refused(GATEWAY, c.GatewayRelease, ErrorCode.unknown_authorization, authorization_id=quota_id)
    error = h.refused(
        GATEWAY,
        c.GatewayQuotaSettle,
        ErrorCode.unknown_authorization,
        quota_id=auth["authorization_id"],
        usage=[],
    )
    assert "gateway.settle" in error["message"]
    h.refused(
        GATEWAY, c.GatewayQuotaSettle, ErrorCode.unknown_authorization, quota_id="gq-9", usage=[]
    )
    h.refused("zero", c.GatewayQuotaSettle, ErrorCode.not_authorized, quota_id=quota_id, usage=[])
    error = h.refused(
        GATEWAY,
        c.GatewayQuotaSettle,
        ErrorCode.parameter_out_of_bounds,
        quota_id=quota_id,
        usage=[(1, 1)] * 3,
    )
    assert error["path"] == "$.usage"
    quota_settle(h, quota_id, [(1, 1), (0, 0)])
    h.refused(
        GATEWAY, c.GatewayQuotaSettle, ErrorCode.authorization_closed, quota_id=quota_id, usage=[]
    )
    h.ok(GATEWAY, c.GatewayRelease, authorization_id=auth["authorization_id"])
    h.ex.check_invariants()


def test_an_expired_quota_is_voided_and_its_grant_stays_in_the_minute() -> None:
    h = Harness(PRICED)
    set_rates(h, rpm=10, tpm=5000)
    before = h.balance("zero")
    grant = quota(h, requests=3, tokens=1200, admit_s=2, timeout_s=5)
    h.advance(6)
    h.tick()
    assert h.balance("zero") == before
    assert h.ex.ledger.open_holds == {}
    assert h.limits("zero")["hourly_used"] == "0"
    rates = h.limits("zero")["rates"]
    assert (rates["requests_used"], rates["tokens_used"]) == (3, 1200)
    h.refused(
        GATEWAY,
        c.GatewayQuotaSettle,
        ErrorCode.authorization_closed,
        quota_id=grant["quota_id"],
        usage=[],
    )
    h.at(61.9)  # counted until the end of its admission (2 s) plus a minute
    assert h.limits("zero")["rates"]["requests_used"] == 3
    h.at(62)
    assert h.limits("zero")["rates"]["requests_used"] == 0
    h.ex.check_invariants()


def test_a_quota_counts_a_minute_from_the_end_of_its_admission() -> None:
    h = Harness(PRICED)
    set_rates(h, rpm=2)
    quota(h, requests=1, admit_s=30)  # counts from 0 s until 90 s
    h.at(1)
    authorize(h)  # counts until 61 s, the entry goes before the quota's
    h.at(61)
    assert h.limits("zero")["rates"]["requests_used"] == 1
    again = restored(h.ex)
    assert again.digest() == h.ex.digest()
    authorize(h)
    error = refused_quota(h, ErrorCode.rate_limited_rpm)
    assert error["retry_after_s"] == 29
    h.at(90)
    assert quota(h, requests=5)["requests"] == 1


def test_a_quota_settled_early_counts_from_its_settlement() -> None:
    """Settled before its admission period ended, a quota admitted nothing after: its requests
    count for a minute from the settlement, not from the end of the period."""
    h = Harness(PRICED)
    set_rates(h, rpm=4)
    early = quota(h, requests=2, admit_s=30)  # would count until 90 s
    late = quota(h, requests=1, admit_s=30)
    h.at(2)
    authorize(h)  # counts until 62 s
    h.at(5)
    quota_settle(h, early["quota_id"], [(10, 10), (0, 0)])  # now counts until 65 s
    again = restored(h.ex)
    assert again.digest() == h.ex.digest()
    h.at(63)
    assert h.limits("zero")["rates"]["requests_used"] == 3  # early's 2 and late's 1
    h.at(65)
    assert h.limits("zero")["rates"]["requests_used"] == 1  # late's, until 90 s
    assert quota(h, requests=5)["requests"] == 3  # 4 less late's 1
    quota_settle(h, late["quota_id"], [])  # after its period: no re-stamp; it used nothing
    h.at(89)
    assert h.limits("zero")["rates"]["requests_used"] == 3


def test_quotas_survive_a_snapshot_open_and_settled() -> None:
    h = Harness(PRICED)
    set_rates(h, rpm=20, tpm=9000)
    plain = Harness(PRICED)
    set_rates(plain, rpm=20, tpm=9000)
    settled = quota(h, requests=3, tokens=900)
    quota_settle(h, settled["quota_id"], [(10, 10)])
    single = quota(h, requests=1, tokens=100, min_tokens=1)  # its count, 1, is the default
    opened = quota(h, requests=5, tokens=2000)
    assert h.ex.digest() != plain.ex.digest()
    again = restored(h.ex)
    assert again.digest() == h.ex.digest()
    assert again.snapshot() == h.ex.snapshot()
    h.ex = again
    h.refused(
        GATEWAY,
        c.GatewaySettle,
        ErrorCode.unknown_authorization,
        authorization_id=single["quota_id"],
        prompt_tokens=0,
        completion_tokens=0,
    )
    quota_settle(h, single["quota_id"], [(1, 1)])
    done = quota_settle(h, opened["quota_id"], [(100, 100)] * 5)
    assert done["requests"] == 5
    assert h.limits("zero")["rates"]["requests_used"] == 7
    assert h.limits("zero")["rates"]["tokens_used"] == 20 + 2 + 1000
    assert restored(h.ex).digest() == h.ex.digest()
    h.ex.check_invariants()


PRICE_IN, PRICE_OUT = 2_500_000, 10_000_000  # gpt-x's, micro-tokens per 1K


@dataclass
class LocalQuota:
    """A quota as the gateway holds it: what was granted, and the requests it admitted."""

    id: str
    requests: int
    tokens: int
    held_micro: int
    admit_until_ns: int
    expires_at_ns: int
    # Each admitted request: its index in ``admitted`` and its (prompt bound, max_tokens).
    admitted: list[tuple[int, int, int]] = field(default_factory=list)

    def admits(self, now_ns: int, worst_prompt: int, max_tokens: int) -> bool:
        """The gateway's local admission: inside the admission period, within the requests, the
        tokens and the money granted."""
        worst = [(p, m) for _, p, m in self.admitted] + [(worst_prompt, max_tokens)]
        return (
            now_ns <= self.admit_until_ns
            and now_ns < self.expires_at_ns
            and len(worst) <= self.requests
            and sum(p + m for p, m in worst) <= self.tokens
            and sum(metered_cost_micro(PRICE_IN, PRICE_OUT, p, m) for p, m in worst)
            <= self.held_micro
        )


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["authorize", "settle", "release", "quota", "admit", "quota_settle", "wait"]
            ),
            st.integers(0, 400),
            st.integers(0, 400),
        ),
        max_size=80,
    ),
    st.integers(1, 8),
    st.integers(200, 2000),
)
def test_quotas_and_single_requests_never_exceed_a_sliding_minute_and_spend_equals_usage(
    steps: list[tuple[str, int, int]], rpm: int, tpm: int
) -> None:
    """Random interleavings of per-request holds and quotas whose requests the test admits
    locally, as the gateway does. Every request counts at the moment it was admitted, with the
    tokens the core counts for it at the end (worst case, usage once settled, 0 once released):
    no sliding minute ever holds more than rpm requests or tpm tokens, and the agent pays
    exactly the per-request costs of the usage reported."""
    h = Harness(PRICED)
    set_rates(h, rpm=rpm, tpm=tpm)
    start = h.balance("zero")
    # Every admitted request: [admitted at_ns, tokens counted].
    admitted: list[list[int]] = []
    # An open authorization's index in admitted, and its (prompt bound, max_tokens).
    singles: dict[str, tuple[int, int, int]] = {}
    quotas: list[LocalQuota] = []  # the open ones, oldest first
    charged = 0
    refusable = {ErrorCode.rate_limited_rpm, ErrorCode.rate_limited_tpm}

    def settle_quota(local: LocalQuota, full: bool) -> None:
        nonlocal charged
        usage = [(p, m) if full else (p // 2, m // 2) for _, p, m in local.admitted]
        done = h.ok(GATEWAY, c.GatewayQuotaSettle, quota_id=local.id, usage=usage)
        assert done["unpaid"] == "0"
        for (index, _, _), (used_in, used_out) in zip(local.admitted, usage, strict=True):
            admitted[index][1] = used_in + used_out
            charged += metered_cost_micro(PRICE_IN, PRICE_OUT, used_in, used_out)

    for action, a, b in steps:
        # Up to 4 s between commands; a gateway admits many requests in a quota's few seconds.
        h.advance(a / (1000 if action == "admit" else 100))
        # A quota past its timeout is voided by the next command: its requests keep their worst.
        quotas = [local for local in quotas if h.now_ns < local.expires_at_ns]
        if action == "authorize":
            outcome = h.send(
                GATEWAY,
                c.GatewayAuthorize,
                agent="zero",
                model="gpt-x",
                prompt_tokens=a,
                max_tokens=b,
            )
            if outcome.ok:
                auth_id = outcome.reply.split(b'"authorization_id":"')[1].split(b'"')[0].decode()
                singles[auth_id] = (len(admitted), a, b)
                admitted.append([h.now_ns, a + b])
            else:
                assert outcome.code in refusable | {ErrorCode.amount_must_be_positive}
        elif action == "settle" and singles:
            # Usage within the worst case (above it the minute counts more than was admitted).
            auth_id, (index, worst_prompt, max_tokens) = next(iter(singles.items()))
            del singles[auth_id]
            used_in, used_out = worst_prompt * a // 400, max_tokens * b // 400
            h.ok(
                GATEWAY,
                c.GatewaySettle,
                authorization_id=auth_id,
                prompt_tokens=used_in,
                completion_tokens=used_out,
            )
            admitted[index][1] = used_in + used_out
            charged += metered_cost_micro(PRICE_IN, PRICE_OUT, used_in, used_out)
        elif action == "release" and singles:
            auth_id, (index, _, _) = next(iter(singles.items()))
            del singles[auth_id]
            h.ok(GATEWAY, c.GatewayRelease, authorization_id=auth_id)
            admitted[index][1] = 0
        elif action == "quota":
            tokens = 1 + b * 3
            admit_s = 1 + a % 10
            min_tokens = 1 + a % min(tokens, 200)
            fields = {"requests": 1 + a % 6, "tokens": tokens, "min_tokens": min_tokens}
            outcome = h.send(
                GATEWAY,
                c.GatewayQuota,
                agent="zero",
                model="gpt-x",
                admit_s=admit_s,
                timeout_s=admit_s + b // 10,
                **fields,
            )
            if outcome.ok:
                grant = json.loads(outcome.reply)["result"]
                assert grant["requests"] <= fields["requests"]
                assert fields["min_tokens"] <= grant["tokens"] <= tokens
                quotas.append(
                    LocalQuota(
                        grant["quota_id"],
                        grant["requests"],
                        grant["tokens"],
                        int(D(grant["held"]).scaleb(6)),
                        grant["admit_until_ns"],
                        grant["expires_at_ns"],
                    )
                )
            else:
                assert outcome.code in refusable, outcome.reply
        elif action == "admit" and quotas:
            # No command: the gateway admits the request against a quota it holds.
            local = quotas[a % len(quotas)]
            worst_prompt, max_tokens = a // 4, b // 4
            if local.admits(h.now_ns, worst_prompt, max_tokens):
                local.admitted.append((len(admitted), worst_prompt, max_tokens))
                admitted.append([h.now_ns, worst_prompt + max_tokens])
        elif action == "quota_settle" and quotas:
            settle_quota(quotas.pop(0), full=a % 3 == 0)
        assert all(h.ex.ledger.book.balance(agent) >= 0 for agent in h.ex.ledger.agents)
        h.ex.check_invariants()
    # In every sliding minute, at most rpm requests and tpm tokens (a minute holds the most
    # when it ends at an admission).
    minute = 60 * 10**9
    for end_ns, _ in admitted:
        inside = [n for at, n in admitted if end_ns - minute < at <= end_ns]
        assert len(inside) <= rpm
        assert sum(inside) <= tpm
    assert restored(h.ex).digest() == h.ex.digest()
    quotas = [local for local in quotas if h.now_ns < local.expires_at_ns]
    for local in quotas:
        settle_quota(local, full=True)
    for auth_id in singles:
        h.ok(GATEWAY, c.GatewayRelease, authorization_id=auth_id)
    h.tick()  # voids the quotas past their timeout, if no command has yet
    assert h.ex.ledger.open_holds == {}
    assert start - h.balance("zero") == D(charged).scaleb(-6)
    assert h.ex.ledger.agents["zero"].spent_micro == charged
    h.ex.check_invariants()
