"""``exchange import`` of an export with its history (exchange/cli/importing.py; docs/economy.md,
Import): a real source exchange with varied activity is journaled, exported by the real export
function (CSV and JSON), and imported. Every agent's balance is the source's, and each agent's
postings in the new exchange's export are its postings in the old one, in order, with the same
amounts and kinds (a system account counterpart read as ``@import``); the new journal replays to
the digest the import reported (``exchange doctor``); an export that lacks the beginning of a
history is refused unless ``--balances-only``, which imports the balances as before; and a
property over random transfers and awards."""

import json
import tempfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.cli.doctor import run_doctor
from exchange.cli.importing import (
    HISTORY_BATCH_POSTINGS,
    ImportReport,
    import_exchange,
)
from exchange.core.config import EconomyConfig
from exchange.core.machine import Exchange
from exchange.daemon import limits as daemon_limits
from exchange.daemon.recovery import apply_genesis, entry_of
from exchange.journal import Journal
from exchange.journal.export import ExportFormat, export_postings
from exchange.journal.importing import ImportInputError
from protocols import commands as c
from protocols import credit as cr
from protocols import swarm as s
from protocols.ids import ADMIN
from protocols.registry import VERB_OF
from protocols.units import NS_PER_S

D = Decimal
T0 = 1_700_000_000 * NS_PER_S
AGENTS = ("claude", "builder", "lambda", "spark", "observer", "zero")
# (sender, command) in order, one second apart.
Script = Sequence[tuple[str, c.Command]]


class Source:
    """A source exchange journaled in ``data/journal.db``, as ``exchange up`` would have it."""

    def __init__(self, data: Path, script: Script) -> None:
        self.data = data
        self.exchange = Exchange(EconomyConfig())
        entries = apply_genesis(self.exchange, now_ns=T0)
        self.replies: list[dict[str, Any]] = []
        for step, (sender, command) in enumerate(script, start=1):
            at_ns = T0 + step * NS_PER_S
            outcome = self.exchange.apply(sender, command, now_ns=at_ns)
            assert outcome.ok, outcome.reply
            self.replies.append(json.loads(outcome.reply)["result"])
            entries.append(
                entry_of(
                    at_ns=at_ns,
                    sender=sender,
                    verb=VERB_OF[type(command)],
                    command=command,
                    outcome=outcome,
                )
            )
        self.exchange.check_invariants()
        data.mkdir(parents=True)
        with Journal.open(data / "journal.sqlite") as journal:
            for start in range(0, len(entries), 4096):
                journal.append_batch(entries[start : start + 4096])

    def export(self, path: Path, fmt: ExportFormat, **cut: Any) -> Path:
        with (
            Journal.open(self.data / "journal.sqlite", read_only=True) as journal,
            path.open("w", encoding="utf-8", newline="") as out,
        ):
            export_postings(journal, out, fmt, **cut)
        return path


def agent_rows(data: Path, agent: str) -> list[tuple[str, str, int]]:
    """``exchange export --agent`` of ``data``, from the agent's side: (kind, counterpart with a
    system account read as @import, signed micro-tokens)."""
    out = []
    with Journal.open(data / "journal.sqlite", read_only=True) as journal:
        for p in journal.iter_postings(agent=agent):
            mine = p.credit_account == agent
            other = p.debit_account if mine else p.credit_account
            other = "@import" if other.startswith("@") else other
            out.append((p.kind, other, p.amount_micro if mine else -p.amount_micro))
    return out


def imported(source: Path, data: Path, **options: Any) -> ImportReport:
    return import_exchange(source, data, config_text=None, now_ns=T0 * 2, **options)


def rebuilt(data: Path) -> Exchange:
    report = run_doctor(data)
    assert report.ok, report.problems
    from exchange.daemon.recovery import load_economy_config, recover

    config = load_economy_config(data / "economy.toml", None)
    with Journal.open(data / "journal.sqlite", read_only=True) as journal:
        exchange = recover(journal, config).exchange
    assert exchange.digest() == report.digest
    return exchange


def varied() -> Script:
    """Transfers, an award, a commit, inference paid at once and through a hold, an escrow paid
    out and one still locked, and a stake: system accounts of every kind on the other side."""
    return [
        ("claude", c.Transfer(request_id="t1", to="zero", amount=D("12.345678"), memo="thanks")),
        (ADMIN, c.Award(request_id="a1", agent="spark", amount=D(42), source="ci")),
        (ADMIN, c.Commit(request_id="c1", author="builder@x.y", project="p", message="fix: bug")),
        ("builder", c.LlmRequest(request_id="l1", task_type="code", tokens=5000)),
        ("zero", c.LlmAuthorize(request_id="h1", task_type="chat", tokens=2000)),
        ("zero", c.LlmSettle(request_id="h2", authorization_id="auth-1", tokens=700)),
        ("lambda", s.LockEscrow(request_id="e1", payee="observer", amount=D(100))),
        ("lambda", s.ReleaseEscrow(request_id="e2", escrow_id="escrow-1")),
        ("lambda", s.LockEscrow(request_id="e3", payee="claude", amount=D(7))),
        ("spark", cr.Stake(request_id="s1", amount=D(150), lock_s=86_400)),
        ("zero", c.Transfer(request_id="t2", to="claude", amount=D("0.000001"))),
    ]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_export_imports_with_every_agents_balance_and_history(tmp_path: Path, fmt: str) -> None:
    source = Source(tmp_path / "old", varied())
    export = source.export(tmp_path / f"export.{fmt}", fmt)  # type: ignore[arg-type]
    report = imported(export, tmp_path / "new")
    new = rebuilt(tmp_path / "new")
    old_book, new_book = source.exchange.ledger.book, new.ledger.book
    for agent in AGENTS:
        assert new_book.balance(agent) == old_book.balance(agent), agent
        assert agent_rows(tmp_path / "new", agent) == agent_rows(tmp_path / "old", agent), agent
    # The money lambda left in escrow and spark staked are @import's now; nothing was minted.
    assert old_book.balance("@escrow") == 7_000_000 and new_book.balance("@escrow") == 0
    assert new_book.supply_micro() == 0
    assert -new_book.balance("@import") == sum(old_book.balance(a) for a in AGENTS)
    assert report.digest == new.digest() and report.seq == new.seq
    # Some postings touched no agent (the hold's payment from @escrow to its model).
    assert report.history_skipped > 0
    assert report.history_posted + report.history_skipped == sum(
        1 for _ in Journal.open(tmp_path / "old" / "journal.sqlite", read_only=True).iter_postings()
    )
    new.check_invariants()


def test_earned_and_spent_are_those_of_a_balances_only_import(tmp_path: Path) -> None:
    source = Source(tmp_path / "old", varied())
    export = source.export(tmp_path / "export.csv", "csv")
    imported(export, tmp_path / "history")
    imported(export, tmp_path / "balances", balances_only=True)
    with_history, balances = rebuilt(tmp_path / "history"), rebuilt(tmp_path / "balances")
    for agent in AGENTS:
        a, b = with_history.ledger.agents[agent], balances.ledger.agents[agent]
        assert (a.earned_micro, a.spent_micro) == (b.earned_micro, b.spent_micro), agent
    assert with_history.ledger.agents["spark"].earned_micro == 42_000_000
    assert with_history.ledger.agents["builder"].spent_micro > 0
    # The totals are the source exchange's own: rewards, a task's payment from escrow (observer),
    # inference paid directly (builder) and from a hold (zero).
    for agent in AGENTS:
        old, new = source.exchange.ledger.agents[agent], with_history.ledger.agents[agent]
        assert (new.earned_micro, new.spent_micro) == (old.earned_micro, old.spent_micro), agent
    assert with_history.ledger.agents["observer"].earned_micro > 0
    assert with_history.ledger.agents["zero"].spent_micro > 0


def test_a_memo_names_the_original_entry_time_and_accounts(tmp_path: Path) -> None:
    source = Source(tmp_path / "old", varied())
    imported(source.export(tmp_path / "e.json", "json"), tmp_path / "new")
    with Journal.open(tmp_path / "new" / "journal.sqlite", read_only=True) as journal:
        memos = [p.memo for p in journal.iter_postings(agent="claude") if p.kind == "transfer"]
    assert memos[0] == "[imported entry 7, 2023-11-14T22:13:21.000000000Z, claude -> zero] thanks"


def test_an_export_cut_with_since_is_refused_unless_balances_only(tmp_path: Path) -> None:
    # After the cut claude pays before it is paid: its history lacks its beginning.
    script = [
        ("claude", c.Transfer(request_id="t1", to="zero", amount=D(5))),
        (ADMIN, c.Award(request_id="a1", agent="claude", amount=D(100), source="ci")),
    ]
    source = Source(tmp_path / "old", script)
    cut = source.export(tmp_path / "cut.csv", "csv", since_ns=T0 + 1)
    with pytest.raises(ImportInputError, match="--balances-only") as refused:
        imported(cut, tmp_path / "new")
    assert "claude" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "new").exists()
    report = imported(cut, tmp_path / "new", balances_only=True)
    # The two agents the cut export names, each registered, then opened.
    assert (report.agents, report.history_posted, report.seq) == (2, 0, 4)
    new = rebuilt(tmp_path / "new")
    assert new.ledger.book.balance("claude") == 95_000_000
    assert new.ledger.book.balance("zero") == 5_000_000
    assert agent_rows(tmp_path / "new", "claude") == [("opening", "@import", 95_000_000)]


def test_a_long_history_is_cut_into_batches_the_daemon_would_take(tmp_path: Path) -> None:
    memo = "ü" * 4096  # the longest memo, in two bytes a character
    script = [
        (
            ("claude", "zero")[i % 2],
            c.Transfer(request_id=f"t{i}", to=("zero", "claude")[i % 2], amount=D(1), memo=memo),
        )
        for i in range(40)
    ] + [
        ("spark", c.Transfer(request_id=f"u{i}", to="observer", amount=D("0.5")))
        for i in range(2 * HISTORY_BATCH_POSTINGS)
    ]
    source = Source(tmp_path / "old", script)
    report = imported(source.export(tmp_path / "e.csv", "csv"), tmp_path / "new")
    with Journal.open(tmp_path / "new" / "journal.sqlite", read_only=True) as journal:
        bodies = [e.body for e in journal.iter_entries() if e.verb == "import.history"]
    assert len(bodies) >= 5
    assert max(len(b) for b in bodies) <= daemon_limits.message_bytes_max
    sizes = [len(msgspec.json.decode(b)["postings"]) for b in bodies]
    assert max(sizes) <= HISTORY_BATCH_POSTINGS and sum(sizes) == report.history_posted
    new = rebuilt(tmp_path / "new")
    assert new.ledger.book.balance("observer") == 10_000_000_000 + HISTORY_BATCH_POSTINGS * 10**6


def test_wallet_files_import_as_before(tmp_path: Path) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "seed1" / "scheme-exchange"
    report = imported(fixtures, tmp_path / "new")
    assert (report.history_posted, report.seq) == (0, 7)
    new = rebuilt(tmp_path / "new")
    assert {p.kind for p in new.ledger.book.histories["claude"]} == {"opening"}


transfer_or_award = st.tuples(
    st.sampled_from(["transfer", "award"]),
    st.sampled_from(AGENTS),
    st.sampled_from(AGENTS),
    st.integers(min_value=1, max_value=20_000_000_000),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(transfer_or_award, max_size=30), fmt=st.sampled_from(["csv", "json"]))
def test_any_transfers_and_awards_import_with_the_same_balances_and_histories(
    steps: list[tuple[str, str, str, int]], fmt: ExportFormat
) -> None:
    balances = dict.fromkeys(AGENTS, 10_000_000_000)
    script: list[tuple[str, c.Command]] = []
    for i, (verb, sender, to, micro) in enumerate(steps):
        amount = D(micro).scaleb(-6)
        if verb == "award":
            script.append((ADMIN, c.Award(request_id=f"r{i}", agent=to, amount=amount, source="p")))
            balances[to] += micro
        elif sender != to and micro <= balances[sender] - 1_000_000_000:  # within the reserve
            script.append((sender, c.Transfer(request_id=f"r{i}", to=to, amount=amount)))
            balances[sender] -= micro
            balances[to] += micro
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = Source(root / "old", script)
        report = imported(source.export(root / f"e.{fmt}", fmt), root / "new")
        new = rebuilt(root / "new")
        new.check_invariants()
        assert report.history_skipped == 0
        for agent in AGENTS:
            assert new.ledger.book.balance(agent) == balances[agent]
            assert agent_rows(root / "new", agent) == agent_rows(root / "old", agent)
            assert new.ledger.agents[agent].earned_micro == (
                source.exchange.ledger.agents[agent].earned_micro
            )
