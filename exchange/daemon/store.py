"""Where the pipeline makes batches durable: the SQLite journal, or the JetStream stream.

Owns: ``JournalStore``, the three things the pipeline asks of a journal (append a batch, store a
snapshot, and the reads ``rebuild`` makes), and ``SqliteStore`` for the embedded default. The
replicated backend is ``stream_journal.StreamJournal``, which has the same three.
Must not: decide anything about commands; the pipeline (batcher.py) calls these in its order.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from exchange.journal import Entry, EntryInput, Journal, Snapshot


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    seq: int
    state: bytes
    # The digest of the live state at ``seq``. A restart restores ``state`` and checks that it
    # has this digest, so a snapshot that does not restore exactly is caught there.
    digest: str
    # The seqs of the commands whose replies the state remembers (``Ledger.remembered``): the
    # replicated store bundles their rows, having no file to read them back from.
    remembered: list[int] = field(default_factory=list)


class JournalReader(Protocol):
    """The reads ``recovery.recover`` makes: the SQLite ``Journal`` and the replicas' tail."""

    @property
    def last_seq(self) -> int: ...

    def latest_snapshot(self) -> Snapshot | None: ...

    def iter_entries(self, after_seq: int = 0) -> Iterator[Entry]: ...

    def entries_at(self, seqs: Sequence[int]) -> Iterator[tuple[str, str, bytes, bytes]]: ...


class JournalStore(Protocol):
    @property
    def reader(self) -> JournalReader: ...

    async def append(self, batch: Sequence[EntryInput]) -> tuple[Entry, ...]:
        """Makes ``batch`` durable; returns its entries with seqs and hashes. Raises on failure
        (nothing of the batch is replied)."""
        ...

    async def store_snapshot(self, snapshot: SnapshotTaken) -> None: ...


class SqliteStore:
    """The embedded default: one SQLite file, one transaction and one fsync per batch."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    @property
    def reader(self) -> JournalReader:
        return self.journal

    async def append(self, batch: Sequence[EntryInput]) -> tuple[Entry, ...]:
        # On the loop, not in a worker thread: see "Why the commit blocks the loop" in batcher.py.
        return self.journal.append_batch(batch)

    async def store_snapshot(self, snapshot: SnapshotTaken) -> None:
        await anyio.to_thread.run_sync(
            self.journal.write_snapshot, snapshot.seq, snapshot.state, snapshot.digest
        )
