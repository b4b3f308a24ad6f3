"""The journal keeps exactly the committed batches and detects any change: tested on real SQLite
files in tmp_path, by tampering with them through a second connection and by SIGKILLing a child
process that appends in a loop."""

import contextlib
import csv
import hashlib
import io
import json
import os
import selectors
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exchange.journal
from exchange.journal import (
    Entry,
    EntryInput,
    Journal,
    JournalClosedError,
    JournalConcurrentWriterError,
    JournalCorruptError,
    JournalInputError,
    JournalOpenError,
    JournalReadOnlyError,
    JournalWriteError,
    Posting,
    VerifyProblem,
    export_columns,
    export_postings,
    format_rfc3339_ns,
    genesis_hash_hex,
    limits,
    link_hash_hex,
    verify_file,
)

repo_root = Path(__file__).resolve().parents[2]
base_ns = 1_700_000_000_000_000_000


def make_entry(n: int, *, at_ns: int | None = None, postings: int = 2) -> EntryInput:
    accounts = ["alice", "bob", "carol", "treasury"]
    return EntryInput(
        at_ns=base_ns + 1000 * n if at_ns is None else at_ns,
        sender=accounts[n % 3],
        verb="transfer",
        body=json.dumps({"n": n, "amount": "1.5", "note": "é"}).encode(),
        reply=json.dumps({"ok": True, "n": n}).encode(),
        postings=tuple(
            Posting(
                debit_account=accounts[(n + k) % 4],
                credit_account=accounts[(n + k + 1) % 4],
                amount_micro=1_500_000 + k,
                kind="transfer" if k == 0 else "fee",
                memo=f"entry {n} posting {k}",
            )
            for k in range(postings)
        ),
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    with Journal.open(path) as opened:
        yield opened


def fill(journal: Journal, count: int, *, batch: int = 2) -> None:
    for start in range(journal.last_seq + 1, journal.last_seq + count + 1, batch):
        journal.append_batch([make_entry(n) for n in range(start, start + batch)])


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection, as a person with sqlite3 would use (foreign keys off)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def dump(path: Path) -> list[str]:
    with raw(path) as conn:
        return list(conn.iterdump())


# Opening.


def test_open_creates_a_wal_journal_that_reopens_with_its_head(path: Path) -> None:
    with Journal.open(path) as journal:
        assert (journal.last_seq, journal.last_hash_hex, journal.entry_count) == (
            0,
            genesis_hash_hex,
            0,
        )
        entries = journal.append_batch([make_entry(1), make_entry(2)])
    with raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    with Journal.open(path) as journal:
        assert journal.last_seq == 2
        assert journal.last_hash_hex == entries[-1].hash_hex
        assert journal.last_at_ns == entries[-1].at_ns


def test_open_refuses_files_that_are_not_journals(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalOpenError, match=r"garbage\.sqlite"):
        Journal.open(garbage)
    other = tmp_path / "other.sqlite"
    with raw(other) as conn:
        conn.execute("CREATE TABLE things (x)")
    with pytest.raises(JournalOpenError, match="not a journal"):
        Journal.open(other)
    with pytest.raises(JournalOpenError):
        Journal.open(tmp_path / "missing.sqlite", read_only=True)
    with pytest.raises(JournalOpenError):
        Journal.open(tmp_path / "no-such-dir" / "journal.sqlite")


def test_open_refuses_another_schema_version(path: Path) -> None:
    Journal.open(path).close()
    with raw(path) as conn:
        conn.execute("UPDATE schema_version SET version = 2")
    with pytest.raises(JournalOpenError, match="schema version"):
        Journal.open(path)


def test_open_refuses_a_head_that_disagrees_with_the_entries(path: Path) -> None:
    with Journal.open(path) as journal:
        fill(journal, 4)
    with raw(path) as conn:
        conn.execute("DELETE FROM postings WHERE seq = 4")
        conn.execute("DELETE FROM entries WHERE seq = 4")
    with pytest.raises(JournalCorruptError, match="head"):
        Journal.open(path)


# Appending.


def test_append_assigns_contiguous_seqs_and_chains_hashes_from_genesis(journal: Journal) -> None:
    first = journal.append_batch([make_entry(1)])
    second = journal.append_batch([make_entry(2), make_entry(3), make_entry(4)])
    entries = first + second
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    prev_hash_hex = genesis_hash_hex
    for entry in entries:
        assert entry.hash_hex == link_hash_hex(
            prev_hash_hex,
            entry.seq,
            entry.at_ns,
            entry.sender,
            entry.verb,
            entry.body,
            entry.reply,
            entry.postings,
        )
        prev_hash_hex = entry.hash_hex
    assert (journal.last_seq, journal.last_hash_hex) == (4, prev_hash_hex)
    assert tuple(journal.iter_entries()) == entries


def test_an_empty_batch_writes_nothing(journal: Journal, path: Path) -> None:
    fill(journal, 2)
    before = dump(path)
    assert journal.append_batch([]) == ()
    assert dump(path) == before


def test_entries_at_reads_the_seqs_asked_for_in_order(journal: Journal) -> None:
    fill(journal, 30)
    seqs = [1, 2, 5, 17, 29, 30]
    expected = [make_entry(n) for n in seqs]
    rows = list(journal.entries_at(seqs))
    assert rows == [(e.sender, e.verb, e.body, e.reply) for e in expected]
    # Stored as text, read back as its UTF-8 bytes, unchanged.
    (row,) = journal.entries_at([3])
    assert row[3] == make_entry(3).reply
    journal.append_batch([msgspec.structs.replace(make_entry(31), body='{"note":"é"}'.encode())])
    assert next(journal.entries_at([31]))[2] == '{"note":"é"}'.encode()
    assert list(journal.entries_at([])) == []
    with pytest.raises(JournalCorruptError, match="entry 32 is missing"):
        list(journal.entries_at([29, 32]))
    with pytest.raises(JournalInputError, match="increasing"):
        list(journal.entries_at([5, 2]))


def spec_hash_hex(prev_hash_hex: str, seq: int, entry: EntryInput) -> str:
    """Hash format v1 written again from the chain.py docstring, independently of the code."""

    def sized(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    data = b"axj1" + bytes.fromhex(prev_hash_hex) + struct.pack(">QQ", seq, entry.at_ns)
    data += sized(entry.sender.encode()) + sized(entry.verb.encode())
    data += sized(entry.body) + sized(entry.reply) + struct.pack(">I", len(entry.postings))
    for p in entry.postings:
        data += sized(p.debit_account.encode()) + sized(p.credit_account.encode())
        data += struct.pack(">Q", p.amount_micro) + sized(p.kind.encode()) + sized(p.memo.encode())
    return hashlib.sha256(data).hexdigest()


def test_hash_format_is_pinned() -> None:
    """The hash of a fixed entry must never change: old journals have to verify forever."""
    entry = EntryInput(
        at_ns=1_700_000_000_123_456_789,
        sender="alice",
        verb="transfer",
        body=b'{"to":"bob","amount":"237.6"}',
        reply=b'{"ok":true}',
        postings=(
            Posting(
                debit_account="alice",
                credit_account="bob",
                amount_micro=237_600_000,
                kind="transfer",
                memo="caf\u00e9",
            ),
            Posting(debit_account="alice", credit_account="fees", amount_micro=150_000, kind="fee"),
        ),
    )
    fields = (entry.at_ns, entry.sender, entry.verb, entry.body, entry.reply, entry.postings)
    first = link_hash_hex(genesis_hash_hex, 1, *fields)
    second = link_hash_hex(first, 2, *fields)
    assert first == spec_hash_hex(genesis_hash_hex, 1, entry)
    assert second == spec_hash_hex(first, 2, entry)
    assert first == "509f17880a37bab481652363bbeea0d155fe295206c9d78a829ab35213ab56c1"
    assert second == "b8af21d3e070ce6d5d2ece669906fd6a12190250d45f3982cd581d80d91dadba"


@pytest.mark.parametrize(
    "change",
    [
        {"at_ns": base_ns + 1},
        {"sender": "mallory"},
        {"verb": "transfer2"},
        {"body": b'{"n":7}'},
        {"reply": b'{"ok":false}'},
        {"postings": ()},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_field_is_hashed(change: dict[str, object]) -> None:
    entry = make_entry(7)

    def hash_of(e: EntryInput, seq: int = 1, prev: str = genesis_hash_hex) -> str:
        return link_hash_hex(prev, seq, e.at_ns, e.sender, e.verb, e.body, e.reply, e.postings)

    assert hash_of(msgspec.structs.replace(entry, **change)) != hash_of(entry)
    assert hash_of(entry, seq=2) != hash_of(entry)
    assert hash_of(entry, prev="11" * 32) != hash_of(entry)


@pytest.mark.parametrize(
    "posting_change",
    [
        {"debit_account": "mallory"},
        {"credit_account": "mallory"},
        {"amount_micro": 1},
        {"kind": "gift"},
        {"memo": "changed"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_every_posting_field_is_hashed(posting_change: dict[str, object]) -> None:
    entry = make_entry(7)
    changed = (msgspec.structs.replace(entry.postings[0], **posting_change), *entry.postings[1:])
    reordered = tuple(reversed(entry.postings))
    hashes = {
        link_hash_hex(genesis_hash_hex, 1, 0, "s", "v", b"", b"", postings)
        for postings in (entry.postings, changed, reordered)
    }
    assert len(hashes) == 3


@pytest.mark.parametrize(
    ("bad", "path_in_message"),
    [
        (make_entry(1, at_ns=base_ns - 1), r"batch\[1\].at_ns"),
        (make_entry(1, at_ns=-1), r"batch\[1\].at_ns"),
        (msgspec.structs.replace(make_entry(3), sender=""), r"batch\[1\].sender"),
        (msgspec.structs.replace(make_entry(3), verb="v" * 300), r"batch\[1\].verb"),
        (msgspec.structs.replace(make_entry(3), body="{}"), r"batch\[1\].body"),
        (msgspec.structs.replace(make_entry(3), body=b"\xff\xfe"), r"batch\[1\].body"),
        (
            msgspec.structs.replace(make_entry(3), reply=b"x" * (limits.reply_bytes_max + 1)),
            r"batch\[1\].reply",
        ),
        (
            msgspec.structs.replace(
                make_entry(3),
                postings=(
                    Posting(debit_account="a", credit_account="b", amount_micro=0, kind="k"),
                ),
            ),
            r"batch\[1\].postings\[0\].amount_micro",
        ),
        (
            msgspec.structs.replace(
                make_entry(3),
                postings=(
                    Posting(debit_account="a", credit_account="b", amount_micro=True, kind="k"),
                ),
            ),
            r"batch\[1\].postings\[0\].amount_micro",
        ),
        (
            msgspec.structs.replace(
                make_entry(3),
                postings=(
                    Posting(debit_account="a", credit_account="b", amount_micro=2**63, kind="k"),
                ),
            ),
            r"batch\[1\].postings\[0\].amount_micro",
        ),
        (
            msgspec.structs.replace(
                make_entry(3),
                postings=(
                    Posting(debit_account="a", credit_account="a", amount_micro=1, kind="k"),
                ),
            ),
            r"batch\[1\].postings\[0\]: debit_account and credit_account must differ",
        ),
        (
            msgspec.structs.replace(
                make_entry(3),
                postings=(
                    Posting(
                        debit_account="a",
                        credit_account="b",
                        amount_micro=1,
                        kind="k",
                        memo="\ud800",
                    ),
                ),
            ),
            r"batch\[1\].postings\[0\].memo",
        ),
        (
            msgspec.structs.replace(make_entry(3), postings=({"amount_micro": 1},)),
            r"batch\[1\].postings\[0\]: expected Posting",
        ),
        ("not an entry", r"batch\[1\]: expected EntryInput"),
    ],
)
def test_bad_entries_are_refused_with_their_path_and_nothing_is_written(
    journal: Journal, path: Path, bad: object, path_in_message: str
) -> None:
    fill(journal, 2)
    before = dump(path)
    good = make_entry(3)
    with pytest.raises(JournalInputError, match=path_in_message):
        journal.append_batch([good, bad])  # type: ignore[list-item]
    assert dump(path) == before
    assert journal.last_seq == 2
    journal.append_batch([good])
    assert journal.verify().ok


def test_an_oversized_batch_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalInputError, match="split it"):
        journal.append_batch([make_entry(1)] * (limits.batch_entries_max + 1))


def test_a_failure_in_the_middle_of_a_batch_leaves_the_journal_exactly_as_before(
    journal: Journal, path: Path
) -> None:
    """A trigger (added through a second connection) aborts the very last row of the batch."""
    fill(journal, 3, batch=3)
    before = dump(path)
    with raw(path) as conn:
        conn.execute(
            "CREATE TRIGGER fail_last BEFORE INSERT ON postings WHEN NEW.seq = 6 AND NEW.idx = 1 "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    with pytest.raises(JournalWriteError, match="injected failure") as raised:
        journal.append_batch([make_entry(4), make_entry(5), make_entry(6)])
    assert raised.value.rolled_back
    assert (journal.last_seq, journal.closed) == (3, False)
    with raw(path) as conn:
        conn.execute("DROP TRIGGER fail_last")
    assert dump(path) == before
    # The journal stays usable and the chain continues where it was.
    retried = journal.append_batch([make_entry(4), make_entry(5), make_entry(6)])
    assert [e.seq for e in retried] == [4, 5, 6]
    journal.close()
    report = verify_file(path)
    assert (report.ok, report.last_seq) == (True, 6)


def test_a_second_writer_is_detected_and_cannot_fork_the_chain(path: Path) -> None:
    with Journal.open(path) as first, Journal.open(path) as second:
        first.append_batch([make_entry(1)])
        with pytest.raises(JournalConcurrentWriterError, match="another writer"):
            second.append_batch([make_entry(2)])
        first.append_batch([make_entry(2)])
    report = verify_file(path)
    assert (report.ok, report.last_seq) == (True, 2)


def test_threads_sharing_one_journal_are_serialised(journal: Journal) -> None:
    """The daemon calls from anyio worker threads; overlapping calls must not interleave."""
    at_ns_lock = threading.Lock()
    clock = [base_ns]

    def append(n: int) -> None:
        # Stamp and append under one lock, as the daemon's single batcher would.
        with at_ns_lock:
            clock[0] += 1
            journal.append_batch([make_entry(n, at_ns=clock[0])])

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(append, range(40)))
    assert journal.last_seq == 40
    assert journal.verify().ok


# Reading.


def test_iter_entries_streams_pages_from_any_seq(journal: Journal) -> None:
    fill(journal, 9, batch=3)
    everything = list(journal.iter_entries())
    assert [e.seq for e in everything] == list(range(1, 10))
    for page_entries in (1, 2, 4, 100):
        assert list(journal.iter_entries(page_entries=page_entries)) == everything
        assert list(journal.iter_entries(5, page_entries=page_entries)) == everything[5:]
    assert list(journal.iter_entries(9)) == []
    with pytest.raises(JournalInputError, match="beyond the last entry"):
        journal.iter_entries(10)


def test_iter_entries_stops_at_a_changed_entry(journal: Journal, path: Path) -> None:
    fill(journal, 6)
    with raw(path) as conn:
        conn.execute("UPDATE postings SET amount_micro = 999 WHERE seq = 4 AND idx = 0")
    replayed: list[int] = []
    with pytest.raises(JournalCorruptError, match="hash_mismatch") as raised:
        replayed.extend(e.seq for e in journal.iter_entries(page_entries=2))
    assert (replayed, raised.value.seq) == ([1, 2, 3], 4)


def test_a_read_only_journal_reads_while_the_writer_appends(path: Path) -> None:
    with Journal.open(path) as writer:
        fill(writer, 2)
        with Journal.open(path, read_only=True) as reader:
            fill(writer, 2)
            # Each read starts from the head as it is now, not as of open.
            assert [e.seq for e in reader.iter_entries()] == [1, 2, 3, 4]
            with pytest.raises(JournalReadOnlyError):
                reader.append_batch([make_entry(5)])
            with pytest.raises(JournalReadOnlyError):
                reader.write_snapshot(1, b"x", "d")
            assert reader.verify().ok


def test_readers_on_other_connections_see_whole_batches_while_the_writer_appends(
    path: Path,
) -> None:
    """A reader racing a writer thread must never see a half batch or a head/entries mismatch."""
    with Journal.open(path) as writer:
        fill(writer, 2)
        done = threading.Event()

        def write() -> None:
            try:
                fill(writer, 600, batch=3)
            finally:
                done.set()

        thread = threading.Thread(target=write)
        thread.start()
        try:
            seen = 0
            while not done.is_set():
                with Journal.open(path, read_only=True) as reader:
                    assert reader.last_seq % 3 == 2
                    entries = list(reader.iter_entries(page_entries=7))
                    assert len(entries) >= seen and len(entries) % 3 == 2
                    postings = list(reader.iter_postings(agent="bob", page_entries=5))
                    assert all("bob" in (p.debit_account, p.credit_account) for p in postings)
                    seen = len(entries)
        finally:
            thread.join()
    assert verify_file(path).ok


def test_a_closed_journal_refuses_every_call(path: Path) -> None:
    journal = Journal.open(path)
    journal.close()
    journal.close()
    assert journal.closed
    with pytest.raises(JournalClosedError):
        journal.append_batch([make_entry(1)])
    with pytest.raises(JournalClosedError):
        journal.iter_entries()
    with pytest.raises(JournalClosedError):
        journal.verify()


def test_appending_from_a_worker_thread_works(journal: Journal) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        entries = pool.submit(journal.append_batch, [make_entry(1)]).result()
    assert entries[0].seq == 1


# Snapshots.


def test_snapshots_keep_the_newest_and_are_pinned_to_the_chain(journal: Journal) -> None:
    assert journal.latest_snapshot() is None
    fill(journal, 10)
    for seq in (2, 4, 6, 8, 10):
        journal.write_snapshot(seq, f"state {seq}".encode(), f"digest {seq}")
    latest = journal.latest_snapshot()
    assert latest is not None
    assert (latest.seq, latest.state, latest.digest) == (10, b"state 10", "digest 10")
    assert latest.entry_hash_hex == journal.last_hash_hex
    report = journal.verify()
    assert (report.ok, report.snapshots_checked) == (True, limits.snapshot_keep_count)


def test_snapshot_rules(journal: Journal) -> None:
    fill(journal, 4)
    journal.write_snapshot(3, b"s", "d")
    with pytest.raises(JournalInputError, match="beyond the last committed"):
        journal.write_snapshot(5, b"s", "d")
    with pytest.raises(JournalInputError, match="not after the latest snapshot"):
        journal.write_snapshot(3, b"s", "d")
    with pytest.raises(JournalInputError, match="seq"):
        journal.write_snapshot(0, b"s", "d")
    with pytest.raises(JournalInputError, match="state"):
        journal.write_snapshot(4, "s", "d")  # type: ignore[arg-type]
    with pytest.raises(JournalInputError, match="state"):
        journal.write_snapshot(4, 5, "d")  # type: ignore[arg-type]
    with pytest.raises(JournalInputError, match="digest"):
        journal.write_snapshot(4, b"s", "")
    latest = journal.latest_snapshot()
    assert latest is not None and latest.seq == 3


def test_a_corrupt_snapshot_is_refused(journal: Journal, path: Path) -> None:
    fill(journal, 2)
    journal.write_snapshot(2, b"good state", "d")
    with raw(path) as conn:
        conn.execute("UPDATE snapshots SET state = X'00'")
    with pytest.raises(JournalCorruptError, match="checksum") as raised:
        journal.latest_snapshot()
    assert raised.value.seq == 2
    report = journal.verify()
    assert (report.problem, report.problem_seq) == (VerifyProblem.snapshot_invalid, 2)


# Verify.


tampering = [
    ("UPDATE entries SET body = '{\"n\": 99}' WHERE seq = 3", VerifyProblem.hash_mismatch, 3),
    ("UPDATE entries SET reply = '{}' WHERE seq = 3", VerifyProblem.hash_mismatch, 3),
    ("UPDATE entries SET sender = 'mallory' WHERE seq = 3", VerifyProblem.hash_mismatch, 3),
    ("UPDATE entries SET verb = 'mint' WHERE seq = 3", VerifyProblem.hash_mismatch, 3),
    ("UPDATE entries SET hash_hex = upper(hash_hex) WHERE seq = 3", VerifyProblem.row_malformed, 3),
    (
        "UPDATE entries SET hash_hex = '" + "ab" * 32 + "' WHERE seq = 3",
        VerifyProblem.hash_mismatch,
        3,
    ),
    ("UPDATE entries SET body = X'7b7d' WHERE seq = 3", VerifyProblem.row_malformed, 3),
    (
        "UPDATE entries SET at_ns = at_ns + 1 WHERE seq = 3; "
        "UPDATE postings SET at_ns = at_ns + 1 WHERE seq = 3",
        VerifyProblem.hash_mismatch,
        3,
    ),
    (
        "UPDATE entries SET at_ns = 5 WHERE seq = 3; UPDATE postings SET at_ns = 5 WHERE seq = 3",
        VerifyProblem.at_ns_decreasing,
        3,
    ),
    ("UPDATE postings SET at_ns = 5 WHERE seq = 3", VerifyProblem.posting_at_ns_mismatch, 3),
    (
        "UPDATE postings SET amount_micro = 1 WHERE seq = 3 AND idx = 1",
        VerifyProblem.hash_mismatch,
        3,
    ),
    (
        "UPDATE postings SET debit_account = 'x' WHERE seq = 3 AND idx = 0",
        VerifyProblem.hash_mismatch,
        3,
    ),
    (
        "UPDATE postings SET credit_account = 'x' WHERE seq = 3 AND idx = 0",
        VerifyProblem.hash_mismatch,
        3,
    ),
    ("UPDATE postings SET kind = 'gift' WHERE seq = 3 AND idx = 0", VerifyProblem.hash_mismatch, 3),
    ("UPDATE postings SET memo = '' WHERE seq = 3 AND idx = 0", VerifyProblem.hash_mismatch, 3),
    (
        "UPDATE postings SET amount_micro = 'lots' WHERE seq = 3 AND idx = 0",
        VerifyProblem.row_malformed,
        3,
    ),
    ("DELETE FROM postings WHERE seq = 3 AND idx = 1", VerifyProblem.postings_count_mismatch, 3),
    ("DELETE FROM postings WHERE seq = 3", VerifyProblem.postings_count_mismatch, 3),
    (
        "INSERT INTO postings SELECT seq, 2, at_ns, 'a', 'b', 1, 'k', '' FROM postings "
        "WHERE seq = 3 AND idx = 0",
        VerifyProblem.postings_count_mismatch,
        3,
    ),
    (
        "UPDATE entries SET posting_count = 1 WHERE seq = 3; "
        "DELETE FROM postings WHERE seq = 3 AND idx = 1",
        VerifyProblem.hash_mismatch,
        3,
    ),
    ("DELETE FROM entries WHERE seq = 3", VerifyProblem.seq_gap, 3),
    (
        "DELETE FROM entries WHERE seq = 6; DELETE FROM postings WHERE seq = 6",
        VerifyProblem.seq_gap,
        6,
    ),
    (
        "DELETE FROM entries WHERE seq = 6; DELETE FROM postings WHERE seq = 6; "
        "UPDATE head SET last_seq = 5",
        VerifyProblem.head_mismatch,
        5,
    ),
    ("UPDATE head SET last_seq = 5", VerifyProblem.head_mismatch, 5),
    (
        "INSERT INTO postings VALUES (99, 0, 0, 'a', 'b', 1, 'k', '')",
        VerifyProblem.posting_orphan,
        99,
    ),
    (
        "UPDATE entries SET body = (SELECT body FROM entries WHERE seq = 4) WHERE seq = 3",
        VerifyProblem.hash_mismatch,
        3,
    ),
    ("UPDATE snapshots SET state = X'00'", VerifyProblem.snapshot_invalid, 4),
    ("UPDATE snapshots SET entry_hash_hex = 'x'", VerifyProblem.snapshot_invalid, 4),
    ("UPDATE schema_version SET version = 7", VerifyProblem.schema_invalid, None),
    ("DROP TABLE snapshots", VerifyProblem.schema_invalid, None),
]


@pytest.mark.parametrize(("sql", "problem", "problem_seq"), tampering, ids=lambda x: str(x)[:60])
def test_verify_reports_any_tampering(
    path: Path, sql: str, problem: VerifyProblem, problem_seq: int | None
) -> None:
    with Journal.open(path) as journal:
        fill(journal, 6, batch=3)
        journal.write_snapshot(4, b"state after 4", "digest")
        assert journal.verify().ok
    with raw(path) as conn:
        conn.executescript(sql)
    report = verify_file(path)
    assert (report.problem, report.problem_seq) == (problem, problem_seq), report.detail
    assert not report.ok
    assert report.detail
    if problem_seq is not None and problem not in (
        VerifyProblem.posting_orphan,
        VerifyProblem.snapshot_invalid,
        VerifyProblem.head_mismatch,
    ):
        assert report.last_seq == problem_seq - 1
        assert report.entries_checked == problem_seq - 1


def test_verify_never_raises_on_unreadable_files(tmp_path: Path) -> None:
    missing = verify_file(tmp_path / "missing.sqlite")
    assert missing.problem is VerifyProblem.file_unreadable
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(8192))
    assert verify_file(garbage).problem is VerifyProblem.file_unreadable
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    assert verify_file(empty).problem is VerifyProblem.schema_invalid


def test_verify_reports_a_truncated_file(path: Path) -> None:
    with Journal.open(path) as journal:
        fill(journal, 300, batch=100)
    # Closing checkpointed the WAL into the main file; cut that file in half.
    size_bytes = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size_bytes // 2)
    report = verify_file(path)
    assert report.problem is not None
    assert report.last_seq < 300


# Export.


def test_export_csv_writes_exact_amounts_and_times(journal: Journal) -> None:
    journal.append_batch(
        [
            EntryInput(
                at_ns=base_ns + 1,
                sender="alice",
                verb="pay",
                body=b"{}",
                reply=b"{}",
                postings=(
                    Posting(
                        debit_account="alice",
                        credit_account="bob",
                        amount_micro=237_600_000,
                        kind="transfer",
                        memo='a "quoted", memo',
                    ),
                    Posting(
                        debit_account="alice",
                        credit_account="fees",
                        amount_micro=150_000,
                        kind="fee",
                    ),
                    Posting(
                        debit_account="treasury",
                        credit_account="alice",
                        amount_micro=75_000_000,
                        kind="reward",
                    ),
                ),
            )
        ]
    )
    out = io.StringIO()
    assert export_postings(journal, out, "csv") == 3
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == export_columns
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [r["amount_tokens"] for r in records] == ["237.6", "0.15", "75"]
    assert [r["amount_micro"] for r in records] == ["237600000", "150000", "75000000"]
    assert records[0]["memo"] == 'a "quoted", memo'
    assert records[0]["at"] == "2023-11-14T22:13:20.000000001Z"
    assert records[0]["at_ns"] == str(base_ns + 1)


def test_export_json_is_one_streamed_array(journal: Journal) -> None:
    out = io.StringIO()
    assert export_postings(journal, out, "json") == 0
    assert json.loads(out.getvalue()) == []
    fill(journal, 4)
    out = io.StringIO()
    assert export_postings(journal, out, "json") == 8
    records = json.loads(out.getvalue())
    assert [(r["seq"], r["idx"]) for r in records] == [(s, i) for s in range(1, 5) for i in (0, 1)]
    assert records[0]["amount_tokens"] == "1.5"
    assert Decimal(records[1]["amount_tokens"]) * 1_000_000 == records[1]["amount_micro"]
    assert list(records[0]) == list(export_columns)


def test_export_filters_by_agent_and_time_across_pages(journal: Journal) -> None:
    fill(journal, 30, batch=5)
    everything = list(journal.iter_postings())
    assert len(everything) == 60
    for agent in ("alice", "bob", "treasury", "nobody"):
        for since_ns in (None, 0, base_ns + 1000 * 17, base_ns + 1000 * 17 + 1, base_ns * 2):
            expected = [
                p
                for p in everything
                if agent in (p.debit_account, p.credit_account)
                and (since_ns is None or p.at_ns >= since_ns)
            ]
            for page_entries in (1, 3, 1000):
                got = list(
                    journal.iter_postings(agent=agent, since_ns=since_ns, page_entries=page_entries)
                )
                assert got == expected
    out = io.StringIO()
    count = export_postings(journal, out, "csv", agent="bob", since_ns=base_ns + 1000 * 20)
    assert count == len(out.getvalue().splitlines()) - 1 > 0


def test_export_refuses_an_unknown_format(journal: Journal) -> None:
    with pytest.raises(JournalInputError, match="fmt"):
        export_postings(journal, io.StringIO(), "xml")  # type: ignore[arg-type]


def test_rfc3339_is_exact_to_the_nanosecond() -> None:
    assert format_rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_rfc3339_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert format_rfc3339_ns(2**63 - 1) == "2262-04-11T23:47:16.854775807Z"


# Properties.


batch_sizes = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=batch_sizes, postings=st.integers(min_value=0, max_value=3))
def test_any_sequence_of_batches_replays_and_verifies(sizes: list[int], postings: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "journal.sqlite"
        appended: list[Entry] = []
        with Journal.open(path) as journal:
            n = 0
            for size in sizes:
                batch = [make_entry(n + k, postings=postings) for k in range(size)]
                n += size
                appended += journal.append_batch(batch)
        with Journal.open(path, read_only=True) as journal:
            assert list(journal.iter_entries(page_entries=4)) == appended
            assert len(list(journal.iter_postings())) == n * postings
            report = journal.verify(page_entries=3)
            assert (report.ok, report.entries_checked, report.last_seq) == (True, n, n)


# Public surface.


def test_all_is_the_public_surface() -> None:
    public = {
        name
        for name, value in vars(exchange.journal).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(exchange.journal.__all__)


# Crash safety.


child_source = """
import json, sys
from pathlib import Path
from exchange.journal import EntryInput, Journal, Posting

round_no = int(sys.argv[2])
journal = Journal.open(Path(sys.argv[1]))
at_ns = journal.last_at_ns
batch_no = 0
while True:
    batch_no += 1
    size = 1 + batch_no % 7
    at_ns += 1
    batch = [
        EntryInput(
            at_ns=at_ns,
            sender="agent",
            verb="transfer",
            body=json.dumps({"round": round_no, "batch": batch_no, "size": size, "i": i}).encode(),
            reply=b'{"ok":true}',
            postings=(
                Posting(debit_account="a", credit_account="b", amount_micro=1 + i, kind="t"),
                Posting(debit_account="b", credit_account="fees", amount_micro=1, kind="fee"),
            ),
        )
        for i in range(size)
    ]
    committed = journal.append_batch(batch)
    if batch_no % 5 == 0:
        journal.write_snapshot(committed[-1].seq, b"state" * 1000, "digest")
    print(batch_no, committed[0].seq, committed[-1].seq, flush=True)
"""


def read_lines_until(process: subprocess.Popen[str], count: int, timeout_s: float) -> list[str]:
    """Reads ``count`` lines from the child, waiting on its output (never sleeping)."""
    assert process.stdout is not None
    lines: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while len(lines) < count:
            if not selector.select(timeout_s):
                raise AssertionError(f"child printed nothing for {timeout_s} s after {lines}")
            line = process.stdout.readline()
            if not line:
                raise AssertionError(f"child exited early: {process.wait()}")
            lines.append(line)
    return lines


@pytest.mark.parametrize("kills", [(1, 9, 30, 3, 60)])
def test_sigkill_at_any_moment_keeps_exactly_the_committed_batches(
    path: Path, kills: tuple[int, ...]
) -> None:
    """Each round starts a child appending batches to the same file, SIGKILLs it after some
    committed batches, then checks the file: it verifies, holds every batch the child saw
    committed, and holds only whole batches."""
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    committed: dict[tuple[int, int], tuple[int, int]] = {}
    for round_no, kill_after in enumerate(kills):
        process = subprocess.Popen(
            [sys.executable, "-c", child_source, str(path), str(round_no)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            lines = read_lines_until(process, kill_after, timeout_s=60)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            assert process.stdout is not None
            # Lines the child printed after we stopped reading are commits too.
            lines += process.stdout.read().splitlines(keepends=True)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None and process.stderr is not None
            process.stdout.close()
            process.stderr.close()
        assert process.returncode == -signal.SIGKILL
        for line in lines:
            if line.endswith("\n"):
                batch_no, first_seq, last_seq = map(int, line.split())
                committed[(round_no, batch_no)] = (first_seq, last_seq)

        report = verify_file(path)
        assert report.ok, report.detail
        with Journal.open(path, read_only=True) as journal:
            found: dict[tuple[int, int], list[int]] = {}
            sizes: dict[tuple[int, int], int] = {}
            for entry in journal.iter_entries():
                body = json.loads(entry.body)
                key = (body["round"], body["batch"])
                found.setdefault(key, []).append(entry.seq)
                sizes[key] = body["size"]
            journal.latest_snapshot()
        # Every batch whose commit returned is there, at the seqs the child was given.
        for key, (first_seq, last_seq) in committed.items():
            assert found[key] == list(range(first_seq, last_seq + 1))
        # Nothing else but whole batches: at most one per round committed but not yet printed.
        for key, seqs in found.items():
            assert len(seqs) == sizes[key]
        unprinted = set(found) - set(committed)
        assert len(unprinted) <= len(kills)
        assert all(key[1] == max(b for r, b in found if r == key[0]) for key in unprinted)
