"""Restarts rebuild exactly the state: a clean stop snapshots (so the next start replays nothing),
periodic snapshots bound the replay, the config of a journal is fixed, and one data directory
has one daemon. In-process exchanges; the SIGKILL cases are in test_daemon_crash.py.
"""

import hashlib
import json
import sqlite3
from pathlib import Path

import msgspec
import pytest
from daemon_support import client_for, running_exchange, status_of
from structlog.testing import capture_logs

from exchange.cli.doctor import run_doctor
from exchange.core.config import default_toml
from exchange.daemon.errors import DataDirInUseError
from exchange.daemon.recovery import ConfigMismatchError
from exchange.journal import Journal

pytestmark = pytest.mark.anyio


async def test_a_clean_restart_has_the_same_digest_and_replays_nothing(tmp_path: Path) -> None:
    data = tmp_path / "x"
    async with running_exchange(data) as handle, client_for(handle) as admin:
        for index in range(20):
            reply = await admin.command_envelope(
                "claude", "transfer", {"to": "zero", "amount": "1", "memo": f"m{index}"}
            )
            assert reply.ok
        await admin.command_envelope(
            "zero", "pool.create", {"name": "gpu", "min_contribution": "10"}
        )
        await admin.command_envelope(
            "claude", "transfer", {"to": "zero", "amount": "99999"}
        )  # refused
        before = await status_of(admin)
    with capture_logs() as logs:
        async with running_exchange(data) as handle, client_for(handle) as admin:
            after = await status_of(admin)
    assert after == {**before, "now_ns": after["now_ns"]}
    recovered = next(e for e in logs if e["event"] == "journal_recovered")
    assert recovered["replayed"] == 0
    assert recovered["snapshot_seq"] == before["commands_applied"]


async def test_after_a_restart_from_a_snapshot_a_retry_gets_its_first_reply(
    tmp_path: Path,
) -> None:
    # The snapshot keeps only the seqs of the remembered commands; their replies come back from
    # the journal's entries.
    data = tmp_path / "x"
    body = {"request_id": "pay-1", "to": "zero", "amount": "2.5"}
    async with running_exchange(data) as handle, client_for(handle) as admin:
        first = await admin.command_envelope("claude", "transfer", body)
        for index in range(3):
            more = {"request_id": f"more-{index}", "to": "zero", "amount": "1"}
            assert (await admin.command_envelope("claude", "transfer", more)).ok
    with Journal.open(data / "journal.sqlite", read_only=True) as journal:
        snapshot = journal.latest_snapshot()
        assert snapshot is not None
        assert b"pay-1" not in snapshot.state  # the seqs only, not the records
    with capture_logs() as logs:
        async with running_exchange(data) as handle, client_for(handle) as admin:
            again = await admin.command_envelope("claude", "transfer", body)
            reused = await admin.command_envelope("claude", "transfer", {**body, "amount": "3"})
            balance = await admin.query_envelope("balance", {"agent": "claude"})
    recovered = next(e for e in logs if e["event"] == "journal_recovered")
    assert recovered["replayed"] == 0 and recovered["snapshot_seq"] == snapshot.seq
    assert first.ok and again.ok and again.result == first.result
    assert again.result is not None and again.result["balance"] == "9997.5"
    assert reused.error is not None and reused.error.code == "request_id_reused"
    assert balance.result is not None and balance.result["balance"] == "9994.5"


async def test_periodic_snapshots_bound_the_replay(tmp_path: Path) -> None:
    data = tmp_path / "x"
    async with (
        running_exchange(data, snapshot_every_commands=5) as handle,
        client_for(handle) as admin,
    ):
        for _ in range(12):
            await admin.command_envelope("claude", "transfer", {"to": "zero", "amount": "1"})
        with Journal.open(data / "journal.sqlite", read_only=True) as journal:
            snapshot = journal.latest_snapshot()
        # Genesis (6 commands) and 12 transfers: snapshots at 6, 11 and 16 at the latest.
        assert snapshot is not None and snapshot.seq >= 11
        status = await status_of(admin)
    assert status["commands_applied"] == 18


async def test_the_config_of_a_journal_cannot_change(tmp_path: Path) -> None:
    data = tmp_path / "x"
    async with running_exchange(data):
        pass
    changed = default_toml().replace("opening_balance = 10000", "opening_balance = 5")
    assert changed != default_toml()
    with pytest.RaisesGroup(pytest.RaisesExc(ConfigMismatchError, match="cannot change")):
        async with running_exchange(data, config_text=changed):
            pass


async def test_a_new_journal_takes_the_given_config(tmp_path: Path) -> None:
    config = default_toml().replace("opening_balance = 10000", "opening_balance = 5")
    async with (
        running_exchange(tmp_path / "x", config_text=config) as handle,
        client_for(handle) as admin,
    ):
        balance = await admin.query_envelope("balance", {"agent": "zero"})
    assert balance.result["balance"] == "5"
    assert (tmp_path / "x" / "economy.toml").read_text() == config


async def test_one_data_directory_has_one_daemon(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x"):
        with pytest.RaisesGroup(pytest.RaisesExc(DataDirInUseError, match="another exchange runs")):
            async with running_exchange(tmp_path / "x"):
                pass


async def test_a_snapshot_of_an_older_format_is_replaced_by_a_replay(tmp_path: Path) -> None:
    data = tmp_path / "x"
    async with running_exchange(data) as handle, client_for(handle) as admin:
        for index in range(5):
            body = {"request_id": f"t{index}", "to": "zero", "amount": "1"}
            assert (await admin.command_envelope("claude", "transfer", body)).ok
        before = await status_of(admin)
    # The clean stop wrote a snapshot; turn it into the previous format (version 3: the
    # idempotency records themselves, as {"keys": [...], "records": [...]}).
    path = data / "journal.sqlite"
    with Journal.open(path, read_only=True) as journal:
        snapshot = journal.latest_snapshot()
        assert snapshot is not None and snapshot.seq == before["commands_applied"]
        state = msgspec.msgpack.decode(snapshot.state)
        rows = list(journal.entries_at(state["ledger"].pop("done_seqs")))
    assert len(rows) >= 5
    state["version"] = 3
    state["done"] = {
        "keys": [f"{sender} {json.loads(body)['request_id']}" for sender, _, body, _ in rows],
        "records": [b"%s %s\n%s" % (verb.encode(), body, reply) for _, verb, body, reply in rows],
    }
    old = msgspec.msgpack.encode(state)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE snapshots SET state = ?, state_sha256_hex = ?, digest = ? WHERE seq = ?",
            (old, hashlib.sha256(old).hexdigest(), "v3-digest", snapshot.seq),
        )
    assert run_doctor(data).ok  # The old snapshot's digest is not compared.
    with capture_logs() as logs:
        async with running_exchange(data) as handle, client_for(handle) as admin:
            after = await status_of(admin)
            # The replayed idempotency records still answer a retry with the first reply.
            retry = {"request_id": "t0", "to": "zero", "amount": "1"}
            reply = await admin.command_envelope("claude", "transfer", retry)
            assert reply.ok and reply.result is not None
            assert reply.result["balance"] == "9999"  # After t0, not after a sixth transfer.
    assert after == {**before, "now_ns": after["now_ns"]}
    assert any(e["event"] == "snapshot_format_old" for e in logs)
    recovered = next(e for e in logs if e["event"] == "journal_recovered")
    assert recovered["snapshot_seq"] == 0
    assert recovered["replayed"] == before["commands_applied"]
