"""The daemon end to end on a real nats-server: a reply only after the journal has the command,
idempotent retries, ordered queries, events, timers, the service API, overload and a draining stop.
Every wait is for a reply, an event or a message, under fail_after.
"""

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from daemon_support import client_for, run_cli, running_exchange, status_of
from nats.aio.msg import Msg

from exchange.journal import Journal
from protocols import subjects
from protocols.client import flush_commands, new_request_id

pytestmark = pytest.mark.anyio

WAIT_S = 10.0


async def test_transfer_is_journaled_before_its_reply(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        envelope = await admin.command_envelope(
            "claude", "transfer", {"to": "zero", "amount": "12.5", "memo": "lunch"}
        )
        assert envelope.ok, envelope
        assert envelope.result == {
            "sender": "claude",
            "recipient": "zero",
            "amount": "12.5",
            "balance": "9987.5",
        }
        # The reply came, so the entry is committed: a separate read-only reader sees it.
        with Journal.open(tmp_path / "x" / "journal.sqlite", read_only=True) as journal:
            last = list(journal.iter_entries(after_seq=journal.last_seq - 1))[-1]
        assert (last.sender, last.verb) == ("claude", "transfer")
        assert msgspec.json.decode(last.reply) == {"ok": True, "result": envelope.result}
        assert [(p.debit_account, p.credit_account, p.amount_micro) for p in last.postings] == [
            ("claude", "zero", 12_500_000)
        ]


async def test_a_retried_request_id_gets_the_first_reply_and_no_second_effect(
    tmp_path: Path,
) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        body = {"request_id": new_request_id(), "to": "zero", "amount": "1"}
        first = await admin.command_envelope("claude", "transfer", body)
        again = await admin.command_envelope("claude", "transfer", body)
        assert first == again and first.ok
        balance = await admin.query_envelope("balance", {"agent": "zero"})
        assert balance.result["balance"] == "10001"
        changed = await admin.command_envelope("claude", "transfer", {**body, "amount": "2"})
        assert not changed.ok and changed.error is not None
        assert changed.error.code == "request_id_reused"


async def test_a_refusal_is_journaled_and_changes_nothing(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        before = await status_of(admin)
        refused = await admin.command_envelope(
            "claude", "transfer", {"to": "zero", "amount": "99999"}
        )
        assert refused.error is not None and refused.error.code == "reserve_would_be_breached"
        after = await status_of(admin)
        assert after["digest"] == before["digest"]
        # Journaled like any command, so a replay stamps and fires timers identically.
        assert after["commands_applied"] == before["commands_applied"] + 1


async def test_a_query_sent_after_a_command_sees_it(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        results: dict[str, Any] = {}

        async def transfer() -> None:
            results["transfer"] = await admin.command_envelope(
                "claude", "transfer", {"to": "zero", "amount": "3"}
            )

        async def balance() -> None:
            results["balance"] = await admin.query_envelope("balance", {"agent": "zero"})

        # Both in flight at once on one connection: the query is queued behind the command.
        async with anyio.create_task_group() as tg:
            tg.start_soon(transfer)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(balance)
        assert results["transfer"].ok
        assert results["balance"].result["balance"] == "10003"


async def test_postings_are_published_to_the_agents_they_touch(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        subscription = await admin.nc.subscribe(subjects.event("zero", "posting"))
        await flush_commands(admin.nc)
        reply = await admin.command_envelope(
            "claude", "transfer", {"to": "zero", "amount": "4", "memo": "m"}
        )
        with anyio.fail_after(WAIT_S):
            msg = await anext(aiter(subscription.messages))
        event = msgspec.json.decode(msg.data)
        assert reply.ok
        assert event["debit_account"] == "claude" and event["credit_account"] == "zero"
        assert (event["amount"], event["kind"], event["memo"]) == ("4", "transfer", "m")
        assert event["verb"] == "transfer" and event["sender"] == "claude"
        await subscription.unsubscribe()


async def test_a_timer_fires_through_a_journaled_tick(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        subscription = await admin.nc.subscribe(subjects.event("claude", "posting"))
        await flush_commands(admin.nc)
        held = await admin.command_envelope(
            "claude", "llm.authorize", {"task_type": "code", "tokens": 1000, "timeout_s": 1}
        )
        assert held.ok, held
        assert held.result["held"] == "15"
        kinds = []
        with anyio.fail_after(WAIT_S):
            async for msg in subscription.messages:
                kinds.append(msgspec.json.decode(msg.data)["kind"])
                if kinds[-1].startswith("void"):
                    break
        # The expiry was a Tick from sender "exchange", journaled with its postings.
        with Journal.open(tmp_path / "x" / "journal.sqlite", read_only=True) as journal:
            last = list(journal.iter_entries(after_seq=journal.last_seq - 1))[-1]
        assert (last.sender, last.verb) == ("exchange", "tick")
        assert last.postings[0].kind == "void.llm"
        balance = await admin.query_envelope("balance", {"agent": "claude"})
        assert balance.result["balance"] == "10000"
        await subscription.unsubscribe()


async def test_the_service_api_answers_as_exchange(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        await admin.query_envelope("status")
        ping = msgspec.json.decode((await admin.nc.request("$SRV.PING", b"", timeout=5)).data)
        assert ping["type"] == "io.nats.micro.v1.ping_response"
        assert (ping["name"], ping["id"]) == ("exchange", handle.service_id)
        info = msgspec.json.decode(
            (await admin.nc.request("$SRV.INFO.exchange", b"", timeout=5)).data
        )
        assert {e["subject"] for e in info["endpoints"]} >= {"exchange.cmd.>", "exchange.query.>"}
        stats = msgspec.json.decode(
            (
                await admin.nc.request(f"$SRV.STATS.exchange.{handle.service_id}", b"", timeout=5)
            ).data
        )
        queries = next(e for e in stats["endpoints"] if e["name"] == "queries")
        assert stats["type"] == "io.nats.micro.v1.stats_response"
        assert queries["num_requests"] == 1 and queries["num_errors"] == 0


async def test_a_full_queue_answers_overloaded_at_once(tmp_path: Path) -> None:
    async with (
        running_exchange(tmp_path / "x", inbound_queue_size_max=1) as handle,
        client_for(handle) as admin,
    ):
        before = await status_of(admin)
        codes: list[str] = []

        async def send(index: int) -> None:
            body = msgspec.json.encode(
                {"request_id": f"flood-{index}", "to": "zero", "amount": "0.000001"}
            )
            msg: Msg = await admin.nc.request(
                subjects.command("claude", "transfer"), body, timeout=WAIT_S
            )
            envelope = msgspec.json.decode(msg.data)
            codes.append("ok" if envelope["ok"] else envelope["error"]["code"])

        async with anyio.create_task_group() as tg:
            for index in range(300):
                tg.start_soon(send, index)
        assert len(codes) == 300
        assert set(codes) <= {"ok", "overloaded"}
        assert "overloaded" in codes
        after = await status_of(admin)
        # An overloaded command was never applied: only the accepted ones were journaled.
        assert after["commands_applied"] - before["commands_applied"] == codes.count("ok")


async def test_a_clean_stop_answers_every_command_already_received(tmp_path: Path) -> None:
    replies: list[bool] = []
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:

        async def send(index: int) -> None:
            body = msgspec.json.encode(
                {"request_id": f"drain-{index}", "to": "zero", "amount": "0.01"}
            )
            msg = await admin.nc.request(
                subjects.command("claude", "transfer"), body, timeout=WAIT_S
            )
            replies.append(msgspec.json.decode(msg.data)["ok"])

        async with anyio.create_task_group() as tg:
            for index in range(200):
                tg.start_soon(send, index)
            await anyio.wait_all_tasks_blocked()
            await flush_commands(admin.nc)
            handle.stop()
    assert replies == [True] * 200
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        balance = await admin.query_envelope("balance", {"agent": "zero"})
        assert balance.result["balance"] == "10002"


async def test_the_longest_memo_the_protocol_allows_is_journaled_whole(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        memo = "😀" * 4096  # the protocol's 4,096 characters, 16 KiB of UTF-8
        reply = await admin.command_envelope(
            "claude", "transfer", {"to": "zero", "amount": "1", "memo": memo}
        )
        assert reply.ok, reply
        history = await admin.query_envelope("history", {"agent": "zero", "limit": 1})
        assert history.result["entries"][0]["memo"] == memo  # The ledger keeps it whole.
        with Journal.open(tmp_path / "x" / "journal.sqlite", read_only=True) as journal:
            last = list(journal.iter_entries(after_seq=journal.last_seq - 1))[-1]
        assert last.postings[0].memo == memo
    doctor = await run_cli("doctor", "--data", str(tmp_path / "x"), "--json")
    assert doctor.json()["ok"] is True, doctor
