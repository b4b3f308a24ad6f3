"""Helpers for the daemon and CLI tests: an exchange in-process or as a real ``exchange up``.

- ``running_exchange(data_dir, **settings)``: ``run_exchange`` in a task group, yielded once ready
  (its nats-server on a random port), stopped cleanly (drain, snapshot) when the block exits.
- ``DaemonProcess``: ``python -m exchange.cli.main up --log-json`` as a child process whose JSON log
  lines are collected, so a test waits for an event (``exchange_ready``) instead of sleeping.
- ``run_cli``: the CLI's ``main`` in a worker thread with its own event loop and captured output.
"""

import functools
import io
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import ByteReceiveStream, Process

from exchange.cli.main import main as cli_main
from exchange.daemon.app import ExchangeHandle, run_exchange
from exchange.daemon.natsserver import PID_FILE_NAME
from exchange.daemon.settings import Settings
from protocols.client import ExchangeClient, connect

# Generous bounds: a loaded CI machine, not the expected time.
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


@asynccontextmanager
async def running_exchange(data_dir: Path, **overrides: Any) -> AsyncIterator[ExchangeHandle]:
    settings = Settings(data_dir=data_dir, **{"nats_port": -1, **overrides})
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(READY_TIMEOUT_S):
            handle: ExchangeHandle = await tg.start(run_exchange, settings)
        try:
            yield handle
        finally:
            handle.stop()


@asynccontextmanager
async def client_for(handle: ExchangeHandle, user: str = "admin") -> AsyncIterator[ExchangeClient]:
    async with connect(
        handle.credentials(user), reconnect=False, request_timeout_s=10.0, attempts_max=1
    ) as client:
        yield client


async def status_of(client: ExchangeClient) -> dict[str, Any]:
    envelope = await client.query_envelope("status")
    assert envelope.ok, envelope
    result: dict[str, Any] = envelope.result
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class CliResult:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_cli(*argv: str) -> CliResult:
    """The CLI's main in a worker thread (it runs its own event loop), output captured."""
    out, err = io.StringIO(), io.StringIO()
    call = functools.partial(cli_main, list(argv), stdout=out, stderr=err, configure_logs=False)
    status = await anyio.to_thread.run_sync(call)
    return CliResult(status, out.getvalue(), err.getvalue())


async def wait_exited(pid: int) -> None:
    """Returns once ``pid`` (any process, not only a child) has exited: its pidfd turns readable
    then (an event, not a poll)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def stop_orphaned_nats_server(nats_dir: Path) -> None:
    """SIGTERMs the nats-server whose pid file is in ``nats_dir``, if it still runs from there."""
    pid_file = nats_dir / PID_FILE_NAME
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"nats-server" in cmdline and str(nats_dir).encode() in cmdline:
        os.kill(pid, signal.SIGTERM)


class DaemonProcess:
    """``exchange up`` as a child process; its JSON log events are collected as they come."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None,
        *extra: str,
        ready_event: str = "exchange_ready",
        argv: Sequence[str] | None = None,
    ) -> None:
        """``port=None`` for an exchange that joins a server (``--nats`` in ``extra``); a
        standby is ready at ``standby_following``. ``argv``: the whole command line after
        ``exchange`` instead (it must have ``up --data data_dir ... --log-json``)."""
        self.data_dir = data_dir
        self.port = port
        self.extra = extra
        self.ready_event = ready_event
        self.argv = argv
        self.events: list[dict[str, Any]] = []
        # The last lines of stderr that are not JSON events (a traceback, a crash's last words).
        self.other_lines: list[str] = []
        self._changed = anyio.Event()
        self._process: Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def _follow(self, stream: ByteReceiveStream) -> None:
        partial = b""
        async for chunk in stream:
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                if line.startswith(b"{"):
                    self.events.append(msgspec.json.decode(line))
                else:
                    self.other_lines = [*self.other_lines[-40:], line.decode(errors="replace")]
            self._changed.set()
            self._changed = anyio.Event()
        self._changed.set()

    async def wait_event(self, name: str, *, after: int = 0) -> dict[str, Any]:
        """The first event called ``name`` at or after index ``after``. The caller bounds it."""
        while True:
            for event in self.events[after:]:
                if event.get("event") == name:
                    return event
            if self._process is not None and self._process.returncode is not None:
                raise AssertionError(
                    f"exchange exited ({self._process.returncode}) before {name}: "
                    f"{self.events[-5:]}; its other output:\n" + "\n".join(self.other_lines)
                )
            await self._changed.wait()

    @asynccontextmanager
    async def running(self) -> AsyncIterator["DaemonProcess"]:
        """Starts it, waits for ``exchange_ready``; on exit kills it if it still runs."""
        command = [
            sys.executable,
            "-m",
            "exchange.cli.main",
            *(
                self.argv
                or (
                    "up",
                    "--data",
                    str(self.data_dir),
                    *(() if self.port is None else ("--port", str(self.port))),
                    "--log-json",
                    *self.extra,
                )
            ),
        ]
        process = await anyio.open_process(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._process = process
        async with process, anyio.create_task_group() as tg:
            assert process.stderr is not None and process.stdout is not None
            tg.start_soon(self._follow, process.stderr)
            tg.start_soon(_discard, process.stdout)
            mark = len(self.events)
            try:
                with anyio.fail_after(READY_TIMEOUT_S):
                    await self.wait_event(self.ready_event, after=mark)
                yield self
            finally:
                if process.returncode is None:
                    process.terminate()
                    with anyio.move_on_after(STOP_TIMEOUT_S):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                with anyio.fail_after(STOP_TIMEOUT_S):
                    await process.wait()
                # A SIGKILLed daemon (the crash tests) leaves its nats-server behind: stop it, so
                # no test leaves a process running.
                stop_orphaned_nats_server(self.data_dir / "nats")

    def signal(self, signum: int) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signum)

    def kill(self) -> None:
        """SIGKILL: no drain, no snapshot, no cleanup (its nats-server is left running)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGKILL)

    async def terminate_and_wait(self) -> int:
        """SIGTERM, then the exit status (a clean stop drains and snapshots)."""
        assert self._process is not None
        self._process.terminate()
        with anyio.fail_after(STOP_TIMEOUT_S):
            return await self._process.wait()


async def _discard(stream: ByteReceiveStream) -> None:
    async for _ in stream:
        pass


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
