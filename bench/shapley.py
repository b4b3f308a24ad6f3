"""Benchmark: exact and sampled Shapley values, beside seed 2's algorithm on the same games.

Run from the repository root: ``python bench/shapley.py``. Every timing is the median of three
samples in one process; a sample repeats a call shorter than 50 ms until it lasts 50 ms.
Games are additive-plus-synergy rules drawn from a fixed seed, with n // 2 synergy terms of 2 to
4 members each; their exact Shapley values have a closed form (own value plus 1/|T| of each
bonus), which the "check" column compares against. Seed 2's algorithm gets the cheapest possible
v, a dict lookup keyed by frozenset built before timing, so the comparison measures the
algorithm and not the game.

Targets: exact at n = 20 in <= 2 s; >= 100x seed 2's speed at n = 12.
"""

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seed_shapley import seed_shapley_values

from exchange.core.shapley import (
    ShapleyResult,
    SynergyGame,
    SynergyGameSpec,
    SynergyTerm,
    TableGame,
    shapley_exact,
    shapley_sample,
    synergy_game_from_spec,
    table_game_from_synergy,
)

RUNS = 3
SAMPLE_S_MIN = 0.05
EXACT_SIZES = (10, 12, 14, 15, 20)
SEED_SIZE_MAX = 14
SAMPLED_SIZES = (100, 1000)
PERMUTATIONS = 10_000
T = TypeVar("T")


def synergy_game(n: int, seed: int) -> SynergyGame:
    rng = np.random.default_rng(seed)
    players = [f"agent{i:04d}" for i in range(n)]
    terms = tuple(
        SynergyTerm(
            members=tuple(rng.choice(players, size=int(rng.integers(2, 5)), replace=False)),
            bonus=float(rng.integers(-20, 51)),
        )
        for _ in range(max(1, n // 2))
    )
    values = {p: float(rng.integers(0, 101)) for p in players}
    return synergy_game_from_spec(SynergyGameSpec(values=values, synergies=terms))


def closed_form(game: SynergyGame) -> np.ndarray:
    """A synergy game's Shapley values by formula: own value plus an equal 1/|T| of each bonus."""
    n = len(game.players)
    members = game.synergy_members
    sizes = (members < n).sum(axis=1)
    shares = np.repeat(game.synergy_bonus / sizes, members.shape[1])
    flat = members.ravel()
    real = flat < n
    return game.value_by_player + np.bincount(flat[real], weights=shares[real], minlength=n)


def median_s(run: Callable[[], T]) -> tuple[float, T]:
    """The median of RUNS samples of the wall time per call, and one call's result.

    A sample repeats a fast call until it lasts SAMPLE_S_MIN, so sub-millisecond timings are
    not dominated by timer and scheduling noise.
    """
    start_s = time.perf_counter()
    result = run()
    first_s = time.perf_counter() - start_s
    calls = max(1, int(SAMPLE_S_MIN / max(first_s, 1e-9)))
    times_s = []
    for _ in range(RUNS):
        start_s = time.perf_counter()
        for _ in range(calls):
            run()
        times_s.append((time.perf_counter() - start_s) / calls)
    return statistics.median(times_s), result


def seed_value_fn(table: TableGame) -> Callable[[frozenset[str]], float]:
    worth = {
        frozenset(p for i, p in enumerate(table.players) if mask >> i & 1): float(value)
        for mask, value in enumerate(table.value_by_mask.tolist())
    }
    return worth.__getitem__


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}"


def main() -> None:
    console = Console(width=150)
    table = Table(title="Shapley values: this module vs seed 2 (median of 3)")
    columns = ("case", "n", "build table ms", "ours ms", "seed 2 ms", "speedup", "check")
    for column in columns:
        table.add_column(column, justify="right" if column != "case" else "left")
    targets: list[str] = []
    for n in EXACT_SIZES:
        game = synergy_game(n, seed=n)
        build_s, tabled = median_s(partial(table_game_from_synergy, game))
        ours_s, result = median_s(partial(shapley_exact, tabled))
        seed_cell, speed_cell = "-", "-"
        truth = closed_form(game)
        check = f"max err ours {np.max(np.abs(np.array(result.values) - truth)):.1e}"
        if n <= SEED_SIZE_MAX:
            seed_call = partial(seed_shapley_values, list(tabled.players), seed_value_fn(tabled))
            seed_s, seed_values = median_s(seed_call)
            seed_cell, speed_cell = ms(seed_s), f"{seed_s / ours_s:,.0f}x"
            check += f", seed {np.max(np.abs(np.array(seed_values) - truth)):.1e}"
            if n == 12:
                targets.append(f">= 100x seed 2 at n = 12: {seed_s / ours_s:,.0f}x")
        if n == 20:
            targets.append(f"exact n = 20 <= 2 s: {ours_s:.3f} s (+ {build_s:.3f} s table build)")
        table.add_row("exact", str(n), ms(build_s), ms(ours_s), seed_cell, speed_cell, check)
    for n in SAMPLED_SIZES:
        game = synergy_game(n, seed=n)
        ours_s, sampled = median_s(partial(shapley_sample, game, permutations=PERMUTATIONS, seed=1))
        table.add_row(
            f"sampled, {PERMUTATIONS:,} permutations",
            str(n),
            "-",
            ms(ours_s),
            "-",
            "-",
            sampled_check(sampled, closed_form(game)),
        )
    console.print(table)
    console.print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    for line in targets:
        console.print(line)


def sampled_check(result: ShapleyResult, truth: np.ndarray) -> str:
    """Efficiency gap, largest standard error, and the largest error in standard errors."""
    assert result.standard_errors is not None
    gap = abs(sum(result.values) - result.grand_coalition_value)
    errors = np.abs(np.array(result.values) - truth)
    standard_errors = np.array(result.standard_errors)
    # Players in no synergy term have no sampling noise: SE 0 and error 0.
    noisy = standard_errors > 0
    z_max = float(np.max(errors[noisy] / standard_errors[noisy])) if noisy.any() else 0.0
    return (
        f"|sum - v(N)| {gap:.1e}, max SE {standard_errors.max():.2f},"
        f" max |err|/SE {z_max:.2f}, max err (noiseless) {errors[~noisy].max(initial=0):.1e}"
    )


if __name__ == "__main__":
    main()
