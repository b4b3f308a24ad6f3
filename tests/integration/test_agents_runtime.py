"""The worker runtime and the roles against a real nats-server: prices, signals, heartbeats,
request retries with one request_id, graceful stops, secure mode, and a server restart on the same
port. Workers run in-process in a task group; every wait is for a message under fail_after.
"""

import json
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agents.config import RuntimeConfig
from agents.errors import ConnectionLostError
from agents.roles.oracle import OracleOptions, OracleWorker
from agents.roles.scout import ScoutOptions, ScoutWorker
from agents.runtime import Worker, WorkerContext, run_worker
from exchange.daemon.natsserver import (
    NatsServer,
    NatsServerConfig,
    NatsUser,
    agent_inbox_prefix,
    run_nats_server,
)
from protocols import subjects
from protocols.client import flush_commands
from protocols.client_errors import ExchangeUnavailableError, RefusedError
from protocols.credentials import Credentials
from protocols.queries import StatusQuery
from protocols.results import Result
from protocols.swarm import AgentSignal, AnnounceResult, AnnounceTask, Heartbeat, PriceUpdate

pytestmark = pytest.mark.anyio

ClientOpener = Callable[..., AbstractAsyncContextManager[Client]]
SecureServerStarter = Callable[[Iterable[NatsUser]], AbstractAsyncContextManager[NatsServer]]
UsersMaker = Callable[..., dict[str, NatsUser]]

WAIT_S = 10.0
_encoder = msgspec.json.Encoder()


def _config(url: str, agent_id: str = "agent-1", **changes: Any) -> RuntimeConfig:
    fields: dict[str, Any] = {
        "agent_id": agent_id,
        "role": "test",
        "credentials": Credentials(url=url),
        "request_timeout_ms": 500,
        "reconnect_wait_ms": 50,
        "shutdown_grace_ms": 5_000,
    } | changes
    return RuntimeConfig(**fields)


@asynccontextmanager
async def running(config: RuntimeConfig, worker: Worker) -> AsyncIterator[WorkerContext]:
    """The worker, started and ready; stopped gracefully (and waited for) on exit."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(WAIT_S):
            ctx: WorkerContext = await tg.start(partial(run_worker, config, worker))
        try:
            yield ctx
        finally:
            ctx.request_stop()
            tg.cancel_scope.deadline = anyio.current_time() + WAIT_S


class Idle:
    """A worker with no loops of its own: the runtime's heartbeat and bus only."""

    async def setup(self, ctx: WorkerContext) -> None:
        del ctx


async def _next(subscription: Subscription) -> Msg:
    with anyio.fail_after(WAIT_S):
        return await subscription.next_msg(timeout=WAIT_S)


async def test_oracle_publishes_prices_a_subscriber_receives(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    options = OracleOptions(tick_ms=20, start_prices={"BTC": Decimal(100), "ETH": Decimal(10)})
    async with nats_client(nats_server) as client:
        prices = await client.subscribe(subjects.price("*"))
        await flush_commands(client)
        worker = OracleWorker(options, random.Random(1))
        async with running(_config(nats_server.url, "oracle"), worker):
            updates = [msgspec.json.decode((await _next(prices)).data, type=PriceUpdate)]
            updates += [
                msgspec.json.decode((await _next(prices)).data, type=PriceUpdate) for _ in range(5)
            ]
    assert {u.asset for u in updates} == {"BTC", "ETH"}
    assert all(u.source == "oracle" and u.price > 0 for u in updates)
    assert [u.asset for u in updates[:2]] == ["BTC", "ETH"]


async def test_scout_signals_a_trend(nats_server: NatsServer, nats_client: ClientOpener) -> None:
    options = ScoutOptions(window_prices=3, threshold_bps=Decimal(50))
    async with nats_client(nats_server) as client:
        signals = await client.subscribe(subjects.signal("scout-1", "opportunity", "*"))
        async with running(_config(nats_server.url, "scout-1"), ScoutWorker(options)):
            for at_ns, price in enumerate(["100", "100.2", "101"]):
                update = PriceUpdate(asset="BTC", price=Decimal(price), at_ns=at_ns)
                await client.publish(subjects.price("BTC"), _encoder.encode(update))
            msg = await _next(signals)
    assert msg.subject == subjects.signal("scout-1", "opportunity", "BTC")
    signal = msgspec.json.decode(msg.data, type=AgentSignal)
    assert (signal.direction, signal.confidence, signal.asset) == ("long", 1.0, "BTC")
    assert signal.metadata["scanner"] == "momentum"
    assert signal.metadata["return_bps"] == "100.00"


async def test_heartbeats_are_published_without_a_reply_inbox(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    config = _config(nats_server.url, "exec-a", heartbeat_interval_ms=20, capabilities=("execute",))
    async with nats_client(nats_server) as client:
        beats = await client.subscribe(subjects.command("exec-a", "heartbeat"))
        async with running(config, Idle()):
            first, second = await _next(beats), await _next(beats)
    for msg in (first, second):
        assert not msg.reply
        heartbeat = msgspec.json.decode(msg.data, type=Heartbeat)
        assert (heartbeat.role, heartbeat.capabilities) == ("test", ["execute"])
    assert msgspec.json.decode(second.data, type=Heartbeat).at_ms >= json.loads(first.data)["at_ms"]


def _announce() -> AnnounceTask:
    return AnnounceTask(
        request_id="announce:1",
        task_type="execute",
        asset="BTC",
        deadline_ms=1000,
        max_cost=Decimal(20),
    )


async def test_a_timed_out_request_is_resent_with_the_same_request_id(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    ok = b'{"ok":true,"result":{"task_id":"task-1","held":"20","closes_at_ns":5,"eligible":["a"]}}'
    responder = Responder([None, ok])
    async with nats_client(nats_server) as client, anyio.create_task_group() as tg:
        await tg.start(responder.serve, client, subjects.command("treasury", "task.announce"))
        async with running(_config(nats_server.url, "treasury"), Idle()) as ctx:
            with anyio.fail_after(WAIT_S):
                reply = await ctx.bus.command("task.announce", _announce(), AnnounceResult)
    assert reply == AnnounceResult(task_id="task-1", held="20", closes_at_ns=5, eligible=["a"])
    assert [body["request_id"] for body in responder.seen] == ["announce:1", "announce:1"]
    assert responder.seen[0] == responder.seen[1]


class Responder:
    """Plays the exchange on one subject: answers requests in turn (None: drops one unanswered)
    and records their bodies; ``received`` is set at each request."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.seen: list[dict[str, Any]] = []
        self.received = anyio.Event()

    async def serve(self, client: Client, subject: str, *, task_status: TaskStatus[None]) -> None:
        subscription = await client.subscribe(subject)
        await flush_commands(client)
        task_status.started()
        async for msg in subscription.messages:
            self.seen.append(json.loads(msg.data))
            self.received.set()
            self.received = anyio.Event()
            answer = self.answers.pop(0)
            if answer is not None:
                await client.publish(msg.reply, answer)
            if not self.answers:
                await subscription.unsubscribe()


async def test_refusals_raise_with_their_code_and_overloaded_is_retried(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    overloaded = b'{"ok":false,"error":{"code":"overloaded","message":"queue full"}}'
    refused = b'{"ok":false,"error":{"code":"insufficient_funds","message":"need 20","limit":"5"}}'
    responder = Responder([overloaded, refused])
    async with nats_client(nats_server) as client, anyio.create_task_group() as tg:
        await tg.start(responder.serve, client, subjects.command("treasury", "task.announce"))
        async with running(_config(nats_server.url, "treasury"), Idle()) as ctx:
            with anyio.fail_after(WAIT_S), pytest.raises(RefusedError) as refusal:
                await ctx.bus.command("task.announce", _announce(), AnnounceResult)
    assert (refusal.value.code, refusal.value.error.limit) == ("insufficient_funds", "5")
    assert len(responder.seen) == 2


async def test_no_exchange_means_unavailable_after_the_attempts(
    nats_server: NatsServer,
) -> None:
    config = _config(nats_server.url, "treasury", request_attempts=2, request_timeout_ms=50)
    async with running(config, Idle()) as ctx:
        with anyio.fail_after(WAIT_S), pytest.raises(ExchangeUnavailableError) as unavailable:
            await ctx.bus.query("status", StatusQuery(), Result)
    assert unavailable.value.attempts == 2


class Sweeper:
    """Asks the exchange for its status every 10 ms, as the arbiter sweeps for disputes."""

    def __init__(self) -> None:
        self.ticks = 0
        self.twice = anyio.Event()

    async def setup(self, ctx: WorkerContext) -> None:
        async def tick() -> None:
            self.ticks += 1
            if self.ticks == 2:
                self.twice.set()
            await ctx.bus.query("status", StatusQuery(), Result)

        ctx.every(10, tick, name="sweep")


async def test_a_tick_no_exchange_answers_is_dropped_and_the_next_one_runs(
    nats_server: NatsServer,
) -> None:
    # No exchange, as while a standby takes over: the worker lives on and ticks again.
    worker = Sweeper()
    config = _config(nats_server.url, "arbiter", request_attempts=1, request_timeout_ms=50)
    async with running(config, worker):
        with anyio.fail_after(WAIT_S):
            await worker.twice.wait()


class Slow:
    """Handles each message on ``in`` by waiting for ``release``, then publishing on ``out``."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.handled = 0

    async def setup(self, ctx: WorkerContext) -> None:
        async def handle(msg: Msg) -> None:
            self.handled += 1
            self.started.set()
            await self.release.wait()
            update = PriceUpdate(asset="DONE", price=Decimal(1), at_ns=0)
            await ctx.bus.publish_price(update)

        await ctx.subscribe(subjects.price("IN"), handle)


async def test_a_stop_lets_in_flight_work_finish_and_takes_no_new_work(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    worker = Slow()
    async with nats_client(nats_server) as client:
        done = await client.subscribe(subjects.price("DONE"))
        async with anyio.create_task_group() as tg:
            ctx: WorkerContext = await tg.start(
                partial(run_worker, _config(nats_server.url, "slow"), worker)
            )
            await client.publish(subjects.price("IN"), b"{}")
            with anyio.fail_after(WAIT_S):
                await worker.started.wait()
            ctx.request_stop()
            # Sent after the stop: the worker has unsubscribed, so it is never handled.
            await client.publish(subjects.price("IN"), b"{}")
            await flush_commands(client)
            worker.release.set()
            assert (await _next(done)).subject == subjects.price("DONE")
    assert worker.handled == 1


async def test_the_grace_period_bounds_a_stop(nats_server: NatsServer) -> None:
    worker = Slow()
    config = _config(nats_server.url, "slow", shutdown_grace_ms=100)
    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            ctx: WorkerContext = await tg.start(partial(run_worker, config, worker))
            await ctx.bus.publish_price(PriceUpdate(asset="IN", price=Decimal(1), at_ns=0))
            await worker.started.wait()
            ctx.request_stop()
    # The handler never got its release: the runtime cancelled it after the grace period.
    assert not worker.release.is_set()


async def test_a_url_list_connects_to_the_first_node_that_answers(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"nats://127.0.0.1:{closed.getsockname()[1]}"
    config = _config(f"{dead}, {nats_server.url}", "oracle", heartbeat_interval_ms=20)
    async with nats_client(nats_server) as client:
        beats = await client.subscribe(subjects.command("oracle", "heartbeat"))
        async with running(config, Idle()):
            assert (await _next(beats)).subject == subjects.command("oracle", "heartbeat")


async def test_an_unreachable_server_is_a_connection_error(tmp_path: Path) -> None:
    async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "gone") as server:
        url = server.url
    config = _config(url, reconnect_attempts=1, connect_timeout_ms=200)
    with anyio.fail_after(WAIT_S), pytest.raises(ConnectionLostError, match="cannot connect"):
        await run_worker(config, Idle())


async def test_secure_mode_with_a_credentials_file(
    start_secure_nats_server: SecureServerStarter,
    nats_users: UsersMaker,
    nats_client: ClientOpener,
    tmp_path: Path,
) -> None:
    users = nats_users("scout-1")
    async with start_secure_nats_server(users.values()) as server:
        creds = Credentials(
            url=server.url,
            user="scout-1",
            password=users["scout-1"].password,
            inbox_prefix=agent_inbox_prefix("scout-1"),
        )
        config = _config(server.url, "scout-1", credentials=creds)
        worker = ScoutWorker(ScoutOptions(window_prices=2))
        responder = Responder([b'{"ok":true,"result":{}}'])
        async with (
            nats_client(server, users["exchange"]) as exchange,
            nats_client(server, users["admin"]) as admin,
            anyio.create_task_group() as tg,
        ):
            await tg.start(responder.serve, exchange, subjects.query("status"))
            signals = await admin.subscribe(subjects.signal("scout-1", "opportunity", "ETH"))
            async with running(config, worker) as ctx:
                # A query's reply comes back on the agent's own inbox prefix.
                with anyio.fail_after(WAIT_S):
                    await ctx.bus.query("status", StatusQuery(), Result)
                for price in ("10", "9"):
                    update = PriceUpdate(asset="ETH", price=Decimal(price), at_ns=0)
                    await admin.publish(subjects.price("ETH"), _encoder.encode(update))
                signal = msgspec.json.decode((await _next(signals)).data, type=AgentSignal)
    assert signal.direction == "short"
    assert responder.seen == [{}]


async def _serve_nats(
    config: NatsServerConfig,
    data_dir: Path,
    stop: anyio.Event,
    stopped: anyio.Event,
    *,
    task_status: TaskStatus[NatsServer],
) -> None:
    try:
        async with run_nats_server(config, data_dir=data_dir) as server:
            task_status.started(server)
            await stop.wait()
    finally:
        stopped.set()


async def test_a_worker_survives_a_server_restart_on_the_same_port(
    tmp_path: Path, nats_client: ClientOpener
) -> None:
    """Stop the server under a running scout, start a new one on the same port: the scout's
    subscription comes back by itself, and a request sent before the restart is answered after
    it, with the same request_id each time it was sent (the exchange applies it once)."""
    subject = subjects.command("scout-1", "task.announce")
    announced = (
        b'{"ok":true,"result":{"task_id":"task-9","held":"20","closes_at_ns":5,"eligible":[]}}'
    )
    before, after = Responder([None]), Responder([announced])
    replies: list[AnnounceResult] = []
    replied = anyio.Event()
    with anyio.fail_after(3 * WAIT_S):
        async with anyio.create_task_group() as tg:
            first_stop, first_stopped = anyio.Event(), anyio.Event()
            first: NatsServer = await tg.start(
                _serve_nats, NatsServerConfig(), tmp_path / "first", first_stop, first_stopped
            )
            port = first.client_port
            config = _config(first.url, "scout-1", request_timeout_ms=300, request_attempts=20)
            async with running(config, ScoutWorker(ScoutOptions(window_prices=2))) as ctx:

                async def announce() -> None:
                    replies.append(
                        await ctx.bus.command("task.announce", _announce(), AnnounceResult)
                    )
                    replied.set()

                async with nats_client(first) as client:
                    await tg.start(before.serve, client, subject)
                    received = before.received
                    tg.start_soon(announce)
                    # The exchange gets the request, then dies before answering it.
                    await received.wait()
                first_stop.set()
                await first_stopped.wait()
                second: NatsServer = await tg.start(
                    _serve_nats,
                    NatsServerConfig(port=port),
                    tmp_path / "second",
                    anyio.Event(),
                    anyio.Event(),
                )
                assert second.client_port == port
                async with nats_client(second) as client:
                    signals = await client.subscribe(
                        subjects.signal("scout-1", "opportunity", "BTC")
                    )
                    await tg.start(after.serve, client, subject)
                    # The retried request went out after the scout's subscriptions were renewed
                    # on the new server (nats-py resends them first), so prices reach it now.
                    await replied.wait()
                    for price in ("100", "110"):
                        update = PriceUpdate(asset="BTC", price=Decimal(price), at_ns=0)
                        await client.publish(subjects.price("BTC"), _encoder.encode(update))
                    signal = msgspec.json.decode((await _next(signals)).data, type=AgentSignal)
            tg.cancel_scope.cancel()
    assert signal.direction == "long"
    assert replies == [AnnounceResult(task_id="task-9", held="20", closes_at_ns=5, eligible=[])]
    assert [b["request_id"] for b in before.seen + after.seen] == ["announce:1", "announce:1"]


async def test_a_connection_lost_for_good_stops_the_worker_with_an_error(tmp_path: Path) -> None:
    failures: list[ConnectionLostError] = []
    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            stop, stopped = anyio.Event(), anyio.Event()
            server: NatsServer = await tg.start(
                _serve_nats, NatsServerConfig(), tmp_path / "nats", stop, stopped
            )
            config = _config(server.url, "scout-1", reconnect_attempts=1, reconnect_wait_ms=10)

            async def run(*, task_status: TaskStatus[WorkerContext]) -> None:
                try:
                    await run_worker(config, ScoutWorker(ScoutOptions()), task_status=task_status)
                except ConnectionLostError as exc:
                    failures.append(exc)

            await tg.start(run)
            stop.set()
    (failure,) = failures
    assert "ended" in str(failure)


class Decoding:
    """Decodes every price on ``in`` with the runtime's ``decode``; keeps what decoded."""

    def __init__(self) -> None:
        self.prices: list[PriceUpdate] = []
        self.got = anyio.Event()

    async def setup(self, ctx: WorkerContext) -> None:
        decoder = msgspec.json.Decoder(PriceUpdate)

        async def handle(msg: Msg) -> None:
            if (update := ctx.decode(decoder, msg)) is not None:
                self.prices.append(update)
                self.got.set()

        await ctx.subscribe(subjects.price("IN"), handle)


async def test_a_body_nested_3000_deep_is_dropped_and_the_worker_goes_on(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    """msgspec raises RecursionError, not DecodeError, that deep: it used to end the consumer."""
    worker = Decoding()
    async with nats_client(nats_server) as client, running(_config(nats_server.url), worker):
        await client.publish(subjects.price("IN"), b"[" * 3000 + b"]" * 3000)
        valid = PriceUpdate(asset="IN", price=Decimal(2), at_ns=1)
        await client.publish(subjects.price("IN"), _encoder.encode(valid))
        with anyio.fail_after(WAIT_S):
            await worker.got.wait()
    assert worker.prices == [valid]
