"""Committed entries that the disk loses are caught, not silently forgotten. Method: a real
``exchange up`` acknowledges twenty awards and records its high-water mark, is killed with
SIGKILL (its WAL not checkpointed), and one bit of a WAL frame in the middle is flipped, as a
damaged sector would. SQLite then drops that frame and every one after it, acknowledged commits
included, and the hash chain of what remains is sound: without the mark, ``exchange doctor``
passes. With it, doctor fails and ``exchange up`` refuses to start, each with one line, and
neither touches the WAL that still holds the lost frames.
"""

import shutil
import sqlite3
import struct
import sys
from pathlib import Path

import anyio
import msgspec
import pytest
from daemon_support import READY_TIMEOUT_S, DaemonProcess, free_port, read_json

from protocols.client import connect
from protocols.credentials import Credentials

pytestmark = pytest.mark.anyio

EXCHANGE = (sys.executable, "-m", "exchange.cli.main")
AWARDS = 20
# The WAL's layout (sqlite.org/fileformat.html): a 32-byte header with the page size at offset 8,
# then frames of a 24-byte header and one page; a frame whose second field is non-zero ends a
# transaction (the commit frame).
WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24


def _commit_frame_offsets(wal: bytes) -> list[int]:
    (page_bytes,) = struct.unpack(">I", wal[8:12])
    frame_bytes = FRAME_HEADER_BYTES + page_bytes
    offsets = range(WAL_HEADER_BYTES, len(wal) - frame_bytes + 1, frame_bytes)
    return [at for at in offsets if struct.unpack(">I", wal[at + 4 : at + 8])[0] != 0]


def _flip_a_bit_after_the_middle_commit(wal_path: Path) -> None:
    """Flips one bit in the page of the frame after the middle commit frame."""
    wal = bytearray(wal_path.read_bytes())
    commits = _commit_frame_offsets(bytes(wal))
    assert len(commits) >= AWARDS, f"expected a commit frame per award, found {len(commits)}"
    (page_bytes,) = struct.unpack(">I", wal[8:12])
    victim = commits[len(commits) // 2] + FRAME_HEADER_BYTES + page_bytes
    wal[victim + FRAME_HEADER_BYTES + 100] ^= 0x04
    wal_path.write_bytes(bytes(wal))


def _last_seq_sqlite_sees(journal: Path) -> int:
    """The last entry, as plain SQLite reads the file (read-only: the WAL stays as it is)."""
    conn = sqlite3.connect(journal.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        (last_seq,) = conn.execute("SELECT max(seq) FROM entries").fetchone()
    finally:
        conn.close()
    assert isinstance(last_seq, int)
    return last_seq


def _files(data: Path) -> dict[str, bytes]:
    """The data directory's files and their bytes, but for the WAL index (-shm), which every
    reader rebuilds after a crash."""
    return {
        str(path.relative_to(data)): path.read_bytes()
        for path in sorted(data.rglob("*"))
        if path.is_file() and path.name != "journal.sqlite-shm"
    }


async def _acknowledge_awards(data: Path) -> int:
    """Sends AWARDS awards as admin, each its own batch; returns the seq of the last one."""
    admin = msgspec.convert(read_json(data / "creds" / "admin.json"), Credentials)
    async with connect(admin, reconnect=False, request_timeout_s=10.0) as client:
        for index in range(AWARDS):
            body = {"request_id": f"award-{index}", "agent": "claude", "amount": "1"}
            envelope = await client.command_envelope("admin", "award", {**body, "source": "test"})
            assert envelope.ok, envelope
        status = await client.query_envelope("status")
    assert status.ok, status
    last_seq: int = status.result["commands_applied"]
    return last_seq


async def _wait_high_water(daemon: DaemonProcess, seq: int) -> None:
    after = 0
    with anyio.fail_after(READY_TIMEOUT_S):
        while True:
            event = await daemon.wait_event("high_water_recorded", after=after)
            if event["seq"] >= seq:
                return
            after = daemon.events.index(event) + 1


async def test_a_damaged_wal_frame_stops_the_start_and_fails_doctor(tmp_path: Path) -> None:
    data = tmp_path / "x"
    journal = data / "journal.sqlite"
    daemon = DaemonProcess(data, free_port(), "--log-level", "debug")
    async with daemon.running():
        acknowledged_seq = await _acknowledge_awards(data)
        await _wait_high_water(daemon, acknowledged_seq)
        daemon.kill()
    _flip_a_bit_after_the_middle_commit(data / "journal.sqlite-wal")
    damaged = _files(data)
    last_seq = _last_seq_sqlite_sees(journal)
    # The loss is real: acknowledged awards are gone from what SQLite reads.
    assert 6 < last_seq < acknowledged_seq

    expected = (
        f"the journal {journal} ends at seq {last_seq} but seq {acknowledged_seq} had been "
        "committed (journal.hwm): the write-ahead log lost committed frames (disk damage?); "
        "restore it from a replica or a backup; see docs/daemon.md#durability"
    )
    with anyio.fail_after(READY_TIMEOUT_S):
        doctor = await anyio.run_process([*EXCHANGE, "doctor", "--data", str(data)], check=False)
    assert doctor.returncode == 1, doctor
    assert doctor.stderr.decode().splitlines() == [f"PROBLEM: {expected}"]

    with anyio.fail_after(READY_TIMEOUT_S):
        up = await anyio.run_process(
            [*EXCHANGE, "up", "--data", str(data), "--port", str(free_port()), "--log-json"],
            check=False,
        )
    assert up.returncode == 1, up
    assert b"Traceback" not in up.stderr
    (line,) = up.stderr.splitlines()
    failed = msgspec.json.decode(line)
    assert (failed["event"], failed["error_type"]) == ("exchange_failed", "JournalEntriesLostError")
    assert failed["error"] == expected
    # Neither wrote a file, nor checkpointed the WAL: the frames after the damaged one are still
    # there to examine.
    assert _files(data) == damaged

    # The control: without its mark the same journal passes doctor, the loss unseen.
    unmarked = tmp_path / "unmarked"
    unmarked.mkdir()
    for name in ("journal.sqlite", "journal.sqlite-wal", "economy.toml"):
        shutil.copy2(data / name, unmarked / name)
    with anyio.fail_after(READY_TIMEOUT_S):
        unseen = await anyio.run_process(
            [*EXCHANGE, "doctor", "--data", str(unmarked)], check=False
        )
    assert unseen.returncode == 0, unseen


async def test_a_clean_stop_leaves_the_mark_at_the_last_seq(tmp_path: Path) -> None:
    data = tmp_path / "x"
    daemon = DaemonProcess(data, free_port())
    async with daemon.running():
        acknowledged_seq = await _acknowledge_awards(data)
        assert await daemon.terminate_and_wait() == 0
    assert read_json(data / "journal.hwm")["seq"] == acknowledged_seq
    restarted_at = len(daemon.events)
    async with daemon.running():
        ready = await daemon.wait_event("exchange_ready", after=restarted_at)
        assert ready["seq"] == acknowledged_seq
