"""The journal file's layout and settings: schema, pragmas, the head row.

Owns: the CREATE statements, the pragmas every connection sets, schema-version checks, and reading
the head. Must not: append entries or interpret them (``sqlite.py`` does the former, nobody the
latter).
"""

import sqlite3
from pathlib import Path
from typing import Any

import exchange.journal.limits as limits
from exchange.journal.chain import genesis_hash_hex
from exchange.journal.errors import JournalCorruptError, JournalOpenError

# Bump only with a migration; a file with another version is refused at open.
schema_version_current = 1
required_tables = ("entries", "head", "postings", "schema_version", "snapshots")

schema_statements = (
    """CREATE TABLE schema_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL)""",
    """CREATE TABLE head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq INTEGER NOT NULL,
        last_hash_hex TEXT NOT NULL,
        last_at_ns INTEGER NOT NULL)""",
    """CREATE TABLE entries (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        at_ns INTEGER NOT NULL CHECK (at_ns >= 0),
        sender TEXT NOT NULL,
        verb TEXT NOT NULL,
        body TEXT NOT NULL,
        reply TEXT NOT NULL,
        posting_count INTEGER NOT NULL CHECK (posting_count >= 0),
        hash_hex TEXT NOT NULL CHECK (length(hash_hex) = 64))""",
    # WITHOUT ROWID: rows are small and always read by (seq, idx), so the primary key is the table.
    """CREATE TABLE postings (
        seq INTEGER NOT NULL REFERENCES entries (seq),
        idx INTEGER NOT NULL CHECK (idx >= 0),
        at_ns INTEGER NOT NULL,
        debit_account TEXT NOT NULL,
        credit_account TEXT NOT NULL CHECK (credit_account <> debit_account),
        amount_micro INTEGER NOT NULL CHECK (amount_micro > 0),
        kind TEXT NOT NULL,
        memo TEXT NOT NULL,
        PRIMARY KEY (seq, idx)) WITHOUT ROWID""",
    # Ending each index with (seq, idx) lets one agent's history stream in journal order, no sort.
    "CREATE INDEX postings_by_debit ON postings (debit_account, seq, idx)",
    "CREATE INDEX postings_by_credit ON postings (credit_account, seq, idx)",
    """CREATE TABLE snapshots (
        seq INTEGER PRIMARY KEY CHECK (seq >= 1),
        entry_hash_hex TEXT NOT NULL,
        digest TEXT NOT NULL,
        state_sha256_hex TEXT NOT NULL,
        state BLOB NOT NULL)""",
)


def configure(conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
    """Sets the pragmas. Raises JournalOpenError if the filesystem cannot do WAL."""
    if read_only:
        conn.execute("PRAGMA query_only = ON")
        return
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise JournalOpenError(
            f"journal {path}: SQLite refused WAL mode (got {mode!r}); network filesystems cannot "
            "do WAL: put the data directory on a local disk"
        )
    # FULL: the WAL is fsynced at every commit, so a commit that returned survives power loss.
    conn.execute("PRAGMA synchronous = FULL")
    (synchronous,) = conn.execute("PRAGMA synchronous").fetchone()
    assert synchronous == 2, f"expected synchronous=FULL (2), got {synchronous}"
    # On macOS plain fsync does not reach the platter; F_FULLFSYNC does. No effect elsewhere.
    conn.execute("PRAGMA fullfsync = ON")
    conn.execute("PRAGMA checkpoint_fullfsync = ON")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA journal_size_limit = {limits.wal_size_bytes_max}")


def ensure_schema(conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
    """Creates the tables in a new file, or checks an existing file's schema version.

    Raises JournalOpenError for a file that is not a journal or has another schema version.
    """
    if not read_only:
        # Under the write lock, so two processes opening a new file cannot both create tables.
        conn.execute("BEGIN IMMEDIATE")
    try:
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables and not read_only:
            for statement in schema_statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, ?)",
                (schema_version_current,),
            )
            conn.execute(
                "INSERT INTO head (id, last_seq, last_hash_hex, last_at_ns) VALUES (1, 0, ?, 0)",
                (genesis_hash_hex,),
            )
            tables = {"schema_version"}
        if "schema_version" not in tables:
            raise JournalOpenError(
                f"{path} is not a journal (tables {sorted(tables)}); point the exchange at its "
                "own data directory"
            )
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
        if versions != [(schema_version_current,)]:
            raise JournalOpenError(
                f"{path} has schema version {versions}, this exchange reads version "
                f"{schema_version_current}; use the exchange release that wrote it"
            )
        if conn.in_transaction:
            conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def read_head(conn: sqlite3.Connection) -> tuple[int, str, int]:
    """The head row. Raises JournalCorruptError if it is missing or disagrees with the entries."""
    # One statement, so a reader sees the head and the last entry from the same commit even while
    # the writer appends.
    rows: list[tuple[Any, ...]] = conn.execute(
        "SELECT h.last_seq, h.last_hash_hex, h.last_at_ns, e.seq, e.hash_hex, e.at_ns "
        "FROM head AS h LEFT JOIN "
        "(SELECT seq, hash_hex, at_ns FROM entries ORDER BY seq DESC LIMIT 1) AS e"
    ).fetchall()
    head = rows[0][:3] if len(rows) == 1 else None
    last_entry = rows[0][3:] if len(rows) == 1 else None
    if last_entry == (None, None, None):
        last_entry = (0, genesis_hash_hex, 0)
    if head is None or head != last_entry:
        raise JournalCorruptError(
            f"the head row {head} disagrees with the last entry {last_entry}; run "
            "`exchange doctor` for a full report",
            seq=0 if last_entry is None else last_entry[0],
        )
    seq, hash_hex, at_ns = head
    return seq, hash_hex, at_ns


def first_seq_at(conn: sqlite3.Connection, since_ns: int, upto_seq: int) -> int:
    """The first seq stamped at or after ``since_ns`` (``upto_seq + 1`` if none).

    Binary search on the primary key: at_ns never decreases along the chain (the journal refuses
    a batch that would), so this costs log2(entries) lookups instead of a scan.
    """
    low, high = 1, upto_seq + 1
    while low < high:
        middle = (low + high) // 2
        row = conn.execute("SELECT at_ns FROM entries WHERE seq = ?", (middle,)).fetchone()
        if row is None:
            raise JournalCorruptError(
                f"entry {middle} is missing; run `exchange doctor` for a full report", seq=middle
            )
        if row[0] >= since_ns:
            high = middle
        else:
            low = middle + 1
    return low
