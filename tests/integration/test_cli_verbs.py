"""Every CLI verb end to end against a running exchange: its JSON result, its refusal shape and its
exit status. The CLI's main runs in a worker thread (its own event loop) against an in-process
exchange found through ``--data`` (exchange.json and the admin credentials); one test runs the
real ``python -m exchange.cli.main`` as a subprocess.
"""

import csv
import io
import json
import sys
from pathlib import Path

import anyio
import pytest
from daemon_support import run_cli, running_exchange

from exchange.core.config import default_toml

pytestmark = pytest.mark.anyio


async def test_queries(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x"):
        status = await run_cli("status", "--data", data, "--json")
        assert status.status == 0, status
        assert status.json()["agents"] == 6 and status.json()["supply"] == "60000"
        balance = await run_cli("balance", "zero", "--data", data, "--json")
        assert balance.json() == {
            "agent": "zero",
            "balance": "10000",
            "earned": "0",
            "spent": "0",
            "held": "0",
        }
        history = await run_cli("history", "zero", "--limit", "5", "--data", data, "--json")
        assert [e["kind"] for e in history.json()["entries"]] == ["opening"]
        limits = await run_cli("limits", "zero", "--data", data, "--json")
        assert limits.json()["burst"] == "500" and limits.json()["hourly_remaining"] == "1000"
        agents = await run_cli("agents", "--data", data, "--json")
        assert [a["agent"] for a in agents.json()["agents"]] == [
            "claude",
            "builder",
            "lambda",
            "spark",
            "observer",
            "zero",
        ]
        unknown = await run_cli("balance", "nobody", "--data", data, "--json")
        assert unknown.status == 1
        assert unknown.json()["error"]["code"] == "unknown_agent"
        readable = await run_cli("balance", "zero", "--data", data)
        assert readable.status == 0 and "10000" in readable.stdout


async def test_money_verbs(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x"):
        transfer = await run_cli(
            "transfer", "claude", "zero", "2.5", "--memo", "tea", "--data", data, "--json"
        )
        assert transfer.json() == {
            "sender": "claude",
            "recipient": "zero",
            "amount": "2.5",
            "balance": "9997.5",
        }
        refused = await run_cli("transfer", "claude", "zero", "0.0000001", "--data", data, "--json")
        assert refused.status == 1
        assert refused.json()["error"]["code"] == "too_many_decimals"
        assert refused.json()["error"]["path"] == "$.amount"
        award = await run_cli("award", "zero", "100", "bounty", "found a bug", "--data", data)
        assert award.status == 0 and "100" in award.stdout
        commit = await run_cli(
            "commit", "zero@example.com", "claude-monitor", "fix: a crash", "--sha", "abc1234",
            "--data", data, "--json",
        )  # fmt: skip
        assert commit.json()["agent"] == "zero" and commit.json()["contract"] == "claude-monitor"
        again = await run_cli(
            "commit", "zero", "claude-monitor", "fix again", "--sha", "abc1234",
            "--data", data, "--json",
        )  # fmt: skip
        assert again.json()["error"]["code"] == "already_rewarded"
        issue = await run_cli(
            "issue", "close", "ISS-1", "--agent", "zero", "--priority", "P2", "--type", "bug",
            "--data", data, "--json",
        )  # fmt: skip
        assert issue.json()["reward"] == "450" and issue.json()["issue_type"] == "bug"
        llm = await run_cli("llm", "zero", "chat", "2000", "--data", data, "--json")
        assert llm.json()["model"] == "llama3.2" and llm.json()["cost"] == "0.2"
        model = await run_cli(
            "llm", "zero", "chat", "1000", "--model", "gpt-9", "--data", data, "--json"
        )
        assert model.json()["error"]["code"] == "unknown_model"


async def test_a_retried_request_id_is_answered_once(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x"):
        args = ("transfer", "claude", "zero", "1", "--request-id", "cli-1", "--data", data)
        first = await run_cli(*args, "--json")
        second = await run_cli(*args, "--json")
        assert first.json() == second.json()
        balance = await run_cli("balance", "zero", "--data", data, "--json")
        assert balance.json()["balance"] == "10001"


async def test_pool_verbs(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x"):
        created = await run_cli("pool", "create", "gpu", "claude", "10", "--data", data, "--json")
        assert created.status == 0, created
        pool_id = created.json()["pool_id"]
        joined = await run_cli("pool", "join", pool_id, "zero", "--data", data, "--json")
        assert "zero" in joined.json()["members"]
        for agent, amount in (("claude", "100"), ("zero", "50")):
            put = await run_cli(
                "pool", "contribute", pool_id, agent, amount, "--data", data, "--json"
            )
            assert put.status == 0, put
        spent = await run_cli(
            "pool", "spend", pool_id, "claude-sonnet", "10000", "big job", "--data", data, "--json"
        )
        assert spent.status == 0, spent
        shown = await run_cli("pool", "show", pool_id, "--data", data, "--json")
        assert shown.json()["contributed"] == "150" and shown.json()["spent"] == "30"
        closed = await run_cli("pool", "close", pool_id, "--data", data, "--json")
        assert closed.json()["closed"] is True
        missing = await run_cli("pool", "show", "pool-404", "--data", data, "--json")
        assert missing.status == 1 and missing.json()["error"]["code"] == "unknown_pool"


async def test_register_an_agent_and_set_its_limits(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x"):
        registered = await run_cli(
            "agent", "register", "scout-1", "--role", "scout", "--capabilities", "search,fetch",
            "--prefer", "coding=claude-sonnet", "--daily", "300", "--data", data, "--json",
        )  # fmt: skip
        assert registered.status == 0, registered
        assert registered.json()["agent"] == "scout-1"
        creds_file = tmp_path / "x" / "creds" / "scout-1.json"
        assert creds_file.is_file() and f"credentials: {creds_file}" in registered.stderr
        agents = await run_cli("agents", "--role", "scout", "--data", data, "--json")
        [agent] = agents.json()["agents"]
        assert agent["agent"] == "scout-1" and agent["primary_llm"] == "llama3.2"
        assert agent["capabilities"] == ["search", "fetch"]
        assert agent["preferences"] == {"coding": "claude-sonnet"}
        assert (await run_cli("limits", "scout-1", "--data", data, "--json")).json()[
            "daily"
        ] == "300"
        again = await run_cli("agent", "register", "scout-1", "--data", data, "--json")
        assert again.status == 1 and again.json()["error"]["code"] == "agent_exists"
        changed = await run_cli(
            "limits", "set", "zero", "--burst", "50", "--daily", "700", "--data", data, "--json"
        )
        assert changed.status == 0, changed
        limits = await run_cli("limits", "show", "zero", "--data", data, "--json")
        assert limits.json()["burst"] == "50" and limits.json()["daily"] == "700"
        assert limits.json()["reserve"] == "500"  # kept
        # Options the CLI cannot send are refused before anything is sent, in one line.
        for argv in (["limits", "set", "zero"], ["agent", "register", "s2", "--prefer", "x"]):
            refused = await run_cli(*argv, "--data", data, "--json")
            assert refused.status == 2 and refused.json()["error"]["code"] == "invalid_argument"


async def test_creds_acts_as_that_agent(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    zero = str(tmp_path / "x" / "creds" / "zero.json")
    async with running_exchange(tmp_path / "x"):
        moved = await run_cli(
            "transfer", "zero", "claude", "3", "--creds", zero, "--data", data, "--json"
        )
        assert moved.status == 0, moved
        assert moved.json()["sender"] == "zero" and moved.json()["balance"] == "9997"
        # The query verbs work as the agent too.
        balance = await run_cli("balance", "zero", "--creds", zero, "--json")
        assert balance.json()["balance"] == "9997"
        # Another agent's money: refused before anything is sent, in one line.
        theirs = await run_cli("transfer", "claude", "zero", "1", "--creds", zero, "--data", data)
        assert theirs.status == 2
        assert theirs.stderr.strip().count("\n") == 0 and "--creds acts as 'zero'" in theirs.stderr
        # An admin verb goes as zero, and the exchange refuses it.
        award = await run_cli("award", "zero", "100", "bounty", "self", "--creds", zero)
        assert award.status == 1 and award.stderr.strip().count("\n") == 0
        assert "not_authorized" in award.stderr or "operator only" in award.stderr, award
        award_json = await run_cli("award", "zero", "100", "x", "y", "--creds", zero, "--json")
        assert award_json.json()["error"]["code"] == "not_authorized"
        registered = await run_cli("agent", "register", "mine", "--creds", zero, "--json")
        assert registered.json()["error"]["code"] == "not_authorized"
        missing = await run_cli("status", "--creds", str(tmp_path / "none.json"), "--json")
        assert missing.json()["error"]["code"] == "local_file_unreadable"
        assert (await run_cli("balance", "zero", "--data", data, "--json")).json()[
            "balance"
        ] == "9997"


async def test_doctor_export_creds_and_config(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x"):
        await run_cli("transfer", "claude", "zero", "3", "--memo", "for export", "--data", data)
        doctor = await run_cli("doctor", "--data", data, "--json")
        assert doctor.status == 0, doctor
        report = doctor.json()
        assert report["ok"] is True and report["entries"] == 7 and report["problems"] == []
        status = await run_cli("status", "--data", data, "--json")
        assert report["digest"] == status.json()["digest"]
        as_csv = await run_cli("export", "--format", "csv", "--agent", "zero", "--data", data)
        rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
        assert [(r["kind"], r["amount_tokens"], r["memo"]) for r in rows] == [
            ("opening", "10000", "opening balance"),
            ("transfer", "3", "for export"),
        ]
        as_json = await run_cli(
            "export", "--json", "--since", "2000-01-01T00:00:00Z", "--data", data
        )
        assert len(json.loads(as_json.stdout)) == 7
        creds = await run_cli("creds", "zero", "--data", data, "--json")
        assert set(creds.json()) == {"url", "user", "nkey_seed", "inbox_prefix"}
        assert creds.json()["inbox_prefix"] == "_INBOX_zero"
        nobody = await run_cli("creds", "nobody", "--data", data, "--json")
        assert nobody.status == 1 and nobody.json()["error"]["code"] == "unknown_agent"
        shown = await run_cli("config", "show", "--data", data)
        assert shown.stdout == default_toml()
        shown_json = await run_cli("config", "show", "--data", data, "--json")
        assert shown_json.json()["config"]["opening_balance"] == "10000"


async def test_doctor_reports_a_tampered_journal(tmp_path: Path) -> None:
    import sqlite3

    async with running_exchange(tmp_path / "x"):
        pass
    with sqlite3.connect(tmp_path / "x" / "journal.sqlite") as conn:
        conn.execute("UPDATE postings SET amount_micro = amount_micro + 1 WHERE seq = 3")
    doctor = await run_cli("doctor", "--data", str(tmp_path / "x"), "--json")
    assert doctor.status == 1
    assert "hash_mismatch" in doctor.json()["problems"][0]


async def test_no_exchange_to_talk_to(tmp_path: Path) -> None:
    missing = await run_cli("status", "--data", str(tmp_path / "none"), "--json")
    assert missing.status == 3 and missing.json()["error"]["code"] == "exchange_not_found"
    dead = await run_cli("status", "--nats", "nats://127.0.0.1:1", "--json", "--timeout-s", "1")
    assert dead.status == 3 and dead.json()["error"]["code"] == "exchange_unreachable"


async def test_the_console_script_in_a_subprocess(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x"):
        command = [sys.executable, "-m", "exchange.cli.main"]
        with anyio.fail_after(60):
            ok = await anyio.run_process(
                [*command, "status", "--data", str(tmp_path / "x"), "--json"], check=False
            )
            data = str(tmp_path / "x")
            refused = await anyio.run_process(
                [*command, "transfer", "claude", "zero", "-1", "--data", data, "--json"],
                check=False,
            )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["agents"] == 6
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["code"] == "amount_must_be_positive"


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_went_away_ends_the_verb_quietly() -> None:
    from exchange.cli.main import EXIT_BROKEN_PIPE, main

    errors = io.StringIO()
    status = main(["completion", "bash"], stdout=_ClosedPipe(), stderr=errors, configure_logs=False)
    assert (status, errors.getvalue()) == (EXIT_BROKEN_PIPE, "")
