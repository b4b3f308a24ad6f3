"""``exchange import`` (docs/economy.md, Import): an exchange exported as CSV and as JSON imports
into a new data directory with the same agent balances and each agent's history (``exchange
export --agent`` lists the same movements); ``--balances-only`` opens the balances alone; seed
1's wallet files import with their tokens, earned and spent; ``exchange doctor`` passes on each
new journal, which has its own digest; ``exchange up`` (a real process) starts on it; and every
bad file is refused with one line, leaving nothing behind."""

import json
from pathlib import Path

import pytest
from daemon_support import DaemonProcess, client_for, free_port, run_cli, running_exchange

from exchange.daemon.creds import read_credentials
from protocols.client import connect

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "seed1"
AGENTS = ("builder", "claude", "lambda", "observer", "spark", "zero")


async def _balances(data: Path) -> dict[str, dict[str, str]]:
    """Each agent's balance, earned and spent, asked of the exchange running on ``data``."""
    async with running_exchange(data) as handle, client_for(handle) as admin:
        agents = (await admin.query_envelope("agents", {})).result["agents"]
        out = {}
        for agent in sorted(a["agent"] for a in agents):
            result = (await admin.query_envelope("balance", {"agent": agent})).result
            out[agent] = {k: result[k] for k in ("balance", "earned", "spent")}
        return out


async def _doctor(data: Path) -> dict[str, object]:
    doctor = await run_cli("doctor", "--data", str(data), "--json")
    assert doctor.status == 0, (doctor.stdout, doctor.stderr)
    report: dict[str, object] = doctor.json()
    return report


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_an_export_imports_with_the_same_balances(tmp_path: Path, fmt: str) -> None:
    old, new, exported = tmp_path / "old", tmp_path / "new", tmp_path / f"export.{fmt}"
    async with running_exchange(old) as handle, client_for(handle) as admin:
        commands: list[tuple[str, str, dict[str, object]]] = [
            ("claude", "transfer", {"to": "zero", "amount": "12.345678"}),
            ("builder", "llm", {"task_type": "code", "tokens": 5000}),
            ("admin", "award", {"agent": "spark", "amount": "42", "source": "t"}),
            ("lambda", "escrow.lock", {"payee": "observer", "amount": "100"}),
        ]
        for sender, verb, body in commands:
            envelope = await admin.command_envelope(sender, verb, body)
            assert envelope.ok, envelope
    before = await _balances(old)
    export = await run_cli("export", "--data", str(old), "--format", fmt, "--output", str(exported))
    assert export.status == 0, export.stderr
    imported = await run_cli("import", str(exported), "--data", str(new), "--json")
    assert imported.status == 0, (imported.stdout, imported.stderr)
    report = imported.json()
    # The genesis, one batch of history, one of earned and spent totals.
    assert report["agents"] == len(AGENTS) and report["seq"] == len(AGENTS) + 2
    assert report["history_posted"] == len(AGENTS) + len(commands)
    after = await _balances(new)
    # Agent balances: lambda's 100 in escrow stay in the old exchange's @escrow.
    assert after == before  # balance, earned and spent of every agent
    assert before["lambda"]["balance"] == "9900"
    assert after["builder"]["spent"] == "0.5" and after["spark"]["earned"] == "42"
    for agent in AGENTS:
        assert await _history(new, agent) == await _history(old, agent), agent
    doctor = await _doctor(new)
    assert doctor["ok"] is True and doctor["supply"] == "0"
    # Its own journal and digest: the report's is the one doctor replays to, not the old one's.
    assert report["digest"] == doctor["digest"] != (await _doctor(old))["digest"]
    # --balances-only: one opening entry per agent, as an import without history makes.
    only = await run_cli(
        "import", str(exported), "--data", str(tmp_path / "only"), "--balances-only", "--json"
    )
    assert only.status == 0, (only.stdout, only.stderr)
    assert (only.json()["seq"], only.json()["history_posted"]) == (2 * len(AGENTS), 0)
    assert await _balances(tmp_path / "only") == before
    assert await _history(tmp_path / "only", "builder") == [["opening", "@import", "9999.5"]]


async def _history(data: Path, agent: str) -> list[list[str]]:
    """``exchange export --agent`` from the agent's side: kind, counterpart (a system account
    read as @import), signed amount."""
    export = await run_cli("export", "--data", str(data), "--agent", agent, "--format", "json")
    assert export.status == 0, export.stderr
    rows = []
    for p in json.loads(export.stdout):
        mine = p["credit_account"] == agent
        other = p["debit_account"] if mine else p["credit_account"]
        amount = p["amount_tokens"] if mine else f"-{p['amount_tokens']}"
        rows.append([p["kind"], "@import" if other.startswith("@") else other, amount])
    return rows


async def test_seed_one_wallets_import_and_the_daemon_starts_on_them(tmp_path: Path) -> None:
    new = tmp_path / "new"
    imported = await run_cli("import", str(FIXTURES / "scheme-exchange"), "--data", str(new))
    assert imported.status == 0, (imported.stdout, imported.stderr)
    await _doctor(new)
    async with DaemonProcess(new, free_port()).running() as daemon:
        assert daemon.events
        creds = read_credentials(new / "creds" / "admin.json")
        assert creds is not None
        async with connect(creds, reconnect=False, attempts_max=1) as admin:
            got = {
                agent: (await admin.query_envelope("balance", {"agent": agent})).result
                for agent in ("builder", "claude", "oracle-7", "zero")
            }
            supply = (await admin.query_envelope("status", {})).result["supply"]
    assert got["claude"]["balance"] == "10000"
    assert (got["builder"]["balance"], got["builder"]["earned"]) == ("10237.5", "312.75")
    assert got["builder"]["spent"] == "75.25" and got["oracle-7"]["balance"] == "0.000001"
    assert got["zero"]["balance"] == "0"
    # Nothing was minted: every imported token came from @import.
    assert supply == "0"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("bad/unclosed.wallet", "ends before its closing parenthesis"),
        ("bad/negative.wallet", "0 or more"),
        ("bad/decimals.wallet", "at most 6 decimals"),
        ("bad/notokens.wallet", "(tokens . NUMBER) is missing"),
        ("bad/Bad.Name.wallet", "is not an agent id"),
        ("bad", "holds no .wallet file"),
        ("missing.csv", "cannot be read"),
    ],
)
async def test_a_bad_file_is_refused_in_one_line_and_leaves_nothing(
    tmp_path: Path, name: str, words: str
) -> None:
    source = FIXTURES / name
    if name == "bad":
        source = tmp_path / "empty"
        source.mkdir()
    new = tmp_path / "new"
    result = await run_cli("import", str(source), "--data", str(new), "--json")
    assert result.status != 0
    error = result.json()["error"]
    assert error["code"] == "import_refused" and words in error["message"], error
    assert "\n" not in error["message"]
    assert not new.exists()


async def test_exports_that_are_not_exports_are_refused(tmp_path: Path) -> None:
    cases = {
        "x.csv": "seq,amount\n1,2\n",
        "y.json": '[{"debit_account": "@mint"}]',
        "z.json": "[1, 2",
        "nul.csv": "seq,idx\0\n",
        "latin.csv": "seq,\xe9\n",
        "w.csv": "seq,idx,at,at_ns,sender,verb,debit_account,credit_account,amount_tokens,"
        "amount_micro,kind,memo\n1,0,t,1,admin,award,@mint,zero,1,1.5,award,\n",
    }
    for file_name, text in cases.items():
        path = tmp_path / file_name
        path.write_bytes(text.encode("latin-1"))
        result = await run_cli("import", str(path), "--data", str(tmp_path / "n"), "--json")
        assert result.status != 0 and result.json()["error"]["code"] == "import_refused"
        assert str(path) in result.json()["error"]["message"]
    existing = tmp_path / "existing"
    first = await run_cli("import", str(FIXTURES / "scheme-exchange"), "--data", str(existing))
    assert first.status == 0
    again = await run_cli(
        "import", str(FIXTURES / "scheme-exchange"), "--data", str(existing), "--json"
    )
    assert "already holds an exchange" in again.json()["error"]["message"]
    assert json.loads((await run_cli("doctor", "--data", str(existing), "--json")).stdout)["ok"]
