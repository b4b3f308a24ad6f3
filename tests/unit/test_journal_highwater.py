"""The high-water mark, on real SQLite files in tmp_path: a journal that ends before its mark (an
older copy put in its place, or the file gone) is refused by the writer and reported by
``verify_file`` without a file being touched; a damaged mark or another history is named as such.
"""

import shutil
from pathlib import Path

import pytest
from test_journal import fill, make_entry

from exchange.journal import (
    Journal,
    JournalCorruptError,
    JournalEntriesLostError,
    VerifyProblem,
    high_water_path,
    verify_file,
)
from exchange.journal.highwater import HighWater, read_high_water, write_high_water


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"


def files(directory: Path) -> dict[str, bytes]:
    """The files and their bytes, but for the empty WAL and its index that any SQLite reader of a
    WAL-mode file creates when they are missing (they hold nothing of the journal)."""
    return {
        item.name: item.read_bytes()
        for item in sorted(directory.iterdir())
        if not item.name.endswith("-shm")
        and not (item.name.endswith("-wal") and item.stat().st_size == 0)
    }


def test_the_mark_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    mark_path = tmp_path / "journal.hwm"
    assert read_high_water(mark_path) is None
    write_high_water(mark_path, HighWater(seq=7, entry_hash_hex="ab" * 32))
    write_high_water(mark_path, HighWater(seq=9, entry_hash_hex="cd" * 32))
    assert read_high_water(mark_path) == HighWater(seq=9, entry_hash_hex="cd" * 32)
    assert [item.name for item in tmp_path.iterdir()] == ["journal.hwm"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda text: text.replace('"seq":9', '"seq":8'), "its checksum does not match"),
        (lambda text: text[:20], "not a mark"),
        (lambda text: "", "not a mark"),
    ],
)
def test_a_damaged_mark_is_named(tmp_path: Path, change: object, why: str) -> None:
    mark_path = tmp_path / "journal.hwm"
    write_high_water(mark_path, HighWater(seq=9, entry_hash_hex="cd" * 32))
    assert callable(change)
    mark_path.write_text(change(mark_path.read_text()))
    with pytest.raises(JournalCorruptError, match=why) as raised:
        read_high_water(mark_path)
    assert str(raised.value).startswith(f"{mark_path} is damaged (")


def test_the_writer_records_only_a_moved_head(path: Path) -> None:
    with Journal.open(path) as journal:
        assert journal.record_high_water() is None  # An empty journal has nothing committed.
        fill(journal, 4)
        assert journal.record_high_water() == 4
        assert journal.record_high_water() is None
        fill(journal, 2)
        assert journal.record_high_water() == 6
        head = journal.last_hash_hex
    assert read_high_water(high_water_path(path)) == HighWater(seq=6, entry_hash_hex=head)
    with Journal.open(path) as journal:
        # The mark read at open counts as written.
        assert journal.record_high_water() is None


def test_an_older_copy_of_the_journal_is_refused_and_left_alone(path: Path) -> None:
    older = path.with_name("older.sqlite")
    with Journal.open(path) as journal:
        fill(journal, 4)
    shutil.copy2(path, older)
    with Journal.open(path) as journal:
        fill(journal, 4)
        journal.record_high_water()
    shutil.copy2(older, path)
    before = files(path.parent)

    with pytest.raises(JournalEntriesLostError) as raised:
        Journal.open(path)
    assert (raised.value.last_seq, raised.value.high_water_seq, raised.value.seq) == (4, 8, 5)
    assert str(raised.value) == (
        f"the journal {path} ends at seq 4 but seq 8 had been committed (journal.hwm): the "
        "write-ahead log lost committed frames (disk damage?); restore it from a replica or a "
        "backup; see docs/daemon.md#durability"
    )
    report = verify_file(path)
    assert (report.problem, report.problem_seq, report.entries_checked) == (
        VerifyProblem.entries_lost,
        5,
        4,
    )
    assert report.detail == str(raised.value)
    assert files(path.parent) == before
    # A reader still opens it: export and doctor read what is there.
    with Journal.open(path, read_only=True) as reader:
        assert reader.last_seq == 4
        assert reader.verify().problem is VerifyProblem.entries_lost


def test_a_missing_journal_with_a_mark_is_refused_without_creating_one(path: Path) -> None:
    with Journal.open(path) as journal:
        fill(journal, 2)
        journal.record_high_water()
    path.unlink()

    with pytest.raises(JournalEntriesLostError, match="is missing but seq 2 had been committed"):
        Journal.open(path)
    assert not path.exists()
    assert verify_file(path).problem is VerifyProblem.entries_lost


def test_another_history_at_the_marks_seq_is_refused(path: Path) -> None:
    other = path.with_name("other.sqlite")
    with Journal.open(other) as journal:
        journal.append_batch([make_entry(n, postings=1) for n in range(1, 5)])
    with Journal.open(path) as journal:
        fill(journal, 4)
        journal.record_high_water()
    shutil.copy2(other, path)

    with pytest.raises(JournalCorruptError, match="is not the journal the mark was written for"):
        Journal.open(path)
    assert verify_file(path).problem is VerifyProblem.high_water_mismatch


def test_a_damaged_mark_stops_the_writer_and_verify(path: Path) -> None:
    with Journal.open(path) as journal:
        fill(journal, 2)
        journal.record_high_water()
    high_water_path(path).write_text("{}")

    with pytest.raises(JournalCorruptError, match="is damaged"):
        Journal.open(path)
    report = verify_file(path)
    assert (report.problem, report.entries_checked) == (VerifyProblem.high_water_mismatch, 2)
