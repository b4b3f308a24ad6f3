"""Reports of a simulation result: the JSON shape, the CSV files and the rich tables.

This module owns how a ``SimulationResult`` is shown; it computes nothing about the economy.
Amounts in JSON and CSV are exact decimal strings of tokens (``format_micro``); the tables round
them to whole tokens for people, as seed 1's tables do. ``to_report`` is pure; ``write_files``
writes into a folder; ``print_tables`` writes to a rich console.
"""

import csv
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Final

import msgspec
from rich.console import Console
from rich.table import Table

from exchange.sim.result import HourStats, SimulationResult
from exchange.sim.scenario import hour_band
from protocols.amounts import format_micro, tokens_of

__all__ = [
    "AgentRow",
    "BandRow",
    "HourRow",
    "MetricRow",
    "Report",
    "encode_json",
    "print_tables",
    "to_report",
    "write_files",
]

# Sample log lines kept per agent and refusal code: enough to see the pattern, not a log dump.
samples_per_code_max: Final = 3
CSV_FILES: Final = (
    "balances.csv",
    "models.csv",
    "refusals.csv",
    "refusal_log.csv",
    "hours.csv",
    "bands.csv",
    "timeline.csv",
    "metrics.csv",
)
JSON_FILE: Final = "result.json"
# Written only when the scenario's credit is enabled (tasks.csv: and it plans tasks).
CREDIT_CSV_FILE: Final = "credit.csv"
TASKS_CSV_FILE: Final = "tasks.csv"


class AgentRow(msgspec.Struct, frozen=True, kw_only=True):
    start: str
    earned: str
    spent: str
    final: str
    net: str


class ActivityRow(msgspec.Struct, frozen=True, kw_only=True):
    commits: int
    issues: int
    requests: int
    refused: int


class ModelRow(msgspec.Struct, frozen=True, kw_only=True):
    requests: int
    tokens: int
    spent: str


class AgentModels(msgspec.Struct, frozen=True, kw_only=True):
    strategy: str
    spent: str
    models: dict[str, ModelRow]


class HourRow(msgspec.Struct, frozen=True, kw_only=True):
    hour: int
    hour_of_day: int
    commits: int
    issues: int
    requests: int
    refusals: int
    refusals_by_code: dict[str, int]
    earned: str
    spent: str


class BandRow(msgspec.Struct, frozen=True, kw_only=True):
    band: str
    commits: int
    issues: int
    requests: int
    refusals: int
    refusals_by_code: dict[str, int]
    earned: str
    spent: str


class MetricRow(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    value: float | None
    target: str | None = None
    warning: str | None = None
    status: str | None = None


class CreditRow(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's staking, lending and futures over the run (docs/simulation.md, Credit)."""

    staked: str
    yield_: str = msgspec.field(name="yield")
    slashed: str
    borrowed: str
    repaid: str
    lent: str
    received: str
    collateral_lost: str
    owed: str
    lent_out: str
    defaults: int
    futures_net: str
    # A default, so that a result.json written before tasks were simulated still reads.
    slash_received: str = "0"


class TaskRow(msgspec.Struct, frozen=True, kw_only=True):
    """A hired task of the credit plans, as the market ended it (docs/simulation.md, Credit)."""

    task_id: str
    manager: str
    executor: str
    task_type: str
    planned: str
    state: str
    price: str
    paid: str
    fee: str
    refunded: str
    slashed: str


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    scenario: str
    seed: int
    hours: int
    start_unix_s: int
    commands_applied: int
    digest: str


# omit_defaults: ``credit`` is there only when the scenario's credit is enabled, so a run
# without it prints exactly the JSON it always did.
class Report(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What ``exchange simulate --json`` prints and ``--out`` saves as result.json."""

    run: RunInfo
    agents: dict[str, AgentRow]
    refusals: dict[str, dict[str, int]]
    models: dict[str, AgentModels]
    hours: list[HourRow]
    bands: list[BandRow]
    metrics: dict[str, MetricRow]
    activity: dict[str, ActivityRow]
    refusal_samples: dict[str, list[str]]
    credit: dict[str, CreditRow] | None = None
    tasks: list[TaskRow] | None = None


def to_report(result: SimulationResult) -> Report:
    """The JSON shape of a result. Pure."""
    refusals: dict[str, dict[str, int]] = {a.agent: {} for a in result.agents}
    samples: dict[str, list[str]] = {a.agent: [] for a in result.agents}
    shown: dict[tuple[str, str], int] = {}
    for record in result.refusals:
        counts = refusals[record.agent]
        counts[record.code] = counts.get(record.code, 0) + 1
        key = (record.agent, record.code)
        if shown.get(key, 0) < samples_per_code_max:
            shown[key] = shown.get(key, 0) + 1
            samples[record.agent].append(record.line)
    models: dict[str, AgentModels] = {}
    for agent in result.agents:
        usage = [m for m in result.models if m.agent == agent.agent]
        models[agent.agent] = AgentModels(
            strategy=agent.strategy,
            spent=format_micro(agent.spent_micro),
            models={
                m.model: ModelRow(
                    requests=m.requests, tokens=m.tokens, spent=format_micro(m.spent_micro)
                )
                for m in usage
            },
        )
    return Report(
        run=RunInfo(
            scenario=result.scenario,
            seed=result.seed,
            hours=result.hours,
            start_unix_s=result.start_unix_s,
            commands_applied=result.commands_applied,
            digest=result.digest,
        ),
        agents={
            a.agent: AgentRow(
                start=format_micro(a.start_micro),
                earned=format_micro(a.earned_micro),
                spent=format_micro(a.spent_micro),
                final=format_micro(a.final_micro),
                net=format_micro(a.net_micro),
            )
            for a in result.agents
        },
        refusals={agent: dict(sorted(codes.items())) for agent, codes in refusals.items()},
        models=models,
        hours=[_hour_row(h) for h in result.hourly],
        bands=[_band_row(band, result.hourly) for band in result.report_bands],
        metrics={
            m.name: MetricRow(value=m.value, target=m.target, warning=m.warning, status=m.status)
            for m in result.metrics
        },
        activity={
            a.agent: ActivityRow(
                commits=a.commits, issues=a.issues, requests=a.requests, refused=a.refused
            )
            for a in result.agents
        },
        refusal_samples=samples,
        credit={
            c.agent: CreditRow(
                staked=format_micro(c.staked_micro),
                yield_=format_micro(c.yield_micro),
                slashed=format_micro(c.slashed_micro),
                borrowed=format_micro(c.borrowed_micro),
                repaid=format_micro(c.repaid_micro),
                lent=format_micro(c.lent_micro),
                received=format_micro(c.received_micro),
                collateral_lost=format_micro(c.collateral_lost_micro),
                owed=format_micro(c.owed_micro),
                lent_out=format_micro(c.lent_out_micro),
                defaults=c.defaults,
                futures_net=format_micro(c.futures_net_micro),
                slash_received=format_micro(c.slash_received_micro),
            )
            for c in result.credit
        }
        or None,
        tasks=[
            TaskRow(
                task_id=t.task_id,
                manager=t.manager,
                executor=t.executor,
                task_type=t.task_type,
                planned=t.planned,
                state=t.state,
                price=format_micro(t.price_micro),
                paid=format_micro(t.paid_micro),
                fee=format_micro(t.fee_micro),
                refunded=format_micro(t.refunded_micro),
                slashed=format_micro(t.slashed_micro),
            )
            for t in result.tasks
        ]
        or None,
    )


def _hour_row(h: HourStats) -> HourRow:
    return HourRow(
        hour=h.hour,
        hour_of_day=h.hour_of_day,
        commits=h.commits,
        issues=h.issues,
        requests=h.requests,
        refusals=h.refusals,
        refusals_by_code=h.refusals_by_code,
        earned=format_micro(h.earned_micro),
        spent=format_micro(h.spent_micro),
    )


def _band_row(band: str, hourly: list[HourStats]) -> BandRow:
    """Totals over every simulated hour whose hour of day is in ``band`` (all days of a run)."""
    hours_of_day = set(hour_band(band))
    rows = [h for h in hourly if h.hour_of_day in hours_of_day]
    by_code: dict[str, int] = {}
    for h in rows:
        for code, n in h.refusals_by_code.items():
            by_code[code] = by_code.get(code, 0) + n
    return BandRow(
        band=band,
        commits=sum(h.commits for h in rows),
        issues=sum(h.issues for h in rows),
        requests=sum(h.requests for h in rows),
        refusals=sum(h.refusals for h in rows),
        refusals_by_code=dict(sorted(by_code.items())),
        earned=format_micro(sum(h.earned_micro for h in rows)),
        spent=format_micro(sum(h.spent_micro for h in rows)),
    )


def encode_json(report: Report) -> bytes:
    """Indented JSON with a final newline; the same bytes for the same report."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"


# --------------------------------------------------------------------------------- files


def write_files(result: SimulationResult, folder: Path) -> list[Path]:
    """Writes result.json and the CSV files into ``folder`` (created if missing); returns the
    paths written. Raises ``OSError`` when the folder cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    report = to_report(result)
    written = [folder / JSON_FILE]
    written[0].write_bytes(encode_json(report))
    tables = _csv_tables(result, report)
    for name in CSV_FILES:
        path = folder / name
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(tables[name])
        written.append(path)
    if report.credit is not None:
        path = folder / CREDIT_CSV_FILE
        columns = list(CreditRow.__struct_encode_fields__)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["agent", *columns])
            for agent, row in report.credit.items():
                writer.writerow([agent, *msgspec.structs.astuple(row)])
        written.append(path)
    if report.tasks is not None:
        path = folder / TASKS_CSV_FILE
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(TaskRow.__struct_encode_fields__)
            writer.writerows(msgspec.structs.astuple(task) for task in report.tasks)
        written.append(path)
    return written


CsvRow = Sequence[object]


def _csv_tables(result: SimulationResult, report: Report) -> dict[str, list[CsvRow]]:
    codes = sorted({r.code for r in result.refusals})
    act = report.activity
    tables: dict[str, list[CsvRow]] = {
        "balances.csv": [
            (
                "agent",
                "start",
                "earned",
                "spent",
                "final",
                "net",
                "commits",
                "issues",
                "requests",
                "refused",
            ),
            *(
                (
                    name,
                    row.start,
                    row.earned,
                    row.spent,
                    row.final,
                    row.net,
                    act[name].commits,
                    act[name].issues,
                    act[name].requests,
                    act[name].refused,
                )
                for name, row in report.agents.items()
            ),
        ],
        "models.csv": [
            ("agent", "strategy", "model", "requests", "tokens", "spent"),
            *(
                (name, usage.strategy, model, row.requests, row.tokens, row.spent)
                for name, usage in report.models.items()
                for model, row in usage.models.items()
            ),
        ],
        "refusals.csv": [
            ("agent", "code", "count"),
            *(
                (name, code, n)
                for name, counts in report.refusals.items()
                for code, n in counts.items()
            ),
        ],
        "refusal_log.csv": [
            ("offset_ms", "agent", "verb", "code", "line"),
            *((r.offset_ms, r.agent, r.verb, r.code, r.line) for r in result.refusals),
        ],
        "hours.csv": [
            (
                "hour",
                "hour_of_day",
                "commits",
                "issues",
                "requests",
                "refusals",
                *codes,
                "earned",
                "spent",
            ),
            *(
                (
                    h.hour,
                    h.hour_of_day,
                    h.commits,
                    h.issues,
                    h.requests,
                    h.refusals,
                    *(h.refusals_by_code.get(code, 0) for code in codes),
                    h.earned,
                    h.spent,
                )
                for h in report.hours
            ),
        ],
        "bands.csv": [
            ("band", "commits", "issues", "requests", "refusals", *codes, "earned", "spent"),
            *(
                (
                    b.band,
                    b.commits,
                    b.issues,
                    b.requests,
                    b.refusals,
                    *(b.refusals_by_code.get(code, 0) for code in codes),
                    b.earned,
                    b.spent,
                )
                for b in report.bands
            ),
        ],
        "timeline.csv": [
            ("agent", "offset_ms", "balance"),
            *(
                (agent, offset_ms, format_micro(balance_micro))
                for agent, points in result.timeline.items()
                for offset_ms, balance_micro in points
            ),
        ],
        "metrics.csv": [
            ("metric", "value", "target", "warning", "status"),
            *(
                (
                    name,
                    "" if m.value is None else m.value,
                    m.target or "",
                    m.warning or "",
                    m.status or "",
                )
                for name, m in report.metrics.items()
            ),
        ],
    }
    assert sorted(tables) == sorted(CSV_FILES)
    return tables


# --------------------------------------------------------------------------------- tables


def _whole(micro: int, *, signed: bool = False) -> str:
    """Tokens rounded half-even to a whole token with thousands separators: 4561.2 -> "4,561"."""
    tokens = tokens_of(micro).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return f"{tokens:+,}" if signed and tokens != 0 else f"{tokens:,}"


def print_tables(result: SimulationResult, console: Console) -> None:
    """Seed 1's tables: balances, model usage, refusals, hour bands, swarm metrics."""
    report = to_report(result)
    console.print(
        f"[bold]{result.scenario}[/bold]: seed {result.seed}, {result.hours} h, "
        f"{result.commands_applied} commands, digest {result.digest[:16]}"
    )
    balances = Table(title="Final balances")
    for column in ("Agent", "Start", "Earned", "Spent", "Final", "Net"):
        balances.add_column(column, justify="left" if column == "Agent" else "right")
    for a in result.agents:
        balances.add_row(
            a.agent,
            _whole(a.start_micro),
            _whole(a.earned_micro),
            _whole(a.spent_micro),
            _whole(a.final_micro),
            _whole(a.net_micro, signed=True),
            style="red" if a.net_micro < 0 else None,
        )
    console.print(balances)

    models = Table(title="Model usage")
    for column in ("Agent", "Models (requests, spend)", "Daily spend", "Strategy"):
        models.add_column(column, justify="right" if column == "Daily spend" else "left")
    for a in result.agents:
        usage = [m for m in result.models if m.agent == a.agent]
        text = ", ".join(f"{m.model} ({m.requests}, {_whole(m.spent_micro)})" for m in usage)
        models.add_row(a.agent, text or "-", _whole(a.spent_micro), a.strategy)
    console.print(models)

    refusals = Table(title="Refusals (rate limits and other rules)")
    for column in ("Agent", "Code", "Count"):
        refusals.add_column(column, justify="right" if column == "Count" else "left")
    for agent, counts in report.refusals.items():
        for code, n in counts.items():
            refusals.add_row(agent, code, str(n))
    if refusals.row_count:
        console.print(refusals)
        for lines in report.refusal_samples.values():
            for line in lines:
                console.print(line, markup=False, highlight=False)
    else:
        console.print("No refusals.")

    bands = Table(title="Activity by hour of day")
    for column in ("Hours", "Commits", "Issues", "Requests", "Refusals", "Earned", "Spent"):
        bands.add_column(column, justify="left" if column == "Hours" else "right")
    for b in report.bands:
        bands.add_row(
            b.band,
            str(b.commits),
            str(b.issues),
            str(b.requests),
            str(b.refusals),
            _whole_text(b.earned),
            _whole_text(b.spent),
        )
    console.print(bands)

    for table in _credit_tables(result):
        console.print(table)

    metrics = Table(title="Swarm metrics")
    for column in ("Metric", "Value", "Target", "Warning", "Status"):
        metrics.add_column(column)
    for name, m in report.metrics.items():
        value = "-" if m.value is None else f"{m.value:.3f}"
        metrics.add_row(name, value, m.target or "", m.warning or "", m.status or "")
    console.print(metrics)


def _credit_tables(result: SimulationResult) -> list[Table]:
    """Each agent's staking, then its lending and futures, then the hired tasks (none without
    credit). A column that is 0 for every agent (no task failed, no future bought...) is left
    out, and the agents' credit is two tables, so that each fits a terminal."""
    if not result.credit:
        return []
    staking = _agent_credit_table(
        "Credit: staking",
        [
            ("Staked", "staked_micro", False),
            ("Yield", "yield_micro", False),
            ("Slashed", "slashed_micro", False),
            ("Slash received", "slash_received_micro", False),
        ],
        result,
    )
    lending = _agent_credit_table(
        "Credit: lending and futures",
        [
            ("Borrowed", "borrowed_micro", False),
            ("Repaid", "repaid_micro", False),
            ("Lent", "lent_micro", False),
            ("Received", "received_micro", False),
            ("Owed", "owed_micro", False),
            ("Owed to it", "lent_out_micro", False),
            ("Futures", "futures_net_micro", True),
        ],
        result,
        defaults=True,
    )
    tables = [staking, lending]
    if result.tasks:
        tasks = Table(title="Credit: hired tasks")
        for column in ("Manager", "Executor", "Price", "State", "Paid", "Fee", "Refunded"):
            tasks.add_column(
                column, justify="left" if column in ("Manager", "Executor") else "right"
            )
        tasks.add_column("Slashed", justify="right")
        for t in result.tasks:
            tasks.add_row(
                t.manager,
                t.executor,
                _whole(t.price_micro),
                t.state or "refused",
                _whole(t.paid_micro),
                _whole(t.fee_micro),
                _whole(t.refunded_micro),
                _whole(t.slashed_micro),
                style="red" if t.slashed_micro else None,
            )
        tables.append(tasks)
    return tables


def _agent_credit_table(
    title: str,
    columns: list[tuple[str, str, bool]],
    result: SimulationResult,
    *,
    defaults: bool = False,
) -> Table:
    """One row per agent; ``columns``: (title, CreditOutcome field, signed)."""
    shown = [c for c in columns if any(getattr(row, c[1]) for row in result.credit)]
    # No padding at the table's edges: eight columns of lending then fit 80 characters.
    table = Table(title=title, pad_edge=False)
    table.add_column("Agent")
    for column_title, _, _ in shown:
        table.add_column(column_title, justify="right")
    if defaults:
        table.add_column("Defaults", justify="right")
    for row in result.credit:
        cells = [_whole(getattr(row, name), signed=signed) for _, name, signed in shown]
        if defaults:
            cells.append(str(row.defaults))
        table.add_row(row.agent, *cells, style="red" if defaults and row.defaults else None)
    return table


def _whole_text(tokens: str) -> str:
    return f"{Decimal(tokens).quantize(Decimal(1), rounding=ROUND_HALF_EVEN):,}"
