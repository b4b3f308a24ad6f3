"""Coalition formation and the core: who should team up, and whether a split is stable.

This module owns greedy coalition formation (seed 2's ``form_optimal_coalition``, made
independent of the order of the agent list) and the core check of an allocation. It works on the
games of ``exchange.core.shapley``. It must not do I/O, read clocks or draw randomness, and it
moves no money: allocations are floats in the unit of v.
"""

from collections.abc import Sequence
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from exchange.core.shapley import (
    PLAYERS_EXACT_MAX,
    GameError,
    SynergyGame,
    TableGame,
    coalition_sums,
    members_of_mask,
)

__all__ = [
    "MIN_MARGINAL_GAIN_DEFAULT",
    "CoalitionFormation",
    "CoreCheck",
    "core_check",
    "form_coalition_greedy",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Seed 2's default threshold for adding an agent, in the unit of v.
MIN_MARGINAL_GAIN_DEFAULT: Final = 0.05
# The default core tolerance, relative to the largest |v(S)|: float error of Shapley values
# is near 1e-14 of that, so 1e-9 never flags rounding as blocking.
_CORE_TOLERANCE_RELATIVE: Final = 1e-9


class CoalitionFormation(msgspec.Struct, frozen=True, kw_only=True):
    """A greedily formed coalition. ``members`` are in joining order; ``gains[k]`` is the
    marginal gain of ``members[k]`` when it joined (the first one's is its own worth).
    ``best_rejected_gain`` is the largest gain on offer when formation stopped, or None when
    every player joined."""

    members: tuple[str, ...]
    value: float
    gains: tuple[float, ...]
    best_rejected_gain: float | None


class CoreCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Whether an allocation x is in the core of v.

    ``excess_max`` is the largest v(S) - x(S) over non-empty coalitions S (the grand coalition
    included, so under-allocating shows as N blocking); ``most_blocking`` is the S attaining it
    when it exceeds the tolerance. ``efficient`` is |x(N) - v(N)| <= tolerance; the core needs
    both ``efficient`` and ``excess_max <= tolerance``.
    """

    in_core: bool
    efficient: bool
    allocation_total: float
    grand_coalition_value: float
    excess_max: float
    most_blocking: tuple[str, ...] | None
    tolerance: float


def _table_gains(game: TableGame, mask: int) -> FloatArray:
    """v(S | j) - v(S) for every player j: one vectorised gather over the table."""
    n = len(game.players)
    bits = np.left_shift(1, np.arange(n, dtype=np.int64))
    values = game.value_by_mask
    gains: FloatArray = values[mask | bits] - values[mask]
    return gains


def _synergy_gains(game: SynergyGame, in_coalition: BoolArray) -> FloatArray:
    """v(S | j) - v(S) for every player j, from the rule: j's own value plus the bonus of each
    term that j alone is missing. O(terms * width), no enumeration of coalitions."""
    n = len(game.players)
    gains = game.value_by_player.copy()
    if game.synergy_bonus.size == 0:
        return gains
    # The padding sentinel (index n) counts as present so it never holds a term open.
    present = np.append(in_coalition, True)
    absent = ~present[game.synergy_members]
    one_missing = absent.sum(axis=1) == 1
    missing_slot = absent[one_missing].argmax(axis=1)
    missing_player = game.synergy_members[one_missing, missing_slot]
    gains += np.bincount(missing_player, weights=game.synergy_bonus[one_missing], minlength=n)
    return gains


def _synergy_value(game: SynergyGame, in_coalition: BoolArray) -> float:
    """v(S) from the rule: members' values plus the bonus of every term wholly inside S."""
    present = np.append(in_coalition, True)
    complete = present[game.synergy_members].all(axis=1)
    return float(game.value_by_player[in_coalition].sum() + game.synergy_bonus[complete].sum())


def form_coalition_greedy(
    game: TableGame | SynergyGame, *, min_marginal_gain: float = MIN_MARGINAL_GAIN_DEFAULT
) -> CoalitionFormation:
    """Greedy formation: start from the best single player, then repeatedly add the player with
    the largest marginal gain while that gain exceeds ``min_marginal_gain``.

    Deviation from seed 2: the seed starts from ``agents[0]`` and scans the list once in order,
    so its answer depends on how the list happens to be sorted. Here every step takes the best
    remaining player; ties go to the lowest player index. n steps of O(n) (table) or
    O(terms * width) (rule) work each. Raises nothing; a game always has a player.
    """
    n = len(game.players)
    in_coalition = np.zeros(n, dtype=np.bool_)
    mask = 0
    joined: list[int] = []
    gains_joined: list[float] = []
    best_rejected_gain: float | None = None
    for _step in range(n):
        if isinstance(game, TableGame):
            gains = _table_gains(game, mask)
        else:
            gains = _synergy_gains(game, in_coalition)
        gains[in_coalition] = -np.inf
        best = int(np.argmax(gains))
        best_gain = float(gains[best])
        # The first player always joins, as in the seed: a coalition is never empty.
        if joined and not best_gain > min_marginal_gain:
            best_rejected_gain = best_gain
            break
        in_coalition[best] = True
        mask |= 1 << best
        joined.append(best)
        gains_joined.append(best_gain)
    # Evaluate v(S) afresh rather than sum the gains, whose rounding would drift.
    if isinstance(game, TableGame):
        value = float(game.value_by_mask[mask])
    else:
        value = _synergy_value(game, in_coalition)
    return CoalitionFormation(
        members=tuple(game.players[index] for index in joined),
        value=value,
        gains=tuple(gains_joined),
        best_rejected_gain=best_rejected_gain,
    )


def core_check(
    game: TableGame, allocation: Sequence[float], *, tolerance: float | None = None
) -> CoreCheck:
    """Checks x(S) >= v(S) - tolerance for all 2^n - 1 coalitions at once, and x(N) = v(N).

    ``allocation[i]`` is player i's payoff. ``tolerance`` is absolute, in the unit of v; by
    default 1e-9 * max(1, max |v|). The most blocking coalition is the one with the largest
    excess; among equals, the lowest mask. Raises ``GameError`` when the allocation's length is
    not the number of players or a payoff is not finite.
    """
    n = len(game.players)
    assert n <= PLAYERS_EXACT_MAX, "a table game has at most PLAYERS_EXACT_MAX players"
    payoffs = np.asarray(allocation, dtype=np.float64)
    if payoffs.shape != (n,):
        raise GameError(f"allocation: expected {n} payoffs, one per player, got {payoffs.shape}")
    if not np.all(np.isfinite(payoffs)):
        raise GameError(f"allocation: expected finite payoffs, got {payoffs.tolist()}")
    values = game.value_by_mask
    if tolerance is None:
        tolerance = _CORE_TOLERANCE_RELATIVE * max(1.0, float(np.max(np.abs(values))))
    excess = values - coalition_sums(payoffs)
    # The empty coalition has excess 0 by definition and can block nothing.
    excess[0] = -np.inf
    most_blocking_mask = int(np.argmax(excess))
    excess_max = float(excess[most_blocking_mask])
    allocation_total = float(payoffs.sum())
    grand_value = float(values[-1])
    efficient = abs(allocation_total - grand_value) <= tolerance
    blocked = excess_max > tolerance
    return CoreCheck(
        in_core=efficient and not blocked,
        efficient=efficient,
        allocation_total=allocation_total,
        grand_coalition_value=grand_value,
        excess_max=excess_max,
        most_blocking=members_of_mask(game.players, most_blocking_mask) if blocked else None,
        tolerance=tolerance,
    )
