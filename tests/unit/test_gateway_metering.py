"""The metering gateway's rules in the core (issue 18): holds on behalf of agents, per model input
and output prices, requests and tokens per minute, the model allowlist, and who may send them."""

from decimal import Decimal

from core_support import Harness, remembered_rows_of, restored
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.config import parse_config
from exchange.core.machine import Exchange
from exchange.core.metering import metered_cost_micro
from protocols import commands as c
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
