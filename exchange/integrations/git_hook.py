"""The git integration: a ``post-commit`` hook that rewards each commit through a running exchange.

Owns: the hook script (install, chaining to a hook that was there before, uninstall), reading a
commit from git (agent, project, subject line, SHA) and ``run``, what the hook does: queue the
commit in the spool (spool.py), then send the queue.
Must not: block or fail a commit (a missing exchange is an outcome here, not an error; the hook
script always exits 0), print (the CLI renders the reports), or compute rewards (the exchange
does). Needs ``git`` on PATH.

Errors::

    GitHookError                 anything the hook commands could not do
    ├── GitCommandError          git is missing, failed or timed out
    ├── NotAWorkTreeError        --repo is not a git repository with a working tree
    ├── HookConflictError        a post-commit hook we did not install is in the way
    └── CommitNotRewardableError the commit has no agent (no email, no exchange.agent), or is a
                                 rebase rewriting commits that were already rewarded
"""

import os
import shlex
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from exchange.errors import ExchangeError
from exchange.integrations.sender import Delivery, ExchangeTarget, SenderOpener
from exchange.integrations.spool import (
    SPOOL_LOCK_NAME,
    SPOOL_NAME,
    FlushReport,
    QueuedCommit,
    Sent,
    Spool,
    flush,
)

__all__ = [
    "AgentFrom",
    "CommitNotRewardableError",
    "GitCommandError",
    "GitHookError",
    "HookConflictError",
    "InstallReport",
    "NotAWorkTreeError",
    "Repository",
    "RunReport",
    "UninstallReport",
    "install",
    "is_our_hook",
    "open_repository",
    "project_of",
    "read_commit",
    "render_hook_script",
    "run",
    "uninstall",
]

HOOK_NAME: Final = "post-commit"
CHAINED_SUFFIX: Final = ".exchange-chained"
# The line that marks a hook as ours; install rewrites and uninstall removes only such a hook.
HOOK_MARKER: Final = "# exchange-hook: post-commit v1"

GIT_TIMEOUT_S: Final = 10.0
# Bounds: one hook run sends at most RUN_SENDS_MAX queued commits (``flush`` sends them all);
# a hook file above HOOK_BYTES_MAX is not ours.
RUN_SENDS_MAX: Final = 100
HOOK_BYTES_MAX: Final = 64 * 1024
# The wire's limit on commit messages (protocols.ids.Text).
MESSAGE_CHARS_MAX: Final = 4096


class GitHookError(ExchangeError):
    """Base class of this module's errors; each message says what to do next."""


class GitCommandError(GitHookError):
    pass


class NotAWorkTreeError(GitHookError):
    pass


class HookConflictError(GitHookError):
    pass


class CommitNotRewardableError(GitHookError):
    pass


class AgentFrom(StrEnum):
    """Where the agent of a commit comes from."""

    email = "email"  # the local part of the author's email (the exchange takes it)
    config = "config"  # the repository's ``git config exchange.agent``


# Git.


def _git_process(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise GitCommandError("git is not installed (not found on PATH); install git") from exc
    except subprocess.TimeoutExpired as exc:
        raise GitCommandError(
            f"`git {' '.join(args)}` in {cwd} took over {GIT_TIMEOUT_S} s; is the repository "
            "locked by another git process?"
        ) from exc


def _git(cwd: Path, *args: str) -> str:
    done = _git_process(cwd, *args)
    if done.returncode != 0:
        raise GitCommandError(f"`git {' '.join(args)}` failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.rstrip("\n")


def _git_config(cwd: Path, key: str) -> str | None:
    """The value of ``key`` in the repository's git config; None when it is not set."""
    done = _git_process(cwd, "config", "--get", key)
    if done.returncode == 1:
        return None
    if done.returncode != 0:
        raise GitCommandError(f"`git config --get {key}` failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip() or None


@dataclass(frozen=True, slots=True)
class Repository:
    """A git work tree and the absolute paths the hook uses."""

    toplevel: Path
    common_dir: Path
    hooks_dir: Path

    @property
    def hook_path(self) -> Path:
        return self.hooks_dir / HOOK_NAME

    @property
    def chained_path(self) -> Path:
        return self.hooks_dir / (HOOK_NAME + CHAINED_SUFFIX)

    @property
    def spool(self) -> "Spool":
        return Spool(self.common_dir / SPOOL_NAME, self.common_dir / SPOOL_LOCK_NAME)


def open_repository(path: Path) -> Repository:
    """The work tree containing ``path``. The hooks directory honours ``core.hooksPath``.

    Raises NotAWorkTreeError, GitCommandError.
    """
    done = _git_process(
        path,
        "rev-parse",
        "--path-format=absolute",
        "--show-toplevel",
        "--git-common-dir",
        "--git-path",
        "hooks",
    )
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) != 3:
        raise NotAWorkTreeError(
            f"{path} is not inside a git repository with a working tree "
            f"({done.stderr.strip() or 'no work tree'}); pass --repo PATH of one"
        )
    toplevel, common_dir, hooks_dir = (Path(line) for line in lines)
    return Repository(toplevel=toplevel, common_dir=common_dir, hooks_dir=hooks_dir)


def project_of(repo: Repository) -> str:
    """``git config exchange.project``, else the name of the repository's directory.

    A linked work tree counts as its main repository (the directory holding ``.git``).
    """
    configured = _git_config(repo.toplevel, "exchange.project")
    if configured is not None:
        return configured
    main = repo.common_dir.parent if repo.common_dir.name == ".git" else repo.toplevel
    return main.name


def _rebase_in_progress(repo: Repository) -> bool:
    paths = _git(
        repo.toplevel,
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "rebase-merge",
        "--git-path",
        "rebase-apply",
    )
    return any(Path(line).exists() for line in paths.splitlines())


def read_commit(repo: Repository, rev: str, agent_from: AgentFrom, *, now_ns: int) -> QueuedCommit:
    """The commit ``rev`` as a reward to send: agent, project, subject line and SHA.

    Raises CommitNotRewardableError (no agent; a rebase replaying commits), GitCommandError.
    """
    if _rebase_in_progress(repo):
        raise CommitNotRewardableError(
            "a rebase is rewriting commits that were rewarded when first made; not rewarded again"
        )
    sha = _git(repo.toplevel, "rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    fields = _git(repo.toplevel, "show", "-s", "--format=%ae%x00%s", sha).split("\0")
    assert len(fields) == 2, fields
    email, subject = fields
    if agent_from is AgentFrom.config:
        author = _git_config(repo.toplevel, "exchange.agent")
        if author is None:
            raise CommitNotRewardableError(
                "`git config exchange.agent` is not set; set it (git config exchange.agent "
                "AGENT) or install the hook with --agent-from email"
            )
    else:
        author = email.strip()
        if not author:
            raise CommitNotRewardableError(
                f"commit {sha[:10]} has no author email; set user.email or use --agent-from config"
            )
    return QueuedCommit(
        sha=sha,
        author=author,
        project=project_of(repo),
        message=subject[:MESSAGE_CHARS_MAX],
        queued_at_ns=now_ns,
    )


@dataclass(frozen=True, slots=True)
class RunReport:
    """``delivery`` is None while the commit stays queued (``flush.unreachable`` says why)."""

    commit: QueuedCommit
    delivery: Delivery | None
    flush: FlushReport
    spool_path: Path

    @property
    def backlog(self) -> list[Sent]:
        """What became of the commits queued before this one."""
        return [item for item in self.flush.sent if item.entry.sha != self.commit.sha]


def run(
    repo: Repository,
    open_sender: SenderOpener,
    *,
    rev: str = "HEAD",
    agent_from: AgentFrom = AgentFrom.email,
    now_ns: int,
    sends_max: int = RUN_SENDS_MAX,
) -> RunReport:
    """What the hook does: queue the commit first (so nothing is lost if this process dies),
    then send the queue, oldest first, so earlier commits go before this one.

    Raises CommitNotRewardableError, SpoolFullError, GitCommandError (the hook reports them).
    """
    entry = read_commit(repo, rev, agent_from, now_ns=now_ns)
    spool = repo.spool
    spool.add(entry)
    report = flush(spool, open_sender, sends_max=sends_max)
    own = next((item.delivery for item in report.sent if item.entry.sha == entry.sha), None)
    return RunReport(entry, own, report, spool.path)


# Installing.


def render_hook_script(*, python: Path, agent_from: AgentFrom, target: ExchangeTarget) -> str:
    """The hook: run a chained hook if there is one, then ``exchange hook run``; exit 0."""
    arguments = ["hook", "run", "--agent-from", agent_from.value, *target.arguments()]
    run_arguments = shlex.join(arguments)
    chained = HOOK_NAME + CHAINED_SUFFIX
    return f"""#!/bin/sh
{HOOK_MARKER}
# Installed by `exchange hook install`; `exchange hook uninstall` removes it and puts back the
# hook it chains to. It rewards each commit through the Agent Exchange and never blocks or fails
# one: when no exchange answers within a few seconds, the commit waits in the git directory's
# {SPOOL_NAME} and is sent with the next commit or by `exchange hook flush`.
# Git runs hooks from the top of the work tree, so "$PWD" is the repository.
hook_dir=$(dirname -- "$0")
if [ -x "$hook_dir/{chained}" ]; then
    "$hook_dir/{chained}" "$@"
fi
python={shlex.quote(str(python))}
if [ -x "$python" ]; then
    "$python" -m exchange.integrations.cli {run_arguments} --repo "$PWD" </dev/null
elif command -v exchange >/dev/null 2>&1; then
    exchange {run_arguments} --repo "$PWD" </dev/null
else
    echo "exchange: commit not rewarded: $python is gone and exchange is not on PATH;" \\
        "run exchange hook install again" >&2
fi
exit 0
"""


def is_our_hook(path: Path) -> bool:
    """Whether ``path`` is a hook this module wrote (it carries HOOK_MARKER)."""
    try:
        if not path.is_file() or path.stat().st_size > HOOK_BYTES_MAX:
            return False
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return HOOK_MARKER in text.splitlines()


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


@dataclass(frozen=True, slots=True)
class InstallReport:
    hook_path: Path
    chained_path: Path | None  # the hook that was there before, kept and run first
    updated: bool  # our hook was already installed and has been rewritten


def install(
    repo: Repository,
    *,
    python: Path,
    agent_from: AgentFrom,
    target: ExchangeTarget,
    force: bool = False,
) -> InstallReport:
    """Installs the hook. A foreign ``post-commit`` is replaced only with ``force``, and then
    kept as ``post-commit.exchange-chained``, which the new hook runs first.

    Raises HookConflictError, OSError.
    """
    hook, chained = repo.hook_path, repo.chained_path
    repo.hooks_dir.mkdir(parents=True, exist_ok=True)
    updated = is_our_hook(hook)
    if _exists(hook) and not updated:
        if not force:
            raise HookConflictError(
                f"{hook} exists and was not installed by exchange; pass --force to install "
                f"anyway: it is kept as {chained.name}, still runs before each reward, and "
                "`exchange hook uninstall` puts it back"
            )
        if _exists(chained):
            raise HookConflictError(
                f"cannot keep {hook}: {chained} already exists; move one of them away first"
            )
        os.rename(hook, chained)
    temporary = hook.with_name(hook.name + ".exchange-tmp")
    temporary.write_text(
        render_hook_script(python=python, agent_from=agent_from, target=target), encoding="utf-8"
    )
    temporary.chmod(0o755)
    os.replace(temporary, hook)
    return InstallReport(hook, chained if _exists(chained) else None, updated)


@dataclass(frozen=True, slots=True)
class UninstallReport:
    removed: bool  # False: no hook was installed
    restored_path: Path | None  # the chained hook, back in its place
    queued: int  # commits still waiting in the spool


def uninstall(repo: Repository) -> UninstallReport:
    """Removes our hook and puts back the one it chained to. Leaves a foreign hook alone.

    Raises HookConflictError (the hook is not ours), OSError.
    """
    hook, chained = repo.hook_path, repo.chained_path
    queued = len(repo.spool.read().entries)
    if not _exists(hook):
        return UninstallReport(False, None, queued)
    if not is_our_hook(hook):
        raise HookConflictError(
            f"{hook} was not installed by exchange; left alone (remove it yourself if you must)"
        )
    hook.unlink()
    if _exists(chained):
        os.rename(chained, hook)
        return UninstallReport(True, hook, queued)
    return UninstallReport(True, None, queued)
