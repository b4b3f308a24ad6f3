"""``exchange simulate``: run a scenario's day through the real ledger and show what happened.

The shell around the engine: it parses arguments, reads the scenario, shows progress on stderr,
prints tables or JSON to stdout and writes files. The engine itself does no I/O.

Exit statuses, as for every ``exchange`` verb: 0 done; 1 a problem (a bad scenario, an
unwritable ``--out``), printed as ``{"error": {"code", "message"}}`` on stdout with ``--json``;
2 bad usage (argparse).
"""

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Final

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from exchange.sim.engine import simulate
from exchange.sim.plots import write_plots
from exchange.sim.report import encode_json, print_tables, to_report, write_files
from exchange.sim.result import SimulationResult
from exchange.sim.scenario import (
    Scenario,
    ScenarioError,
    default_scenario,
    hours_max,
    scenario_from_argument,
)

__all__ = ["build_parser", "main"]

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1


def _hours(text: str) -> int:
    try:
        hours = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of hours, got {text!r}"
        ) from None
    if not 1 <= hours <= hours_max:
        raise argparse.ArgumentTypeError(f"expected 1 to {hours_max} hours, got {hours}")
    return hours


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exchange simulate",
        description=(
            "Simulate agents earning and spending through the real ledger on a virtual clock. "
            "Without --scenario, runs seed 1's 24-hour economy."
        ),
    )
    parser.add_argument(
        "--hours", type=_hours, default=None, help="simulated hours (default: the scenario's, 24)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed (default: the scenario's, 1)"
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        default=None,
        help="scenario TOML file, or a shipped scenario's name: credit (docs/simulation.md)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for result.json, CSV files and PNG charts"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON instead of tables"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = Console(stderr=True)
    try:
        scenario = (
            default_scenario() if args.scenario is None else scenario_from_argument(args.scenario)
        )
        result = _run(scenario, args.seed, args.hours, show_progress=not args.json, console=errors)
    except (ScenarioError, OSError) as exc:
        return _fail(args.json, errors, "scenario_invalid", f"cannot use the scenario: {exc}")
    # Files first: a failure then prints one error document, never a result and then an error.
    if args.out is not None:
        try:
            written = _write_out(result, args.out, errors)
        except OSError as exc:
            return _fail(args.json, errors, "output_unwritable", f"cannot write {args.out}: {exc}")
        errors.print(f"wrote {len(written)} files to {args.out}", markup=False)
    if args.json:
        sys.stdout.write(encode_json(to_report(result)).decode())
        sys.stdout.flush()
    else:
        print_tables(result, Console())
    return EXIT_OK


def _fail(json_mode: bool, errors: Console, code: str, message: str) -> int:
    """Reports a problem as the exchange CLI does: ``{"error": ...}`` on stdout with --json."""
    if json_mode:
        error = {"error": {"code": code, "message": message}}
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(error), indent=2).decode() + "\n")
        sys.stdout.flush()
    else:
        errors.print(f"exchange simulate: {message}", markup=False)
    return EXIT_PROBLEM


def _run(
    scenario: Scenario,
    seed: int | None,
    hours: int | None,
    *,
    show_progress: bool,
    console: Console,
) -> SimulationResult:
    """Runs the simulation, with a progress bar of simulated hours on ``console`` if asked.

    Raises ``ScenarioError`` when the ledger refuses the scenario's setup.
    """
    if not show_progress:
        return simulate(scenario, seed=seed, hours=hours)
    total_hours = scenario.simulation.hours if hours is None else hours
    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TextColumn("hours"))
    # Only on a terminal: redirected stderr gets no bar (nor the blank line its end leaves).
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as progress:
        task = progress.add_task("simulating", total=total_hours)

        def on_hour(hours_done: int) -> None:
            progress.update(task, completed=hours_done)

        return simulate(scenario, seed=seed, hours=hours, on_hour=on_hour)


def _write_out(result: SimulationResult, folder: Path, errors: Console) -> list[Path]:
    """Writes the CSV and JSON files, then the charts if matplotlib is installed.

    Raises ``OSError`` when the folder cannot be written.
    """
    written = write_files(result, folder)
    if importlib.util.find_spec("matplotlib") is None:
        errors.print(
            "exchange simulate: charts skipped: matplotlib is not installed "
            "(pip install 'agent-exchange[plots]')",
            markup=False,
        )
        return written
    return written + write_plots(result, folder)
