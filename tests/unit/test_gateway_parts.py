"""The gateway's pure parts: the prompt bound, keys on disk, the error mapping, the gateway's NATS
permissions and the analyst's gateway options."""

import argparse
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from agents.errors import ConfigError
from agents.roles import analyst
from exchange.daemon.natsserver import permissions_for
from exchange.gateway.app import refusal_response, usage_of
from exchange.gateway.fake_upstream import chat_answer, make_app
from exchange.gateway.keys import KeyRing, KeysError, issue_key, read_keys, revoke_key
from exchange.gateway.tokens import RequestError, completion_bound, prompt_bound
from exchange.gateway.upstreams import parse_upstream
from protocols.results import ErrorBody


@given(st.lists(st.text(max_size=200), min_size=1, max_size=8))
def test_the_prompt_bound_is_at_least_the_fake_upstreams_count(contents: list[str]) -> None:
    """The fake upstream counts a token per word plus 3 per message; a real BPE tokenizer emits
    at most one token per byte. The bound covers both."""
    body = {"messages": [{"role": "user", "content": c} for c in contents]}
    bound = prompt_bound("chat", body)
    _, counted = chat_answer(body)
    assert bound >= counted
    assert bound >= sum(len(c.encode()) for c in contents)


def test_completion_bounds_and_bad_requests() -> None:
    assert completion_bound("chat", {"max_tokens": 10, "n": 3}, 99) == 30
    assert completion_bound("chat", {"max_completion_tokens": 7}, 99) == 7
    assert completion_bound("chat", {}, 99) == 99
    assert completion_bound("embedding", {"max_tokens": 10}, 99) == 0
    assert prompt_bound("embedding", {"input": [1, 2, 3]}) == 3
    bodies: tuple[tuple[str, dict[str, object]], ...] = (
        ("chat", {"messages": []}),
        ("completion", {}),
        ("embedding", {}),
    )
    for kind, body in bodies:
        with pytest.raises(RequestError):
            prompt_bound(kind, body)
    with pytest.raises(RequestError):
        completion_bound("chat", {"max_tokens": 0}, 99)
    with pytest.raises(RequestError):
        completion_bound("chat", {"n": 1000}, 99)


def test_keys_are_stored_hashed_private_and_revocable(tmp_path: Path) -> None:
    path = tmp_path / "gateway-keys.json"
    key, record = issue_key(path, "zero")
    assert key.startswith(f"axk-{record.key_id}-")
    assert key not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = KeyRing(path, reload_s=0)
    assert ring.agent_for(key) == "zero"
    assert ring.agent_for(key + "x") is None
    other, _ = issue_key(path, "spark")
    assert ring.agent_for(other) == "spark"
    revoke_key(path, record.key_id)
    assert ring.agent_for(key) is None
    assert ring.agent_for(other) == "spark"
    assert [k.revoked for k in read_keys(path).keys] == [True, False]
    with pytest.raises(KeysError):
        revoke_key(path, "nope")
    with pytest.raises(KeysError):
        issue_key(path, "Not An Id")


def test_refusals_map_to_openai_statuses() -> None:
    cases = {
        "insufficient_funds": 402,
        "reserve_would_be_breached": 402,
        "rate_limited_rpm": 429,
        "rate_limited_tpm": 429,
        "hourly_limit_exceeded": 429,
        "model_not_allowed": 403,
        "unknown_model": 404,
        "invalid_message": 400,
    }
    for code, status in cases.items():
        response = refusal_response(ErrorBody(code=code, message="m", retry_after_s=7))
        assert response.status_code == status
        error = json.loads(bytes(response.body))["error"]
        assert (error["code"], error["retry_after"]) == (code, 7)
        assert response.headers["retry-after"] == "7"


def test_usage_is_read_only_when_well_formed() -> None:
    assert usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) is not None
    assert usage_of({"usage": {"prompt_tokens": 3}}) is not None  # embeddings
    bad: list[object] = [{}, {"usage": None}, {"usage": {"prompt_tokens": -1}}, [], {"usage": {}}]
    for payload in bad:
        assert usage_of(payload) is None


def test_the_gateway_user_may_send_only_its_own_commands_and_queries() -> None:
    allowed = permissions_for("gateway")
    assert allowed.publish_allow == ("exchange.cmd.gateway.>", "exchange.query.>")
    assert allowed.subscribe_allow == ("_INBOX_gateway.>",)


def _analyst_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    analyst.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_analysts_gateway_mode_needs_a_model_and_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(analyst.GATEWAY_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match="--model"):
        analyst.options_from_args(_analyst_args("--gateway", "http://h/v1", "--gateway-key", "k"))
    with pytest.raises(ConfigError, match="key"):
        analyst.options_from_args(_analyst_args("--gateway", "http://h/v1", "--model", "m"))
    monkeypatch.setenv(analyst.GATEWAY_KEY_ENV, "from-env")
    options = analyst.options_from_args(_analyst_args("--gateway", "http://h/v1", "--model", "m"))
    assert (options.gateway_url, options.gateway_key) == ("http://h/v1", "from-env")
    assert analyst.options_from_args(_analyst_args()).gateway_url is None


def test_an_upstream_takes_its_proxy_from_the_environment_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert parse_upstream("https://api.example.com").proxy is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.lan")
    upstream = parse_upstream("https://api.example.com#sk-1")
    assert (upstream.base_url, upstream.api_key) == ("https://api.example.com/v1", "sk-1")
    assert upstream.proxy == "http://proxy.internal:3128"
    assert parse_upstream("http://127.0.0.1:8000/v1").proxy is None  # NO_PROXY, and no HTTP_PROXY
    assert parse_upstream("https://gpu.lan/v1").proxy is None


def test_the_fake_upstreams_wait_is_drawn_in_its_bounds_and_reported() -> None:
    app = make_app(("m",), latency_ms=1.0, latency_jitter_ms=4.0)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(app) as client:
        waits = [
            client.post("/v1/chat/completions", json=body).json()["x_upstream_wait_ms"]
            for _ in range(20)
        ]
    assert all(1.0 <= w < 5.0 for w in waits), waits
    assert len(set(waits)) > 1, "the jitter drew one value"
    # Without a configured wait, replies stay as OpenAI's are.
    with TestClient(make_app(("m",))) as client:
        assert "x_upstream_wait_ms" not in client.post("/v1/chat/completions", json=body).json()
