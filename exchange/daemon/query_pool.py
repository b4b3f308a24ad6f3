"""Stateless queries answered in separate processes, off the exchange's single writer.

Owns: ``QueryJob`` and ``QueryPool``: at most ``processes_max`` query processes
(``python -m exchange.daemon.query_worker``), at most ``queue_size_max`` queries waiting for one,
and the time bound of one query, beyond which its process is killed (and replaced, for the next
query) and the query answered ``query_timed_out``. The receiver refuses a query the pool has no
room for as ``overloaded``, and one beyond its size bounds as ``query_too_large`` before it gets
here (exchange/core/stateless_queries.py states those bounds).
Must not: answer a query that reads the ledger (those take the writer's ordered path: their
replies must follow the commits they see), wait on a full queue, or leave a process behind when
``run`` returns, fails or is cancelled.

Why processes: a Shapley query is pure CPU in numpy and Python (1,800 players x 100,000
permutations took 5-6 s). On the event loop it held up every command for that long; in a thread
it would hold the GIL for most of it; a process runs beside the loop and, unlike a thread, can be
killed when it runs over its time. Its replies need no ordering with the commits, since it reads
no state, so they are published as soon as they are computed.
"""

import contextlib
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Final

import anyio
import msgspec
import structlog
from anyio.abc import ByteSendStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream

import exchange
from exchange.daemon.discovery import EndpointCounters
from exchange.daemon.query_worker import READY, REPLY_HEADER, request_frame
from exchange.daemon.replies import Publish, publish_refusal
from protocols.errors import ErrorCode
from protocols.results import Envelope, ErrorBody

log = structlog.get_logger()

_encoder: Final = msgspec.json.Encoder()
_ok_prefix: Final = b'{"ok":true'
# What a dead or unreachable query process looks like from here.
_process_broken: Final = (
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
)
# The worker imports numpy and the core (~0.2 s here); this bounds a start that hangs.
_start_timeout_s: Final = 30.0
# A clean stop: how long a query process may take to exit once its stdin is closed.
_stop_timeout_s: Final = 2.0
# The directory holding the ``exchange`` package the daemon runs: the query process imports
# the same code, so that its replies are the bytes ``Exchange.query`` would give.
_code_root: Final = str(Path(exchange.__file__).resolve().parents[1])


class QueryJob(msgspec.Struct, frozen=True, gc=False):
    """One stateless query waiting for, or in, a query process."""

    verb: str
    body: bytes
    reply_to: str
    counters: EndpointCounters
    received_ns: int


def _refusal_reply(code: ErrorCode, message: str) -> bytes:
    return _encoder.encode(Envelope(ok=False, error=ErrorBody(code=code.value, message=message)))


class _QueryProcess:
    """One running query worker and its pipes."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin: ByteSendStream = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)

    @classmethod
    async def start(cls, niceness: int) -> "_QueryProcess":
        """A new query process, once it has imported what it needs.

        Raises one of ``_process_broken`` or TimeoutError if it does not start.
        """
        python_path = os.pathsep.join(
            path for path in (_code_root, os.environ.get("PYTHONPATH", "")) if path
        )
        process = await anyio.open_process(
            [sys.executable, "-m", "exchange.daemon.query_worker", str(niceness)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": python_path},
        )
        started = cls(process)
        log.info("query_process_started", pid=process.pid, niceness=niceness)
        try:
            with anyio.fail_after(_start_timeout_s):
                ready = await started._stdout.receive_exactly(len(READY))
            if ready != READY:
                raise anyio.BrokenResourceError(f"the query process said {ready!r}, not ready")
        except BaseException:
            await started.kill()
            raise
        return started

    async def ask(self, verb: str, body: bytes) -> bytes:
        """The process's reply to one query. Raises one of ``_process_broken`` if it died."""
        await self._stdin.send(request_frame(verb, body))
        (length,) = REPLY_HEADER.unpack(await self._stdout.receive_exactly(REPLY_HEADER.size))
        return await self._stdout.receive_exactly(length)

    async def kill(self) -> None:
        """SIGKILL, then reap it. Shielded, so that it completes even in a cancelled scope."""
        with anyio.CancelScope(shield=True):
            # ProcessLookupError: it exited between the check and the kill.
            with contextlib.suppress(ProcessLookupError):
                if self.process.returncode is None:
                    self.process.kill()
            await self.process.aclose()

    async def stop(self) -> None:
        """Closes its stdin, at whose end it exits; kills it if it does not exit in time."""
        with anyio.CancelScope(shield=True):
            # A process that already died has a broken pipe: closing it may say so.
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await self._stdin.aclose()
            with anyio.move_on_after(_stop_timeout_s):
                await self.process.wait()
            await self.kill()


class QueryPool:
    """Stateless queries in at most ``processes_max`` processes, ``queue_size_max`` waiting.

    ``submit_nowait`` from the receiver, ``run`` as a task of the daemon's task group until
    ``close`` (then it answers what was queued and returns) or cancellation (then it kills its
    processes). Each query process starts at the first query it takes, and is replaced after one
    is killed, at the next.
    """

    def __init__(
        self,
        *,
        publish: Publish,
        processes_max: int,
        queue_size_max: int,
        time_s_max: float,
        niceness: int,
    ) -> None:
        assert processes_max > 0, processes_max
        assert queue_size_max >= 0, queue_size_max
        assert time_s_max > 0, time_s_max
        self._publish = publish
        self._processes_max = processes_max
        self._queue_size_max = queue_size_max
        self._time_s_max = time_s_max
        self._niceness = niceness
        self._jobs: deque[QueryJob] = deque()
        # Queries taken and not yet answered: waiting in ``_jobs`` or in a process.
        self._taken = 0
        self._changed = anyio.Event()
        self._closed = False
        self.finished = anyio.Event()

    @property
    def capacity(self) -> int:
        """How many queries it holds at most, running and waiting."""
        return self._processes_max + self._queue_size_max

    def submit_nowait(self, job: QueryJob) -> bool:
        """Takes ``job``; False (and nothing taken) when the pool is full or closed."""
        if self._closed or self._taken >= self.capacity:
            return False
        self._jobs.append(job)
        self._taken += 1
        self._notify()
        return True

    def close(self) -> None:
        """No more jobs; ``run`` answers those it has, then returns."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def run(self) -> None:
        """Answers jobs until closed and empty. Every process it started is gone when it returns."""
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self._processes_max):
                    tg.start_soon(self._serve_jobs)
        finally:
            self.finished.set()

    async def _next_job(self) -> QueryJob | None:
        while not self._jobs:
            if self._closed:
                return None
            await self._changed.wait()
        return self._jobs.popleft()

    async def _serve_jobs(self) -> None:
        """One process's loop: its jobs one at a time, each answered within the time bound."""
        slot = _Slot()
        try:
            while (job := await self._next_job()) is not None:
                payload = await self._answer(job, slot)
                self._taken -= 1
                error = None
                if payload.startswith(_ok_prefix):
                    await self._publish(job.reply_to, payload)
                else:
                    error = await publish_refusal(self._publish, job.reply_to, payload)
                job.counters.record(
                    elapsed_ns=time.perf_counter_ns() - job.received_ns, error=error
                )
        finally:
            await slot.close()

    async def _answer(self, job: QueryJob, slot: "_Slot") -> bytes:
        """The reply to ``job``: the process's, or the pool's own refusal.

        Starts the slot's process if it has none; kills it if it dies or runs over the bound.
        """
        try:
            if slot.process is None:
                slot.process = await _QueryProcess.start(self._niceness)
            slot.busy = True
            with anyio.move_on_after(self._time_s_max):
                payload = await slot.process.ask(job.verb, job.body)
                slot.busy = False
                return payload
        except (*_process_broken, TimeoutError) as exc:
            log.error(
                "query_process_failed",
                verb=job.verb,
                error=str(exc) or type(exc).__name__,
                returncode=None if slot.process is None else slot.process.process.returncode,
            )
            await slot.close()
            message = (
                f"the exchange's process for {job.verb} queries ended before it answered; "
                "nothing changed. Retry; report it if it happens again"
            )
            return _refusal_reply(ErrorCode.internal_error, message)
        # Over the time bound: killed, so that it stops using a core at once.
        log.warning("query_timed_out", verb=job.verb, time_s_max=self._time_s_max)
        await slot.close()
        message = (
            f"the {job.verb} query ran over the {self._time_s_max:g} s the exchange spends on "
            "one query and was stopped; ask for less work (fewer players or permutations)"
        )
        return _refusal_reply(ErrorCode.query_timed_out, message)


class _Slot:
    """A runner's query process, if it has one, and whether a query is in it now."""

    __slots__ = ("busy", "process")

    def __init__(self) -> None:
        self.process: _QueryProcess | None = None
        self.busy = False

    async def close(self) -> None:
        """Stops the process if idle; kills it if it may be computing (it ran over its time, or
        the pool was cancelled in the middle of a query). Afterwards the slot has none."""
        process, busy = self.process, self.busy
        self.process, self.busy = None, False
        if process is None:
            return
        if busy:
            await process.kill()
        else:
            await process.stop()
