"""The spool: commits waiting for an answer from the exchange, and sending them.

Owns: ``QueuedCommit`` (one JSON object a line in ``<git common dir>/exchange-spool.jsonl``), the
file's lock and rewrites, and ``flush``, which sends the queue oldest first over one connection and
keeps what got no answer. A commit's request id is ``commit-<sha>``, so sending it again never
rewards it twice; a refusal (``unknown_agent``...) is final and leaves the queue.
Must not: read git (git_hook.py does) or print. Needs POSIX ``fcntl`` for the lock.

Errors::

    SpoolFullError   SPOOL_ENTRIES_MAX commits are already waiting
"""

import fcntl
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from exchange.errors import ExchangeError
from exchange.integrations.sender import (
    Delivery,
    DeliveryStatus,
    ExchangeUnreachableError,
    SenderOpener,
    deliver,
)
from protocols.commands import Commit

__all__ = [
    "FlushReport",
    "QueuedCommit",
    "Sent",
    "Spool",
    "SpoolContents",
    "SpoolFullError",
    "SpoolProblem",
    "commit_request_id",
    "flush",
]

SPOOL_NAME: Final = "exchange-spool.jsonl"
SPOOL_LOCK_NAME: Final = "exchange-spool.lock"
COMMIT_VERB: Final = "commit"
# The spool refuses more than this many waiting commits.
SPOOL_ENTRIES_MAX: Final = 10_000
# The wire's limit on request ids (protocols.ids).
REQUEST_ID_CHARS_MAX: Final = 64


class SpoolFullError(ExchangeError):
    """The spool holds SPOOL_ENTRIES_MAX commits; the message says how to empty it."""


def commit_request_id(sha: str) -> str:
    """``commit-<sha>``, cut to the wire's 64 characters (a SHA-256 keeps 57 hex digits)."""
    return f"commit-{sha}"[:REQUEST_ID_CHARS_MAX]


class QueuedCommit(msgspec.Struct, frozen=True, kw_only=True):
    """A commit to reward: one line of the spool."""

    sha: str
    author: str
    project: str
    message: str
    queued_at_ns: int

    @property
    def short_sha(self) -> str:
        return self.sha[:10]

    def command(self) -> Commit:
        return Commit(
            request_id=commit_request_id(self.sha),
            author=self.author,
            project=self.project,
            message=self.message,
            sha=self.sha,
        )


@dataclass(frozen=True, slots=True)
class SpoolProblem:
    line_number: int
    message: str


@dataclass(frozen=True, slots=True)
class SpoolContents:
    entries: list[QueuedCommit]
    problems: list[SpoolProblem]


_spool_decoder: Final = msgspec.json.Decoder(QueuedCommit)
_spool_encoder: Final = msgspec.json.Encoder()


class Spool:
    """The commits waiting for an answer. Every read and write holds an ``flock`` briefly, never
    while sending, so a hook run never waits for another one's network."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self._lock_path = lock_path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _read_unlocked(self) -> SpoolContents:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return SpoolContents([], [])
        entries: list[QueuedCommit] = []
        problems: list[SpoolProblem] = []
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append(_spool_decoder.decode(line))
            except msgspec.DecodeError as exc:
                problems.append(SpoolProblem(number, f"not a queued commit ({exc}); dropped"))
        return SpoolContents(entries, problems)

    def _write_unlocked(self, entries: list[QueuedCommit]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as file:
            for entry in entries:
                file.write(_spool_encoder.encode(entry) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    def read(self) -> SpoolContents:
        """The waiting commits, oldest first, and the lines that are not commits."""
        with self._locked():
            return self._read_unlocked()

    def add(self, entry: QueuedCommit) -> bool:
        """Queues ``entry`` (durably); False when its SHA is already queued.

        Raises SpoolFullError.
        """
        with self._locked():
            contents = self._read_unlocked()
            if any(queued.sha == entry.sha for queued in contents.entries):
                return False
            if len(contents.entries) >= SPOOL_ENTRIES_MAX:
                raise SpoolFullError(
                    f"{self.path} already holds {SPOOL_ENTRIES_MAX} commits; start the exchange "
                    "and run `exchange hook flush`"
                )
            with self.path.open("ab") as file:
                file.write(_spool_encoder.encode(entry) + b"\n")
                file.flush()
                os.fsync(file.fileno())
            return True

    def remove(self, shas: Collection[str]) -> int:
        """Removes the commits with these SHAs (and lines that are not commits); returns how
        many stay queued. Commits queued meanwhile by another hook run are kept."""
        with self._locked():
            contents = self._read_unlocked()
            kept = [entry for entry in contents.entries if entry.sha not in shas]
            if len(kept) != len(contents.entries) or contents.problems:
                self._write_unlocked(kept)
            return len(kept)


# Sending.


@dataclass(frozen=True, slots=True)
class Sent:
    entry: QueuedCommit
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class FlushReport:
    """``sent``: commits answered for good (rewarded, already rewarded, or refused and dropped).
    ``unreachable``: why sending stopped, when it did; ``remaining``: commits still queued."""

    sent: list[Sent]
    remaining: int
    unreachable: str | None
    problems: list[SpoolProblem] = field(default_factory=list)

    def count(self, status: DeliveryStatus) -> int:
        return sum(1 for sent in self.sent if sent.delivery.status is status)


def flush(spool: Spool, open_sender: SenderOpener, *, sends_max: int | None = None) -> FlushReport:
    """Sends the queued commits, oldest first, over one connection; stops at the first that
    gets no answer. Answered ones (refusals included) leave the spool."""
    contents = spool.read()
    batch = contents.entries if sends_max is None else contents.entries[:sends_max]
    sent: list[Sent] = []
    unreachable: str | None = None
    if batch:
        try:
            with open_sender() as sender:
                for entry in batch:
                    delivery = deliver(sender, COMMIT_VERB, entry.command())
                    if not delivery.final:
                        unreachable = delivery.message
                        break
                    sent.append(Sent(entry, delivery))
        except ExchangeUnreachableError as exc:
            unreachable = str(exc)
    if sent or contents.problems:
        remaining = spool.remove({item.entry.sha for item in sent})
    else:
        remaining = len(contents.entries)
    return FlushReport(sent, remaining, unreachable, contents.problems)
