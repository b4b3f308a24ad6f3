"""The durable, hash-chained command journal on SQLite: one batch = one transaction = one fsync.

Owns: the SQLite file (WAL, ``synchronous=FULL``), its schema, appending batches of entries with
their postings, snapshots, checked replay, and streaming reads for export. Must not: use asyncio,
NATS, clocks or logging, or contain business logic (it stores the ledger's decisions verbatim).

Synchronous by design. The daemon is the single writer and calls it from a worker thread, one call
at a time (``anyio.to_thread.run_sync``); an internal lock makes overlapping calls wait instead of
interleaving transactions. Other processes (the CLI's ``export`` and ``doctor``) open the file with
``read_only=True`` and never block the writer: WAL readers see the last committed batch.

Atomicity: a batch is committed by SQLite's WAL commit, which is atomic; after a crash, SQLite's
recovery ignores any transaction whose commit frame did not reach the disk. A torn or partially
written batch therefore cannot exist, and a killed process leaves exactly the batches whose
``append_batch`` returned (plus possibly the one in flight, whose replies were never sent).

Schema (created in ``schema.py``; read it with ``sqlite3 journal.sqlite``)::

    schema_version(id = 1, version)
    head(id = 1, last_seq, last_hash_hex, last_at_ns)        -- updated by every batch
    entries(seq PK, at_ns, sender, verb, body, reply, posting_count, hash_hex)
    postings(seq, idx, at_ns, debit_account, credit_account, amount_micro, kind, memo)
        PK (seq, idx), indexes (debit_account, seq, idx) and (credit_account, seq, idx)
    snapshots(seq PK, entry_hash_hex, digest, state_sha256_hex, state)

Beside the file, ``journal.hwm`` (``highwater.py``) records a seq known to be committed; the writer
refuses to open a journal that ends before it (``JournalEntriesLostError``), because SQLite drops
damaged WAL frames silently. The daemon decides when to write it (``record_high_water``).

For example ``SELECT seq, datetime(at_ns / 1e9, 'unixepoch'), verb, json_extract(body, '$.amount')
FROM entries ORDER BY seq DESC LIMIT 20``.
"""

import contextlib
import hashlib
import heapq
import itertools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import exchange.journal.limits as limits
from exchange.journal.chain import check_int, check_text, genesis_hash_hex, prepare_batch
from exchange.journal.errors import (
    JournalClosedError,
    JournalConcurrentWriterError,
    JournalCorruptError,
    JournalDiskFullError,
    JournalError,
    JournalInputError,
    JournalOpenError,
    JournalReadOnlyError,
    JournalWriteError,
)
from exchange.journal.highwater import (
    HighWater,
    high_water_fault,
    high_water_path,
    journal_missing_fault,
    read_high_water,
    write_high_water,
)
from exchange.journal.records import Entry, EntryInput, PostingRecord, Snapshot, VerifyReport
from exchange.journal.schema import configure, ensure_schema, first_seq_at, read_head
from exchange.journal.verify import ChainBreak, check_high_water, verify_connection, walk_chain

_posting_record_select = """
    SELECT p.seq, p.idx, p.at_ns, e.sender, e.verb, p.debit_account, p.credit_account,
           p.amount_micro, p.kind, p.memo
    FROM postings AS p JOIN entries AS e ON e.seq = p.seq
    WHERE {account_filter} (p.seq, p.idx) > (?, ?) AND p.seq <= ? AND p.at_ns >= ?
    ORDER BY p.seq, p.idx LIMIT ?"""


class Journal:
    """An open journal file. Build it with ``Journal.open``; close it (or use ``with``).

    ``last_seq``, ``last_hash_hex`` and ``last_at_ns`` describe the head: for the writer, as of its
    last commit; for a read-only journal, as of ``open``.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
        """Internal: use ``Journal.open``."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._read_only = read_only
        self._lock = threading.Lock()
        self._last_seq, self._last_hash_hex, self._last_at_ns = read_head(conn)
        # The seq in journal.hwm as this writer last read or wrote it (0: none yet).
        self._high_water_seq = 0

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Self:
        """Opens the journal at ``path``, creating the file and its tables if absent (writer only).

        The writer also checks the journal against its high-water mark (``journal.hwm``) and
        refuses one that lost committed entries, before creating anything.
        Raises JournalOpenError if the file cannot be opened, is not a journal, has another schema
        version, its filesystem cannot do WAL, or its disk is full; JournalCorruptError if its head
        row disagrees with its last entry (``verify_file`` tells why) or its high-water mark is
        damaged or names another history; JournalEntriesLostError if it ends before that mark.
        """
        mark = None if read_only else read_high_water(high_water_path(path))
        if mark is not None:
            if not path.exists():
                # Checked before connecting, which would create an empty journal in its place.
                raise journal_missing_fault(mark, journal_path=path)
            # Checked on a read-only connection before the writer's exists: closing a writer
            # connection checkpoints the WAL and deletes it, and with it the damaged frames that
            # still hold the lost entries (for a person to examine).
            with cls.open(path, read_only=True) as reader:
                reader._check_high_water(mark)
        try:
            if read_only:
                conn = sqlite3.connect(
                    path.resolve().as_uri() + "?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=limits.busy_timeout_s,
                )
            else:
                conn = sqlite3.connect(
                    path,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=limits.busy_timeout_s,
                )
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from exc
        try:
            configure(conn, path, read_only=read_only)
            ensure_schema(conn, path, read_only=read_only)
            journal = cls(conn, path, read_only=read_only)
            journal._high_water_seq = 0 if mark is None else mark.seq
            return journal
        except sqlite3.Error as exc:
            conn.close()
            raise _open_error(path, exc) from exc
        except JournalError:
            conn.close()
            raise

    # Reading the head.

    @property
    def path(self) -> Path:
        return self._path

    @property
    def high_water_path(self) -> Path:
        """Where this journal's high-water mark lives (``journal.hwm`` beside the file)."""
        return high_water_path(self._path)

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def last_seq(self) -> int:
        """The seq of the last committed entry; 0 for an empty journal."""
        return self._last_seq

    @property
    def entry_count(self) -> int:
        """The number of entries: seqs run 1..last_seq without gaps, so this is ``last_seq``."""
        return self._last_seq

    @property
    def last_hash_hex(self) -> str:
        """The hash of the last entry (64 zero digits for an empty journal)."""
        return self._last_hash_hex

    @property
    def last_at_ns(self) -> int:
        """The last entry's stamp. The daemon's clock must never stamp a command before it."""
        return self._last_at_ns

    @property
    def closed(self) -> bool:
        return self._conn is None

    # Writing.

    def append_batch(self, batch: Sequence[EntryInput]) -> tuple[Entry, ...]:
        """Appends ``batch`` in one transaction (one fsync); returns the entries with seq and hash.

        All or nothing: when this returns the whole batch is durable; when it raises, nothing of it
        was written (except ``JournalWriteError`` with ``rolled_back=False``: outcome unknown). An
        empty batch writes nothing and returns ().
        Raises JournalInputError (a bad entry; nothing written), JournalReadOnlyError,
        JournalClosedError, JournalConcurrentWriterError, JournalWriteError.
        """
        with self._lock:
            self._writable()
            prepared = prepare_batch(
                batch,
                last_seq=self._last_seq,
                last_hash_hex=self._last_hash_hex,
                last_at_ns=self._last_at_ns,
            )
            if not prepared.entries:
                return ()
            last = prepared.entries[-1]
            with self._write_transaction("append_batch") as conn:
                conn.executemany(
                    "INSERT INTO entries (seq, at_ns, sender, verb, body, reply, posting_count, "
                    "hash_hex) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    prepared.entry_rows,
                )
                conn.executemany(
                    "INSERT INTO postings (seq, idx, at_ns, debit_account, credit_account, "
                    "amount_micro, kind, memo) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    prepared.posting_rows,
                )
                conn.execute(
                    "UPDATE head SET last_seq = ?, last_hash_hex = ?, last_at_ns = ?",
                    (last.seq, last.hash_hex, last.at_ns),
                )
            assert last.seq == self._last_seq + len(prepared.entries)
            self._last_seq, self._last_hash_hex, self._last_at_ns = (
                last.seq,
                last.hash_hex,
                last.at_ns,
            )
            return prepared.entries

    def write_snapshot(self, seq: int, state: bytes, digest: str) -> None:
        """Stores the ledger's state after entries 1..seq; keeps the newest ``snapshot_keep_count``.

        ``seq`` must be committed and newer than the latest snapshot. ``digest`` is the ledger's
        own digest of ``state``, stored for the caller to check after loading.
        Raises JournalInputError, JournalReadOnlyError, JournalClosedError,
        JournalConcurrentWriterError, JournalWriteError.
        """
        with self._lock:
            self._writable()
            check_int(seq, "seq", low=1)
            if seq > self._last_seq:
                raise JournalInputError(
                    f"snapshot seq {seq} is beyond the last committed entry {self._last_seq}; "
                    "snapshot only state whose batch append_batch has returned"
                )
            if not isinstance(state, bytes):
                raise JournalInputError(f"state: expected bytes, got {type(state).__name__}")
            if len(state) > limits.snapshot_state_bytes_max:
                raise JournalInputError(
                    f"state: at most {limits.snapshot_state_bytes_max} bytes, got {len(state)}"
                )
            check_text(digest, "digest", bytes_max=limits.name_bytes_max)
            with self._write_transaction("write_snapshot") as conn:
                (newest,) = conn.execute("SELECT max(seq) FROM snapshots").fetchone()
                if newest is not None and seq <= newest:
                    raise JournalInputError(
                        f"snapshot seq {seq} is not after the latest snapshot {newest}"
                    )
                (entry_hash_hex,) = conn.execute(
                    "SELECT hash_hex FROM entries WHERE seq = ?", (seq,)
                ).fetchone()
                conn.execute(
                    "INSERT INTO snapshots (seq, entry_hash_hex, digest, state_sha256_hex, state) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (seq, entry_hash_hex, digest, hashlib.sha256(state).hexdigest(), state),
                )
                conn.execute(
                    "DELETE FROM snapshots WHERE seq NOT IN "
                    "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
                    (limits.snapshot_keep_count,),
                )

    # Reading.

    def latest_snapshot(self) -> Snapshot | None:
        """The newest snapshot, checked against its checksum and the chain; None if there is none.

        Raises JournalCorruptError if its state or chain hash is wrong (``verify`` gives details;
        deleting that row falls back to the previous snapshot, and replay reaches the same state),
        JournalClosedError.
        """
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute(
                    "SELECT s.seq, s.entry_hash_hex, s.digest, s.state_sha256_hex, s.state, "
                    "e.hash_hex FROM snapshots AS s LEFT JOIN entries AS e ON e.seq = s.seq "
                    "ORDER BY s.seq DESC LIMIT 1"
                ).fetchone()
            except sqlite3.Error as exc:
                raise JournalCorruptError(f"cannot read snapshots: {exc}", seq=0) from exc
        if row is None:
            return None
        seq, entry_hash_hex, digest, state_sha256_hex, state, chain_hash_hex = row
        if entry_hash_hex != chain_hash_hex:
            raise JournalCorruptError(
                f"snapshot at seq {seq} is pinned to entry hash {entry_hash_hex}, but the chain "
                f"has {chain_hash_hex}; it belongs to another history",
                seq=seq,
            )
        if hashlib.sha256(state).hexdigest() != state_sha256_hex:
            raise JournalCorruptError(
                f"snapshot at seq {seq}: its state does not match its checksum", seq=seq
            )
        return Snapshot(seq=seq, entry_hash_hex=entry_hash_hex, digest=digest, state=state)

    def iter_entries(
        self, after_seq: int = 0, *, page_entries: int = limits.page_entries_default
    ) -> Iterator[Entry]:
        """Streams entries after ``after_seq`` up to the head as of the call, checking each link.

        Replay feeds only entries whose hashes chain from entry ``after_seq`` (or genesis), so a
        changed entry stops the replay instead of reaching the ledger. Memory is bounded by
        ``page_entries``. Arguments are checked at the call; the iterator raises while iterating.
        Raises JournalInputError for an ``after_seq`` beyond the head, JournalClosedError, and
        (also while iterating) JournalCorruptError at the first broken entry or unreadable page.
        """
        check_int(after_seq, "after_seq", low=0)
        check_int(page_entries, "page_entries", low=1)
        with self._lock:
            conn = self._connection()
            try:
                upto_seq, _, _ = read_head(conn)
                anchor = (genesis_hash_hex, 0)
                if 0 < after_seq <= upto_seq:
                    anchor = conn.execute(
                        "SELECT hash_hex, at_ns FROM entries WHERE seq = ?", (after_seq,)
                    ).fetchone()
            except sqlite3.Error as exc:
                raise JournalCorruptError(f"cannot read the head: {exc}", seq=0) from exc
        if after_seq > upto_seq:
            raise JournalInputError(f"after_seq {after_seq} is beyond the last entry {upto_seq}")
        if anchor is None:
            raise JournalCorruptError(f"entry {after_seq} is missing", seq=after_seq)
        chain = walk_chain(
            self._connection,
            self._lock,
            after_seq=after_seq,
            upto_seq=upto_seq,
            anchor_hash_hex=anchor[0],
            anchor_at_ns=anchor[1],
            page_entries=min(page_entries, limits.page_entries_max),
        )
        return _raise_on_break(chain, after_seq)

    def entries_at(self, seqs: Sequence[int]) -> Iterator[tuple[str, str, bytes, bytes]]:
        """(sender, verb, body, reply) of the entries at ``seqs`` (increasing), in that order.

        For restoring a snapshot's remembered replies (``Ledger.remembered``): the snapshot
        keeps their seqs, the journal their bytes. Reads the range from one seq of a chunk to
        its last in key order and keeps the seqs asked for (the remembered commands are most
        of a stretch of the journal, so one range read costs less than looking each one up),
        so memory holds one chunk. Does not check the hash chain (the snapshot it serves is
        pinned to it; ``verify`` checks it all). Raises (while iterating) JournalInputError for
        seqs out of order, JournalCorruptError for a seq that is not in the journal,
        JournalClosedError.
        """
        chunk = limits.entries_at_chunk
        for start in range(0, len(seqs), chunk):
            part = seqs[start : start + chunk]
            if any(a >= b for a, b in itertools.pairwise(part)):
                raise JournalInputError("entries_at takes increasing seqs")
            with self._lock:
                conn = self._connection()
                try:
                    rows = {
                        seq: (sender, verb, body, reply)
                        for seq, sender, verb, body, reply in conn.execute(
                            # The texts as their UTF-8 bytes, without a round trip through str.
                            "SELECT seq, sender, verb, CAST(body AS BLOB), CAST(reply AS BLOB) "
                            "FROM entries WHERE seq BETWEEN ? AND ?",
                            (part[0], part[-1]),
                        )
                    }
                except sqlite3.Error as exc:
                    raise JournalCorruptError(f"cannot read entries: {exc}", seq=part[0]) from exc
            for seq in part:
                row = rows.get(seq)
                if row is None:
                    raise JournalCorruptError(f"entry {seq} is missing", seq=seq)
                yield row

    def iter_postings(
        self,
        *,
        agent: str | None = None,
        since_ns: int | None = None,
        page_entries: int = limits.page_entries_default,
    ) -> Iterator[PostingRecord]:
        """Streams postings in journal order, up to the head as of the call.

        ``agent`` keeps postings where it is the debit or the credit account; ``since_ns`` keeps
        those stamped at or after it. Reads pages of ``page_entries`` rows through the account
        indexes, so memory stays constant and one agent's history costs only its own rows. Does
        not check the hash chain: run ``verify`` first when the answer matters.
        Raises JournalInputError for bad arguments, JournalClosedError, and (also while
        iterating) JournalCorruptError if SQLite cannot read the file.
        """
        if agent is not None:
            check_text(agent, "agent", bytes_max=limits.name_bytes_max)
        if since_ns is not None:
            check_int(since_ns, "since_ns", low=0)
        check_int(page_entries, "page_entries", low=1)
        page_entries = min(page_entries, limits.page_entries_max)
        with self._lock:
            conn = self._connection()
            try:
                upto_seq, _, _ = read_head(conn)
                first_seq = 1 if since_ns is None else first_seq_at(conn, since_ns, upto_seq)
            except sqlite3.Error as exc:
                raise JournalCorruptError(f"cannot read the head: {exc}", seq=0) from exc
        streams = [
            self._posting_pages(column, agent, first_seq, upto_seq, since_ns or 0, page_entries)
            for column in (("debit_account", "credit_account") if agent is not None else (None,))
        ]
        # An agent is never both sides of one posting (the journal refuses it), so the two
        # index-ordered streams merge without duplicates.
        return heapq.merge(*streams, key=lambda record: (record.seq, record.idx))

    def _posting_pages(
        self,
        column: str | None,
        agent: str | None,
        first_seq: int,
        upto_seq: int,
        since_ns: int,
        page_entries: int,
    ) -> Iterator[PostingRecord]:
        sql = _posting_record_select.format(
            account_filter="" if column is None else f"p.{column} = ? AND"
        )
        prefix: tuple[str, ...] = () if agent is None else (agent,)
        after = (first_seq, -1)
        while True:
            with self._lock:
                conn = self._connection()
                try:
                    rows = conn.execute(
                        sql, (*prefix, *after, upto_seq, since_ns, page_entries)
                    ).fetchall()
                except sqlite3.Error as exc:
                    raise JournalCorruptError(
                        f"cannot read postings after {after}: {exc}", seq=after[0]
                    ) from exc
            for row in rows:
                yield PostingRecord(
                    seq=row[0],
                    idx=row[1],
                    at_ns=row[2],
                    sender=row[3],
                    verb=row[4],
                    debit_account=row[5],
                    credit_account=row[6],
                    amount_micro=row[7],
                    kind=row[8],
                    memo=row[9],
                )
            if len(rows) < page_entries:
                return
            after = (rows[-1][0], rows[-1][1])

    def verify(self, *, page_entries: int = limits.page_entries_default) -> VerifyReport:
        """Walks the whole chain from genesis and every snapshot; reports the first problem.

        Never raises on a corrupt file (see ``VerifyReport``). Holds the journal for the walk, so
        the writer should call it at startup or from ``doctor``, not between batches. Checks the
        high-water mark too (read first: a mark is never ahead of what is committed).
        Raises JournalClosedError.
        """
        with self._lock:
            conn = self._connection()
            return check_high_water(
                self._path, conn, lambda: verify_connection(conn, page_entries=page_entries)
            )

    def record_high_water(self) -> int | None:
        """Writes the head (seq and hash) to ``journal.hwm`` if it moved since the last write.

        Returns the seq written, or None when the mark already had it. Every head this writer
        holds was committed with an fsync, so the mark never names a seq that is not durable.
        Costs two fsyncs (the file and its directory): call it from a worker thread, at most about
        once a second, never per batch. Takes the journal's lock only to read the head.
        Raises OSError (the old mark stays), JournalReadOnlyError, JournalClosedError.
        """
        with self._lock:
            self._writable()
            seq, hash_hex = self._last_seq, self._last_hash_hex
        if seq <= self._high_water_seq:
            return None
        write_high_water(self.high_water_path, HighWater(seq=seq, entry_hash_hex=hash_hex))
        self._high_water_seq = seq
        return seq

    # Lifecycle.

    def close(self) -> None:
        """Closes the file. Idempotent. Raises JournalError if SQLite fails to close it."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise JournalError(f"closing journal {self._path} failed: {exc}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Internals.

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalClosedError(
                f"journal {self._path} is closed; open it again with Journal.open"
            )
        return self._conn

    def _check_high_water(self, mark: HighWater) -> None:
        """Raises the fault (JournalCorruptError) if this journal contradicts ``mark``."""
        row = (
            self._connection()
            .execute("SELECT hash_hex FROM entries WHERE seq = ?", (mark.seq,))
            .fetchone()
        )
        fault = high_water_fault(
            mark,
            journal_path=self._path,
            last_seq=self._last_seq,
            hash_at_mark=None if row is None else row[0],
        )
        if fault is not None:
            raise fault

    def _writable(self) -> sqlite3.Connection:
        conn = self._connection()
        if self._read_only:
            raise JournalReadOnlyError(
                f"journal {self._path} was opened read-only; only the daemon writes to it"
            )
        return conn

    @contextlib.contextmanager
    def _write_transaction(self, operation: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` .. ``COMMIT`` with the head re-checked under the write lock.

        Any exception inside rolls back; a sqlite3.Error becomes JournalWriteError. A failed
        COMMIT closes the journal: SQLite may have written the commit frame before the failure
        (a failed fsync, for example), so only reopening the file tells what is there.
        """
        conn = self._writable()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalWriteError(
                f"{operation}: cannot take the write lock on {self._path}: {exc}",
                rolled_back=True,
            ) from exc
        try:
            head = read_head(conn)
            if head != (self._last_seq, self._last_hash_hex, self._last_at_ns):
                raise JournalConcurrentWriterError(
                    f"{operation}: the head of {self._path} is seq {head[0]}, this writer last "
                    f"committed seq {self._last_seq}; another writer uses the file, stop one"
                )
            yield conn
        except BaseException as exc:
            self._rollback_after(exc, operation)
            if _is_disk_full(exc):
                raise self._disk_full(operation, rolled_back=True) from exc
            if isinstance(exc, sqlite3.Error):
                raise JournalWriteError(
                    f"{operation} failed and was rolled back; the journal is unchanged: {exc}",
                    rolled_back=True,
                ) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._close_after(exc)
            if _is_disk_full(exc):
                raise self._disk_full(operation, rolled_back=False) from exc
            raise JournalWriteError(
                f"{operation}: COMMIT failed, so whether the batch is durable is unknown; the "
                f"journal is closed: reopen {self._path} and rebuild state from it: {exc}",
                rolled_back=False,
            ) from exc

    def _disk_full(self, operation: str, *, rolled_back: bool) -> JournalDiskFullError:
        outcome = (
            "was rolled back; the journal is unchanged and usable"
            if rolled_back
            else "failed at COMMIT, so whether it is durable is unknown; the journal is closed, "
            "reopen it once there is room"
        )
        return JournalDiskFullError(
            f"the disk holding {self._path.parent} is full: {operation} {outcome}",
            rolled_back=rolled_back,
            directory=self._path.parent,
            operation=operation,
        )

    def _rollback_after(self, exc: BaseException, operation: str) -> None:
        conn = self._connection()
        if not conn.in_transaction:
            # SQLite rolls the transaction back by itself on some errors (SQLITE_FULL, IOERR,
            # BUSY, NOMEM: "may or may not", so this asks); a ROLLBACK would then fail.
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as rollback_exc:
            self._close_after(rollback_exc)
            raise JournalWriteError(
                f"{operation}: ROLLBACK failed after {exc!r}, so the file's state is unknown; the "
                f"journal is closed: reopen {self._path}: {rollback_exc}",
                rolled_back=False,
            ) from exc

    def _close_after(self, exc: BaseException) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        except sqlite3.Error as close_exc:
            exc.add_note(f"closing the connection afterwards also failed: {close_exc}")


def _raise_on_break(chain: Iterator[Entry | ChainBreak], after_seq: int) -> Iterator[Entry]:
    """Turns the walk's ChainBreak, or a read failure, into JournalCorruptError."""
    last_seq = after_seq
    try:
        for checked in chain:
            if isinstance(checked, ChainBreak):
                raise JournalCorruptError(
                    f"entry {checked.seq}: {checked.problem}: {checked.detail}; replay stopped "
                    "before it, run `exchange doctor` for a full report",
                    seq=checked.seq,
                )
            last_seq = checked.seq
            yield checked
    except sqlite3.Error as exc:
        raise JournalCorruptError(
            f"cannot read entries after seq {last_seq}: {exc}", seq=last_seq + 1
        ) from exc


def _is_disk_full(exc: BaseException) -> bool:
    # SQLite reports a write that failed with ENOSPC (and EDQUOT, and max_page_count) as
    # SQLITE_FULL; its extended codes keep the primary code in the low byte.
    return (
        isinstance(exc, sqlite3.Error)
        and exc.sqlite_errorcode is not None
        and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL
    )


def _open_error(path: Path, exc: sqlite3.Error) -> JournalOpenError:
    """The reason ``open`` failed, in words a person can act on."""
    if _is_disk_full(exc):
        return JournalOpenError(
            f"the disk holding {path.parent} is full: the journal {path} cannot be opened; free "
            "space and start again (nothing committed is lost)"
        )
    code = (exc.sqlite_errorcode or 0) & 0xFF
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return JournalOpenError(
            f"cannot open journal {path}: {exc}; the file and its directory must exist (for "
            "reading) or be writable by this user on a read-write filesystem (for the daemon)"
        )
    return JournalOpenError(f"cannot open journal {path}: {exc}")
