"""The journal writer process: batches and snapshots are durable when it answers, a refused
batch raises and writes nothing, a dead writer raises, and a writer never outlives its parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from exchange.daemon.journal_writer import open_journal_writer
from exchange.journal import EntryInput, Journal, JournalOpenError, JournalWriteError, Posting

pytestmark = pytest.mark.anyio

WAIT_S = 10.0


def entry(at_ns: int, amount_micro: int = 1) -> EntryInput:
    return EntryInput(
        at_ns=at_ns,
        sender="claude",
        verb="transfer",
        body=b'{"request_id":"r","to":"zero","amount":"1"}',
        reply=b'{"ok":true,"result":{}}',
        postings=(
            Posting(
                debit_account="claude",
                credit_account="zero",
                amount_micro=amount_micro,
                kind="transfer",
            ),
        ),
    )


def new_journal(path: Path) -> None:
    with Journal.open(path) as journal:
        journal.append_batch([entry(1)])


async def test_batches_and_snapshots_are_on_disk_when_the_writer_answers(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    new_journal(path)
    async with open_journal_writer(path, last_seq=1) as writer:
        assert await writer.append_batch([entry(2), entry(3)]) == 3
        assert await writer.append_batch([entry(4)]) == 4
        await writer.write_snapshot(4, b"state", "digest")
        # Another connection sees it all, while the writer still runs.
        with Journal.open(path, read_only=True) as reader:
            assert reader.last_seq == 4
            snapshot = reader.latest_snapshot()
            assert snapshot is not None and (snapshot.seq, snapshot.state) == (4, b"state")
    with Journal.open(path, read_only=True) as reader:
        assert [e.seq for e in reader.iter_entries(after_seq=0)] == [1, 2, 3, 4]


async def test_a_refused_batch_raises_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    new_journal(path)
    with pytest.raises(JournalWriteError) as raised:
        async with open_journal_writer(path, last_seq=1) as writer:
            await writer.append_batch([entry(2), entry(0)])  # The clock goes backwards.
    assert raised.value.rolled_back
    assert "JournalInputError" in str(raised.value)
    with Journal.open(path, read_only=True) as reader:
        assert reader.last_seq == 1


async def test_a_dead_writer_raises_with_the_outcome_unknown(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    new_journal(path)
    with pytest.raises(JournalWriteError) as raised:
        async with open_journal_writer(path, last_seq=1) as writer:
            os.kill(writer.pid, signal.SIGKILL)
            await writer.append_batch([entry(2)])
    assert not raised.value.rolled_back


async def test_a_writer_refuses_a_journal_that_is_not_where_expected(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    new_journal(path)
    with pytest.raises(JournalOpenError, match="expected 7"):
        async with open_journal_writer(path, last_seq=7):
            pass


def test_a_writer_dies_with_its_parent(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    new_journal(path)
    parent = textwrap.dedent(
        f"""
        import anyio, sys
        from pathlib import Path
        from exchange.daemon.journal_writer import open_journal_writer

        async def main():
            async with open_journal_writer(Path({str(path)!r}), last_seq=1) as writer:
                print("writer-pid", writer.pid, flush=True)
                await anyio.sleep_forever()

        anyio.run(main)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = ""
        while not line.startswith("writer-pid"):  # The daemon's log lines may come first.
            line = process.stdout.readline()
            assert line, "the parent exited before starting its writer"
        writer_pid = int(line.split()[1])
        assert _alive(writer_pid)
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    deadline = time.monotonic() + WAIT_S
    while _alive(writer_pid):
        assert time.monotonic() < deadline, "the writer outlived its parent"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
