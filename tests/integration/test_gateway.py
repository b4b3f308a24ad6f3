"""The metering gateway end to end (issue 18): a secure exchange with its nats-server, the fake
OpenAI-compatible upstream as a real separate process, the gateway on a real socket, agents
calling it with the standard ``openai`` client and with raw httpx.

The concurrency test fires hundreds of requests at once from one agent and checks that what
was admitted never exceeds its requests or tokens per minute or its money, and that the ledger
charged exactly the upstream's reported usage at the configured prices.
"""

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import nats
import openai
import pytest
from daemon_support import client_for, run_cli, running_exchange

from exchange.core.metering import metered_cost_micro
from exchange.gateway.cli import bind, run_gateway
from exchange.gateway.fake_upstream import fake_upstream_process
from exchange.gateway.keys import issue_key, keys_path, revoke_key
from exchange.gateway.tokens import prompt_bound
from exchange.gateway.upstreams import parse_upstream
from protocols.client import ExchangeClient, connect, connect_options, flush_commands
from protocols.credentials import Credentials

pytestmark = pytest.mark.anyio

CONFIG = "[models]\ngpt-x = { input = 2.5, output = 10 }\n"
PRICE_IN, PRICE_OUT = 2_500_000, 10_000_000  # micro-tokens per 1,000
START_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 10.0


@dataclass
class Setup:
    gateway_url: str
    upstream_url: str
    data_dir: Path
    admin: ExchangeClient
    credentials: Callable[[str], Credentials]

    def key(self, agent: str) -> str:
        return issue_key(keys_path(self.data_dir), agent)[0]

    async def settled(self) -> None:
        """Waits until the gateway has settled every quota (no hold open on the exchange): an
        answer's charge reaches the ledger when its quota is settled, 0.25-2 s later."""
        # Each settle posts to the agent's events: look again after each event, not on a timer.
        events = await self.admin.nc.subscribe("exchange.event.>")
        try:
            await flush_commands(self.admin.nc)
            with anyio.fail_after(SETTLE_TIMEOUT_S):
                while (await self.admin.query_envelope("status")).result["open_holds"]:
                    await events.next_msg(timeout=SETTLE_TIMEOUT_S)
        finally:
            await events.unsubscribe()

    async def balance(self, account: str) -> Decimal:
        """``account``'s balance once every quota is settled (so every answer is charged)."""
        await self.settled()
        envelope = await self.admin.query_envelope("balance", {"agent": account})
        if account.startswith("@") and not envelope.ok:
            return Decimal(0)  # a model's account exists from its first charge on
        assert envelope.ok, envelope
        return Decimal(envelope.result["balance"])

    async def limits(self, agent: str, **fields: Any) -> dict[str, Any]:
        limits = {k: v for k, v in fields.items() if k in ("reserve", "hourly", "burst", "daily")}
        rates = {k: v for k, v in fields.items() if k in ("rpm", "tpm", "models")}
        envelope = await self.admin.command_envelope(
            "admin", "limits.set", {"agent": agent, "limits": limits, "rates": rates}
        )
        assert envelope.ok, envelope
        result: dict[str, Any] = envelope.result
        return result


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    sock = bind("127.0.0.1", 0)
    try:
        async with (
            running_exchange(tmp_path, config_text=CONFIG) as handle,
            client_for(handle) as admin,
            fake_upstream_process(start_timeout_s=START_TIMEOUT_S) as upstream_url,
            anyio.create_task_group() as tg,
        ):
            serve = functools.partial(
                run_gateway,
                handle.credentials("gateway"),
                [parse_upstream(upstream_url)],
                sock,
                keys_path(tmp_path),
                default_max_tokens=64,
                keys_reload_s=0,
            )
            with anyio.fail_after(START_TIMEOUT_S):
                url = await tg.start(serve)
            yield Setup(url, upstream_url, tmp_path, admin, handle.credentials)
            tg.cancel_scope.cancel()  # the gateway stops cleanly before the exchange does
    finally:
        sock.close()


def cost(prompt: int, completion: int) -> Decimal:
    return Decimal(metered_cost_micro(PRICE_IN, PRICE_OUT, prompt, completion)).scaleb(-6)


async def test_openai_client_chat_is_charged_its_reported_usage(setup: Setup) -> None:
    client = openai.AsyncOpenAI(base_url=setup.gateway_url, api_key=setup.key("zero"))
    before, sink = await setup.balance("zero"), await setup.balance("@llm.gpt-x")
    reply = await client.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "price the btc option"}]
    )
    assert reply.choices[0].message.content == "echo: price the btc option"
    assert reply.usage is not None
    charged = cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert charged > 0
    assert await setup.balance("zero") == before - charged
    assert await setup.balance("@llm.gpt-x") == sink + charged
    await client.close()


async def test_openai_client_streaming_is_charged_its_final_usage(setup: Setup) -> None:
    client = openai.AsyncOpenAI(base_url=setup.gateway_url, api_key=setup.key("zero"))
    before = await setup.balance("zero")
    stream = await client.chat.completions.create(
        model="gpt-x",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "echo: one two three four"
    assert usage is not None and usage.completion_tokens == 5
    assert await setup.balance("zero") == before - cost(
        usage.prompt_tokens, usage.completion_tokens
    )
    # Without include_usage the client gets no usage chunk, and the exchange still charges it.
    before = await setup.balance("zero")
    stream = await client.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "five six"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert await setup.balance("zero") == before - cost(2 + 3, 3)
    await client.close()


async def test_completions_embeddings_and_models(setup: Setup) -> None:
    client = openai.AsyncOpenAI(base_url=setup.gateway_url, api_key=setup.key("spark"))
    before = await setup.balance("spark")
    done = await client.completions.create(model="gpt-x", prompt="a b c", max_tokens=2)
    assert done.choices[0].text == "echo: a"
    assert done.usage is not None
    embedded = await client.embeddings.create(model="gpt-x", input=["x y", "z"])
    assert len(embedded.data) == 2 and len(embedded.data[0].embedding) == 8
    assert await setup.balance("spark") == before - cost(3, 2) - cost(3, 0)
    models = await client.models.list()
    assert "gpt-x" in [m.id for m in models.data]
    await client.close()


async def test_keys_limits_and_refusals_are_openai_errors(setup: Setup) -> None:
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    async with httpx.AsyncClient(base_url=setup.gateway_url) as http:
        response = await http.post("/chat/completions", json=body)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        key = setup.key("observer")
        auth = {"authorization": f"Bearer {key}"}
        assert (await http.post("/chat/completions", json=body, headers=auth)).status_code == 200
        limits = await setup.limits("observer", rpm=1, models=["gpt-x"])
        assert limits["rates"]["requests_used"] == 1
        response = await http.post("/chat/completions", json=body, headers=auth)
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "rate_limited_rpm"
        # A quota's requests count from the end of its admission period (2 s after the grant).
        assert 1 <= error["retry_after"] <= 60 + 2
        assert response.headers["retry-after"] == str(error["retry_after"])
        await setup.limits("observer", rpm=0)
        other = {**body, "model": "llama3.2"}
        response = await http.post("/chat/completions", json=other, headers=auth)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "model_not_allowed"
        await setup.limits("observer", reserve="9999.99")
        response = await http.post("/chat/completions", json=body, headers=auth)
        assert response.status_code == 402
        assert response.json()["error"]["code"] == "reserve_would_be_breached"
        bad = await http.post("/chat/completions", json={"model": "gpt-x"}, headers=auth)
        assert bad.status_code == 400
        assert (await http.get("/models", headers=auth)).status_code == 200
        revoke_key(keys_path(setup.data_dir), key.split("-")[1])
        # This gateway re-reads the keys file whenever it changed (keys_reload_s=0).
        assert (await http.get("/models", headers=auth)).status_code == 401


async def test_an_upstream_error_releases_the_hold(setup: Setup) -> None:
    key = setup.key("builder")
    before = await setup.balance("builder")
    body = {"model": "claude-sonnet", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(base_url=setup.gateway_url) as http:
        # The fake upstream serves claude-sonnet; a model it does not serve is its 404.
        unknown = {**body, "model": "gemini-pro"}
        response = await http.post(
            "/chat/completions", json=unknown, headers={"authorization": f"Bearer {key}"}
        )
        assert response.status_code == 404
    assert await setup.balance("builder") == before  # settled: no hold is left open


async def test_a_stream_the_client_abandons_pays_for_what_it_received(setup: Setup) -> None:
    """Dropping the connection before the usage chunk does not make the answer free: the chunks
    handed to the client are charged (with the prompt at its bound), the rest released."""
    key = setup.key("builder")
    before = await setup.balance("builder")
    events = await setup.admin.nc.subscribe("exchange.event.builder.>")
    await flush_commands(setup.admin.nc)
    words = "a b c d e f g h i j"
    body = {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": words}],
        "stream": True,
        "max_tokens": 20,
        "metadata": {"chunk_delay_ms": 300},  # the fake upstream's slow model
    }
    async with (
        httpx.AsyncClient(base_url=setup.gateway_url) as http,
        http.stream(
            "POST", "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                break  # the first chunk came; the client goes away
    kinds: list[str] = []
    with anyio.fail_after(START_TIMEOUT_S):
        while "release.gateway" not in kinds:
            message = await events.next_msg(timeout=START_TIMEOUT_S)
            kinds.append(msgspec.json.decode(message.data)["kind"])
    await events.unsubscribe()
    # Settled, not voided (a release would post void.gateway); the charge itself goes from
    # @escrow to @llm.gpt-x, which sends the agent no event.
    assert kinds == ["hold.gateway", "release.gateway"]
    charged = before - await setup.balance("builder")
    bound = prompt_bound("chat", body)
    # At least the first chunk, at most the whole answer (11 words) of the 20 held.
    assert cost(bound, 1) <= charged <= cost(bound, 11) < cost(bound, 20)
    assert (await setup.admin.query_envelope("status")).result["open_holds"] == 0


async def test_only_the_gateway_meters_and_it_acts_for_no_one_else(setup: Setup) -> None:
    """An agent cannot send gateway.* (the exchange refuses it); the gateway's login cannot send
    another sender's commands (the NATS server refuses it: nothing reaches the exchange)."""
    body = {"agent": "zero", "model": "gpt-x", "prompt_tokens": 1, "max_tokens": 1}
    async with connect(setup.credentials("zero"), reconnect=False, attempts_max=1) as zero:
        refused = await zero.command_envelope("zero", "gateway.authorize", body)
    assert refused.error is not None and refused.error.code == "not_authorized"
    before = (await setup.admin.query_envelope("status")).result
    violations: list[str] = []
    seen = anyio.Event()

    async def on_error(error: Exception) -> None:
        violations.append(str(error))
        seen.set()

    creds = setup.credentials("gateway")
    forger = await nats.connect(
        creds.url, **connect_options(creds), allow_reconnect=False, error_cb=on_error
    )
    try:
        steal = msgspec.json.encode({"request_id": "x", "to": "zero", "amount": "5"})
        await forger.publish("exchange.cmd.claude.transfer", steal, reply=forger.new_inbox())
        with anyio.fail_after(START_TIMEOUT_S):
            await seen.wait()
    finally:
        await forger.close()
    assert any("permissions violation" in v.lower() for v in violations), violations
    after = (await setup.admin.query_envelope("status")).result
    assert after["digest"] == before["digest"]


async def test_hundreds_of_concurrent_requests_never_exceed_a_limit(setup: Setup) -> None:
    """One agent, 300 requests at once, against rpm, then tpm, then its money."""

    async def fire(agent: str, count: int) -> list[dict[str, Any]]:
        key = setup.key(agent)
        answers: list[dict[str, Any]] = []
        # Ten clients of 30 connections: every request has its own connection, so all of them
        # are in flight at once, and no one httpx pool grows large (its per-request scans are
        # quadratic in its connections).
        limits = httpx.Limits(max_connections=30)
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=setup.gateway_url, limits=limits, timeout=60)
                )
                for _ in range(10)
            ]
            tg = await stack.enter_async_context(anyio.create_task_group())

            async def one(i: int) -> None:
                http = clients[i % len(clients)]
                body = {
                    "model": "gpt-x",
                    "messages": [{"role": "user", "content": f"request {i} " + "w " * (i % 7)}],
                    "max_tokens": 8,
                }
                response = await http.post(
                    "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
                )
                answers.append({"status": response.status_code, **response.json()})

            for i in range(count):
                tg.start_soon(one, i)
        return answers

    def admitted(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ok = [a for a in answers if a["status"] == 200]
        refused = [a for a in answers if a["status"] != 200]
        assert all(a["status"] in (402, 429) for a in refused), refused[:3]
        return ok

    def usage_cost(ok: list[dict[str, Any]]) -> Decimal:
        return sum(
            (cost(a["usage"]["prompt_tokens"], a["usage"]["completion_tokens"]) for a in ok),
            Decimal(0),
        )

    sink_before = await setup.balance("@llm.gpt-x")
    # Requests per minute.
    await setup.limits("zero", rpm=100)
    before = await setup.balance("zero")
    answers = await fire("zero", 300)
    by_rpm = admitted(answers)
    assert len(by_rpm) == 100
    assert {a["error"]["code"] for a in answers if a["status"] != 200} == {"rate_limited_rpm"}
    assert before - await setup.balance("zero") == usage_cost(by_rpm)
    # Tokens per minute: each request's worst case is its prompt bound plus 8.
    await setup.limits("spark", tpm=5000)
    before = await setup.balance("spark")
    by_tpm = admitted(await fire("spark", 300))
    used = sum(a["usage"]["total_tokens"] for a in by_tpm)
    assert 0 < len(by_tpm) < 300 and used <= 5000
    assert before - await setup.balance("spark") == usage_cost(by_tpm)
    # Money: 1 token above the reserve (each request holds about 0.2).
    before = await setup.balance("lambda")
    await setup.limits("lambda", reserve=str(before - 1))
    by_money = admitted(await fire("lambda", 300))
    spent = before - await setup.balance("lambda")
    assert 0 < len(by_money) < 300 and spent == usage_cost(by_money) <= 1
    # Every token charged reached the model's account, and no hold is left open.
    total = usage_cost(by_rpm) + usage_cost(by_tpm) + usage_cost(by_money)
    assert await setup.balance("@llm.gpt-x") - sink_before == total
    status = (await setup.admin.query_envelope("status")).result
    assert status["open_holds"] == 0


async def test_the_key_verbs(tmp_path: Path) -> None:
    data = ("--data", str(tmp_path))
    issued = await run_cli("gateway", "key", "zero", *data)
    assert issued.status == 0, issued
    key = issued.stdout.strip()
    key_id = key.split("-")[1]
    assert key.startswith(f"axk-{key_id}-")
    assert key not in (tmp_path / "gateway-keys.json").read_text()
    listed = await run_cli("gateway", "keys", *data)
    assert listed.stdout.split("\t")[0:2] == [key_id, "zero"]
    assert listed.stdout.rstrip().endswith("active")
    assert (await run_cli("gateway", "revoke", key_id, *data)).status == 0
    assert (await run_cli("gateway", "keys", *data)).stdout.rstrip().endswith("revoked")
    assert (await run_cli("gateway", "revoke", "nope", *data)).status == 2
    assert (await run_cli("gateway", "key", "Not An Id", *data)).status == 2
    assert (await run_cli("gateway", "serve", "--upstream", "ftp://x", *data)).status == 2
