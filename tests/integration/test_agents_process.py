"""Workers as real processes (``python -m agents ...``): they work, stop cleanly with exit code 0 on
SIGTERM or SIGINT, and exit 1 when NATS is unreachable. Each test waits for a message or the
process's exit under fail_after, and kills whatever still runs when it ends.
"""

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest
from anyio.abc import Process
from nats.aio.client import Client

from exchange.daemon.natsserver import NatsServer, NatsServerConfig, run_nats_server
from protocols import subjects
from protocols.client import flush_commands
from protocols.swarm import Heartbeat, PriceUpdate

pytestmark = pytest.mark.anyio

ClientOpener = Callable[..., AbstractAsyncContextManager[Client]]
WAIT_S = 15.0
# A clean stop drains the connection; far less than this on any machine.
STOP_S = 10.0


@asynccontextmanager
async def worker_process(*argv: str) -> AsyncIterator[Process]:
    """``python -m agents ARGV``, JSON logs on stderr; killed if it outlives the block."""
    command = [sys.executable, "-m", "agents", *argv, "--log-format", "json"]
    process = await anyio.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    async with process:
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()


async def _stderr(process: Process) -> str:
    assert process.stderr is not None
    chunks = [chunk async for chunk in process.stderr]
    return b"".join(chunks).decode()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_oracle_process_publishes_and_stops_cleanly(
    nats_server: NatsServer, nats_client: ClientOpener, stop_signal: signal.Signals
) -> None:
    async with nats_client(nats_server) as client:
        prices = await client.subscribe(subjects.price("*"))
        await flush_commands(client)
        argv = ("oracle", "--id", "oracle", "--nats", nats_server.url, "--tick-ms", "20")
        async with worker_process(*argv, "--seed", "1") as process:
            with anyio.fail_after(WAIT_S):
                msg = await prices.next_msg(timeout=WAIT_S)
            assert msgspec.json.decode(msg.data, type=PriceUpdate).source == "oracle"
            process.send_signal(stop_signal)
            with anyio.fail_after(STOP_S):
                log = await _stderr(process)
                code = await process.wait()
    assert code == 0, log
    assert '"event": "worker_stopped"' in log
    assert '"agent": "oracle"' in log


async def test_executor_process_heartbeats_with_its_capabilities(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    async with nats_client(nats_server) as client:
        beats = await client.subscribe(subjects.command("exec-a", "heartbeat"))
        await flush_commands(client)
        argv = ("executor", "--id", "exec-a", "--nats", nats_server.url, "--heartbeat-ms", "50")
        async with worker_process(*argv, "--capabilities", "execute,hedge") as process:
            with anyio.fail_after(WAIT_S):
                msg = await beats.next_msg(timeout=WAIT_S)
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(STOP_S):
                code = await process.wait()
    heartbeat = msgspec.json.decode(msg.data, type=Heartbeat)
    assert (heartbeat.role, heartbeat.capabilities) == ("executor", ["execute", "hedge"])
    assert code == 0


async def test_unreachable_nats_exits_with_1(tmp_path: Path) -> None:
    async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "gone") as server:
        url = server.url
    argv = ("scout", "--id", "scout-1", "--nats", url, "--reconnect-attempts", "1")
    async with worker_process(*argv, "--reconnect-wait-ms", "10") as process:
        with anyio.fail_after(WAIT_S):
            log = await _stderr(process)
            code = await process.wait()
    assert code == 1, log
    assert '"event": "worker_exited"' in log


async def test_sigterm_while_connecting_exits_cleanly(tmp_path: Path) -> None:
    async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "gone") as server:
        url = server.url
    async with worker_process("scout", "--id", "scout-1", "--nats", url) as process:
        assert process.stderr is not None
        with anyio.fail_after(WAIT_S):
            # Logged once SIGTERM is handled; it then retries the connection for ever.
            logged = b""
            async for chunk in process.stderr:
                logged += chunk
                if b"nats_connecting" in logged:
                    break
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(STOP_S):
            code = await process.wait()
    assert code == 0


async def test_bad_options_exit_with_2() -> None:
    async with worker_process("oracle", "--id", "oracle", "--tick-ms", "0") as process:
        with anyio.fail_after(WAIT_S):
            log = await _stderr(process)
            code = await process.wait()
    assert code == 2
    assert "tick_ms must be" in log
