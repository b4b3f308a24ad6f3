"""Shapley values of transferable-utility cooperative games: exact over a table, or sampled.

This module owns the characteristic-function representations (a table over all 2^n coalitions,
and the additive-plus-synergy rule), their JSON input specs, and the two Shapley algorithms.
It must not do I/O, read clocks or the environment, or import a randomness module (``random``,
``numpy.random``): every function is pure and deterministic, and sampling draws its permutations
from a ``seed`` argument through the counter-based generator below (SplitMix64 in numpy integer
arithmetic), so a seed gives the same permutations on every machine and numpy version. It holds
no money: values are floats in whatever unit the caller's v(S) uses, and turning shares into integer
micro-token payouts (with the rounding remainder to a named account) is the pool's job.

Glossary:
- player: one participant, named by a string; player ``i`` is ``players[i]``.
- coalition mask: an integer whose bit ``i`` is set when player ``i`` is a member.
- characteristic function v: the worth of each coalition, with v(empty) = 0.
- marginal contribution of i to S (i not in S): v(S | {i}) - v(S).

Numeric error of ``shapley_exact``: each marginal v(S|i) - v(S) is one float64 subtraction, exact
when the table holds integers below 2^53 (micro-token worths do). Each weighted sum has about
2^(n-1) terms and numpy sums them pairwise, so |error| <= (n + 2) * 2^-53 * max |marginal|:
below 3e-15 times the largest marginal contribution for n = 20. The efficiency check allows
1e-9 * (1 + max |v|).

Length: past the ~500-line guideline because the brief puts the representations, their JSON
specs and both algorithms in this one module, and the seeded permutations sit beside their only
user; the natural split is specs/games vs. algorithms, with the generator a module of its own.
"""

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from exchange.errors import ExchangeError

__all__ = [
    "COALITION_VALUE_ABS_MAX",
    "PERMUTATIONS_MAX",
    "PLAYERS_EXACT_MAX",
    "PLAYERS_SAMPLED_MAX",
    "SYNERGY_TERMS_MAX",
    "SYNERGY_TERM_MEMBERS_MAX",
    "CoalitionWorth",
    "GameError",
    "ShapleyResult",
    "SynergyGame",
    "SynergyGameSpec",
    "SynergyTerm",
    "TableGame",
    "TableGameSpec",
    "arrival_keys",
    "coalition_mask",
    "coalition_sums",
    "decode_synergy_game_spec",
    "decode_table_game_spec",
    "members_of_mask",
    "shapley",
    "shapley_exact",
    "shapley_sample",
    "shapley_sample_callable",
    "shapley_synergy_exact",
    "splitmix64",
    "synergy_game_from_spec",
    "table_game_from_spec",
    "table_game_from_synergy",
    "table_game_from_values",
]

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
KeyArray = npt.NDArray[np.int64]

# Limits. A table of 2^20 float64 worths is 8 MiB; 2^21 and up would still fit, but the exact
# algorithm's O(n * 2^n) time passes one second there on a small machine.
PLAYERS_EXACT_MAX: Final = 20
PLAYERS_SAMPLED_MAX: Final = 100_000
PERMUTATIONS_MAX: Final = 10_000_000
SYNERGY_TERMS_MAX: Final = 100_000
SYNERGY_TERM_MEMBERS_MAX: Final = 64
PLAYER_NAME_LENGTH_MAX: Final = 128
# Worths beyond 2^53 cannot hold every integer micro-token amount exactly in a float64.
COALITION_VALUE_ABS_MAX: Final = float(2**53)
# Elements per temporary array in one sampling batch: bounds memory near 32 MiB per array.
_SAMPLE_BATCH_ELEMENTS_MAX: Final = 1 << 22
_EFFICIENCY_TOLERANCE_RELATIVE: Final = 1e-9

PlayerName = Annotated[str, msgspec.Meta(min_length=1, max_length=PLAYER_NAME_LENGTH_MAX)]


class GameError(ExchangeError, ValueError):
    """A game spec or argument is invalid; the message names the field, what was expected, what
    came."""


# --- JSON input specs (see docs/shapley.md) ------------------------------------------------------


class CoalitionWorth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One row of a table spec: the worth v(S) of the coalition S = ``members``."""

    members: tuple[PlayerName, ...]
    value: float


class TableGameSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A characteristic function as a table. Player ``i`` of ``players`` is bit ``i``.

    A coalition that no row lists has worth ``default_value``; with no default it is an error.
    No superadditive closure is assumed. The empty coalition is worth 0 and need not be listed.
    """

    players: Annotated[tuple[PlayerName, ...], msgspec.Meta(min_length=1)]
    coalitions: tuple[CoalitionWorth, ...]
    default_value: float | None = None


class SynergyTerm(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bonus (negative for a clash) earned by every coalition that contains all ``members``."""

    members: Annotated[tuple[PlayerName, ...], msgspec.Meta(min_length=1)]
    bonus: float


class SynergyGameSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """v(S) = sum of ``values`` of S's members + sum of ``bonus`` of terms whose members are in S.

    Players are the keys of ``values``, sorted, so the JSON key order cannot change the game.
    """

    values: Annotated[dict[PlayerName, float], msgspec.Meta(min_length=1)]
    synergies: tuple[SynergyTerm, ...] = ()


_table_spec_decoder: Final = msgspec.json.Decoder(TableGameSpec)
_synergy_spec_decoder: Final = msgspec.json.Decoder(SynergyGameSpec)


def decode_table_game_spec(data: bytes | str) -> TableGameSpec:
    """Decodes a table spec from JSON. Raises ``msgspec.ValidationError`` naming the bad path."""
    return _table_spec_decoder.decode(data)


def decode_synergy_game_spec(data: bytes | str) -> SynergyGameSpec:
    """Decodes a synergy spec from JSON. Raises ``msgspec.ValidationError`` naming the bad path."""
    return _synergy_spec_decoder.decode(data)


# --- Compiled games ------------------------------------------------------------------------------


class TableGame(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """v as a read-only float64 array: ``value_by_mask[m]`` is the worth of coalition mask m."""

    players: tuple[str, ...]
    value_by_mask: FloatArray


class SynergyGame(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """The additive-plus-synergy rule in array form, usable for any n (no 2^n table).

    ``synergy_members[t]`` lists term t's player indices, padded with the sentinel ``n``;
    every array is read-only.
    """

    players: tuple[str, ...]
    value_by_player: FloatArray
    synergy_members: IndexArray
    synergy_bonus: FloatArray


class ShapleyResult(msgspec.Struct, frozen=True, kw_only=True):
    """Each player's Shapley value, in the unit of v. ``standard_errors`` only when sampled."""

    players: tuple[str, ...]
    values: tuple[float, ...]
    standard_errors: tuple[float, ...] | None
    grand_coalition_value: float
    method: Literal["exact", "sampled"]
    permutations: int | None
    seed: int | None


def _read_only(array: npt.NDArray[np.generic]) -> None:
    array.setflags(write=False)


def _check_players(players: Sequence[str], n_max: int, field: str) -> tuple[str, ...]:
    names = tuple(players)
    if not 1 <= len(names) <= n_max:
        raise GameError(f"{field}: expected 1 to {n_max} players, got {len(names)}")
    for index, name in enumerate(names):
        if not isinstance(name, str) or not 1 <= len(name) <= PLAYER_NAME_LENGTH_MAX:
            raise GameError(
                f"{field}[{index}]: expected a name of 1 to {PLAYER_NAME_LENGTH_MAX} characters,"
                f" got {name!r}"
            )
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise GameError(f"{field}: expected distinct player names, got repeats {repeated}")
    return names


def _check_worth(value: float, field: str) -> float:
    if not math.isfinite(value) or abs(value) > COALITION_VALUE_ABS_MAX:
        raise GameError(
            f"{field}: expected a finite worth with |worth| <= 2^53, got {value!r}; scale the unit"
        )
    return float(value)


def coalition_mask(players: Sequence[str], members: Sequence[str]) -> int:
    """The mask of ``members`` among ``players``. Raises ``GameError`` on unknown or repeats."""
    index_of = {name: index for index, name in enumerate(players)}
    mask = 0
    for name in members:
        index = index_of.get(name)
        if index is None:
            raise GameError(f"member {name!r} is not a player; players are {list(players)}")
        if mask >> index & 1:
            raise GameError(f"member {name!r} is listed twice in {list(members)}")
        mask |= 1 << index
    return mask


def members_of_mask(players: Sequence[str], mask: int) -> tuple[str, ...]:
    """The names in coalition ``mask``, in player order."""
    assert 0 <= mask < 1 << len(players), "mask must be a coalition of these players"
    return tuple(name for index, name in enumerate(players) if mask >> index & 1)


def _popcount_by_mask(n: int) -> npt.NDArray[np.uint8]:
    # Doubling: the masks with bit k set are the masks below 2^k plus one member.
    counts = np.zeros(1, dtype=np.uint8)
    for _ in range(n):
        counts = np.concatenate((counts, counts + 1))
    return counts


def _subset_sum_transform(weights_by_mask: FloatArray, n: int) -> FloatArray:
    """In place: entry m becomes the sum of the input over all subsets of m (the zeta transform).

    One pass per player over the array, O(n * 2^n), with no Python loop over coalitions.
    """
    for bit in range(n):
        halves = weights_by_mask.reshape(-1, 2, 1 << bit)
        halves[:, 1, :] += halves[:, 0, :]
    return weights_by_mask


def coalition_sums(values_by_player: Sequence[float] | FloatArray) -> FloatArray:
    """The additive table: entry m is the sum of ``values_by_player`` over the members of m.

    Raises ``GameError`` for more than ``PLAYERS_EXACT_MAX`` players.
    """
    values = np.asarray(values_by_player, dtype=np.float64)
    n = values.size
    if n > PLAYERS_EXACT_MAX:
        raise GameError(f"expected at most {PLAYERS_EXACT_MAX} players for a table, got {n}")
    sums = np.zeros(1 << n, dtype=np.float64)
    sums[1 << np.arange(n, dtype=np.int64)] = values
    return _subset_sum_transform(sums, n)


def table_game_from_values(
    players: Sequence[str], value_by_mask: Sequence[float] | FloatArray
) -> TableGame:
    """A table game from a worth per mask (a copy is kept). Raises ``GameError`` when invalid."""
    names = _check_players(players, PLAYERS_EXACT_MAX, "players")
    values = np.array(value_by_mask, dtype=np.float64)
    if values.shape != (1 << len(names),):
        raise GameError(
            f"value_by_mask: expected {1 << len(names)} worths (2^{len(names)}),"
            f" got shape {values.shape}"
        )
    if values[0] != 0.0:
        raise GameError(f"value_by_mask[0]: the empty coalition is worth 0, got {values[0]!r}")
    if not np.all(np.isfinite(values)) or float(np.max(np.abs(values))) > COALITION_VALUE_ABS_MAX:
        raise GameError("value_by_mask: expected finite worths with |worth| <= 2^53")
    _read_only(values)
    return TableGame(players=names, value_by_mask=values)


def table_game_from_spec(spec: TableGameSpec) -> TableGame:
    """Builds the 2^n table from a spec. Raises ``GameError`` naming the offending row."""
    names = _check_players(spec.players, PLAYERS_EXACT_MAX, "players")
    n = len(names)
    values = np.zeros(1 << n, dtype=np.float64)
    listed = np.zeros(1 << n, dtype=np.bool_)
    listed[0] = True
    for row, entry in enumerate(spec.coalitions):
        field = f"coalitions[{row}]"
        try:
            mask = coalition_mask(names, entry.members)
        except GameError as exc:
            raise GameError(f"{field}.members: {exc}") from None
        worth = _check_worth(entry.value, f"{field}.value")
        if mask == 0:
            if worth != 0.0:
                raise GameError(f"{field}: the empty coalition is worth 0, got {worth!r}")
            continue
        if listed[mask]:
            raise GameError(f"{field}: coalition {sorted(entry.members)} is listed twice")
        listed[mask] = True
        values[mask] = worth
    if not listed.all():
        if spec.default_value is None:
            first_missing = int(np.argmin(listed))
            raise GameError(
                f"coalitions: {int((~listed).sum())} coalitions are missing, first"
                f" {list(members_of_mask(names, first_missing))}; list them or set default_value"
            )
        values[~listed] = _check_worth(spec.default_value, "default_value")
    _read_only(values)
    return TableGame(players=names, value_by_mask=values)


def synergy_game_from_spec(spec: SynergyGameSpec) -> SynergyGame:
    """Compiles the rule into arrays. Raises ``GameError`` naming the offending term."""
    names = _check_players(sorted(spec.values), PLAYERS_SAMPLED_MAX, "values")
    n = len(names)
    index_of = {name: index for index, name in enumerate(names)}
    value_by_player = np.array(
        [_check_worth(spec.values[name], f"values[{name!r}]") for name in names], dtype=np.float64
    )
    terms = len(spec.synergies)
    if terms > SYNERGY_TERMS_MAX:
        raise GameError(f"synergies: expected at most {SYNERGY_TERMS_MAX} terms, got {terms}")
    width = max((len(term.members) for term in spec.synergies), default=1)
    members = np.full((terms, width), n, dtype=np.intp)
    bonus = np.zeros(terms, dtype=np.float64)
    for row, term in enumerate(spec.synergies):
        field = f"synergies[{row}]"
        if not 1 <= len(term.members) <= SYNERGY_TERM_MEMBERS_MAX:
            raise GameError(
                f"{field}.members: expected 1 to {SYNERGY_TERM_MEMBERS_MAX} members,"
                f" got {len(term.members)}"
            )
        indices = []
        for name in term.members:
            if name not in index_of:
                raise GameError(f"{field}.members: {name!r} is not a key of values")
            indices.append(index_of[name])
        if len(set(indices)) != len(indices):
            raise GameError(f"{field}.members: a member is listed twice in {list(term.members)}")
        members[row, : len(indices)] = indices
        bonus[row] = _check_worth(term.bonus, f"{field}.bonus")
    for array in (value_by_player, members, bonus):
        _read_only(array)
    return SynergyGame(
        players=names, value_by_player=value_by_player, synergy_members=members, synergy_bonus=bonus
    )


def table_game_from_synergy(game: SynergyGame) -> TableGame:
    """Tabulates the rule over all 2^n coalitions in O(n * 2^n + terms), fully vectorised.

    Each term's bonus is placed at its own mask, each player's value at its singleton, then the
    subset-sum transform gives v(S) as the sum over everything placed inside S.
    Raises ``GameError`` for more than ``PLAYERS_EXACT_MAX`` players.
    """
    n = len(game.players)
    if n > PLAYERS_EXACT_MAX:
        raise GameError(f"expected at most {PLAYERS_EXACT_MAX} players for a table, got {n}")
    placed = np.zeros(1 << n, dtype=np.float64)
    placed[1 << np.arange(n, dtype=np.int64)] = game.value_by_player
    # The sentinel index n contributes bit n, which is masked off: it marks padding, not a player.
    bit_of_index = np.append(1 << np.arange(n, dtype=np.int64), np.int64(0))
    term_masks = bit_of_index[game.synergy_members].sum(axis=1)
    np.add.at(placed, term_masks, game.synergy_bonus)
    values = _subset_sum_transform(placed, n)
    _read_only(values)
    return TableGame(players=game.players, value_by_mask=values)


# --- Exact Shapley values ------------------------------------------------------------------------


def _shapley_weight_by_mask(n: int) -> FloatArray:
    """w(|S|) = |S|! (n - |S| - 1)! / n! for every mask; 0 for the grand coalition (unused)."""
    # 1 / (n * C(n-1, s)) equals the factorial form and never overflows.
    weight_by_size = np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)] + [0.0])
    return weight_by_size[_popcount_by_mask(n)]


def _assert_efficient(values: FloatArray, grand_value: float, worth_abs_max: float) -> None:
    gap = abs(float(values.sum()) - grand_value)
    assert gap <= _EFFICIENCY_TOLERANCE_RELATIVE * (1.0 + worth_abs_max), (
        f"efficiency: Shapley values sum to {values.sum()!r}, v(N) = {grand_value!r}"
    )


def shapley_exact(game: TableGame) -> ShapleyResult:
    """Exact Shapley values in O(n * 2^n) time and O(2^n) memory.

    For player i, phi_i = sum over S without i of w(|S|) * (v(S | i) - v(S)). Viewing the table
    as shape (2^(n-1-i), 2, 2^i) puts the coalitions without i at [:, 0, :] and their unions
    with i at [:, 1, :], so each player's pass is three numpy operations over 2^(n-1) elements.
    """
    n = len(game.players)
    values = game.value_by_mask
    assert values.shape == (1 << n,), "the table has one worth per coalition"
    weights = _shapley_weight_by_mask(n)
    phi = np.empty(n, dtype=np.float64)
    for player in range(n):
        by_bit = values.reshape(-1, 2, 1 << player)
        weight_without = weights.reshape(-1, 2, 1 << player)[:, 0, :]
        marginal = by_bit[:, 1, :] - by_bit[:, 0, :]
        phi[player] = float(np.sum(weight_without * marginal))
    grand_value = float(values[-1])
    _assert_efficient(phi, grand_value, float(np.max(np.abs(values))))
    return ShapleyResult(
        players=game.players,
        values=tuple(phi.tolist()),
        standard_errors=None,
        grand_coalition_value=grand_value,
        method="exact",
        permutations=None,
        seed=None,
    )


def shapley_synergy_exact(game: SynergyGame) -> ShapleyResult:
    """Exact Shapley values of a synergy rule for any n, in O(n + terms * width).

    Each term is a unanimity game scaled by its bonus, whose Shapley value splits the bonus
    equally among the term's members; by additivity, phi_i = value_i + sum of bonus / |T| over
    the terms T that contain i. ``shapley`` follows docs/economy.md (sampling above
    ``PLAYERS_EXACT_MAX``); this is the exact alternative for this one family of games.
    """
    n = len(game.players)
    members = game.synergy_members
    is_member = members < n
    sizes = is_member.sum(axis=1)
    share_by_slot = np.repeat(game.synergy_bonus / np.maximum(sizes, 1), members.shape[1])
    flat_members = members.ravel()
    real = is_member.ravel()
    phi = game.value_by_player + np.bincount(
        flat_members[real], weights=share_by_slot[real], minlength=n
    )
    grand_value = float(game.value_by_player.sum() + game.synergy_bonus.sum())
    worth_abs_max = float(np.abs(game.value_by_player).sum() + np.abs(game.synergy_bonus).sum())
    _assert_efficient(phi, grand_value, worth_abs_max)
    return ShapleyResult(
        players=game.players,
        values=tuple(phi.tolist()),
        standard_errors=None,
        grand_coalition_value=grand_value,
        method="exact",
        permutations=None,
        seed=None,
    )


# --- Seeded permutations ------------------------------------------------------------------------
#
# SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014) used
# as a counter-based generator: draw i of seed s is mix64(s + (i + 1) * GAMMA) mod 2^64, the i-th
# output of the reference SplitMix64 seeded with s. Any draw is a function of (seed, i) alone, so
# a batch computes its own draws and the result cannot depend on how permutations are batched.
# The arithmetic is numpy uint64 arrays, which wrap mod 2^64 on every machine and in every numpy
# version (unlike ``numpy.random``, whose streams numpy may change), and the core stays free of
# any randomness module. Statistical quality: SplitMix64 passes BigCrush, far beyond what a Monte
# Carlo mean over at most ``PERMUTATIONS_MAX`` permutations can see.
_SPLITMIX_GAMMA: Final = np.uint64(0x9E3779B97F4A7C15)
_SPLITMIX_MULTIPLIER_1: Final = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_MULTIPLIER_2: Final = np.uint64(0x94D049BB133111EB)
_UINT64_MASK: Final = (1 << 64) - 1


def splitmix64(seed: int, draws: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Draw number ``draws[...]`` of SplitMix64 seeded with ``seed``, element by element.

    Overwrites ``draws`` and returns it. Seeds equal mod 2^64 give the same draws (a negative
    seed is taken mod 2^64). Draw numbers must stay below 2^64 - 1.
    """
    # Only array operations here: numpy warns on a wrapping scalar product, never on an array's.
    z = draws
    z += np.uint64(1)
    z *= _SPLITMIX_GAMMA
    z += np.uint64(seed & _UINT64_MASK)
    shifted = np.empty_like(z)
    for shift, multiplier in ((30, _SPLITMIX_MULTIPLIER_1), (27, _SPLITMIX_MULTIPLIER_2)):
        np.right_shift(z, np.uint64(shift), out=shifted)
        z ^= shifted
        z *= multiplier
    np.right_shift(z, np.uint64(31), out=shifted)
    z ^= shifted
    return z


def arrival_keys(seed: int, first_permutation: int, count: int, n: int) -> KeyArray:
    """Permutations ``first_permutation`` to ``+ count - 1`` of ``n`` players, as arrival keys.

    Row r holds one key per player; in permutation ``first_permutation + r`` the players arrive in
    increasing key order, so ``np.argsort(keys, axis=1)`` lists them in arrival order. Each key is
    the player's SplitMix64 draw (number ``permutation * n + player``) with its low bits replaced
    by the player's index: the keys of a row are distinct, so every sort algorithm orders them the
    same way, and the order is a uniform random permutation except that two players whose
    remaining 63 - log2(n) random bits tie keep index order (for n = 100,000, one row in ~10^4
    has such a tie, between two players). Keys are non-negative int64.

    The array is column-major (one player's keys are contiguous): gathering the keys of a synergy
    term's members, column by column, then reads memory in order, ~10x faster than row-major.
    """
    assert first_permutation >= 0 and n >= 1 and count >= 0, "permutations are numbered from 0"
    assert (first_permutation + count) * n < _UINT64_MASK, "the draw numbers must not wrap"
    index_bits = (n - 1).bit_length()
    player = np.arange(n, dtype=np.uint64)[:, None]
    draws = np.arange(first_permutation, first_permutation + count, dtype=np.uint64) * np.uint64(n)
    by_player = splitmix64(seed, draws + player)
    by_player >>= np.uint64(index_bits + 1)
    by_player <<= np.uint64(index_bits)
    by_player |= player
    keys: KeyArray = by_player.view(np.int64).T
    return keys


# --- Sampled Shapley values ----------------------------------------------------------------------


class _RunningMoments:
    """Per-player mean and sum of squared deviations, merged batch by batch (Chan et al.).

    Merging batch moments avoids the cancellation of the sum-of-squares formula.
    """

    def __init__(self, n: int) -> None:
        self.count = 0
        self.mean = np.zeros(n, dtype=np.float64)
        self.m2 = np.zeros(n, dtype=np.float64)

    def add_batch(self, marginals: FloatArray) -> None:
        batch_count = marginals.shape[0]
        batch_mean = marginals.mean(axis=0)
        batch_m2 = ((marginals - batch_mean) ** 2).sum(axis=0)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (batch_count / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * batch_count / total)
        self.count = total

    def standard_errors(self) -> FloatArray:
        assert self.count >= 2, "a standard error needs two permutations"
        result: FloatArray = np.sqrt(self.m2 / (self.count - 1) / self.count)
        return result


def _check_sampling(n: int, permutations: int) -> None:
    if not 2 <= permutations <= PERMUTATIONS_MAX:
        raise GameError(f"permutations: expected 2 to {PERMUTATIONS_MAX}, got {permutations}")
    if n > PLAYERS_SAMPLED_MAX:
        raise GameError(f"expected at most {PLAYERS_SAMPLED_MAX} players, got {n}")


def _batches(permutations: int, elements_per_permutation: int) -> list[tuple[int, int]]:
    """(first permutation, count) of each batch; a batch's temporaries stay under the bound."""
    batch = max(1, _SAMPLE_BATCH_ELEMENTS_MAX // max(1, elements_per_permutation))
    return [(first, min(batch, permutations - first)) for first in range(0, permutations, batch)]


def _synergy_marginals(game: SynergyGame, arrival: KeyArray) -> FloatArray:
    """Marginal contributions for a batch of permutations given as arrival keys.

    A term's bonus goes to the member that arrives last, the one that completes it; the additive
    part is constant per player and is added by the caller.
    """
    batch, n = arrival.shape
    marginals = np.zeros((batch, n), dtype=np.float64)
    terms = game.synergy_bonus.size
    if terms == 0:
        return marginals
    # The sentinel column arrives "before everyone" (keys are >= 0), so padding never completes a
    # term. Only the order of the keys matters here, so they need no sorting.
    arrival_padded = np.concatenate((arrival, np.full((batch, 1), -1, dtype=arrival.dtype)), axis=1)
    member_arrival = arrival_padded[:, game.synergy_members]
    last_slot = member_arrival.argmax(axis=2)
    completer = game.synergy_members[np.arange(terms), last_slot]
    flat_index = (np.arange(batch)[:, None] * n + completer).ravel()
    bonus = np.broadcast_to(game.synergy_bonus, (batch, terms)).ravel()
    marginals += np.bincount(flat_index, weights=bonus, minlength=batch * n).reshape(batch, n)
    return marginals


def _table_marginals(game: TableGame, order: IndexArray) -> FloatArray:
    """Marginal contributions for a batch of permutations (players in arrival order per row)."""
    batch, n = order.shape
    rows = np.arange(batch)[:, None]
    bits = np.left_shift(1, order.astype(np.int64))
    after = np.cumsum(bits, axis=1)
    in_order = game.value_by_mask[after] - game.value_by_mask[after - bits]
    marginals = np.empty((batch, n), dtype=np.float64)
    marginals[rows, order] = in_order
    return marginals


def shapley_sample(game: TableGame | SynergyGame, *, permutations: int, seed: int) -> ShapleyResult:
    """Monte Carlo Shapley values from ``permutations`` uniform random orders of arrival.

    ``arrival_keys(seed, ...)`` draws the permutations (SplitMix64 over a counter; the same on
    every machine and numpy version). The same seed gives the same permutations for a synergy
    game and its table, hence the same estimates. Each permutation's marginals
    sum to v(N), so the estimates do too. Cost: O(permutations * (n + terms * width)).
    Raises ``GameError`` for a bad ``permutations`` or too many players.
    """
    n = len(game.players)
    _check_sampling(n, permutations)
    moments = _RunningMoments(n)
    if isinstance(game, SynergyGame):
        per_permutation = n + game.synergy_members.size
        base = game.value_by_player
        grand_value = float(base.sum() + game.synergy_bonus.sum())
        worth_abs_max = float(np.abs(base).sum() + np.abs(game.synergy_bonus).sum())
    else:
        per_permutation = 2 * n
        base = np.zeros(n, dtype=np.float64)
        grand_value = float(game.value_by_mask[-1])
        worth_abs_max = float(np.max(np.abs(game.value_by_mask)))
    for first, count in _batches(permutations, per_permutation):
        keys = arrival_keys(seed, first, count, n)
        if isinstance(game, SynergyGame):
            moments.add_batch(_synergy_marginals(game, keys))
        else:
            moments.add_batch(_table_marginals(game, np.argsort(keys, axis=1)))
    estimates = base + moments.mean
    _assert_efficient(estimates, grand_value, worth_abs_max)
    return ShapleyResult(
        players=game.players,
        values=tuple(estimates.tolist()),
        standard_errors=tuple(moments.standard_errors().tolist()),
        grand_coalition_value=grand_value,
        method="sampled",
        permutations=permutations,
        seed=seed,
    )


def shapley_sample_callable(
    players: Sequence[str],
    value_of_mask: Callable[[int], float],
    *,
    permutations: int,
    seed: int,
) -> ShapleyResult:
    """Monte Carlo Shapley values for a v given as a pure function of a coalition mask.

    The escape hatch for games that are neither a table nor a synergy rule: it calls
    ``value_of_mask`` n times per permutation, in Python, so it is slow. It draws the same
    permutations as ``shapley_sample`` for the same seed. Raises ``GameError`` when
    ``value_of_mask(0)`` is not 0 or an argument is out of range.
    """
    names = _check_players(players, PLAYERS_SAMPLED_MAX, "players")
    n = len(names)
    _check_sampling(n, permutations)
    empty_value = float(value_of_mask(0))
    if empty_value != 0.0:
        raise GameError(f"value_of_mask(0): the empty coalition is worth 0, got {empty_value!r}")
    grand_value = float(value_of_mask((1 << n) - 1))
    moments = _RunningMoments(n)
    worth_abs_max = abs(grand_value)
    for first, count in _batches(permutations, n):
        order = np.argsort(arrival_keys(seed, first, count, n), axis=1)
        marginals = np.empty((count, n), dtype=np.float64)
        for row in range(count):
            mask = 0
            before = 0.0
            for player in order[row].tolist():
                mask |= 1 << player
                after = float(value_of_mask(mask))
                marginals[row, player] = after - before
                worth_abs_max = max(worth_abs_max, abs(after))
                before = after
        moments.add_batch(marginals)
    _assert_efficient(moments.mean, grand_value, worth_abs_max)
    return ShapleyResult(
        players=names,
        values=tuple(moments.mean.tolist()),
        standard_errors=tuple(moments.standard_errors().tolist()),
        grand_coalition_value=grand_value,
        method="sampled",
        permutations=permutations,
        seed=seed,
    )


def shapley(
    game: TableGame | SynergyGame, *, permutations: int = 10_000, seed: int | None = None
) -> ShapleyResult:
    """docs/economy.md's rule: exact for up to ``PLAYERS_EXACT_MAX`` players, sampled above.

    A table game is always exact; a synergy rule with few players uses the closed form, which
    equals the table algorithm and skips building 2^n worths. Raises ``GameError`` when sampling
    is needed and ``seed`` is None, since the result must be reproducible.
    """
    if isinstance(game, TableGame):
        return shapley_exact(game)
    if len(game.players) <= PLAYERS_EXACT_MAX:
        return shapley_synergy_exact(game)
    if seed is None:
        raise GameError(
            f"seed: {len(game.players)} players need sampling; pass a seed to make it reproducible"
        )
    return shapley_sample(game, permutations=permutations, seed=seed)
