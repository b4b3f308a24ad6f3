"""The git hook end to end with a real exchange: a repository in tmp_path with the hook
installed, real `git commit`s whose hook (``python -m exchange.integrations.cli hook run``, a
child of git) talks to an in-process exchange found through ``--data``; balances are read with the
CLI (``exchange balance AGENT --json``). The exchange is down, then up, then down and up again, and
each commit is rewarded exactly once. Every wait is bounded by fail_after; nothing sleeps.
"""

import os
import shutil
import sys
from pathlib import Path

import anyio
import pytest
from daemon_support import run_cli, running_exchange

from exchange.integrations import git_hook
from exchange.integrations.cli import hook_main

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed"),
]

# Generous bounds for a loaded machine: a commit runs the hook, which starts Python.
GIT_TIMEOUT_S = 60.0
# nexushive-setup pays ×2.0 and claude's base rate is 150 (docs/economy.md).
FIX_REWARD = 450  # "fix: bug": ×1.5
DOCS_REWARD = 330  # "docs: readme": ×1.1
TEST_REWARD = 390  # "test: coverage": ×1.3
OPENING_BALANCE = 10_000


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "EXCHANGE_NATS_URL"}
    return env | {
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        **extra,
    }


async def _git(repo: Path, *args: str, **env: str) -> str:
    with anyio.fail_after(GIT_TIMEOUT_S):
        done = await anyio.run_process(
            ["git", "-C", str(repo), *args], env=_env(repo, **env), check=False
        )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    return output


async def _commit(repo: Path, message: str, **env: str) -> tuple[str, str]:
    """A real commit (the hook runs inside it); returns HEAD's SHA and what the hook printed."""
    name = "".join(ch if ch.isalnum() else "-" for ch in message) + ".txt"
    await anyio.Path(repo / name).write_text(message)
    await _git(repo, "add", "-A")
    printed = await _git(repo, "commit", "-q", "-m", message, **env)
    sha = (await _git(repo, "rev-parse", "HEAD")).strip()
    return sha, printed


async def _hook_command(repo: Path, *args: str) -> str:
    """`exchange hook …` as its own process, as a user or the hook would run it."""
    command = [sys.executable, "-m", "exchange.integrations.cli", "hook", *args]
    with anyio.fail_after(GIT_TIMEOUT_S):
        done = await anyio.run_process(command, env=_env(repo), check=False)
    return f"exit {done.returncode}\n" + (done.stdout + done.stderr).decode()


async def _balance(data: Path, agent: str) -> str:
    found = await run_cli("balance", agent, "--data", str(data), "--json")
    assert found.status == 0, found
    balance: str = found.json()["balance"]
    return balance


def _queued(repo: Path) -> list[str]:
    return [entry.sha for entry in git_hook.open_repository(repo).spool.read().entries]


async def test_commits_are_rewarded_once_whether_the_exchange_is_up_or_down(
    tmp_path: Path,
) -> None:
    data = tmp_path / "exchange-data"
    repo = tmp_path / "nexushive-setup"
    repo.mkdir()
    await _git(repo, "init", "-q", "-b", "main")
    await _git(repo, "config", "user.email", "claude@aygp-dr.ai")
    await _git(repo, "config", "user.name", "Claude")
    assert hook_main(["install", "--repo", str(repo), "--data", str(data)]) == 0

    # Down (no exchange has ever run here): the commit succeeds and waits in the spool.
    fix_sha, printed = await _commit(repo, "fix: bug")
    assert "queued" in printed and fix_sha[:10] in printed
    assert _queued(repo) == [fix_sha]

    async with running_exchange(data):
        # Up: the next commit sends the queued one first, then itself.
        docs_sha, printed = await _commit(repo, "docs: readme")
        assert "sent 1 queued commit (1 rewarded)" in printed, printed
        assert f"{docs_sha[:10]} rewarded claude {DOCS_REWARD} tokens" in printed, printed
        assert _queued(repo) == []
        expected = OPENING_BALANCE + FIX_REWARD + DOCS_REWARD
        assert await _balance(data, "claude") == str(expected)

        # Running the hook again for an old commit (same request id) pays nothing more.
        again = await _hook_command(
            repo, "run", "--repo", str(repo), "--data", str(data), "--sha", fix_sha
        )
        assert again.startswith("exit 0"), again
        assert await _balance(data, "claude") == str(expected)

        # A refusal is reported and dropped, not retried forever.
        stranger_sha, printed = await _commit(
            repo, "fix: not an agent", GIT_AUTHOR_EMAIL="stranger@example.com"
        )
        assert f"{stranger_sha[:10]} not rewarded (unknown_agent" in printed, printed
        assert _queued(repo) == []

    # Down again (stopped cleanly): queued.
    test_sha, printed = await _commit(repo, "test: coverage")
    assert "queued" in printed and _queued(repo) == [test_sha]

    async with running_exchange(data):
        flushed = await _hook_command(repo, "flush", "--repo", str(repo), "--data", str(data))
        assert flushed.startswith("exit 0") and f"{test_sha[:10]} rewarded claude" in flushed
        expected += TEST_REWARD
        assert await _balance(data, "claude") == str(expected)
        empty = await _hook_command(repo, "flush", "--repo", str(repo), "--data", str(data))
        assert empty.startswith("exit 0") and "no commits queued" in empty
        assert await _balance(data, "claude") == str(expected)

        # Uninstalled: commits are no longer rewarded.
        assert hook_main(["uninstall", "--repo", str(repo)]) == 0
        _, printed = await _commit(repo, "fix: after uninstall")
        assert "exchange:" not in printed
        assert await _balance(data, "claude") == str(expected)
