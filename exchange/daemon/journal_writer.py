"""The daemon's side of the journal writer process (``exchange.journal.writer``).

Owns: starting the writer, sending it one request at a time and awaiting its answer, and ending
it. Must not: decide what is written (the pipeline does) or hide a failure: a write that failed,
or a writer that died, raises ``JournalWriteError``, which stops the daemon (its memory is then
ahead of the disk; a restart replays the journal).

While the writer commits a batch, the event loop goes on receiving and applying the next one:
that overlap, without a second thread in this process to share the GIL with, is the point of
the process.
"""

import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import anyio
import structlog
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from exchange.journal import EntryInput, JournalOpenError, JournalWriteError
from exchange.journal.writer import (
    AppendBatch,
    Request,
    WriterReply,
    WriteSnapshot,
    frame_encoder,
    frame_header,
    reply_decoder,
)

log = structlog.get_logger()

# How long a writer that was told to stop (its input closed) may take to finish and exit.
stop_timeout_s: Final = 10.0


class JournalWriter:
    """One writer process; ``open_journal_writer`` makes it. Not for concurrent use: the
    pipeline sends one request and awaits its answer before the next."""

    def __init__(
        self, process: Process, replies: BufferedByteReceiveStream, ready: WriterReply
    ) -> None:
        assert process.stdin is not None
        self._process = process
        self._stdin = process.stdin
        self._stdout = replies
        self.last_seq = ready.last_seq
        self.last_at_ns = ready.last_at_ns

    @property
    def pid(self) -> int:
        return self._process.pid

    async def append_batch(self, entries: Sequence[EntryInput]) -> int:
        """Appends ``entries`` as one transaction; returns the journal's last seq once durable."""
        reply = await self._ask(AppendBatch(list(entries)))
        self.last_seq, self.last_at_ns = reply.last_seq, reply.last_at_ns
        return reply.last_seq

    async def write_snapshot(self, seq: int, state: bytes, digest: str) -> None:
        await self._ask(WriteSnapshot(seq, state, digest))

    async def _ask(self, request: Request) -> WriterReply:
        payload = frame_encoder.encode(request)
        try:
            await self._stdin.send(frame_header.pack(len(payload)) + payload)
            reply = await _receive_reply(self._stdout)
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            anyio.IncompleteRead,
        ) as exc:
            raise JournalWriteError(
                f"the journal writer (pid {self._process.pid}) is gone ({exc!r}); whether the "
                "last batch is durable is unknown: restart the exchange, which replays the journal",
                rolled_back=False,
            ) from exc
        if not reply.ok:
            raise JournalWriteError(
                f"the journal writer failed: {reply.error_type}: {reply.error}",
                rolled_back=reply.rolled_back,
            )
        return reply


async def _receive_reply(stream: BufferedByteReceiveStream) -> WriterReply:
    header = await stream.receive_exactly(frame_header.size)
    (size,) = frame_header.unpack(header)
    return reply_decoder.decode(await stream.receive_exactly(size))


@asynccontextmanager
async def open_journal_writer(path: Path, *, last_seq: int) -> AsyncIterator[JournalWriter]:
    """Starts the writer on ``path`` and checks that its head is ``last_seq``; on exit closes its
    input, so it finishes what it was asked and exits (killed after ``stop_timeout_s``)."""
    command = [sys.executable, "-m", "exchange.journal.writer", str(path)]
    # stderr is inherited: the writer's own errors reach the daemon's log stream.
    process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        replies = BufferedByteReceiveStream(process.stdout)
        try:
            ready = await _receive_reply(replies)
        except (anyio.EndOfStream, anyio.IncompleteRead) as exc:
            raise JournalOpenError(f"the journal writer for {path} exited at start") from exc
        if not ready.ok:
            raise JournalOpenError(f"the journal writer cannot open {path}: {ready.error}")
        if ready.last_seq != last_seq:
            raise JournalOpenError(
                f"the journal writer found {path} at seq {ready.last_seq}, expected {last_seq}; "
                "another process writes to it: stop it"
            )
        log.debug("journal_writer_started", pid=process.pid, last_seq=last_seq)
        yield JournalWriter(process, replies, ready)
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)


async def _stop(process: Process) -> None:
    if process.stdin is not None:
        await process.stdin.aclose()
    with anyio.move_on_after(stop_timeout_s):
        await process.wait()
    if process.returncode is None:
        log.warning("journal_writer_killed", pid=process.pid, timeout_s=stop_timeout_s)
        process.kill()
        await process.wait()
    await process.aclose()
