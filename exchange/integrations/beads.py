"""The beads (``bd``) integration: rewards for closed issues, read from ``.beads/issues.jsonl``.

Owns: parsing beads' JSONL (a bad line is reported with its number and skipped, never fatal),
the would-be reward of an issue under a configuration, the reward table, ``sync`` (every closed
issue, once: request id ``issue-<id>``) and running ``bd close``.
Must not: print (the CLI renders), write beads' files, or decide the reward: the exchange decides;
the quotes here use the same ``RewardRules`` so that previews match.

Beads writes one issue a line with Go's ``omitempty``: a missing ``priority`` is 0 (P1, the
highest), missing ``labels`` and ``assignee`` are empty. ``id``, ``title``, ``status`` and
``issue_type`` are required. Other fields (``description``, ``created_at``, ``dependencies``...)
are skipped.

Errors::

    BeadsError               anything this module could not do
    ├── BeadsFileError       .beads/issues.jsonl is missing or unreadable
    └── BdCommandError       bd is not installed, failed or timed out
"""

import hashlib
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final

import msgspec

from exchange.core.config import EconomyConfig
from exchange.core.rewards import RewardRules, agent_of_author
from exchange.errors import ExchangeError
from exchange.integrations.sender import (
    Delivery,
    DeliveryStatus,
    ExchangeUnreachableError,
    SenderOpener,
    deliver,
)
from protocols.amounts import format_micro
from protocols.commands import IssueClose

__all__ = [
    "CLOSED",
    "TOMBSTONE",
    "BdCommandError",
    "BeadsError",
    "BeadsFileError",
    "BeadsIssue",
    "IssueQuote",
    "ParseProblem",
    "RewardTable",
    "SyncItem",
    "SyncStatus",
    "Tracker",
    "close_command",
    "issue_request_id",
    "issues_path",
    "parse_issues",
    "quote_issue",
    "read_tracker",
    "reward_closed",
    "reward_table",
    "run_bd_close",
    "sync",
    "why_not_rewardable",
]

ISSUES_RELATIVE_PATH: Final = Path(".beads") / "issues.jsonl"
ISSUE_VERB: Final = "issue.close"
# Labels that count as an issue type when that type pays more than the issue's own.
LABEL_TYPES: Final = ("security", "docs")
CLOSED: Final = "closed"
# Beads' soft delete: never rewarded, never shown.
TOMBSTONE: Final = "tombstone"

# Bounds: issues read from one file, bytes in one line, and how long ``bd close`` may take.
ISSUES_MAX: Final = 100_000
LINE_BYTES_MAX: Final = 1024 * 1024
BD_TIMEOUT_S: Final = 30.0
# The wire's limits (protocols.ids).
REQUEST_ID_CHARS_MAX: Final = 64
AGENT_CHARS_MAX: Final = 64


class BeadsError(ExchangeError):
    """Base class of this module's errors; each message says what to do next."""


class BeadsFileError(BeadsError):
    pass


class BdCommandError(BeadsError):
    pass


BeadsPriority = Annotated[int, msgspec.Meta(ge=0, le=4)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class BeadsIssue(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of one beads issue that rewards read. Unknown fields are skipped."""

    id: NonEmpty
    title: str
    status: NonEmpty
    issue_type: NonEmpty
    priority: BeadsPriority = 0
    assignee: str | None = None
    labels: list[str] = []
    closed_at: str | None = None

    @property
    def priority_name(self) -> str:
        """Beads' 0-4 as the economy's P1-P5."""
        return f"P{self.priority + 1}"

    @property
    def agent(self) -> str | None:
        """The assignee as an agent id (an email counts by its local part); None if unassigned."""
        if self.assignee is None or not self.assignee.strip():
            return None
        return agent_of_author(self.assignee)

    @property
    def is_open(self) -> bool:
        return self.status not in (CLOSED, TOMBSTONE)


_issue_decoder: Final = msgspec.json.Decoder(BeadsIssue)


@dataclass(frozen=True, slots=True)
class ParseProblem:
    line_number: int
    message: str


@dataclass(frozen=True, slots=True)
class Tracker:
    """The issues of one file, in file order (a repeated id: the last line wins), and the lines
    that were skipped."""

    path: Path
    issues: list[BeadsIssue]
    problems: list[ParseProblem]

    def find(self, issue_id: str) -> BeadsIssue | None:
        return next((issue for issue in self.issues if issue.id == issue_id), None)


def parse_issues(lines: Iterable[bytes]) -> tuple[list[BeadsIssue], list[ParseProblem]]:
    """Parses beads JSONL lines. Blank lines are skipped silently; every other bad line is
    reported with its 1-based number and skipped."""
    by_id: dict[str, BeadsIssue] = {}
    first_line: dict[str, int] = {}
    problems: list[ParseProblem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line) > LINE_BYTES_MAX:
            problems.append(ParseProblem(number, f"longer than {LINE_BYTES_MAX} bytes; skipped"))
            continue
        if len(by_id) >= ISSUES_MAX:
            problems.append(ParseProblem(number, f"more than {ISSUES_MAX} issues; rest skipped"))
            break
        try:
            issue = _issue_decoder.decode(line)
        except msgspec.DecodeError as exc:
            problems.append(ParseProblem(number, _decode_problem(exc)))
            continue
        if issue.id in by_id:
            problems.append(
                ParseProblem(
                    number,
                    f"issue {issue.id!r} repeats line {first_line[issue.id]}; this line is used",
                )
            )
            del by_id[issue.id]  # Re-inserted below, so the order follows the last line.
        first_line.setdefault(issue.id, number)
        by_id[issue.id] = issue
    return list(by_id.values()), problems


def _decode_problem(exc: msgspec.DecodeError) -> str:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        if "$.priority" in text:
            text += " (beads priorities are 0-4)"
        return f"{text}; skipped"
    return f"not valid JSON ({text}); skipped"


def issues_path(repo: Path) -> Path:
    return repo / ISSUES_RELATIVE_PATH


def read_tracker(repo: Path) -> Tracker:
    """The issues of ``repo/.beads/issues.jsonl``.

    Raises BeadsFileError when the file is missing or unreadable.
    """
    path = issues_path(repo)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise BeadsFileError(
            f"{path} does not exist; run this in a repository that uses beads (`bd init`), "
            "pass --repo PATH, or run `bd export -o .beads/issues.jsonl`"
        ) from exc
    except OSError as exc:
        raise BeadsFileError(f"cannot read {path}: {exc.strerror}") from exc
    issues, problems = parse_issues(data.splitlines())
    return Tracker(path, issues, problems)


# Rewards.


@dataclass(frozen=True, slots=True)
class IssueQuote:
    """What closing ``issue`` pays under a configuration. ``reward_micro`` is None when it pays
    nothing, and ``reason`` says why. ``issue_type`` is the type paid (a label may raise it)."""

    issue: BeadsIssue
    priority: str
    issue_type: str
    type_from_label: bool
    reward_micro: int | None
    reason: str | None

    @property
    def reward(self) -> str | None:
        return None if self.reward_micro is None else format_micro(self.reward_micro)


def _paid_type(rules: RewardRules, issue: BeadsIssue) -> tuple[str, bool]:
    """The issue's type, or a ``security``/``docs`` label whose multiplier is higher."""
    best_type = issue.issue_type.lower()
    best = rules.issue_type_multiplier(best_type)
    from_label = False
    labels = {label.strip().lower() for label in issue.labels}
    for label_type in LABEL_TYPES:
        if label_type not in labels:
            continue
        multiplier = rules.issue_type_multiplier(label_type)
        if multiplier is not None and (best is None or multiplier > best):
            best_type, best, from_label = label_type, multiplier, True
    return best_type, from_label


def quote_issue(rules: RewardRules, issue: BeadsIssue) -> IssueQuote:
    """The reward for closing ``issue``: priority tokens × the paid type's multiplier."""
    issue_type, from_label = _paid_type(rules, issue)
    priority = issue.priority_name
    reward = rules.quote_issue(priority, issue_type)
    reason: str | None = None
    if rules.priority_micro(priority) is None:
        reason = f"priority {priority} has no reward in the configuration"
    elif reward is None:
        reason = f"issue type {issue_type!r} has no multiplier in the configuration"
    return IssueQuote(issue, priority, issue_type, from_label, reward, reason)


@dataclass(frozen=True, slots=True)
class RewardTable:
    """Rewards by priority (rows) and issue type (columns), in micro-tokens."""

    priorities: list[tuple[str, int]]
    issue_types: list[tuple[str, Decimal]]
    rewards_micro: dict[str, dict[str, int]]


def reward_table(config: EconomyConfig) -> RewardTable:
    rules = RewardRules(config)
    priorities = sorted(
        (name.upper(), micro)
        for name in config.issue_priorities
        if (micro := rules.priority_micro(name)) is not None
    )
    types = sorted(config.issue_types.items(), key=lambda item: (-item[1], item[0]))
    cells: dict[str, dict[str, int]] = {}
    for priority, _ in priorities:
        row: dict[str, int] = {}
        for issue_type, _multiplier in types:
            reward = rules.quote_issue(priority, issue_type)
            if reward is not None:
                row[issue_type.lower()] = reward
        cells[priority] = row
    return RewardTable(priorities, [(name.lower(), value) for name, value in types], cells)


# Sending.


def issue_request_id(issue_id: str) -> str:
    """``issue-<id>``; an id too long or not printable ASCII for a request id is hashed."""
    request_id = f"issue-{issue_id}"
    if len(request_id) <= REQUEST_ID_CHARS_MAX and all("!" <= ch <= "~" for ch in request_id):
        return request_id
    return "issue-" + hashlib.sha256(issue_id.encode()).hexdigest()[:40]


def close_command(quote: IssueQuote) -> IssueClose:
    agent = quote.issue.agent
    assert agent is not None and quote.reward_micro is not None, "only rewardable issues"
    return IssueClose(
        request_id=issue_request_id(quote.issue.id),
        issue_id=quote.issue.id,
        agent=agent,
        priority=quote.priority,
        issue_type=quote.issue_type,
    )


def why_not_rewardable(quote: IssueQuote) -> str | None:
    """Why closing this issue cannot be rewarded, checked before anything is sent."""
    agent = quote.issue.agent
    if agent is None:
        return f"no assignee; assign it (bd update {quote.issue.id} --assignee AGENT)"
    if len(agent) > AGENT_CHARS_MAX:
        return f"assignee {agent[:20]!r}... is longer than an agent id ({AGENT_CHARS_MAX})"
    return quote.reason


class SyncStatus(StrEnum):
    rewarded = "rewarded"
    already_rewarded = "already_rewarded"
    refused = "refused"
    skipped = "skipped"  # not sent: nothing to pay or nobody to pay
    not_sent = "not_sent"  # the exchange stopped answering before this one


@dataclass(frozen=True, slots=True)
class SyncItem:
    quote: IssueQuote
    status: SyncStatus
    message: str = ""
    code: str | None = None
    result: Mapping[str, object] | None = None


def _item(quote: IssueQuote, delivery: Delivery) -> SyncItem:
    status = {
        DeliveryStatus.rewarded: SyncStatus.rewarded,
        DeliveryStatus.already_rewarded: SyncStatus.already_rewarded,
        DeliveryStatus.refused: SyncStatus.refused,
        DeliveryStatus.unreachable: SyncStatus.not_sent,
    }[delivery.status]
    return SyncItem(quote, status, delivery.message, delivery.code, delivery.result)


def sync(issues: list[BeadsIssue], rules: RewardRules, open_sender: SenderOpener) -> list[SyncItem]:
    """Rewards every closed issue of ``issues`` once, over one connection, in file order.

    Re-running is harmless: each issue's request id is ``issue-<id>``, and the exchange pays an
    issue id once. Sending stops at the first issue that gets no answer; it and the rest are
    ``not_sent`` (run again later).
    """
    quotes = [quote_issue(rules, issue) for issue in issues if issue.status == CLOSED]
    items: dict[str, SyncItem] = {}
    sendable: list[IssueQuote] = []
    for quote in quotes:
        reason = why_not_rewardable(quote)
        if reason is not None:
            items[quote.issue.id] = SyncItem(quote, SyncStatus.skipped, reason)
        else:
            sendable.append(quote)
    unsent_reason: str | None = None
    if sendable:
        try:
            with open_sender() as sender:
                for quote in sendable:
                    delivery = deliver(sender, ISSUE_VERB, close_command(quote))
                    if not delivery.final:
                        unsent_reason = delivery.message
                        break
                    items[quote.issue.id] = _item(quote, delivery)
        except ExchangeUnreachableError as exc:
            unsent_reason = str(exc)
    for quote in sendable:
        if quote.issue.id not in items:
            items[quote.issue.id] = SyncItem(quote, SyncStatus.not_sent, unsent_reason or "")
    return [items[quote.issue.id] for quote in quotes]


def reward_closed(quote: IssueQuote, open_sender: SenderOpener) -> SyncItem:
    """Rewards one issue known to be closed (``bd close`` just succeeded)."""
    reason = why_not_rewardable(quote)
    if reason is not None:
        return SyncItem(quote, SyncStatus.skipped, reason)
    try:
        with open_sender() as sender:
            return _item(quote, deliver(sender, ISSUE_VERB, close_command(quote)))
    except ExchangeUnreachableError as exc:
        return SyncItem(quote, SyncStatus.not_sent, str(exc))


def run_bd_close(repo: Path, issue_id: str, *, reason: str | None = None) -> str:
    """Runs ``bd close ISSUE_ID`` in ``repo``; returns what it printed.

    Raises BdCommandError: bd is not on PATH (the message says what to do), failed, timed out.
    """
    bd = shutil.which("bd")
    if bd is None:
        raise BdCommandError(
            "bd (beads) is not installed, so the issue was not closed and nothing was rewarded. "
            "Install it (https://github.com/steveyegge/beads), or close the issue another way "
            "and then run `exchange issues sync`"
        )
    arguments = [bd, "close", issue_id]
    if reason is not None:
        arguments += ["--reason", reason]
    try:
        done = subprocess.run(
            arguments,
            cwd=repo,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=BD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BdCommandError(
            f"`bd close {issue_id}` took over {BD_TIMEOUT_S} s; not rewarded"
        ) from exc
    except OSError as exc:
        raise BdCommandError(f"cannot run {bd}: {exc.strerror}") from exc
    if done.returncode != 0:
        raise BdCommandError(
            f"`bd close {issue_id}` failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}; not rewarded"
        )
    return done.stdout.strip()
