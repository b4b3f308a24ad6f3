"""A finished simulation as the dashboard's document: ``exchange simulate --out DIR``, read back.

Owns: ``simulation_view(folder)``: ``result.json`` (the report: agents, refusals, models,
metrics, run) and two of the CSV files written beside it (``timeline.csv``: each agent's balance
after each change; ``refusal_log.csv``: every refusal in order), turned into the same ``View`` the
live page draws: balances with earned and spent, the balance chart over simulated hours, spend as
flows from each agent to its models, refusals per agent and the latest ones, the metrics with
their thresholds. Must not: write anything, or run the simulation.

Raises ``SimulationFolderError`` when the folder does not hold a simulation's results.
"""

import csv
from decimal import Decimal
from pathlib import Path
from typing import Final

import msgspec

from exchange.dashboard.view import AgentView, EventLine, FlowView, MetricView, RefusalView, View
from exchange.errors import ExchangeError
from exchange.sim.report import JSON_FILE, Report
from protocols.units import MS_PER_HOUR

__all__ = ["SimulationFolderError", "simulation_view"]

refusals_shown_max: Final = 60
TIMELINE_FILE: Final = "timeline.csv"
REFUSAL_LOG_FILE: Final = "refusal_log.csv"


class SimulationFolderError(ExchangeError):
    """The folder is not the output of ``exchange simulate --out``; the message says what to do."""


def simulation_view(folder: Path, *, now_ms: int) -> View:
    """The page's document for the results in ``folder``. Raises SimulationFolderError."""
    try:
        report = msgspec.json.decode((folder / JSON_FILE).read_bytes(), type=Report)
        return _view(
            report, _rows(folder / TIMELINE_FILE), _rows(folder / REFUSAL_LOG_FILE), now_ms
        )
    except (OSError, msgspec.DecodeError, csv.Error, KeyError, ValueError, ArithmeticError) as exc:
        raise SimulationFolderError(
            f"{folder} does not hold a simulation's results ({type(exc).__name__}: {exc}); "
            f"write them with `exchange simulate --out {folder}`"
        ) from exc


def _view(
    report: Report, timeline: list[dict[str, str]], refusal_log: list[dict[str, str]], now_ms: int
) -> View:
    series: dict[str, list[tuple[float, float]]] = {}
    for row in timeline:
        series.setdefault(row["agent"], []).append(
            (int(row["offset_ms"]) / MS_PER_HOUR, float(Decimal(row["balance"])))
        )
    run = report.run
    refusals = [
        RefusalView(
            at_ms=int(r["offset_ms"]),
            agent=r["agent"],
            verb=r["verb"],
            code=r["code"],
            message=r["line"],
        )
        for r in refusal_log[-refusals_shown_max:]
    ]
    return View(
        mode="simulation",
        title=f"Simulation: {run.scenario} (seed {run.seed}, {run.hours} h)",
        connected=True,
        updated_ms=now_ms,
        summary={
            "scenario": run.scenario,
            "seed": str(run.seed),
            "hours": str(run.hours),
            "commands applied": str(run.commands_applied),
            "refusals": str(len(refusal_log)),
            "digest": run.digest[:16],
        },
        agents=[
            AgentView(
                agent=name,
                role=report.models[name].strategy if name in report.models else "",
                balance=row.final,
                earned=row.earned,
                spent=row.spent,
                held="0",
                performance="",
                refusals=report.refusals.get(name, {}),
            )
            for name, row in sorted(report.agents.items())
        ],
        series=series,
        flows=sorted(
            (
                FlowView(source=agent, target=model, amount=usage.spent, count=usage.requests)
                for agent, models in report.models.items()
                for model, usage in models.models.items()
            ),
            key=lambda f: (-Decimal(f.amount), f.source, f.target),
        ),
        auctions=[],
        refusals=list(reversed(refusals)),
        signals=[],
        heat=[],
        votes=[],
        pools=[],
        coalitions=[],
        metrics=[
            MetricView(
                name=name,
                value=m.value,
                target=m.target or "",
                warning=m.warning or "",
                status=m.status or "no_data",
            )
            for name, m in report.metrics.items()
        ],
        events=[
            EventLine(
                at_ms=h.hour * MS_PER_HOUR,
                kind="hour",
                text=f"hour {h.hour} ({h.hour_of_day:02d}:00): {h.commits} commits, "
                f"{h.issues} issues, {h.requests} requests, {h.refusals} refused; "
                f"earned {h.earned}, spent {h.spent}",
            )
            for h in reversed(report.hours)
        ],
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
