"""A disk that fills inside a batch leaves the journal as it was and usable. Method: a real SQLite
file in tmp_path whose writer connection has ``max_page_count`` set, so SQLite fails with
SQLITE_FULL exactly as it does when a write meets ENOSPC (and, as then, rolls the transaction
back by itself).
"""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_journal import fill, make_entry

import exchange.journal.sqlite as journal_sqlite
from exchange.journal import Journal, JournalDiskFullError, verify_file
from exchange.journal.schema import configure


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


@pytest.fixture
def capped_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The writer's connections may not grow the file beyond 16 pages of 4 KiB."""

    def configure_capped(conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
        configure(conn, path, read_only=read_only)
        if not read_only:
            conn.execute("PRAGMA max_page_count = 16")

    monkeypatch.setattr(journal_sqlite, "configure", configure_capped)
    yield


@pytest.mark.usefixtures("capped_pages")
def test_a_full_disk_inside_a_batch_leaves_the_journal_as_it_was(path: Path) -> None:
    with Journal.open(path) as journal:
        fill(journal, 2)
        head = (journal.last_seq, journal.last_hash_hex)
        big = [make_entry(n, postings=200) for n in range(3, 40)]
        with pytest.raises(JournalDiskFullError) as raised:
            journal.append_batch(big)
        assert (raised.value.rolled_back, raised.value.operation) == (True, "append_batch")
        assert raised.value.directory == path.parent
        assert str(raised.value) == (
            f"the disk holding {path.parent} is full: append_batch was rolled back; the journal "
            "is unchanged and usable"
        )
        assert (journal.last_seq, journal.last_hash_hex) == head
        fill(journal, 2)  # Still usable: a small batch fits.
    assert verify_file(path).ok
