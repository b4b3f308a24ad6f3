"""Several gateway processes on one port: ``exchange gateway serve --workers N`` (Linux).

Why: one gateway process uses at most one core, about 0.5 ms of CPU per request
(docs/gateway.md#performance), so requests that arrive together queue behind that core. Each
worker is a whole gateway (``exchange gateway serve --listen-fd FD``: its own NATS connection,
upstream pool, key ring and quotas), and the workers share the port through SO_REUSEPORT: the
kernel hands each new connection to one of their sockets, by a hash of its addresses.

The supervisor (this module) binds the N sockets, starts a worker on each, announces the
address once every worker serves, and relays a stop (SIGINT or SIGTERM) to all of them. A
worker that exits by itself stops the others and the supervisor exits with its status, so
that whatever restarts the service (compose, systemd) restarts the set. A worker's stdin is a
pipe from the supervisor; a worker stops when it closes, so none outlives a killed supervisor.

Must not: meter or serve anything itself.
"""

import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Final

import anyio
import structlog
from anyio.abc import ByteReceiveStream, Process

from exchange.errors import ExchangeError
from exchange.listen import listening_socket

log: Final = structlog.get_logger("exchange.gateway")

# What a worker prints on stdout once it serves (the rest of the line is its URL).
READY_PREFIX: Final = b"gateway at "
READY_LINE_BYTES_MAX: Final = 4096
# A worker connects to the exchange and to its upstreams (to list their models) before it serves.
START_TIMEOUT_S: Final = 60.0

ArgvFor = Callable[[int], list[str]]


class WorkersError(ExchangeError):
    """A worker did not start, or exited by itself; ``status`` is what the supervisor exits."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def shared_sockets(host: str, port: int, count: int, *, backlog: int) -> list[socket.socket]:
    """``count`` listening sockets on ``host:port``, sharing it (``port`` 0: one free port, the
    same for all). Raises OSError."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = listening_socket(host, port, backlog=backlog, reuse_port=True)
            sockets.append(sock)
            port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def supervise(
    argv_for: ArgvFor,
    sockets: list[socket.socket],
    announce: Callable[[str, int], None],
    *,
    stop_timeout_s: float,
) -> None:
    """Runs a worker per socket (``argv_for(fd)``: its command line) until SIGINT or SIGTERM
    stops them all. ``announce(url, workers)`` once every worker serves. Closes the sockets
    (the workers keep their own). Raises WorkersError."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        workers: list[Process] = []
        try:
            try:
                for sock in sockets:
                    fd = sock.fileno()
                    workers.append(
                        await anyio.open_process(
                            argv_for(fd),
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=None,  # the supervisor's own: a worker's logs go where its do
                            pass_fds=(fd,),
                        )
                    )
            finally:
                for sock in sockets:
                    sock.close()
            with anyio.fail_after(START_TIMEOUT_S):
                urls = [await _ready_url(worker) for worker in workers]
            announce(urls[0], len(workers))
            await _until_signal_or_exit(workers, signals)
        finally:
            with anyio.CancelScope(shield=True):
                await _stop_all(workers, stop_timeout_s)


async def _ready_url(worker: Process) -> str:
    """The URL a worker announces once it serves. Raises WorkersError when it exits first."""
    assert worker.stdout is not None
    line = b""
    while not line.endswith(b"\n") and len(line) < READY_LINE_BYTES_MAX:
        try:
            line += await worker.stdout.receive()
        except anyio.EndOfStream:
            break
    if not line.startswith(READY_PREFIX):
        status = _exit_status(await worker.wait())
        raise WorkersError(f"worker {worker.pid} exited ({status}) before it served", status)
    return line[len(READY_PREFIX) :].split()[0].decode()


async def _until_signal_or_exit(
    workers: list[Process], signals: AsyncIterator[signal.Signals]
) -> None:
    """Returns at the first SIGINT or SIGTERM; raises WorkersError when a worker exits first."""
    exited: list[Process] = []
    async with anyio.create_task_group() as tg:

        async def watch(worker: Process) -> None:
            await worker.wait()
            exited.append(worker)
            tg.cancel_scope.cancel()

        async def until_signal() -> None:
            async for signum in signals:
                log.info("gateway_stopping", signal=signum.name)
                tg.cancel_scope.cancel()
                return

        for worker in workers:
            assert worker.stdout is not None
            tg.start_soon(_discard, worker.stdout)
            tg.start_soon(watch, worker)
        tg.start_soon(until_signal)
    if not exited:
        return
    worker = exited[0]
    if worker.returncode == 0:
        # Stopped cleanly, so somebody stopped it (a signal to its process, or to the process
        # group from a terminal's Ctrl-C, which reaches the workers too): stop the rest as well.
        log.info("gateway_worker_stopped", pid=worker.pid)
        return
    status = _exit_status(worker.returncode)
    log.error("gateway_worker_exited", pid=worker.pid, status=status)
    raise WorkersError(f"worker {worker.pid} exited ({status}); the others are stopped", status)


def _exit_status(returncode: int | None) -> int:
    """A worker's exit as a shell shows it: 128 + N for one killed by signal N."""
    if returncode is None or returncode == 0:
        return 1
    return 128 - returncode if returncode < 0 else returncode


async def _stop_all(workers: list[Process], timeout_s: float) -> None:
    """SIGTERM to every worker still running (each finishes its requests and settles its
    quotas), then SIGKILL to any still running after ``timeout_s``."""
    for worker in workers:
        if worker.returncode is None:
            worker.terminate()
        assert worker.stdin is not None
        await worker.stdin.aclose()
    with anyio.move_on_after(timeout_s):
        for worker in workers:
            await worker.wait()
    for worker in workers:
        if worker.returncode is None:
            log.error("gateway_worker_killed", pid=worker.pid, after_s=timeout_s)
            worker.kill()
        await worker.wait()
        await worker.aclose()


async def _discard(stream: ByteReceiveStream) -> None:
    async for _ in stream:
        pass


async def until_stdin_closes(fd: int) -> None:
    """A worker's side: returns once its supervisor's pipe (``fd``, its stdin) closes, when the
    supervisor stops or dies. The supervisor writes nothing, so the pipe turns readable only at
    its end. (No reading thread: one blocked in a read would hold the worker's exit.)"""
    while True:
        await anyio.wait_readable(fd)
        if not os.read(fd, 4096):
            return
