"""The ``exchange hook …`` and ``exchange issues …`` commands: argument parsing and output.

Owns: ``hook_main(argv)`` (install, uninstall, run, flush) and ``issues_main(argv)`` (rewards,
preview, preview-all, sync, close), each returning an exit status, and the text, table and
``--json`` renderings of their reports (through ``exchange.render.Output``, as the CLI's).
``exchange hook run`` always exits 0: a commit never fails on the exchange's account. ``python -m
exchange.integrations.cli hook|issues …`` runs the same commands; the installed hook uses it, so
it works when the venv is not on the committer's PATH.
Must not: hold business rules (git_hook, spool and beads do) or reach the exchange other than
through ``sender.open_exchange``.

Two command groups of about 300 lines each share this module (and its helpers) so that the CLI's
wiring is two functions.

Exit statuses, as the CLI's: 0 done; 1 refused or not found (``{"error": {"code", "message"}}``
with ``--json``); 2 bad arguments; 3 the exchange did not answer (something is still unsent).
"""

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final, TextIO

from rich.table import Table

from exchange.core.config import ConfigError, EconomyConfig, parse_config
from exchange.core.rewards import RewardRules
from exchange.daemon.settings import DataPaths
from exchange.integrations import beads, git_hook, spool
from exchange.integrations.sender import (
    Delivery,
    DeliveryStatus,
    ExchangeTarget,
    RewardSender,
    open_exchange,
)
from exchange.locate import DATA_DIR_DEFAULT, NATS_URL_ENV
from exchange.render import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Output,
    parse_or_status,
)
from protocols.amounts import format_micro
from protocols.logs import configure_logging

__all__ = ["OpenerFactory", "hook_main", "issues_main", "main"]

# The hook waits this long for the exchange, once, before queueing the commit.
HOOK_TIMEOUT_S_DEFAULT: Final = 2.0
SEND_TIMEOUT_S_DEFAULT: Final = 5.0
PREFIX: Final = "exchange:"

OpenerFactory = Callable[
    [ExchangeTarget, float], Callable[[], AbstractContextManager[RewardSender]]
]


def _real_opener(
    target: ExchangeTarget, timeout_s: float
) -> Callable[[], AbstractContextManager[RewardSender]]:
    return lambda: open_exchange(target, timeout_s=timeout_s)


def _add_target(parser: argparse.ArgumentParser, *, timeout_s: float | None) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=DATA_DIR_DEFAULT,
        metavar="DIR",
        help="the exchange's data directory: address and admin credentials (default .exchange)",
    )
    parser.add_argument("--nats", metavar="URL", help=f"NATS server (default {NATS_URL_ENV}/DIR)")
    if timeout_s is not None:
        parser.add_argument("--timeout-s", type=float, default=timeout_s, help="per request")


def _target(args: argparse.Namespace) -> ExchangeTarget:
    return ExchangeTarget(data_dir=args.data.absolute(), nats_url=args.nats)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# ---------------------------------------------------------------------------- exchange hook


def _hook_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange hook", description="Reward git commits through the exchange."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    agent_help = "the agent: the author email's local part, or `git config exchange.agent`"
    install = commands.add_parser("install", help="install the post-commit hook")
    install.add_argument(
        "--agent-from", choices=["email", "config"], default="email", help=agent_help
    )
    install.add_argument("--force", action="store_true", help="replace a foreign hook, chained")
    _add_target(install, timeout_s=None)
    uninstall = commands.add_parser("uninstall", help="remove our hook; restore a chained one")
    run = commands.add_parser("run", help="reward a commit now, or queue it (the hook runs this)")
    run.add_argument("--agent-from", choices=["email", "config"], default="email", help=agent_help)
    run.add_argument("--sha", default="HEAD", metavar="REV", help="the commit (default HEAD)")
    _add_target(run, timeout_s=HOOK_TIMEOUT_S_DEFAULT)
    flush = commands.add_parser("flush", help="send the queued commits")
    flush.add_argument("--json", action="store_true", help="print one JSON document")
    _add_target(flush, timeout_s=SEND_TIMEOUT_S_DEFAULT)
    for sub in (install, uninstall, run, flush):
        sub.add_argument("--repo", type=Path, default=Path("."), help="the repository (default .)")
    return parser


def hook_main(
    argv: Sequence[str],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    opener: OpenerFactory = _real_opener,
) -> int:
    """``exchange hook install|uninstall|run|flush``; returns the exit status."""
    args = parse_or_status(_hook_parser(), argv)
    if isinstance(args, int):
        return args
    output = Output(
        json_mode=getattr(args, "json", False),
        stdout=stdout or sys.stdout,
        stderr=stderr or sys.stderr,
    )
    if args.command == "run":
        return _hook_run(args, output, opener)
    try:
        repo = git_hook.open_repository(args.repo)
        if args.command == "install":
            return _hook_install(args, repo, output)
        if args.command == "uninstall":
            return _hook_uninstall(repo, output)
        assert args.command == "flush", args.command
        return _hook_flush(args, repo, output, opener)
    except git_hook.HookConflictError as exc:
        return output.error({"code": "hook_conflict", "message": str(exc)})
    except (git_hook.GitHookError, OSError) as exc:
        return output.error({"code": "git_failed", "message": str(exc)})


def _say(output: Output, text: str) -> None:
    output.console.print(f"{PREFIX} {text}", markup=False, highlight=False, soft_wrap=True)


def _warn(output: Output, text: str) -> None:
    output.errors.print(f"{PREFIX} {text}", markup=False, highlight=False, soft_wrap=True)


def _hook_install(args: argparse.Namespace, repo: git_hook.Repository, output: Output) -> int:
    target = _target(args)
    report = git_hook.install(
        repo,
        python=Path(sys.executable),
        agent_from=git_hook.AgentFrom(args.agent_from),
        target=target,
        force=args.force,
    )
    where = " ".join(target.arguments())
    done = "updated" if report.updated else "installed"
    _say(output, f"{done} {report.hook_path} (agent from {args.agent_from}; {where})")
    if report.chained_path is not None:
        _say(output, f"the previous hook is kept as {report.chained_path} and runs first")
    if target.nats_url is None and not DataPaths(target.data_dir).endpoint.exists():
        _say(output, f"no exchange is running in {target.data_dir} yet: commits wait in the queue")
    return EXIT_OK


def _hook_uninstall(repo: git_hook.Repository, output: Output) -> int:
    report = git_hook.uninstall(repo)
    if report.removed:
        _say(output, f"removed {repo.hook_path}")
    else:
        _say(output, f"no post-commit hook in {repo.hooks_dir}; nothing to remove")
    if report.restored_path is not None:
        _say(output, f"restored the previous hook at {report.restored_path}")
    if report.queued:
        _say(
            output,
            f"{_plural(report.queued, 'commit')} still queued in {repo.spool.path}: send them "
            "with `exchange hook flush`, or delete the file",
        )
    return EXIT_OK


def _hook_run(
    args: argparse.Namespace, output: Output, opener: OpenerFactory
) -> int:  # Always EXIT_OK: this runs inside `git commit`.
    try:
        repo = git_hook.open_repository(args.repo)
        report = git_hook.run(
            repo,
            opener(_target(args), args.timeout_s),
            rev=args.sha,
            agent_from=git_hook.AgentFrom(args.agent_from),
            now_ns=time.time_ns(),
        )
    except git_hook.CommitNotRewardableError as exc:
        _say(output, f"not rewarded: {exc}")
        return EXIT_OK
    except (git_hook.GitHookError, spool.SpoolFullError, OSError) as exc:
        _warn(output, f"commit not rewarded: {exc}")
        return EXIT_OK
    _print_problems(output, report.flush.problems, report.spool_path)
    backlog = report.backlog
    if backlog:
        rewarded = sum(1 for item in backlog if item.delivery.status is DeliveryStatus.rewarded)
        _say(output, f"sent {_plural(len(backlog), 'queued commit')} ({rewarded} rewarded)")
        for item in backlog:
            if item.delivery.status is DeliveryStatus.refused:
                _say(output, _commit_line(item.entry, item.delivery))
    if report.delivery is not None:
        _say(output, _commit_line(report.commit, report.delivery))
        return EXIT_OK
    earlier = report.flush.remaining - 1
    behind = f" behind {_plural(earlier, 'earlier commit')}" if earlier > 0 else ""
    _say(
        output,
        f"{report.commit.short_sha} queued{behind} in {report.spool_path} "
        f"({report.flush.unreachable or 'not sent this time'}); it is sent with the next commit "
        "or by `exchange hook flush`",
    )
    return EXIT_OK


def _hook_flush(
    args: argparse.Namespace, repo: git_hook.Repository, output: Output, opener: OpenerFactory
) -> int:
    queue = repo.spool
    report = spool.flush(queue, opener(_target(args), args.timeout_s))
    status = EXIT_OK if report.remaining == 0 else EXIT_UNREACHABLE
    if output.json_mode:
        output.json(
            {
                "sent": [
                    {"sha": item.entry.sha, **_delivery_json(item.delivery)} for item in report.sent
                ],
                "remaining": report.remaining,
                "unreachable": report.unreachable,
                "problems": [
                    {"line": p.line_number, "message": p.message} for p in report.problems
                ],
            }
        )
        return status
    _print_problems(output, report.problems, queue.path)
    for item in report.sent:
        _say(output, _commit_line(item.entry, item.delivery))
    if report.remaining:
        _warn(
            output,
            f"{_plural(report.remaining, 'commit')} still queued in {queue.path} "
            f"({report.unreachable or 'not sent'})",
        )
    elif not report.sent:
        _say(output, "no commits queued")
    return status


def _delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "status": delivery.status.value,
        "code": delivery.code,
        "message": delivery.message,
        "result": delivery.result,
    }


def _commit_line(entry: spool.QueuedCommit, delivery: Delivery) -> str:
    sha = entry.short_sha
    if delivery.status is DeliveryStatus.rewarded:
        result = delivery.result or {}
        exhausted = (
            "; the contract's budget is now exhausted" if result.get("budget_exhausted") else ""
        )
        return (
            f"{sha} rewarded {result.get('agent')} {result.get('reward')} tokens "
            f"({result.get('contract')} ×{result.get('project_multiplier')}, "
            f"bonus ×{result.get('commit_bonus')}; balance {result.get('balance')}{exhausted})"
        )
    if delivery.status is DeliveryStatus.already_rewarded:
        return f"{sha} was already rewarded"
    return f"{sha} not rewarded ({delivery.code}: {delivery.message}); dropped from the queue"


def _print_problems(output: Output, problems: Sequence[spool.SpoolProblem], path: Path) -> None:
    for problem in problems:
        _warn(output, f"{path} line {problem.line_number}: {problem.message}")


# -------------------------------------------------------------------------- exchange issues


def _issues_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange issues", description="Reward closed beads (bd) issues through the exchange."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rewards = commands.add_parser("rewards", help="the reward table: priorities × issue types")
    preview = commands.add_parser("preview", help="the would-be reward of one issue")
    preview_all = commands.add_parser("preview-all", help="open issues, would-be rewards")
    sync = commands.add_parser("sync", help="reward every closed issue, once")
    close = commands.add_parser("close", help="`bd close ID`, then reward it")
    close.add_argument("--reason", help="passed to `bd close --reason`")
    for sub in (preview, close):
        sub.add_argument("issue_id", metavar="ID")
    for sub in (rewards, preview, preview_all, sync, close):
        sub.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="economy TOML (default: DIR/economy.toml when present, else the defaults)",
        )
        sub.add_argument("--json", action="store_true", help="print one JSON document")
        sending = sub in (sync, close)
        _add_target(sub, timeout_s=SEND_TIMEOUT_S_DEFAULT if sending else None)
        if sub is not rewards:
            sub.add_argument("--repo", type=Path, default=Path("."), help="has .beads/ (default .)")
    return parser


def issues_main(
    argv: Sequence[str],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    opener: OpenerFactory = _real_opener,
) -> int:
    """``exchange issues rewards|preview ID|preview-all|sync|close ID``; returns the exit status."""
    args = parse_or_status(_issues_parser(), argv)
    if isinstance(args, int):
        return args
    output = Output(json_mode=args.json, stdout=stdout or sys.stdout, stderr=stderr or sys.stderr)
    try:
        config, source = _active_config(args)
    except (ConfigError, OSError) as exc:
        return output.error({"code": "config_invalid", "message": str(exc)})
    if args.command == "rewards":
        return _issues_rewards(output, config, source)
    try:
        tracker = beads.read_tracker(args.repo)
    except beads.BeadsFileError as exc:
        return output.error({"code": "issues_not_found", "message": str(exc)})
    for problem in tracker.problems:
        _warn(output, f"{tracker.path} line {problem.line_number}: {problem.message}")
    rules = RewardRules(config)
    if args.command == "preview":
        return _issues_preview(args, output, tracker, rules)
    if args.command == "preview-all":
        return _issues_preview_all(output, tracker, rules)
    if args.command == "sync":
        items = beads.sync(tracker.issues, rules, opener(_target(args), args.timeout_s))
        return _print_sync(output, items, closing=False)
    assert args.command == "close", args.command
    return _issues_close(args, output, tracker, rules, opener)


def _active_config(args: argparse.Namespace) -> tuple[EconomyConfig, str]:
    """--config FILE, else the data directory's economy.toml, else the defaults.

    Raises ConfigError (naming the file), OSError.
    """
    path: Path | None = args.config
    if path is None:
        stored = DataPaths(args.data).economy_config
        path = stored if stored.exists() else None
    if path is None:
        return EconomyConfig(), "the default economy"
    try:
        return parse_config(path.read_text(encoding="utf-8")), str(path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _issues_rewards(output: Output, config: EconomyConfig, source: str) -> int:
    table = beads.reward_table(config)
    if output.json_mode:
        output.json(
            {
                "source": source,
                "priorities": {name: format_micro(micro) for name, micro in table.priorities},
                "issue_types": {name: str(multiplier) for name, multiplier in table.issue_types},
                "rewards": {
                    priority: {kind: format_micro(micro) for kind, micro in row.items()}
                    for priority, row in table.rewards_micro.items()
                },
            }
        )
        return EXIT_OK
    view = Table(title=f"Tokens for closing an issue ({source})")
    view.add_column("priority\n(beads)", no_wrap=True)
    view.add_column("base", justify="right")
    for name, multiplier in table.issue_types:
        view.add_column(f"{name}\n×{multiplier}", justify="right")
    for priority, base_micro in table.priorities:
        row = table.rewards_micro[priority]
        cells = [format_micro(row[name]) if name in row else "-" for name, _ in table.issue_types]
        beads_number = f" ({int(priority[1:]) - 1})" if priority[1:].isdigit() else ""
        view.add_row(priority + beads_number, format_micro(base_micro), *cells)
    output.console.print(view)
    return EXIT_OK


def _quote_json(quote: beads.IssueQuote) -> dict[str, Any]:
    issue = quote.issue
    return {
        "id": issue.id,
        "title": issue.title,
        "status": issue.status,
        "priority": quote.priority,
        "issue_type": quote.issue_type,
        "type_from_label": quote.type_from_label,
        "assignee": issue.assignee,
        "agent": issue.agent,
        "reward": quote.reward,
        "note": beads.why_not_rewardable(quote),
    }


def _type_text(quote: beads.IssueQuote) -> str:
    if quote.type_from_label:
        return f"{quote.issue_type} (label; is {quote.issue.issue_type})"
    return quote.issue_type


def _issues_preview(
    args: argparse.Namespace, output: Output, tracker: beads.Tracker, rules: RewardRules
) -> int:
    issue = tracker.find(args.issue_id)
    if issue is None:
        return output.error(
            {"code": "unknown_issue", "message": f"no issue {args.issue_id!r} in {tracker.path}"}
        )
    quote = beads.quote_issue(rules, issue)
    if output.json_mode:
        output.json(_quote_json(quote))
        return EXIT_OK
    note = beads.why_not_rewardable(quote)
    lines = [
        f"{issue.id}  {issue.title}",
        f"  status {issue.status}; {quote.priority} (beads {issue.priority}); "
        f"type {_type_text(quote)}",
        f"  assignee {issue.assignee or '-'}; agent {issue.agent or '-'}",
        f"  reward when closed: {quote.reward or 'nothing'}" + (f" ({note})" if note else ""),
    ]
    if issue.status == beads.CLOSED:
        lines.append("  closed: `exchange issues sync` rewards it, once")
    elif issue.status == beads.TOMBSTONE:
        lines.append("  deleted in beads (tombstone): never rewarded")
    for line in lines:
        output.console.print(line, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def _issues_preview_all(output: Output, tracker: beads.Tracker, rules: RewardRules) -> int:
    quotes = [beads.quote_issue(rules, issue) for issue in tracker.issues if issue.is_open]
    quotes.sort(key=lambda quote: (quote.issue.priority, quote.issue.id))
    total = format_micro(sum(quote.reward_micro or 0 for quote in quotes))
    if output.json_mode:
        output.json(
            {
                "issues": [_quote_json(quote) for quote in quotes],
                "total": total,
                "problems": [
                    {"line": p.line_number, "message": p.message} for p in tracker.problems
                ],
            }
        )
        return EXIT_OK
    view = Table(title=f"Open issues in {tracker.path}", show_footer=True)
    view.add_column("id", footer="total")
    view.add_column("priority")
    view.add_column("type")
    view.add_column("agent")
    view.add_column("reward", justify="right", footer=total)
    view.add_column("title", overflow="fold")
    for quote in quotes:
        issue = quote.issue
        view.add_row(
            issue.id,
            quote.priority,
            _type_text(quote),
            issue.agent or "-",
            quote.reward or "-",
            issue.title,
        )
    output.console.print(view)
    return EXIT_OK


def _sync_json(item: beads.SyncItem) -> dict[str, Any]:
    return {
        "id": item.quote.issue.id,
        "agent": item.quote.issue.agent,
        "status": item.status.value,
        "reward": (item.result or {}).get("reward"),
        "code": item.code,
        "message": item.message,
    }


def _sync_line(item: beads.SyncItem) -> str:
    issue = item.quote.issue
    if item.status is beads.SyncStatus.rewarded:
        result = item.result or {}
        return (
            f"{issue.id}: rewarded {result.get('agent')} {result.get('reward')} tokens "
            f"({result.get('priority')} {result.get('issue_type')}; "
            f"balance {result.get('balance')})"
        )
    if item.status is beads.SyncStatus.already_rewarded:
        return f"{issue.id}: already rewarded"
    if item.status is beads.SyncStatus.refused:
        return f"{issue.id}: refused ({item.code}: {item.message})"
    if item.status is beads.SyncStatus.skipped:
        return f"{issue.id}: skipped ({item.message})"
    return f"{issue.id}: not sent"


def _print_sync(output: Output, items: list[beads.SyncItem], *, closing: bool) -> int:
    unsent = sum(1 for item in items if item.status is beads.SyncStatus.not_sent)
    refused = any(
        item.status in (beads.SyncStatus.refused, beads.SyncStatus.skipped) for item in items
    )
    status = EXIT_UNREACHABLE if unsent else EXIT_REFUSED if closing and refused else EXIT_OK
    if output.json_mode:
        output.json(
            {"closed": True, **_sync_json(items[0])}
            if closing
            else {"results": [_sync_json(item) for item in items]}
        )
        return status
    for item in items:
        output.console.print(_sync_line(item), markup=False, highlight=False, soft_wrap=True)
    if not closing:
        counts = dict.fromkeys(beads.SyncStatus, 0)
        for item in items:
            counts[item.status] += 1
        summary = ", ".join(
            f"{count} {kind.value.replace('_', ' ')}" for kind, count in counts.items() if count
        )
        output.console.print(
            f"{_plural(len(items), 'closed issue')}: {summary or 'nothing to do'}", markup=False
        )
    if unsent:
        reason = next(item.message for item in items if item.status is beads.SyncStatus.not_sent)
        _warn(
            output,
            f"{_plural(unsent, 'issue')} not sent ({reason}); run `exchange issues sync` again "
            "once the exchange answers",
        )
    return status


def _issues_close(
    args: argparse.Namespace,
    output: Output,
    tracker: beads.Tracker,
    rules: RewardRules,
    opener: OpenerFactory,
) -> int:
    issue = tracker.find(args.issue_id)
    if issue is None:
        return output.error(
            {
                "code": "unknown_issue",
                "message": f"no issue {args.issue_id!r} in {tracker.path}; if bd knows it, "
                "export it first (`bd sync` or `bd export -o .beads/issues.jsonl`)",
            }
        )
    try:
        printed = beads.run_bd_close(args.repo, issue.id, reason=args.reason)
    except beads.BdCommandError as exc:
        return output.error({"code": "bd_failed", "message": str(exc)})
    if printed and not output.json_mode:
        output.console.print(printed, markup=False, highlight=False, soft_wrap=True)
    quote = beads.quote_issue(rules, issue)
    item = beads.reward_closed(quote, opener(_target(args), args.timeout_s))
    return _print_sync(output, [item], closing=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m exchange.integrations.cli hook|issues …`` (what the installed hook runs)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    configure_logging(level="warning")
    if arguments[:1] == ["hook"]:
        return hook_main(arguments[1:])
    if arguments[:1] == ["issues"]:
        return issues_main(arguments[1:])
    sys.stderr.write("usage: python -m exchange.integrations.cli {hook,issues} ...\n")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
