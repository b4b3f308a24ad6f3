"""The git hook and its spool, on real git repositories in tmp_path: install, chain, uninstall,
a real `git commit` whose hook finds no exchange (queued, commit unharmed), and the sending logic
driven in-process against ``FakeExchange``, a test double of the ``RewardSender`` interface that
keeps the exchange's rules for commits (unknown agents refused, a SHA rewarded once, request ids
replayed). The live test with a real exchange is tests/integration/test_git_hook_live.py.
"""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import msgspec
import pytest

from exchange.integrations import git_hook, spool
from exchange.integrations.cli import hook_main
from exchange.integrations.git_hook import AgentFrom
from exchange.integrations.sender import (
    DeliveryStatus,
    ExchangeTarget,
    ExchangeUnreachableError,
    RewardSender,
    open_exchange,
)
from protocols.commands import Command, Commit
from protocols.results import Envelope, ErrorBody

GIT_TIMEOUT_S = 30.0
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


class FakeExchange:
    """A RewardSender double: the exchange's commit rules, no NATS. ``down`` makes it absent;
    ``down_after`` makes it stop answering after that many sends; ``codes`` forces a refusal."""

    def __init__(self, *, agents: tuple[str, ...] = ("claude", "builder", "zero")) -> None:
        self.agents = agents
        self.down = False
        self.down_after: int | None = None
        self.codes: dict[str, str] = {}
        self.sent: list[tuple[str, Command]] = []
        self.rewarded_shas: set[str] = set()
        self.replies: dict[str, Envelope] = {}

    @contextmanager
    def open(self) -> Iterator[RewardSender]:
        if self.down:
            raise ExchangeUnreachableError("no exchange (fake is down)")
        yield self

    def send(self, verb: str, command: Command) -> Envelope:
        if self.down_after is not None and len(self.sent) >= self.down_after:
            raise ExchangeUnreachableError("no reply within 2.0 s (fake stopped)")
        self.sent.append((verb, command))
        assert verb == "commit" and isinstance(command, Commit)
        if command.request_id in self.replies:
            return self.replies[command.request_id]
        agent = command.author.split("@")[0]
        if command.sha in self.codes:
            return _refusal(self.codes[command.sha])
        if agent not in self.agents:
            return _refusal("unknown_agent")
        if command.sha in self.rewarded_shas:
            return _refusal("already_rewarded")
        assert command.sha is not None
        self.rewarded_shas.add(command.sha)
        reply = Envelope(
            ok=True,
            result={"agent": agent, "reward": "150", "contract": "default", "balance": "10150"},
        )
        self.replies[command.request_id] = reply
        return reply


def _sha_of(command: Command) -> str | None:
    assert isinstance(command, Commit)
    return command.sha


def _refusal(code: str) -> Envelope:
    return Envelope(ok=False, error=ErrorBody(code=code, message=f"refused: {code}"))


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=True,
        env=_git_env(repo),
    )
    return done.stdout.strip()


def _git_env(home: Path) -> dict[str, str]:
    # No user or system git config may leak into the test (hooksPath, templates, identity).
    return {
        **os.environ,
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def _make_repo(
    tmp_path: Path, name: str = "nexushive-setup", email: str = "claude@aygp-dr.ai"
) -> Path:
    repo = tmp_path / name
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", email)
    _git(repo, "config", "user.name", "Agent")
    return repo


def _commit(repo: Path, message: str, *, filename: str | None = None) -> tuple[str, str]:
    """Commits a change; returns (HEAD's SHA, what the hook printed)."""
    path = repo / (filename or f"file-{time.monotonic_ns()}.txt")
    path.write_text(message + "\n")
    _git(repo, "add", path.name)
    done = subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "-m", message],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
        env=_git_env(repo),
    )
    assert done.returncode == 0, done.stderr
    return _git(repo, "rev-parse", "HEAD"), done.stdout + done.stderr


def _queued(repo: Path) -> list[spool.QueuedCommit]:
    return git_hook.open_repository(repo).spool.read().entries


def _target(tmp_path: Path) -> ExchangeTarget:
    return ExchangeTarget(data_dir=tmp_path / "no-exchange-here")


# Installing and removing the hook.


def test_install_writes_an_executable_marked_hook(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    assert hook_main(["install", "--repo", str(repo), "--data", str(tmp_path / "d")]) == 0
    hook = repo / ".git" / "hooks" / "post-commit"
    text = hook.read_text()
    assert text.startswith("#!/bin/sh\n") and git_hook.HOOK_MARKER in text.splitlines()
    assert os.access(hook, os.X_OK)
    assert f"--data {tmp_path / 'd'}" in text and "--agent-from email" in text
    assert "exit 0" in text.splitlines()[-1]
    # Installing again rewrites our own hook (new options) instead of refusing it.
    assert hook_main(["install", "--repo", str(repo), "--agent-from", "config"]) == 0
    assert "--agent-from config" in hook.read_text()


def test_install_honours_core_hooks_path(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    _git(repo, "config", "core.hooksPath", "githooks")
    git_hook.install(
        git_hook.open_repository(repo),
        python=Path("/usr/bin/python3"),
        agent_from=AgentFrom.email,
        target=_target(tmp_path),
    )
    assert git_hook.is_our_hook(repo / "githooks" / "post-commit")


def test_a_foreign_hook_needs_force_and_is_then_chained_and_restored(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    hooks = repo / ".git" / "hooks"
    ran = tmp_path / "foreign-hook-ran"
    foreign = f"#!/bin/sh\necho ran >> {ran}\n"
    (hooks / "post-commit").write_text(foreign)
    (hooks / "post-commit").chmod(0o755)
    data = str(tmp_path / "d")

    assert hook_main(["install", "--repo", str(repo), "--data", data]) == 1
    assert (hooks / "post-commit").read_text() == foreign

    assert hook_main(["install", "--repo", str(repo), "--data", data, "--force"]) == 0
    assert (hooks / "post-commit.exchange-chained").read_text() == foreign
    sha, _ = _commit(repo, "fix: chained")
    assert ran.read_text() == "ran\n", "the chained hook still runs"
    assert [entry.sha for entry in _queued(repo)] == [sha]

    assert hook_main(["uninstall", "--repo", str(repo)]) == 0
    assert (hooks / "post-commit").read_text() == foreign
    assert not (hooks / "post-commit.exchange-chained").exists()


def test_force_never_overwrites_an_existing_chained_hook(tmp_path: Path) -> None:
    repo = git_hook.open_repository(_make_repo(tmp_path))
    repo.hook_path.write_text("#!/bin/sh\necho new\n")
    repo.chained_path.write_text("#!/bin/sh\necho old\n")
    with pytest.raises(git_hook.HookConflictError, match="already exists"):
        git_hook.install(
            repo,
            python=Path("/usr/bin/python3"),
            agent_from=AgentFrom.email,
            target=_target(tmp_path),
            force=True,
        )
    assert repo.hook_path.read_text() == "#!/bin/sh\necho new\n"


def test_uninstall_leaves_a_foreign_hook_alone(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.write_text("#!/bin/sh\necho mine\n")
    assert hook_main(["uninstall", "--repo", str(repo)]) == 1
    assert hook.read_text() == "#!/bin/sh\necho mine\n"
    hook.unlink()
    assert hook_main(["uninstall", "--repo", str(repo)]) == 0  # Nothing installed: nothing to do.


def test_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert hook_main(["install", "--repo", str(tmp_path)]) == 1
    assert "not inside a git repository" in capsys.readouterr().err
    # `hook run` is what git runs: it reports and still exits 0.
    assert hook_main(["run", "--repo", str(tmp_path)]) == 0
    assert "commit not rewarded" in capsys.readouterr().err


# A real commit with no exchange.


def test_a_commit_with_no_exchange_is_queued_and_succeeds(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    assert hook_main(["install", "--repo", str(repo), "--data", str(tmp_path / "d")]) == 0
    sha, printed = _commit(repo, "fix: a bug\n\nThe body is not sent.")
    assert "queued" in printed and sha[:10] in printed
    [entry] = _queued(repo)
    assert entry.sha == sha
    assert entry.author == "claude@aygp-dr.ai"
    assert entry.project == "nexushive-setup"
    assert entry.message == "fix: a bug"
    assert entry.command().request_id == f"commit-{sha}"
    second, _ = _commit(repo, "docs: readme")
    assert [entry.sha for entry in _queued(repo)] == [sha, second], "oldest first"


# Sending the queue (in-process, against the double).


def _run(
    repo: Path, fake: FakeExchange, *, rev: str = "HEAD", sends_max: int = git_hook.RUN_SENDS_MAX
) -> git_hook.RunReport:
    return git_hook.run(
        git_hook.open_repository(repo),
        fake.open,
        rev=rev,
        now_ns=time.time_ns(),
        sends_max=sends_max,
    )


def test_run_sends_the_queue_first_then_the_new_commit(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    fake = FakeExchange()
    fake.down = True
    first, _ = _commit(repo, "one")
    assert _run(repo, fake).delivery is None
    second, _ = _commit(repo, "two")
    assert _run(repo, fake).flush.remaining == 2
    fake.down = False
    third, _ = _commit(repo, "three")
    report = _run(repo, fake)
    assert report.delivery is not None and report.delivery.status is DeliveryStatus.rewarded
    assert [item.entry.sha for item in report.backlog] == [first, second]
    assert [_sha_of(command) for _, command in fake.sent] == [first, second, third]
    assert _queued(repo) == []


def test_resending_never_rewards_twice(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    fake = FakeExchange()
    sha, _ = _commit(repo, "fix: once")
    first = _run(repo, fake)
    assert first.delivery is not None and first.delivery.status is DeliveryStatus.rewarded
    # The same commit again: the same request id, answered by the first reply.
    again = _run(repo, fake, rev=sha)
    assert again.delivery is not None and again.delivery.status is DeliveryStatus.rewarded
    assert fake.rewarded_shas == {sha} and _queued(repo) == []
    # Another request id for the same SHA (another clone's spool): already rewarded, done.
    fake.replies.clear()
    third = _run(repo, fake, rev=sha)
    assert third.delivery is not None and third.delivery.status is DeliveryStatus.already_rewarded
    assert _queued(repo) == []


def test_a_refusal_is_reported_and_dropped(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path, email="nobody@example.com")
    _commit(repo, "fix: not an agent")
    report = _run(repo, FakeExchange())
    assert report.delivery is not None
    assert report.delivery.status is DeliveryStatus.refused
    assert report.delivery.code == "unknown_agent"
    assert _queued(repo) == []


def test_overloaded_and_unauthorised_stay_queued(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    sha, _ = _commit(repo, "x")
    fake = FakeExchange()
    for code in ("overloaded", "not_authorized"):
        fake.codes[sha] = code
        report = _run(repo, fake)
        assert report.delivery is None and report.flush.unreachable == f"refused: {code}"
        assert [entry.sha for entry in _queued(repo)] == [sha]


def test_sending_stops_at_the_first_unanswered_commit(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    fake = FakeExchange()
    fake.down = True
    shas = []
    for message in ("a", "b", "c"):
        sha, _ = _commit(repo, message)
        shas.append(sha)
        _run(repo, fake)
    fake.down, fake.down_after = False, 1
    report = spool.flush(git_hook.open_repository(repo).spool, fake.open)
    assert [item.entry.sha for item in report.sent] == shas[:1]
    assert report.remaining == 2 and report.unreachable is not None
    assert [entry.sha for entry in _queued(repo)] == shas[1:]


def test_one_run_sends_at_most_sends_max(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    fake = FakeExchange()
    fake.down = True
    for message in ("a", "b", "c"):
        _commit(repo, message)
        _run(repo, fake)
    fake.down = False
    report = _run(repo, fake, sends_max=2)
    assert len(report.flush.sent) == 2 and report.flush.remaining == 1


def test_agent_and_project_from_git_config(tmp_path: Path) -> None:
    repo_path = _make_repo(tmp_path, email="someone@example.com")
    repo = git_hook.open_repository(repo_path)
    sha, _ = _commit(repo_path, "feat")
    with pytest.raises(git_hook.CommitNotRewardableError, match=r"exchange\.agent"):
        git_hook.read_commit(repo, "HEAD", AgentFrom.config, now_ns=1)
    _git(repo_path, "config", "exchange.agent", "builder")
    _git(repo_path, "config", "exchange.project", "scheme-parser")
    entry = git_hook.read_commit(repo, "HEAD", AgentFrom.config, now_ns=1)
    assert (entry.sha, entry.author, entry.project) == (sha, "builder", "scheme-parser")


def test_a_linked_worktree_counts_as_its_main_repository(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path)
    _commit(repo, "base")
    _git(repo, "worktree", "add", "-q", str(tmp_path / "elsewhere"))
    worktree = git_hook.open_repository(tmp_path / "elsewhere")
    assert git_hook.project_of(worktree) == "nexushive-setup"
    assert worktree.spool.path == repo / ".git" / "exchange-spool.jsonl"


def test_commits_replayed_by_a_rebase_are_not_rewarded_again(tmp_path: Path) -> None:
    repo_path = _make_repo(tmp_path)
    _commit(repo_path, "x")
    repo = git_hook.open_repository(repo_path)
    (repo.common_dir / "rebase-merge").mkdir()
    with pytest.raises(git_hook.CommitNotRewardableError, match="rebase"):
        git_hook.read_commit(repo, "HEAD", AgentFrom.email, now_ns=1)


# The spool file.


def test_spool_reports_and_drops_lines_that_are_not_commits(tmp_path: Path) -> None:
    repo = git_hook.open_repository(_make_repo(tmp_path))
    queue = repo.spool
    entry = spool.QueuedCommit(
        sha="a" * 40, author="claude", project="p", message="m", queued_at_ns=1
    )
    assert queue.add(entry) and not queue.add(entry), "a SHA is queued once"
    with queue.path.open("ab") as file:
        file.write(b'{"sha": "truncat\n')
    contents = queue.read()
    assert contents.entries == [entry]
    assert [problem.line_number for problem in contents.problems] == [2]
    report = spool.flush(queue, FakeExchange().open)
    assert [p.line_number for p in report.problems] == [2] and report.remaining == 0
    assert not queue.path.exists()


def test_spool_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "SPOOL_ENTRIES_MAX", 2)
    queue = git_hook.open_repository(_make_repo(tmp_path)).spool
    for index in range(2):
        queue.add(
            spool.QueuedCommit(
                sha=f"{index:040}", author="a", project="p", message="m", queued_at_ns=1
            )
        )
    with pytest.raises(spool.SpoolFullError):
        queue.add(
            spool.QueuedCommit(sha="f" * 40, author="a", project="p", message="m", queued_at_ns=1)
        )


def test_request_ids_fit_the_wire() -> None:
    assert spool.commit_request_id("ab" * 20) == "commit-" + "ab" * 20
    sha256 = "c" * 64
    assert len(spool.commit_request_id(sha256)) == 64


def test_flush_command_json_and_statuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _make_repo(tmp_path)
    fake = FakeExchange()
    fake.down = True
    sha, _ = _commit(repo, "fix")
    _run(repo, fake)

    def opener(
        target: ExchangeTarget, timeout_s: float
    ) -> Callable[[], AbstractContextManager[RewardSender]]:
        return fake.open

    assert hook_main(["flush", "--repo", str(repo), "--json"], opener=opener) == 3
    assert msgspec.json.decode(capsys.readouterr().out)["remaining"] == 1
    fake.down = False
    assert hook_main(["flush", "--repo", str(repo), "--json"], opener=opener) == 0
    sent = msgspec.json.decode(capsys.readouterr().out)["sent"]
    assert [(item["sha"], item["status"]) for item in sent] == [(sha, "rewarded")]
    assert hook_main(["flush", "--repo", str(repo)], opener=opener) == 0
    assert "no commits queued" in capsys.readouterr().out


# The real sender, with nothing listening.


def test_open_exchange_gives_up_within_its_timeout(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed: every connection is refused.
    target = ExchangeTarget(data_dir=tmp_path, nats_url=f"nats://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ExchangeUnreachableError), open_exchange(target, timeout_s=0.5):
        pass
    assert time.monotonic() - started < 5.0
    with (
        pytest.raises(ExchangeUnreachableError, match=r"exchange\.json"),
        open_exchange(ExchangeTarget(data_dir=tmp_path), timeout_s=0.5),
    ):
        pass
