"""Compute futures over a real nats-server and a secure exchange: agents write, take, list and
resell futures with their own credentials, and the expiry settles the future through a journaled
tick. Every wait is for a reply or an event, under fail_after."""

from pathlib import Path

import anyio
import msgspec
import pytest
from daemon_support import client_for, run_cli, running_exchange

from exchange.journal import Journal
from protocols import subjects
from protocols.client import flush_commands

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
# Short expiries, so that settlement happens within the test.
CONFIG = "[futures]\nmin_expiry_s = 1\n"


async def test_a_future_is_written_taken_resold_and_settled_at_expiry(tmp_path: Path) -> None:
    async with (
        running_exchange(tmp_path / "x", config_text=CONFIG) as handle,
        client_for(handle, "claude") as claude,
        client_for(handle, "builder") as builder,
        client_for(handle, "lambda") as lambda_,
    ):
        offer = await claude.command_envelope(
            "claude",
            "future.write",
            {"model": "claude-opus", "tokens": 10_000, "price": "15", "expires_in_s": 4},
        )
        assert offer.ok, offer
        future_id = offer.result["future_id"]
        assert (offer.result["margin"], offer.result["state"]) == ("150", "offered")
        mismatch = await builder.command_envelope(
            "builder", "future.take", {"future_id": future_id, "price": "149"}
        )
        assert mismatch.error is not None and mismatch.error.code == "price_mismatch"
        taken = await builder.command_envelope(
            "builder", "future.take", {"future_id": future_id, "price": "150"}
        )
        assert taken.ok and taken.result["holder"] == "builder", taken
        listed = await builder.command_envelope(
            "builder", "future.list", {"future_id": future_id, "price": "151", "to": "lambda"}
        )
        assert listed.ok, listed
        subscription = await lambda_.nc.subscribe(subjects.event("lambda", "posting"))
        await flush_commands(lambda_.nc)
        bought = await lambda_.command_envelope(
            "lambda", "future.take", {"future_id": future_id, "price": "151"}
        )
        assert bought.ok and bought.result["holder"] == "lambda", bought
        kinds = []
        with anyio.fail_after(WAIT_S):
            async for msg in subscription.messages:
                kinds.append(msgspec.json.decode(msg.data)["kind"])
                if kinds[-1] == "future.settle":
                    break
        assert kinds == ["future.sale", "future.settle"]
        shown = await lambda_.query_envelope("future", {"future_id": future_id})
        assert shown.result["state"] == "settled"
        assert (shown.result["to_holder"], shown.result["to_writer"]) == ("150", "150")
        balances = {
            agent: (await claude.query_envelope("balance", {"agent": agent})).result["balance"]
            for agent in ("claude", "builder", "lambda")
        }
        assert balances == {"claude": "10000", "builder": "10001", "lambda": "9999"}
        cli = await run_cli("futures", "--agent", "lambda", "--data", str(tmp_path / "x"), "--json")
        assert cli.status == 0, cli.stderr
        assert [f["future_id"] for f in cli.json()["futures"]] == [future_id]
    with Journal.open(tmp_path / "x" / "journal.sqlite", read_only=True) as journal:
        settled = [r for r in journal.iter_postings() if r.kind == "future.settle"]
    assert {(r.debit_account, r.credit_account) for r in settled} == {
        (f"@future.{future_id}", "lambda"),
        (f"@future.{future_id}.margin", "claude"),
    }
