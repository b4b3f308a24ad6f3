"""The journal as a replica holds it in memory: the latest snapshot and every entry after it.

Owns: the hash chain of a journal whose durable copy lives elsewhere (a JetStream stream, see
``jetstream.py``): ``prepare`` gives a batch its seqs and hashes, ``extend`` takes committed
batches (the node's own, or a leader's read from the stream) after checking that they chain on,
``snapshot_taken`` drops what a new snapshot covers. It answers the reads recovery makes
(``latest_snapshot``, ``iter_entries``, ``entries_at``) the way the SQLite journal does, so the
same ``recover``, ``rebuild`` and replay checks run on both backends.

Why the snapshot carries the remembered commands' rows: the state of a snapshot names the
commands whose replies it remembers by seq only (the SQLite journal reads them back from its
file). A replica keeps no entries before its snapshot, so the snapshot stored in the cluster
bundles those rows: every remembered seq is either in the previous snapshot's bundle or in the
entries after it, which this class holds.

Must not: do I/O, read clocks, or interpret a command.
"""

from collections.abc import Iterator, Sequence

import msgspec

from exchange.journal.chain import genesis_hash_hex, link_hash_hex, prepare_batch
from exchange.journal.errors import JournalCorruptError, JournalInputError
from exchange.journal.records import Entry, EntryInput, Snapshot

# (sender, verb, body, reply) of one remembered command, as ``Exchange.restore`` reads them.
RememberedRow = tuple[str, str, bytes, bytes]


class BundledSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot as the cluster stores it: the state, pinned to its chain, with the rows of the
    commands it remembers (see the module doc) and the stream position it was taken at."""

    seq: int
    entry_hash_hex: str
    at_ns: int
    digest: str
    state: bytes
    # The stream sequence of the message holding entry ``seq``: reading resumes after it.
    stream_seq: int
    remembered_seqs: tuple[int, ...] = ()
    remembered_rows: tuple[RememberedRow, ...] = ()


class JournalTail:
    """The latest snapshot plus the committed entries after it, chained and checked."""

    def __init__(self, snapshot: BundledSnapshot | None = None) -> None:
        self._snapshot = snapshot
        self._entries: list[Entry] = []
        self._rows: dict[int, RememberedRow] = {}
        if snapshot is None:
            self._base_seq, self._last_seq = 0, 0
            self._last_hash_hex, self._last_at_ns = genesis_hash_hex, 0
            return
        if len(snapshot.remembered_seqs) != len(snapshot.remembered_rows):
            raise JournalCorruptError(
                f"snapshot at seq {snapshot.seq} bundles {len(snapshot.remembered_rows)} rows for "
                f"{len(snapshot.remembered_seqs)} remembered commands",
                seq=snapshot.seq,
            )
        self._rows = dict(zip(snapshot.remembered_seqs, snapshot.remembered_rows, strict=True))
        self._base_seq = self._last_seq = snapshot.seq
        self._last_hash_hex, self._last_at_ns = snapshot.entry_hash_hex, snapshot.at_ns

    @property
    def base_seq(self) -> int:
        """The seq of the snapshot the entries held follow (0 without one)."""
        return self._base_seq

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def last_hash_hex(self) -> str:
        return self._last_hash_hex

    @property
    def last_at_ns(self) -> int:
        return self._last_at_ns

    @property
    def entry_count(self) -> int:
        """Entries held after the snapshot (memory use grows with it until the next snapshot)."""
        return len(self._entries)

    def prepare(self, batch: Sequence[EntryInput]) -> tuple[Entry, ...]:
        """``batch`` with the seqs and hashes it takes after the last entry (not yet added).
        Raises JournalInputError as the SQLite journal's ``append_batch``."""
        return prepare_batch(
            batch,
            last_seq=self._last_seq,
            last_hash_hex=self._last_hash_hex,
            last_at_ns=self._last_at_ns,
        ).entries

    def extend(self, entries: Sequence[Entry]) -> None:
        """Adds committed entries, each checked to follow the last one and chain from its hash.

        Raises JournalCorruptError at the first entry that does not (a stream that holds another
        history, or a changed entry)."""
        seq, prev_hash_hex, prev_at_ns = self._last_seq, self._last_hash_hex, self._last_at_ns
        for entry in entries:
            if entry.seq != seq + 1:
                raise JournalCorruptError(
                    f"entry {entry.seq} does not follow entry {seq}", seq=entry.seq
                )
            if entry.at_ns < prev_at_ns:
                raise JournalCorruptError(
                    f"entry {entry.seq} is stamped before entry {seq}", seq=entry.seq
                )
            expected = link_hash_hex(
                prev_hash_hex,
                entry.seq,
                entry.at_ns,
                entry.sender,
                entry.verb,
                entry.body,
                entry.reply,
                entry.postings,
            )
            if expected != entry.hash_hex:
                raise JournalCorruptError(
                    f"entry {entry.seq} does not chain from entry {seq}: its hash is "
                    f"{entry.hash_hex}, the chain gives {expected}",
                    seq=entry.seq,
                )
            seq, prev_hash_hex, prev_at_ns = entry.seq, entry.hash_hex, entry.at_ns
        self._entries.extend(entries)
        self._last_seq, self._last_hash_hex, self._last_at_ns = seq, prev_hash_hex, prev_at_ns

    def bundle(
        self, *, seq: int, state: bytes, digest: str, stream_seq: int, remembered: Sequence[int]
    ) -> BundledSnapshot:
        """The snapshot of the state after entry ``seq`` (held here), with its remembered rows.
        Raises JournalInputError for a seq this tail does not hold or a remembered seq it cannot
        find (neither in the previous bundle nor after it)."""
        entry = self._entry(seq)
        rows = tuple(self._row(remembered_seq) for remembered_seq in remembered)
        return BundledSnapshot(
            seq=seq,
            entry_hash_hex=entry.hash_hex,
            at_ns=entry.at_ns,
            digest=digest,
            state=state,
            stream_seq=stream_seq,
            remembered_seqs=tuple(remembered),
            remembered_rows=rows,
        )

    def snapshot_taken(self, snapshot: BundledSnapshot) -> None:
        """Makes ``snapshot`` (built by ``bundle`` from this tail) the base: entries up to its
        seq and rows it no longer remembers are dropped."""
        if not self._base_seq <= snapshot.seq <= self._last_seq:
            raise JournalInputError(
                f"snapshot seq {snapshot.seq} is outside the entries held "
                f"({self._base_seq}..{self._last_seq}]"
            )
        self._entries = self._entries[snapshot.seq - self._base_seq :]
        self._rows = dict(zip(snapshot.remembered_seqs, snapshot.remembered_rows, strict=True))
        self._snapshot, self._base_seq = snapshot, snapshot.seq

    # The reads of ``recover`` (the SQLite journal has the same three).

    def latest_snapshot(self) -> Snapshot | None:
        snapshot = self._snapshot
        if snapshot is None:
            return None
        return Snapshot(
            seq=snapshot.seq,
            entry_hash_hex=snapshot.entry_hash_hex,
            digest=snapshot.digest,
            state=snapshot.state,
        )

    def iter_entries(self, after_seq: int = 0) -> Iterator[Entry]:
        """The entries after ``after_seq`` (which must be the snapshot's seq or later)."""
        if not self._base_seq <= after_seq <= self._last_seq:
            raise JournalInputError(
                f"after_seq {after_seq} is outside the entries held "
                f"[{self._base_seq}..{self._last_seq}]; only what follows the snapshot is kept"
            )
        return iter(self._entries[after_seq - self._base_seq :])

    def entries_at(self, seqs: Sequence[int]) -> Iterator[RememberedRow]:
        return (self._row(seq) for seq in seqs)

    def _entry(self, seq: int) -> Entry:
        index = seq - self._base_seq - 1
        if not 0 <= index < len(self._entries):
            raise JournalInputError(
                f"entry {seq} is not held (after the snapshot at {self._base_seq}, up to "
                f"{self._last_seq})"
            )
        return self._entries[index]

    def _row(self, seq: int) -> RememberedRow:
        row = self._rows.get(seq)
        if row is not None:
            return row
        if self._base_seq < seq <= self._last_seq:
            entry = self._entries[seq - self._base_seq - 1]
            return (entry.sender, entry.verb, entry.body, entry.reply)
        raise JournalInputError(
            f"remembered entry {seq} is neither bundled with the snapshot at {self._base_seq} nor "
            "held after it"
        )
