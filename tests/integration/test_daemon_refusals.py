"""Failures read as a person needs them: ``exchange up`` on a data directory it cannot use, and on a
disk that fills while it serves, ends with exactly one line naming the cause and what to do, a
non-zero exit, no traceback and nothing left behind; ``exchange doctor`` without a journal says so.
Method: real ``exchange up`` processes on real filesystems: a file in the data directory's place,
a read-only tmpfs, a directory this user may not write (root loses CAP_DAC_OVERRIDE through
setpriv), a small tmpfs filled to the last page while the exchange serves, and SQLite's
``max_page_count`` as the full disk where mounting is not allowed.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import Process
from daemon_support import READY_TIMEOUT_S, STOP_TIMEOUT_S, free_port, stop_orphaned_nats_server

from exchange.journal import Journal
from protocols.client import connect
from protocols.client_errors import ExchangeUnavailableError
from protocols.credentials import Credentials

pytestmark = pytest.mark.anyio

EXCHANGE = (sys.executable, "-m", "exchange.cli.main")
# The journal's pages may not grow beyond this in the max_page_count test: a new journal with its
# genesis takes about 8, and each award below about 2 more.
JOURNAL_PAGES_MAX = 24
# Runs ``exchange`` with the writer's connection capped at JOURNAL_PAGES_MAX pages: SQLite then
# answers SQLITE_FULL exactly as it does for a write that met ENOSPC.
SMALL_JOURNAL = f"""
import sys
import exchange.journal.sqlite as journal_sqlite
from exchange.cli.main import main

configure = journal_sqlite.configure

def configure_capped(conn, path, *, read_only):
    configure(conn, path, read_only=read_only)
    if not read_only:
        conn.execute("PRAGMA max_page_count = {JOURNAL_PAGES_MAX}")

journal_sqlite.configure = configure_capped
sys.exit(main(sys.argv[1:]))
"""


def _one_failure_line(stderr: bytes) -> dict[str, Any]:
    """The single ``exchange_failed`` event of a JSON log, checked to be the only error."""
    assert b"Traceback" not in stderr, stderr.decode()
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]
    assert len(events) == len(stderr.splitlines()), stderr.decode()
    errors = [event for event in events if event["level"] == "error"]
    assert [event["event"] for event in errors] == ["exchange_failed"], errors
    failed: dict[str, Any] = errors[0]
    assert "also" not in failed, failed
    return failed


async def _up_refused(data: Path, *prefix: str) -> dict[str, Any]:
    """Runs ``exchange up`` on ``data``; asserts it refused with one line alone; returns it."""
    command = [*prefix, *EXCHANGE, "up", "--data", str(data), "--port", str(free_port())]
    with anyio.fail_after(READY_TIMEOUT_S):
        done = await anyio.run_process([*command, "--log-json"], check=False)
    assert done.returncode == 1, done
    assert len(done.stderr.splitlines()) == 1, done.stderr.decode()
    return _one_failure_line(done.stderr)


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every file and directory under ``path`` with its content (None for a directory)."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {
        str(item.relative_to(path)): None if item.is_dir() else item.read_bytes()
        for item in sorted(path.rglob("*"))
    }


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Any]:
    """``mount_tmpfs(name, *options)`` mounts a tmpfs at tmp_path/name; all are unmounted after.

    Skips the test where mounting is not allowed (it needs root, or CAP_SYS_ADMIN).
    """
    mounted: list[Path] = []

    def mount(name: str, *options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(point)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"mount -t tmpfs is not allowed here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(point)], check=True)


async def test_a_file_in_place_of_the_data_directory_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory\n")

    failed = await _up_refused(a_file)
    assert failed["error_type"] == "DataDirUnusableError"
    assert failed["error"] == (
        f"the data directory {a_file} is a file, not a directory: pass --data a directory (it "
        "is made if missing)"
    )
    failed = await _up_refused(a_file / "x")
    assert "a part of that path is a file" in failed["error"], failed
    assert _tree(tmp_path) == {"notes.txt": b"not a directory\n"}


async def test_a_read_only_filesystem_is_one_line(mount_tmpfs: Any) -> None:
    read_only = mount_tmpfs("ro", "ro", "size=1m")

    for data in (read_only / "x", read_only):
        failed = await _up_refused(data)
        assert failed["error_type"] == "DataDirUnusableError"
        assert failed["error"] == (
            f"{data} is on a read-only filesystem, and the exchange writes its journal there: "
            "remount it read-write, or pass another --data directory"
        )
    assert _tree(read_only) == {}


async def test_a_directory_this_user_may_not_write_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    prefix: Sequence[str] = ()
    if os.geteuid() == 0:
        # Root writes anywhere through CAP_DAC_OVERRIDE; without it, permissions bind it too.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--")

    failed = await _up_refused(locked / "x", *prefix)
    assert failed["error_type"] == "DataDirUnusableError"
    assert failed["error"].startswith(f"no permission to write {locked / 'x'} as user "), failed
    assert failed["error"].endswith(
        "give this user write access (chown/chmod), or pass another --data directory"
    )
    assert _tree(locked) == {}


async def test_doctor_without_a_journal_says_there_is_none(tmp_path: Path) -> None:
    data = tmp_path / "nothing-here"

    with anyio.fail_after(READY_TIMEOUT_S):
        done = await anyio.run_process([*EXCHANGE, "doctor", "--data", str(data)], check=False)
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        f"journal_not_found: no journal at {data / 'journal.sqlite'}: pass --data the "
        "exchange's data directory (`exchange up` makes it)"
    ]
    assert not data.exists()


class _Daemon:
    """``exchange up --log-json`` as a child process, its stderr kept whole."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.stderr = b""
        self._changed = anyio.Event()

    async def follow(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk
            self._changed.set()
            self._changed = anyio.Event()
        self._changed.set()

    async def wait_event(self, name: str) -> dict[str, Any]:
        """The first event called ``name``. The caller bounds the wait."""
        while True:
            for line in self.stderr.splitlines():
                event = json.loads(line) if line.startswith(b"{") else {}
                if event.get("event") == name:
                    return event
            assert self.process.returncode is None, self.stderr.decode()
            await self._changed.wait()

    async def wait_exit(self) -> int:
        with anyio.fail_after(STOP_TIMEOUT_S):
            return await self.process.wait()

    async def wait_exit_after_sigterm(self) -> int:
        self.process.terminate()
        return await self.wait_exit()


@asynccontextmanager
async def _running(
    data: Path, *options: str, runner: Sequence[str] = EXCHANGE
) -> AsyncIterator[_Daemon]:
    """``runner up`` on ``data`` (JSON logs); stopped with SIGTERM if it still runs."""
    command = [*runner, "up", "--data", str(data), "--port", str(free_port()), *options]
    process = await anyio.open_process(
        [*command, "--log-json"], env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    async with process, anyio.create_task_group() as tg:
        daemon = _Daemon(process)
        tg.start_soon(daemon.follow)
        try:
            yield daemon
        finally:
            if process.returncode is None:
                process.terminate()
            with anyio.fail_after(STOP_TIMEOUT_S):
                await process.wait()
            stop_orphaned_nats_server(data / "nats")


async def _award_until_refused(data: Path, *, description: str) -> int:
    """Sends awards as admin until one gets no reply; returns how many were acknowledged."""
    admin = msgspec.json.decode((data / "creds" / "admin.json").read_bytes(), type=Credentials)
    acknowledged = 0
    async with connect(admin, reconnect=False, request_timeout_s=2.0, attempts_max=1) as client:
        for index in range(200):
            body = {
                "request_id": f"award-{index}",
                "agent": "claude",
                "amount": "1",
                "source": "test",
                "description": description,
            }
            try:
                envelope = await client.command_envelope("admin", "award", body)
            except ExchangeUnavailableError:
                return acknowledged
            assert envelope.ok, envelope
            acknowledged += 1
    raise AssertionError("the journal never filled up")


def _journaled_awards(journal_path: Path) -> int:
    with Journal.open(journal_path, read_only=True) as journal:
        return sum(1 for entry in journal.iter_entries() if entry.verb == "award")


def _left_behind(data: Path) -> set[str]:
    """What a daemon that stopped left in ``data``, beyond the files that outlive every run."""
    kept = {"economy.toml", "exchange.lock", "journal.hwm", "journal.sqlite", "creds"}
    sqlite_side = {"journal.sqlite-wal", "journal.sqlite-shm"}
    return {item.name for item in data.iterdir()} - kept - sqlite_side - {"nats"}


async def test_a_disk_that_fills_while_serving_is_one_line(mount_tmpfs: Any) -> None:
    disk = mount_tmpfs("disk", "size=4m")
    data = disk / "x"

    async with _running(data, "--log-level", "debug") as daemon:
        with anyio.fail_after(READY_TIMEOUT_S):
            await daemon.wait_event("exchange_ready")
            # The mark of the genesis is written first, so the next write is the award's.
            await daemon.wait_event("high_water_recorded")
        # Every page of the disk goes to the filler, so the next commit's WAL frame has no room.
        filler = disk / "filler"
        with (
            filler.open("wb", buffering=0) as file,
            pytest.raises(OSError, match="No space left on device"),
        ):
            while True:
                file.write(b"\0" * 4096)
        assert await _award_until_refused(data, description="small") == 0
        assert await daemon.wait_exit() == 1
    failed = _one_failure_line(daemon.stderr)
    assert failed["error_type"] == "JournalDiskFullError"
    assert failed["error"] == (
        f"the disk holding {data} is full: the last batch may not have been journaled and no "
        "reply was sent; free space and restart (nothing acknowledged is lost)"
    )
    assert _left_behind(data) == set()

    # With room again, the exchange starts from what was committed; the award nobody was answered
    # for is there or not (its COMMIT failed half way), and a retry with its id applies it once.
    filler.unlink()
    async with _running(data) as daemon:
        with anyio.fail_after(READY_TIMEOUT_S):
            await daemon.wait_event("exchange_ready")
        assert await daemon.wait_exit_after_sigterm() == 0
    assert _journaled_awards(data / "journal.sqlite") <= 1


async def test_a_full_journal_without_a_mount_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "x"
    async with _running(data, runner=(sys.executable, "-c", SMALL_JOURNAL)) as daemon:
        with anyio.fail_after(READY_TIMEOUT_S):
            await daemon.wait_event("exchange_ready")
        acknowledged = await _award_until_refused(data, description="d" * 4000)
        assert acknowledged > 0
        assert await daemon.wait_exit() == 1
    failed = _one_failure_line(daemon.stderr)
    assert failed["error_type"] == "JournalDiskFullError"
    assert failed["error"] == (
        f"the disk holding {data} is full: the last batch was not journaled and no reply was "
        "sent; free space and restart (nothing acknowledged is lost)"
    )
    assert _left_behind(data) == set()
    # Rolled back: the journal holds exactly the acknowledged awards.
    assert _journaled_awards(data / "journal.sqlite") == acknowledged
