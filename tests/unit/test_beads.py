"""The beads integration: parsing beads-shaped JSONL fixtures (good and malformed lines), the
would-be rewards under the default and a custom economy, ``sync`` against ``FakeExchange`` (a test
double of ``RewardSender`` that keeps the exchange's issue rules), and the ``exchange issues``
commands, with ``bd`` absent or replaced by a small script that records its arguments.

Fixtures (tests/fixtures/beads/) follow beads' own ``.beads/issues.jsonl``: compact lines with
``description``, ``created_at``/``updated_at``/``closed_at``, ``close_reason``, ``labels``,
``dependencies`` and tombstones, and ``priority`` left out when it is 0 (Go's omitempty).
"""

import importlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from pathlib import Path
from types import FunctionType

import msgspec
import pytest

from exchange.core.config import EconomyConfig, parse_config
from exchange.core.rewards import RewardRules
from exchange.integrations import beads
from exchange.integrations.beads import SyncStatus
from exchange.integrations.cli import issues_main
from exchange.integrations.sender import ExchangeTarget, ExchangeUnreachableError, RewardSender
from protocols.amounts import format_micro
from protocols.commands import Command, IssueClose
from protocols.results import Envelope, ErrorBody

FIXTURES = Path(__file__).parent.parent / "fixtures" / "beads"
RULES = RewardRules(EconomyConfig())
AGENTS = ("claude", "builder", "lambda", "spark", "observer", "zero")


class FakeExchange:
    """A RewardSender double: the exchange's issue rules (unknown agents refused, an issue id paid
    once, a request id answered by its first reply), no NATS. ``down_after`` stops answering."""

    def __init__(self) -> None:
        self.down = False
        self.down_after: int | None = None
        self.sent: list[IssueClose] = []
        self.rewarded: set[str] = set()
        self.replies: dict[str, Envelope] = {}

    @contextmanager
    def open(self) -> Iterator[RewardSender]:
        if self.down:
            raise ExchangeUnreachableError("no exchange (fake is down)")
        yield self

    def opener(
        self, target: ExchangeTarget, timeout_s: float
    ) -> Callable[[], AbstractContextManager[RewardSender]]:
        return self.open

    def send(self, verb: str, command: Command) -> Envelope:
        if self.down_after is not None and len(self.sent) >= self.down_after:
            raise ExchangeUnreachableError("no reply (fake stopped)")
        assert verb == "issue.close" and isinstance(command, IssueClose)
        self.sent.append(command)
        if command.request_id in self.replies:
            return self.replies[command.request_id]
        if command.agent not in AGENTS:
            return _refusal("unknown_agent")
        if command.issue_id in self.rewarded:
            return _refusal("already_rewarded")
        reward = RULES.quote_issue(command.priority, command.issue_type)
        assert reward is not None
        self.rewarded.add(command.issue_id)
        reply = Envelope(
            ok=True,
            result={
                "agent": command.agent,
                "issue_id": command.issue_id,
                "reward": format_micro(reward),
                "priority": command.priority,
                "issue_type": command.issue_type,
                "balance": "10000",
            },
        )
        self.replies[command.request_id] = reply
        return reply


def _refusal(code: str) -> Envelope:
    return Envelope(ok=False, error=ErrorBody(code=code, message=f"refused: {code}"))


def _lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines()


def _issues(name: str = "issues.jsonl") -> dict[str, beads.BeadsIssue]:
    issues, problems = beads.parse_issues(_lines(name))
    if name == "issues.jsonl":
        assert problems == []
    return {issue.id: issue for issue in issues}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with the good fixture as its .beads/issues.jsonl."""
    (tmp_path / ".beads").mkdir()
    (tmp_path / ".beads" / "issues.jsonl").write_bytes((FIXTURES / "issues.jsonl").read_bytes())
    return tmp_path


# Parsing.


def test_parse_reads_what_rewards_need_and_skips_the_rest() -> None:
    issues = _issues()
    assert len(issues) == 11
    bug = issues["ate-1a2"]
    assert (bug.status, bug.priority, bug.issue_type, bug.assignee) == ("open", 1, "bug", "claude")
    assert bug.priority_name == "P2"
    feature = issues["ate-3b4"]
    assert feature.priority == 0 and feature.priority_name == "P1", "beads omits priority 0"
    assert feature.agent == "builder", "an email assignee counts by its local part"
    assert feature.closed_at == "2025-12-12T16:40:11.905114-08:00"
    assert issues["ate-7d8"].labels == ["docs", "cleanup"]
    assert issues["ate-9e0"].assignee is None and issues["ate-9e0"].agent is None
    assert not issues["ate-af1"].is_open and not issues["ate-3b4"].is_open
    assert issues["ate-e89"].is_open  # blocked counts as open


def test_malformed_lines_are_reported_by_number_and_skipped() -> None:
    issues, problems = beads.parse_issues(_lines("malformed.jsonl"))
    assert [issue.id for issue in issues] == ["ate-102", "ate-100"]
    assert issues[1].status == "closed", "a repeated id: the last line wins"
    found = {problem.line_number: problem.message for problem in problems}
    assert sorted(found) == [2, 3, 4, 5, 7, 8, 10, 11, 12, 13]  # Line 6 is blank.
    assert found[2].startswith("not valid JSON")
    assert "missing required field `id`" in found[3]
    assert "Expected `int`, got `str` - at `$.priority`" in found[4]
    assert "Expected `int` <= 4 - at `$.priority`" in found[5] and "0-4" in found[5]
    assert "at `$.labels`" in found[7]
    assert "Expected `object`, got `array`" in found[8]
    assert "repeats line 1" in found[10]
    assert "got `bool`" in found[11]
    assert found[12].startswith("not valid JSON")
    assert "missing required field `status`" in found[13]


def test_oversized_lines_are_skipped() -> None:
    huge = b'{"id":"x","title":"' + b"a" * beads.LINE_BYTES_MAX + b'"}'
    issues, problems = beads.parse_issues([huge])
    assert issues == [] and "longer than" in problems[0].message


# Rewards.


@pytest.mark.parametrize(
    ("issue_id", "reward", "paid_type", "from_label"),
    [
        ("ate-1a2", "450", "bug", False),  # P2 bug: 300 × 1.5, the seed's example.
        ("ate-3b4", "500", "feature", False),  # priority omitted: P1.
        ("ate-5c6", "300", "security", True),  # P3 task labelled security: 150 × 2.0.
        ("ate-7d8", "45", "docs", True),  # P4 chore labelled docs: 0.6 beats 0.5.
        ("ate-e89", "120", "task", False),  # P3 task labelled docs: 0.8 beats 0.6.
        ("ate-b23", "30", "docs", False),  # P5 docs: 50 × 0.6.
        ("ate-f01", "600", "security", True),  # P2 bug labelled security.
        ("ate-9e0", None, "epic", False),  # No multiplier for epics.
    ],
)
def test_quotes(issue_id: str, reward: str | None, paid_type: str, from_label: bool) -> None:
    quote = beads.quote_issue(RULES, _issues()[issue_id])
    assert (quote.reward, quote.issue_type, quote.type_from_label) == (
        reward,
        paid_type,
        from_label,
    )
    assert (quote.reason is None) == (reward is not None)


def test_reward_table_of_the_default_economy() -> None:
    table = beads.reward_table(EconomyConfig())
    assert [name for name, _ in table.priorities] == ["P1", "P2", "P3", "P4", "P5"]
    assert [name for name, _ in table.issue_types][:2] == ["security", "bug"]
    assert table.rewards_micro["P2"]["bug"] == 450_000_000
    assert table.rewards_micro["P1"]["security"] == 1_000_000_000
    assert table.rewards_micro["P4"]["bug"] == 112_500_000
    assert table.rewards_micro["P5"]["chore"] == 25_000_000


def test_request_ids() -> None:
    assert beads.issue_request_id("ate-1a2") == "issue-ate-1a2"
    long_id = "agent-token-exchange-" + "x" * 60
    hashed = beads.issue_request_id(long_id)
    assert hashed.startswith("issue-") and len(hashed) <= 64
    assert hashed == beads.issue_request_id(long_id), "stable across runs"
    assert beads.issue_request_id("has space") != "issue-has space"


# Sync.


def test_sync_rewards_each_closed_issue_once() -> None:
    issues = list(_issues().values())
    fake = FakeExchange()
    items = {item.quote.issue.id: item for item in beads.sync(issues, RULES, fake.open)}
    assert {key: item.status for key, item in items.items()} == {
        "ate-3b4": SyncStatus.rewarded,
        "ate-5c6": SyncStatus.rewarded,
        "ate-b23": SyncStatus.rewarded,
        "ate-c45": SyncStatus.skipped,  # No assignee: not sent.
        "ate-d67": SyncStatus.refused,  # steve is not an agent.
        "ate-f01": SyncStatus.rewarded,
    }
    assert items["ate-d67"].code == "unknown_agent"
    sent = {command.issue_id: command for command in fake.sent}
    assert sent["ate-5c6"] == IssueClose(
        request_id="issue-ate-5c6",
        issue_id="ate-5c6",
        agent="zero",
        priority="P3",
        issue_type="security",
    )
    # Again: the same request ids, answered by the first replies; nothing is paid twice.
    again = beads.sync(issues, RULES, fake.open)
    assert [item.status for item in again] == [item.status for item in items.values()]
    assert fake.rewarded == {"ate-3b4", "ate-5c6", "ate-b23", "ate-f01"}
    # Another sender (new request ids would come from elsewhere): already rewarded is done.
    fake.replies.clear()
    third = beads.sync(issues, RULES, fake.open)
    assert {item.status for item in third if item.quote.issue.agent in AGENTS} == {
        SyncStatus.already_rewarded
    }


def test_sync_stops_when_the_exchange_stops_answering() -> None:
    fake = FakeExchange()
    fake.down_after = 1
    items = beads.sync(list(_issues().values()), RULES, fake.open)
    statuses = [item.status for item in items if item.status is not SyncStatus.skipped]
    assert statuses == [SyncStatus.rewarded] + [SyncStatus.not_sent] * 4
    fake.down = True
    assert {item.status for item in beads.sync(list(_issues().values()), RULES, fake.open)} == {
        SyncStatus.not_sent,
        SyncStatus.skipped,
    }


# The commands.


def _run(
    argv: list[str], capsys: pytest.CaptureFixture[str], fake: FakeExchange | None = None
) -> tuple[int, str, str]:
    fake = fake or FakeExchange()
    status = issues_main(argv, opener=fake.opener)
    out, err = capsys.readouterr()
    return status, out, err


def test_rewards_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = _run(["rewards", "--json", "--data", str(tmp_path)], capsys)
    table = msgspec.json.decode(out)
    assert status == 0 and table["source"] == "the default economy"
    assert table["rewards"]["P2"]["bug"] == "450" and table["priorities"]["P5"] == "50"
    status, out, _ = _run(["rewards", "--data", str(tmp_path)], capsys)
    assert status == 0 and "security" in out and "1000" in out


def test_the_data_directory_config_is_the_active_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, repo: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    custom = "[issue_priorities]\nP1 = 1000\nP2 = 600\nP3 = 300\nP4 = 150\nP5 = 100\n"
    assert parse_config(custom).issue_priorities["P2"] == Decimal(600)
    (data / "economy.toml").write_text(custom)
    status, out, _ = _run(
        ["preview", "ate-1a2", "--repo", str(repo), "--data", str(data), "--json"], capsys
    )
    assert status == 0 and msgspec.json.decode(out)["reward"] == "900"
    (data / "economy.toml").write_text("[issue_types]\nbug = 'many'\n")
    status, out, _ = _run(["rewards", "--data", str(data), "--json"], capsys)
    assert status == 1 and msgspec.json.decode(out)["error"]["code"] == "config_invalid"


def test_preview_commands(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    status, out, _ = _run(["preview", "ate-5c6", "--repo", str(repo), "--json"], capsys)
    assert status == 0
    assert msgspec.json.decode(out) | {"title": ""} == {
        "id": "ate-5c6",
        "title": "",
        "status": "closed",
        "priority": "P3",
        "issue_type": "security",
        "type_from_label": True,
        "assignee": "zero",
        "agent": "zero",
        "reward": "300",
        "note": None,
    }
    status, out, _ = _run(["preview", "nope", "--repo", str(repo), "--json"], capsys)
    assert status == 1 and msgspec.json.decode(out)["error"]["code"] == "unknown_issue"

    status, out, _ = _run(["preview-all", "--repo", str(repo), "--json"], capsys)
    preview = msgspec.json.decode(out)
    assert status == 0
    assert [issue["id"] for issue in preview["issues"]] == [
        "ate-1a2",
        "ate-9e0",
        "ate-e89",
        "ate-7d8",
    ]
    assert preview["total"] == "615"  # 450 + 120 + 45; the epic pays nothing.
    status, out, _ = _run(["preview-all", "--repo", str(repo)], capsys)
    assert status == 0 and "ate-1a2" in out and "615" in out and "ate-3b4" not in out


def test_malformed_lines_are_reported_by_the_commands(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / ".beads").mkdir()
    (tmp_path / ".beads" / "issues.jsonl").write_bytes((FIXTURES / "malformed.jsonl").read_bytes())
    status, out, err = _run(["preview-all", "--repo", str(tmp_path), "--json"], capsys)
    assert status == 0
    assert len(msgspec.json.decode(out)["problems"]) == 10
    assert "issues.jsonl line 4: Expected `int`, got `str` - at `$.priority`" in err


def test_no_beads_here(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = _run(["preview-all", "--repo", str(tmp_path), "--json"], capsys)
    assert status == 1 and "bd init" in msgspec.json.decode(out)["error"]["message"]


def test_sync_command(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    fake = FakeExchange()
    status, out, _ = _run(["sync", "--repo", str(repo), "--json"], capsys, fake)
    results = {item["id"]: item for item in msgspec.json.decode(out)["results"]}
    assert status == 0
    assert results["ate-f01"] == {
        "id": "ate-f01",
        "agent": "lambda",
        "status": "rewarded",
        "reward": "600",
        "code": None,
        "message": "",
    }
    fake.down = True
    status, out, err = _run(["sync", "--repo", str(repo)], capsys, fake)
    assert status == 3 and "ate-3b4: not sent" in out and "fake is down" in err


def test_close_without_bd(
    capsys: pytest.CaptureFixture[str], repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(repo / "empty-bin"))
    fake = FakeExchange()
    status, out, _ = _run(["close", "ate-1a2", "--repo", str(repo), "--json"], capsys, fake)
    error = msgspec.json.decode(out)["error"]
    assert status == 1 and error["code"] == "bd_failed"
    assert "not installed" in error["message"] and "exchange issues sync" in error["message"]
    assert fake.sent == []


def _fake_bd(directory: Path, *, exit_status: int = 0) -> Path:
    """A `bd` that records its arguments and working directory, then exits."""
    directory.mkdir()
    record = directory / "calls"
    script = directory / "bd"
    script.write_text(
        f'#!/bin/sh\necho "$PWD $*" >> {record}\necho "Closed $2"\nexit {exit_status}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


def test_close_runs_bd_then_rewards(
    capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _fake_bd(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    fake = FakeExchange()
    status, out, _ = _run(
        ["close", "ate-1a2", "--repo", str(repo), "--reason", "fixed"], capsys, fake
    )
    assert status == 0
    assert record.read_text() == f"{repo} close ate-1a2 --reason fixed\n"
    assert "Closed ate-1a2" in out and "rewarded claude 450 tokens" in out
    assert [command.request_id for command in fake.sent] == ["issue-ate-1a2"]
    # Unassigned: bd closes it, nothing is sent, the status says so.
    status, out, _ = _run(["close", "ate-9e0", "--repo", str(repo), "--json"], capsys, fake)
    assert status == 1 and msgspec.json.decode(out)["status"] == "skipped"


def test_close_when_bd_fails(
    capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bd(tmp_path / "bin", exit_status=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    fake = FakeExchange()
    status, _, err = _run(["close", "ate-1a2", "--repo", str(repo)], capsys, fake)
    assert status == 1 and "failed (exit 1)" in err and fake.sent == []


@pytest.mark.parametrize("name", ["sender", "spool", "git_hook", "beads", "cli"])
def test_all_is_the_public_surface(name: str) -> None:
    module = importlib.import_module(f"exchange.integrations.{name}")
    defined_here = {
        key
        for key, value in vars(module).items()
        if not key.startswith("_")
        and isinstance(value, type | FunctionType)
        and value.__module__ == module.__name__
    }
    assert defined_here <= set(module.__all__)
    assert all(hasattr(module, key) for key in module.__all__)
