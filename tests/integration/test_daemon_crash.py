"""``kill -9`` of ``exchange up`` under concurrent load loses no acknowledged command and applies
none twice. Method: eight clients send transfers, each with its own request id used as its memo,
and keep retrying through outages; the daemon is killed (SIGKILL) three times once enough new
acknowledgements arrived, and restarted on the same port (its orphaned nats-server is stopped by
the new one, from the pid file). A snapshot is taken every 25 commands, so restarts restore one
and replay the rest. Then every acknowledged request id is re-sent (same reply, no second
effect), the journal holds each acknowledged memo exactly once and no memo twice, doctor finds
the chain, the replay and conservation sound, and a SIGTERM leaves no process behind.
"""

import collections
import os
from pathlib import Path

import anyio
import msgspec
import pytest
from daemon_support import DaemonProcess, free_port, read_json, run_cli

from exchange.journal import Journal
from protocols.client import connect
from protocols.client_errors import ExchangeUnavailableError
from protocols.credentials import Credentials

pytestmark = pytest.mark.anyio

CRASHES = 3
WORKERS = 8
ACKS_PER_ROUND = 40
AGENTS = ("claude", "builder", "lambda", "spark", "observer", "zero")


def _admin(data: Path) -> Credentials:
    return msgspec.convert(read_json(data / "creds" / "admin.json"), Credentials)


async def test_sigkill_under_load_loses_no_acknowledged_command(tmp_path: Path) -> None:
    data, port = tmp_path / "x", free_port()
    acked: dict[str, tuple[str, dict[str, str], bytes]] = {}
    sent: list[str] = []
    enough = anyio.Event()
    target = 0
    stop_load = anyio.Event()
    workers_done = anyio.Event()
    running_workers = WORKERS

    async def worker(index: int, credentials: Credentials) -> None:
        try:
            await _send_transfers(index, credentials)
        finally:
            nonlocal running_workers
            running_workers -= 1
            if running_workers == 0:
                workers_done.set()

    async def _send_transfers(index: int, credentials: Credentials) -> None:
        sender, to = AGENTS[index % 6], AGENTS[(index + 1) % 6]
        async with connect(credentials, request_timeout_s=2.0, attempts_max=30) as client:
            count = 0
            while not stop_load.is_set():
                count += 1
                request_id = f"w{index}-{count}"
                body = {"request_id": request_id, "to": to, "amount": "0.01", "memo": request_id}
                sent.append(request_id)
                try:
                    envelope = await client.command_envelope(sender, "transfer", body)
                except ExchangeUnavailableError:
                    continue
                assert envelope.ok, envelope
                acked[request_id] = (sender, body, msgspec.json.encode(envelope))
                if len(acked) >= target:
                    enough.set()

    # Snapshots every 25 commands, so that restarts restore one (their remembered replies read
    # back from the journal) and replay what came after it.
    daemon = DaemonProcess(data, port, "--snapshot-every", "25")
    async with anyio.create_task_group() as load:
        for round_index in range(CRASHES + 1):
            async with daemon.running():
                if round_index == 0:
                    credentials = _admin(data)
                    for index in range(WORKERS):
                        load.start_soon(worker, index, credentials)
                if round_index == CRASHES:
                    break
                target, enough = len(acked) + ACKS_PER_ROUND, anyio.Event()
                with anyio.fail_after(60):
                    await enough.wait()
                daemon.kill()
        # The last daemon runs: stop the load, then check everything against it.
        async with daemon.running():
            target, enough = len(acked) + ACKS_PER_ROUND, anyio.Event()
            with anyio.fail_after(60):
                await enough.wait()
            stop_load.set()
            with anyio.fail_after(60):
                await workers_done.wait()
            await _check_every_acknowledged_command(data, acked)
            status = await daemon.terminate_and_wait()
            assert status == 0
            await daemon.wait_event("exchange_stopped")
    assert len(acked) >= (CRASHES + 1) * ACKS_PER_ROUND
    recoveries = [e for e in daemon.events if e.get("event") == "journal_recovered"]
    assert len(recoveries) == CRASHES + 2
    assert any(e["snapshot_seq"] > 0 and e["replayed"] > 0 for e in recoveries), recoveries
    memos = _journaled_transfer_memos(data / "journal.sqlite")
    assert all(memos[request_id] == 1 for request_id in acked), "an acked transfer is missing"
    assert max(memos.values()) == 1, "a transfer was applied twice"
    assert set(memos) <= set(sent)
    doctor = await run_cli("doctor", "--data", str(data), "--json")
    assert doctor.status == 0, doctor
    assert doctor.json()["ok"] is True
    _assert_nothing_left_running(data)


async def _check_every_acknowledged_command(
    data: Path, acked: dict[str, tuple[str, dict[str, str], bytes]]
) -> None:
    async with connect(_admin(data), reconnect=False, request_timeout_s=10.0) as admin:
        for sender, body, reply in list(acked.values()):
            again = await admin.command_envelope(sender, "transfer", body)
            assert msgspec.json.encode(again) == reply


def _journaled_transfer_memos(path: Path) -> collections.Counter[str]:
    with Journal.open(path, read_only=True) as journal:
        return collections.Counter(
            record.memo for record in journal.iter_postings() if record.kind == "transfer"
        )


def _assert_nothing_left_running(data: Path) -> None:
    assert not (data / "nats" / "nats-server.pid").exists()
    assert not (data / "exchange.json").exists()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        assert os.fsencode(str(data)) not in cmdline, cmdline
