"""Staking and lending over NATS (docs/economy.md, Staking and Lending): agents with their own
credentials stake and lend; a refusal comes back with its code; the due time is a journaled tick
whose postings arrive as events; the CLI shows stakes and loans. Short terms and locks come from
the economy's config, so the timers fire within seconds; every wait is for a message."""

from pathlib import Path

import anyio
import msgspec
import pytest
from daemon_support import client_for, run_cli, running_exchange

from protocols import subjects
from protocols.client import flush_commands

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
CONFIG = """
[staking]
lock_min_s = 1
[lending]
term_min_s = 1
"""


async def test_an_agent_stakes_and_lends_and_a_default_is_a_journaled_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "x"
    async with (
        running_exchange(data, config_text=CONFIG) as handle,
        client_for(handle, "zero") as zero,
        client_for(handle, "claude") as claude,
    ):
        staked = await zero.command_envelope("zero", "stake", {"amount": "1000", "lock_s": 3600})
        assert staked.ok, staked
        unstake = await zero.command_envelope(
            "zero", "stake.unstake", {"stake_id": staked.result["stake_id"]}
        )
        assert unstake.error is not None and unstake.error.code == "stake_locked"
        to_self = await zero.command_envelope(
            "zero",
            "loan.offer",
            {"borrower": "zero", "principal": "1", "rate_per_day": "0", "term_s": 60},
        )
        assert to_self.error is not None and to_self.error.code == "self_dealing"
        zero_term = await claude.command_envelope(
            "claude",
            "loan.offer",
            {"borrower": "zero", "principal": "1", "rate_per_day": "0", "term_s": 0},
        )
        assert zero_term.error is not None and zero_term.error.code == "parameter_out_of_bounds"

        events = await claude.nc.subscribe(subjects.event("claude", "posting"))
        await flush_commands(claude.nc)
        offered = await claude.command_envelope(
            "claude",
            "loan.offer",
            {
                "borrower": "zero",
                "principal": "1000",
                "rate_per_day": "0.05",
                "term_s": 2,
                "collateral": "200",
            },
        )
        assert offered.ok, offered
        loan_id = offered.result["loan_id"]
        accepted = await zero.command_envelope("zero", "loan.accept", {"loan_id": loan_id})
        assert accepted.ok and accepted.result["state"] == "active", accepted
        # zero (10,000 - 1,000 staked + 1,000 lent - 200 held) keeps 700, 200 above its reserve:
        # the due time collects 200, then the collateral's 200; 1,000.001157 was owed.
        spent = await zero.command_envelope("zero", "transfer", {"to": "spark", "amount": "9100"})
        assert spent.ok, spent
        kinds = []
        with anyio.fail_after(WAIT_S):
            async for msg in events.messages:
                kinds.append(msgspec.json.decode(msg.data)["kind"])
                if kinds[-1] == "loan.collateral":
                    break
        assert "loan.collect" in kinds, kinds
        await events.unsubscribe()

        loan = await claude.query_envelope("loan", {"loan_id": loan_id})
        assert (loan.result["state"], loan.result["owed"]) == ("defaulted", "600.001157")
        balance = await claude.query_envelope("balance", {"agent": "zero"})
        assert balance.result["defaults"] == 1
        assert balance.result["owed"] == "600.001157"
        assert balance.result["staked"] == "1000"

    # The journal replays to the same state, and the CLI reads it back, in 80 columns.
    monkeypatch.setenv("COLUMNS", "80")
    async with running_exchange(data):
        for verb, state in ((("loans",), "defaulted"), (("stakes", "zero"), "locked")):
            table = await run_cli(*verb, "--data", str(data))
            assert table.status == 0 and state in table.stdout, table
            assert max(len(line) for line in table.stdout.splitlines()) <= 80, table.stdout
        loans = await run_cli("loans", "--agent", "zero", "--data", str(data), "--json")
        assert loans.status == 0, loans.stderr
        assert [x["state"] for x in loans.json()["loans"]] == ["defaulted"]
        stakes = await run_cli("stakes", "zero", "--data", str(data), "--json")
        assert stakes.json()["vote_weight"] == "0.99"  # (1.0 - 0.1 for the default) x 1.1
        assert stakes.json()["active"] == "1000"
    # Offline, doctor replays the journal (stakes, loans and the default included) and checks
    # every invariant, the stake and loan accounts among them.
    doctor = await run_cli("doctor", "--data", str(data), "--json")
    assert doctor.status == 0 and doctor.json()["ok"] is True, doctor
