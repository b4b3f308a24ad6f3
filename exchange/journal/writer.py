"""The journal writer as a process of its own: ``python -m exchange.journal.writer JOURNAL``.

Owns: the child side of the daemon's journal pipe and the frames both sides exchange. It opens
the journal for writing, answers ``ready`` with the journal's head, then appends each batch and
writes each snapshot it is sent, answering each once it is durable (or not: the error, and then
it exits, since after a failed write only a fresh open tells what is on disk). It exits at the
end of its input and, on Linux, when its parent dies.

Why a process: the commit's fsync either blocks the daemon's event loop (a third of its time at
64 transfers in flight) or, in a worker thread, fights the loop for the GIL at every row SQLite
steps. In a process of its own the commit overlaps the loop's work, and costs the loop only
encoding the batch and two pipe operations. (``exchange.daemon.journal_writer`` is the parent.)

Frames, both ways: a 4-byte big-endian length, then that many bytes of msgpack.
Must not: apply commands, decide anything, or write to stdout anything but frames.
"""

import ctypes
import signal
import struct
import sys
from pathlib import Path
from typing import BinaryIO, Final

import msgspec

from exchange.journal.errors import JournalError, JournalWriteError
from exchange.journal.records import EntryInput
from exchange.journal.sqlite import Journal

frame_header: Final = struct.Struct(">I")
_PR_SET_PDEATHSIG: Final = 1


class AppendBatch(msgspec.Struct, frozen=True, tag=True):
    entries: list[EntryInput]


class WriteSnapshot(msgspec.Struct, frozen=True, tag=True):
    seq: int
    state: bytes
    digest: str


Request = AppendBatch | WriteSnapshot


class WriterReply(msgspec.Struct, frozen=True):
    """``ok``: the request is durable and ``last_seq`` is the journal's head. Else ``error`` says
    why; ``rolled_back`` False means the outcome of the last write is unknown."""

    ok: bool
    last_seq: int = 0
    last_at_ns: int = 0
    error: str = ""
    error_type: str = ""
    rolled_back: bool = True


frame_encoder: Final = msgspec.msgpack.Encoder()
request_decoder: Final = msgspec.msgpack.Decoder(Request)
reply_decoder: Final = msgspec.msgpack.Decoder(WriterReply)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (even by SIGKILL), so a crashed
    daemon never leaves a writer that could commit after its successor has opened the journal."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(frame_header.size)
    if len(header) < frame_header.size:
        return None
    (size,) = frame_header.unpack(header)
    payload = stream.read(size)
    return payload if len(payload) == size else None


def _write_frame(stream: BinaryIO, reply: WriterReply) -> None:
    payload = frame_encoder.encode(reply)
    stream.write(frame_header.pack(len(payload)) + payload)
    stream.flush()


def _serve(journal: Journal, requests: BinaryIO, replies: BinaryIO) -> int:
    """Answers requests until the end of input (0) or a failed write (1)."""
    _write_frame(replies, WriterReply(True, journal.last_seq, journal.last_at_ns))
    while (payload := _read_frame(requests)) is not None:
        request = request_decoder.decode(payload)
        try:
            if isinstance(request, AppendBatch):
                journal.append_batch(request.entries)
            else:
                journal.write_snapshot(request.seq, request.state, request.digest)
        except JournalError as exc:
            rolled_back = not isinstance(exc, JournalWriteError) or exc.rolled_back
            _write_frame(
                replies,
                WriterReply(
                    False, error=str(exc), error_type=type(exc).__name__, rolled_back=rolled_back
                ),
            )
            return 1
        _write_frame(replies, WriterReply(True, journal.last_seq, journal.last_at_ns))
    return 0


def main(argv: list[str]) -> int:
    _die_with_parent()
    # The parent handles SIGINT/SIGTERM and ends the writer by closing its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path = Path(argv[1])
    try:
        journal = Journal.open(path)
    except JournalError as exc:
        _write_frame(
            sys.stdout.buffer, WriterReply(False, error=str(exc), error_type=type(exc).__name__)
        )
        return 1
    with journal:
        return _serve(journal, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
