"""Charts of a simulation result as PNG files: balances over the run, spend by model, refusals by
hour.

matplotlib is an optional dependency (the ``plots`` extra), imported only when a chart is drawn.
Figures are built with the object API on an Agg canvas: no pyplot, so no global figure state, no
GUI backend and no backend warnings. Token amounts become floats here and only here, because a
chart's axis is not money.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Final

from exchange.sim.result import SimulationResult
from protocols.amounts import MICRO_PER_TOKEN
from protocols.units import MS_PER_HOUR

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PNG_FILES", "write_plots"]

PNG_FILES: Final = ("balances.png", "spend_by_model.png", "refusals_by_hour.png")
# Drawn only when the scenario's credit is enabled.
CREDIT_PNG_FILE: Final = "credit.png"
_DPI: Final = 100


def write_plots(result: SimulationResult, folder: Path) -> list[Path]:
    """Draws the three charts into ``folder``; returns their paths.

    Raises ``ImportError`` when matplotlib is not installed, ``OSError`` when the folder cannot
    be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    charts = list(zip(PNG_FILES, (_balances, _spend_by_model, _refusals_by_hour), strict=True))
    if result.credit:
        charts.append((CREDIT_PNG_FILE, _credit))
    written = []
    for name, draw in charts:
        figure = Figure(figsize=(10, 5.5), dpi=_DPI, layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure, result)
        path = folder / name
        # No "Software" key: the bytes then do not change with the matplotlib version.
        figure.savefig(path, format="png", metadata={"Software": None})
        written.append(path)
    return written


def _tokens(micro: int) -> float:
    return micro / MICRO_PER_TOKEN


def _balances(figure: "Figure", result: SimulationResult) -> None:
    axes = figure.add_subplot()
    end_ms = result.hours * MS_PER_HOUR
    for agent, points in result.timeline.items():
        hours = [offset_ms / MS_PER_HOUR for offset_ms, _ in points] + [end_ms / MS_PER_HOUR]
        balances = [_tokens(balance) for _, balance in points] + [_tokens(points[-1][1])]
        axes.step(hours, balances, where="post", label=agent)
    axes.set_title(f"Balance of each agent ({result.scenario}, seed {result.seed})")
    axes.set_xlabel("hours since start")
    axes.set_ylabel("tokens")
    axes.set_xlim(0, result.hours)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")


def _spend_by_model(figure: "Figure", result: SimulationResult) -> None:
    axes = figure.add_subplot()
    agents = [a.agent for a in result.agents]
    models = sorted({m.model for m in result.models})
    bottoms = [0.0] * len(agents)
    for model in models:
        spend = [
            sum(_tokens(m.spent_micro) for m in result.models if m.agent == a and m.model == model)
            for a in agents
        ]
        axes.bar(agents, spend, bottom=bottoms, label=model)
        bottoms = [b + s for b, s in zip(bottoms, spend, strict=True)]
    axes.set_title("Inference spend by model")
    axes.set_ylabel("tokens spent")
    axes.grid(axis="y", alpha=0.3)
    if models:
        axes.legend(fontsize="small")


def _credit(figure: "Figure", result: SimulationResult) -> None:
    """Per agent, side by side: staked at the end, borrowed, lent, and still owed."""
    axes = figure.add_subplot()
    agents = [row.agent for row in result.credit]
    bars = (
        ("staked", "staked_micro"),
        ("borrowed", "borrowed_micro"),
        ("lent", "lent_micro"),
        ("owed at the end", "owed_micro"),
    )
    width = 0.8 / len(bars)
    for index, (label, name) in enumerate(bars):
        positions = [i + (index - (len(bars) - 1) / 2) * width for i in range(len(agents))]
        values = [_tokens(getattr(row, name)) for row in result.credit]
        axes.bar(positions, values, width=width, label=label)
    axes.set_xticks(range(len(agents)), agents)
    axes.set_title(f"Staking and lending ({result.scenario}, seed {result.seed})")
    axes.set_ylabel("tokens")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small")


def _refusals_by_hour(figure: "Figure", result: SimulationResult) -> None:
    axes = figure.add_subplot()
    hours = [h.hour for h in result.hourly]
    codes = sorted({code for h in result.hourly for code in h.refusals_by_code})
    bottoms = [0] * len(hours)
    for code in codes:
        counts = [h.refusals_by_code.get(code, 0) for h in result.hourly]
        axes.bar(hours, counts, bottom=bottoms, label=code, align="edge", width=0.9)
        bottoms = [b + n for b, n in zip(bottoms, counts, strict=True)]
    axes.set_title("Refusals by hour")
    axes.set_xlabel("hours since start")
    axes.set_ylabel("refused commands")
    axes.set_xlim(0, result.hours)
    axes.grid(axis="y", alpha=0.3)
    if codes:
        axes.legend(fontsize="small")
