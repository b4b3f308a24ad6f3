"""Walking the chain: the checked entry reader shared by replay, and the full ``verify``.

Owns: the per-entry checks (types, contiguous seqs, monotonic clock, postings, hash link) and the
whole-file report. Must not: write to the file, raise on a corrupt file in ``verify_*`` (it reports
instead), or know anything about the ledger.

A torn or half-written batch cannot exist: each batch is one SQLite transaction, and SQLite's WAL
commit is atomic (a transaction without its commit frame is ignored on recovery). So every problem
``verify`` can find is corruption of committed data or a change made outside the journal. Whole
committed batches can vanish, though (SQLite drops damaged WAL frames and all after them), and
leave a sound chain: only the high-water mark (``highwater.py``) shows that loss, so
``verify_file`` checks it as well.
"""

import contextlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

import exchange.journal.limits as limits
from exchange.journal.chain import genesis_hash_hex, link_hash_hex
from exchange.journal.errors import JournalCorruptError, JournalEntriesLostError, JournalOpenError
from exchange.journal.highwater import (
    HighWater,
    high_water_fault,
    high_water_path,
    journal_missing_fault,
    read_high_water,
)
from exchange.journal.records import Entry, Posting, VerifyProblem, VerifyReport
from exchange.journal.schema import required_tables, schema_version_current

_entry_columns = "seq, at_ns, sender, verb, body, reply, posting_count, hash_hex"
_posting_columns = "seq, idx, at_ns, debit_account, credit_account, amount_micro, kind, memo"
_blob_chunk_bytes = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first check an entry failed, as found by ``walk_chain``."""

    problem: VerifyProblem
    seq: int
    detail: str


def walk_chain(
    connection: Callable[[], sqlite3.Connection],
    page_lock: contextlib.AbstractContextManager[Any],
    *,
    after_seq: int,
    upto_seq: int,
    anchor_hash_hex: str,
    anchor_at_ns: int,
    page_entries: int,
) -> Iterator[Entry | ChainBreak]:
    """Yields entries ``after_seq+1 .. upto_seq`` checked against the chain, or one ChainBreak.

    The anchor is the trusted hash and stamp of entry ``after_seq`` (genesis for 0). Reads a page
    of entries and its postings per query, holding ``page_lock`` only for the query, so memory is
    bounded by ``page_entries`` whatever the journal's size. Stops after yielding a ChainBreak.
    ``connection`` is called once per page, so a journal closed mid-walk raises its own error.
    Raises sqlite3.Error if SQLite cannot read the file.
    """
    assert 1 <= page_entries <= limits.page_entries_max
    prev_seq, prev_hash_hex, prev_at_ns = after_seq, anchor_hash_hex, anchor_at_ns
    while prev_seq < upto_seq:
        with page_lock:
            conn = connection()
            entry_rows = conn.execute(
                f"SELECT {_entry_columns} FROM entries WHERE seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?",
                (prev_seq, upto_seq, page_entries),
            ).fetchall()
            if not entry_rows:
                break
            posting_rows = conn.execute(
                f"SELECT {_posting_columns} FROM postings WHERE seq > ? AND seq <= ? "
                "ORDER BY seq, idx LIMIT ?",
                (
                    prev_seq,
                    entry_rows[-1][0],
                    len(entry_rows) * limits.postings_per_entry_max + 1,
                ),
            ).fetchall()
        cursor = 0
        for row in entry_rows:
            seq = row[0]
            # Skip postings of seqs with no entry; the missing entry is reported as a gap.
            while cursor < len(posting_rows) and _before(posting_rows[cursor][0], seq):
                cursor += 1
            start = cursor
            while cursor < len(posting_rows) and posting_rows[cursor][0] == seq:
                cursor += 1
            checked = check_entry(
                row, posting_rows[start:cursor], prev_seq, prev_hash_hex, prev_at_ns
            )
            yield checked
            if isinstance(checked, ChainBreak):
                return
            prev_seq, prev_hash_hex, prev_at_ns = checked.seq, checked.hash_hex, checked.at_ns
    if prev_seq < upto_seq:
        yield ChainBreak(
            VerifyProblem.seq_gap,
            prev_seq + 1,
            f"entry {prev_seq + 1} is missing; the head says the last seq is {upto_seq}",
        )


def _before(posting_seq: object, seq: int) -> bool:
    return isinstance(posting_seq, int) and posting_seq < seq


def check_entry(
    row: tuple[Any, ...],
    posting_rows: list[tuple[Any, ...]],
    prev_seq: int,
    prev_hash_hex: str,
    prev_at_ns: int,
) -> Entry | ChainBreak:
    """Decodes one entry row and its posting rows and checks its link to the entry before."""
    seq, at_ns, sender, verb, body, reply, posting_count, hash_hex = row
    if not (
        type(seq) is int
        and type(at_ns) is int
        and at_ns >= 0
        and all(isinstance(text, str) for text in (sender, verb, body, reply))
        and type(posting_count) is int
        and _is_hash_hex(hash_hex)
    ):
        where = seq if type(seq) is int else prev_seq + 1
        return ChainBreak(VerifyProblem.row_malformed, where, f"entry row has bad types: {row!r}")
    if seq != prev_seq + 1:
        return ChainBreak(
            VerifyProblem.seq_gap, prev_seq + 1, f"expected seq {prev_seq + 1}, found {seq}"
        )
    if at_ns < prev_at_ns:
        return ChainBreak(
            VerifyProblem.at_ns_decreasing,
            seq,
            f"at_ns {at_ns} is before the previous entry's {prev_at_ns}",
        )
    postings_or_break = _check_postings(seq, at_ns, posting_count, posting_rows)
    if isinstance(postings_or_break, ChainBreak):
        return postings_or_break
    body_bytes, reply_bytes = body.encode(), reply.encode()
    expected_hex = link_hash_hex(
        prev_hash_hex, seq, at_ns, sender, verb, body_bytes, reply_bytes, postings_or_break
    )
    if expected_hex != hash_hex:
        return ChainBreak(
            VerifyProblem.hash_mismatch,
            seq,
            f"stored hash {hash_hex} but the entry and its postings hash to {expected_hex}: "
            "this entry, one of its postings or its stored hash was changed (or the entry "
            "before it was rewritten together with its hash)",
        )
    return Entry(
        seq=seq,
        at_ns=at_ns,
        sender=sender,
        verb=verb,
        body=body_bytes,
        reply=reply_bytes,
        postings=postings_or_break,
        hash_hex=hash_hex,
    )


def _check_postings(
    seq: int, at_ns: int, posting_count: int, rows: list[tuple[Any, ...]]
) -> tuple[Posting, ...] | ChainBreak:
    if len(rows) != posting_count or any(row[1] != idx for idx, row in enumerate(rows)):
        found = [row[1] for row in rows[:10]]
        return ChainBreak(
            VerifyProblem.postings_count_mismatch,
            seq,
            f"entry has posting_count {posting_count} but postings numbered {found}"
            f"{'...' if len(rows) > 10 else ''}; expected 0..{posting_count - 1}",
        )
    postings: list[Posting] = []
    for row in rows:
        _, idx, posting_at_ns, debit, credit, amount_micro, kind, memo = row
        if not (
            all(isinstance(text, str) for text in (debit, credit, kind, memo))
            and type(amount_micro) is int
            and 0 <= amount_micro <= limits.int64_max
        ):
            return ChainBreak(
                VerifyProblem.row_malformed, seq, f"posting {idx} has bad types: {row!r}"
            )
        if posting_at_ns != at_ns:
            return ChainBreak(
                VerifyProblem.posting_at_ns_mismatch,
                seq,
                f"posting {idx} has at_ns {posting_at_ns!r}, its entry {at_ns}",
            )
        postings.append(
            Posting(
                debit_account=debit,
                credit_account=credit,
                amount_micro=amount_micro,
                kind=kind,
                memo=memo,
            )
        )
    return tuple(postings)


def _is_hash_hex(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


@dataclass(slots=True)
class _Progress:
    entries_checked: int = 0
    last_seq: int = 0
    last_hash_hex: str = genesis_hash_hex
    snapshots_checked: int = 0

    def report(
        self, problem: VerifyProblem | None = None, seq: int | None = None, detail: str = ""
    ) -> VerifyReport:
        return VerifyReport(
            entries_checked=self.entries_checked,
            last_seq=self.last_seq,
            last_hash_hex=self.last_hash_hex,
            snapshots_checked=self.snapshots_checked,
            problem=problem,
            problem_seq=seq,
            detail=detail,
        )


def verify_file(path: Path, *, page_entries: int = limits.page_entries_default) -> VerifyReport:
    """Verifies the journal at ``path``, opened read-only, and its high-water mark.

    Never raises on a bad or missing file.
    """
    if not path.is_file():
        mark = _read_mark(high_water_path(path))
        if isinstance(mark, HighWater):
            missing = journal_missing_fault(mark, journal_path=path)
            return _Progress().report(VerifyProblem.entries_lost, missing.seq, str(missing))
        return _Progress().report(VerifyProblem.file_unreadable, None, f"no file at {path}")
    try:
        conn = sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro",
            uri=True,
            isolation_level=None,
            timeout=limits.busy_timeout_s,
        )
    except sqlite3.Error as exc:
        return _Progress().report(VerifyProblem.file_unreadable, None, f"{path}: {exc}")
    try:
        return check_high_water(
            path, conn, lambda: verify_connection(conn, page_entries=page_entries)
        )
    finally:
        conn.close()


def check_high_water(
    journal_path: Path, conn: sqlite3.Connection, verify: Callable[[], VerifyReport]
) -> VerifyReport:
    """``verify()``'s report, or how the journal at ``journal_path`` contradicts its mark.

    Reads the mark before ``verify`` opens its read transaction: a mark never names a seq that was
    not committed when it was written, so a journal read after it holds at least that seq, even
    while the daemon appends. Never raises sqlite3.Error or a journal error (it reports them).
    """
    mark = _read_mark(high_water_path(journal_path))
    report = verify()
    if not report.ok or mark is None:
        return report
    if isinstance(mark, VerifyReport):
        return _report_problem(report, VerifyProblem.high_water_mismatch, None, mark.detail)
    try:
        row = conn.execute("SELECT hash_hex FROM entries WHERE seq = ?", (mark.seq,)).fetchone()
    except sqlite3.Error as exc:
        return _report_problem(
            report, VerifyProblem.file_unreadable, mark.seq, f"cannot read entry {mark.seq}: {exc}"
        )
    fault = high_water_fault(
        mark,
        journal_path=journal_path,
        last_seq=report.last_seq,
        hash_at_mark=None if row is None else row[0],
    )
    if fault is None:
        return report
    problem = (
        VerifyProblem.entries_lost
        if isinstance(fault, JournalEntriesLostError)
        else VerifyProblem.high_water_mismatch
    )
    return _report_problem(report, problem, fault.seq, str(fault))


def _report_problem(
    report: VerifyReport, problem: VerifyProblem, seq: int | None, detail: str
) -> VerifyReport:
    """``report`` with ``problem`` at ``seq``; what it counted as sound stays."""
    return msgspec.structs.replace(report, problem=problem, problem_seq=seq, detail=detail)


def _read_mark(mark_path: Path) -> HighWater | VerifyReport | None:
    """The mark, None if there is none, or a report of why it cannot be used."""
    try:
        return read_high_water(mark_path)
    except (JournalCorruptError, JournalOpenError) as exc:
        return _Progress().report(VerifyProblem.high_water_mismatch, None, str(exc))


def verify_connection(
    conn: sqlite3.Connection, *, page_entries: int = limits.page_entries_default
) -> VerifyReport:
    """Verifies the whole journal behind ``conn`` inside one read transaction (a consistent view).

    Checks every entry's link from genesis, the head row, postings without an entry, and every
    snapshot's checksum and chain hash. Stops at the first problem. Never raises sqlite3.Error: a
    file SQLite cannot read is reported as ``file_unreadable`` at the seq where reading stopped.
    """
    progress = _Progress()
    page_entries = max(1, min(page_entries, limits.page_entries_max))
    try:
        conn.execute("BEGIN")
        try:
            return _verify(conn, progress, page_entries)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return progress.report(
            VerifyProblem.file_unreadable,
            progress.last_seq + 1,
            f"SQLite could not read the journal after seq {progress.last_seq}: {exc}",
        )


def _verify(conn: sqlite3.Connection, progress: _Progress, page_entries: int) -> VerifyReport:
    tables = {
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    missing = sorted(set(required_tables) - tables)
    if missing:
        return progress.report(VerifyProblem.schema_invalid, None, f"missing tables {missing}")
    versions = conn.execute("SELECT version FROM schema_version").fetchall()
    if versions != [(schema_version_current,)]:
        return progress.report(
            VerifyProblem.schema_invalid,
            None,
            f"expected schema version [{schema_version_current}], found {versions}",
        )
    heads = conn.execute("SELECT last_seq, last_hash_hex FROM head").fetchall()
    if len(heads) != 1 or type(heads[0][0]) is not int or not _is_hash_hex(heads[0][1]):
        return progress.report(VerifyProblem.head_mismatch, None, f"bad head rows {heads!r}")
    head_seq, head_hash_hex = heads[0]
    chain = walk_chain(
        lambda: conn,
        contextlib.nullcontext(),
        after_seq=0,
        upto_seq=head_seq,
        anchor_hash_hex=genesis_hash_hex,
        anchor_at_ns=0,
        page_entries=page_entries,
    )
    for checked in chain:
        if isinstance(checked, ChainBreak):
            return progress.report(checked.problem, checked.seq, checked.detail)
        progress.entries_checked += 1
        progress.last_seq, progress.last_hash_hex = checked.seq, checked.hash_hex
    if progress.last_hash_hex != head_hash_hex:
        return progress.report(
            VerifyProblem.head_mismatch,
            head_seq,
            f"the head says entry {head_seq} hashes to {head_hash_hex}, "
            f"the chain says {progress.last_hash_hex}",
        )
    return _verify_outside_chain(conn, progress, head_seq)


def _verify_outside_chain(
    conn: sqlite3.Connection, progress: _Progress, head_seq: int
) -> VerifyReport:
    """Rows the chain walk cannot see: entries and postings outside 1..head, and snapshots."""
    # Both are range seeks on the primary key. Text stored in seq sorts after every integer.
    for where, params in (("seq > ?", (head_seq,)), ("seq < ?", (1,))):
        (stray,) = conn.execute(f"SELECT min(seq) FROM entries WHERE {where}", params).fetchone()
        if stray is not None:
            return progress.report(
                VerifyProblem.head_mismatch,
                stray if type(stray) is int else None,
                f"entry {stray!r} lies outside 1..{head_seq}, the range the head covers "
                "(were entries removed, or the head row edited?)",
            )
        (orphan,) = conn.execute(f"SELECT min(seq) FROM postings WHERE {where}", params).fetchone()
        if orphan is not None:
            return progress.report(
                VerifyProblem.posting_orphan,
                orphan if type(orphan) is int else None,
                f"postings with seq {orphan!r} belong to no entry (entries run 1..{head_seq})",
            )
    for seq, entry_hash_hex, state_sha256_hex in conn.execute(
        "SELECT seq, entry_hash_hex, state_sha256_hex FROM snapshots ORDER BY seq"
    ).fetchall():
        detail = _snapshot_fault(conn, seq, entry_hash_hex, state_sha256_hex, head_seq)
        if detail:
            return progress.report(VerifyProblem.snapshot_invalid, seq, detail)
        progress.snapshots_checked += 1
    return progress.report()


def _snapshot_fault(
    conn: sqlite3.Connection, seq: int, entry_hash_hex: object, state_sha256_hex: object, head: int
) -> str:
    """Why the snapshot at ``seq`` is invalid, or "" if it is sound."""
    if not 1 <= seq <= head:
        return f"snapshot at seq {seq} lies outside the chain 1..{head}"
    (chain_hash_hex,) = conn.execute(
        "SELECT hash_hex FROM entries WHERE seq = ?", (seq,)
    ).fetchone()
    if entry_hash_hex != chain_hash_hex:
        return (
            f"snapshot at seq {seq} is pinned to hash {entry_hash_hex!r}, "
            f"the chain has {chain_hash_hex}"
        )
    actual_hex = snapshot_state_sha256_hex(conn, seq)
    if actual_hex != state_sha256_hex:
        return f"snapshot at seq {seq} state hashes to {actual_hex}, stored {state_sha256_hex!r}"
    return ""


def snapshot_state_sha256_hex(conn: sqlite3.Connection, seq: int) -> str:
    """SHA-256 of a snapshot's state, read in chunks so a large state never sits in memory twice."""
    digest = hashlib.sha256()
    with conn.blobopen("snapshots", "state", seq, readonly=True) as blob:
        while chunk := blob.read(_blob_chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
