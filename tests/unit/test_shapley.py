"""Shapley values: textbook games with published answers, the defining average over all orders by
brute force in exact fractions, the four axioms on random games (hypothesis), the sampler checked
against the exact values, and its permutation generator against SplitMix64's reference outputs.

The core's purity (no ``random``, no ``numpy.random``) is checked for every core module by
test_core_purity.py."""

import itertools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core import shapley as shapley_module
from exchange.core.shapley import (
    CoalitionWorth,
    GameError,
    ShapleyResult,
    SynergyGameSpec,
    SynergyTerm,
    TableGame,
    TableGameSpec,
    arrival_keys,
    decode_synergy_game_spec,
    decode_table_game_spec,
    shapley,
    shapley_exact,
    shapley_sample,
    shapley_sample_callable,
    shapley_synergy_exact,
    splitmix64,
    synergy_game_from_spec,
    table_game_from_spec,
    table_game_from_synergy,
    table_game_from_values,
)


def names(n: int) -> list[str]:
    return [f"p{i}" for i in range(n)]


def game_from_rule(players: Sequence[str], rule: Callable[[int], float]) -> TableGame:
    """A table game whose worth at mask m is rule(m); the Python loop is fine for tests."""
    return table_game_from_values(players, [rule(mask) for mask in range(1 << len(players))])


def brute_force_shapley(value_by_mask: Sequence[int], n: int) -> list[Fraction]:
    """The definition: the average marginal contribution over all n! orders, in exact fractions."""
    totals = [Fraction(0)] * n
    for order in itertools.permutations(range(n)):
        mask = 0
        for player in order:
            totals[player] += value_by_mask[mask | 1 << player] - value_by_mask[mask]
            mask |= 1 << player
    return [total / math.factorial(n) for total in totals]


@st.composite
def integer_games(draw: st.DrawFn, n_max: int = 6) -> tuple[int, list[int]]:
    n = draw(st.integers(min_value=1, max_value=n_max))
    rest = draw(st.lists(st.integers(-1000, 1000), min_size=(1 << n) - 1, max_size=(1 << n) - 1))
    return n, [0, *rest]


# --- Known games ---------------------------------------------------------------------------------


def test_glove_game_gives_two_thirds_to_the_scarce_left_glove() -> None:
    # A pair (one left, one right glove) is worth 1; player 0 holds the only left glove.
    game = game_from_rule(["left", "right1", "right2"], lambda m: float(m & 1 and m & 6 != 0))
    result = shapley_exact(game)
    assert result.values == pytest.approx([2 / 3, 1 / 6, 1 / 6], abs=1e-15)
    assert result.method == "exact" and result.standard_errors is None


def test_additive_game_pays_each_player_its_own_value() -> None:
    own = [3.0, 5.0, -2.0, 7.5, 0.0]
    game = game_from_rule(names(5), lambda m: sum(v for i, v in enumerate(own) if m >> i & 1))
    assert shapley_exact(game).values == pytest.approx(own, abs=1e-12)


def test_lemaire_three_investors() -> None:
    # J. Lemaire, "An application of game theory: cost allocation", ASTIN Bulletin 14(1), 1984;
    # also the example of the R package GameTheory (ShapleyValue, game LEMAIRE).
    worth = {1: 46125, 2: 17437.5, 4: 5812.5, 3: 69187.5, 5: 53812.5, 6: 30750, 7: 90000}
    game = table_game_from_values(
        ["investor1", "investor2", "investor3"], [0.0] + [worth[mask] for mask in range(1, 8)]
    )
    assert shapley_exact(game).values == pytest.approx([51750, 25875, 12375], abs=1e-9)


def test_aumann_ibn_ezra_inheritance() -> None:
    # R. J. Aumann, "Some non-superadditive games, and their Shapley values, in the Talmud",
    # Int. J. Game Theory 39 (2010) 3-10: an estate of 120 and claims 120, 60, 40, 30; a
    # coalition is worth its largest claim. Ibn Ezra's division equals the Shapley value.
    claims = [120, 60, 40, 30]
    game = game_from_rule(
        ["son1", "son2", "son3", "son4"],
        lambda m: float(max((c for i, c in enumerate(claims) if m >> i & 1), default=0)),
    )
    expected = [Fraction(485, 6), Fraction(125, 6), Fraction(65, 6), Fraction(15, 2)]
    assert shapley_exact(game).values == pytest.approx([float(x) for x in expected], abs=1e-12)


# --- The definition and the axioms ---------------------------------------------------------------


@given(integer_games())
def test_exact_equals_the_average_over_all_orders(game_spec: tuple[int, list[int]]) -> None:
    n, table = game_spec
    expected = brute_force_shapley(table, n)
    got = shapley_exact(table_game_from_values(names(n), table)).values
    assert got == pytest.approx([float(x) for x in expected], rel=1e-12, abs=1e-9)


@given(integer_games())
def test_efficiency_shares_sum_to_the_grand_coalition(game_spec: tuple[int, list[int]]) -> None:
    n, table = game_spec
    result = shapley_exact(table_game_from_values(names(n), table))
    assert math.fsum(result.values) == pytest.approx(table[-1], abs=1e-9)
    assert result.grand_coalition_value == table[-1]


@given(integer_games(), st.data())
def test_symmetric_players_get_equal_shares(
    game_spec: tuple[int, list[int]], data: st.DataObject
) -> None:
    n, table = game_spec
    if n < 2:
        return
    i, j = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))

    def swap(mask: int) -> int:
        bit_i, bit_j = mask >> i & 1, mask >> j & 1
        return mask & ~(1 << i | 1 << j) | bit_i << j | bit_j << i

    # v(S) + v(swap(S)) is unchanged by exchanging i and j, so i and j are symmetric.
    symmetric = [table[m] + table[swap(m)] for m in range(1 << n)]
    values = shapley_exact(table_game_from_values(names(n), symmetric)).values
    assert values[i] == pytest.approx(values[j], abs=1e-9)


@given(integer_games(), st.data())
def test_null_player_gets_nothing(game_spec: tuple[int, list[int]], data: st.DataObject) -> None:
    n, table = game_spec
    null = data.draw(st.integers(0, n - 1))
    # v(S) = v(S without the null player): it adds nothing to any coalition.
    with_null = [table[m & ~(1 << null)] for m in range(1 << n)]
    values = shapley_exact(table_game_from_values(names(n), with_null)).values
    assert values[null] == pytest.approx(0.0, abs=1e-9)


@given(integer_games(), st.data())
def test_additivity(game_spec: tuple[int, list[int]], data: st.DataObject) -> None:
    n, first = game_spec
    size = (1 << n) - 1
    second = [0, *data.draw(st.lists(st.integers(-1000, 1000), min_size=size, max_size=size))]
    combined = [a + b for a, b in zip(first, second, strict=True)]
    phi_first = shapley_exact(table_game_from_values(names(n), first)).values
    phi_second = shapley_exact(table_game_from_values(names(n), second)).values
    phi_combined = shapley_exact(table_game_from_values(names(n), combined)).values
    summed = [a + b for a, b in zip(phi_first, phi_second, strict=True)]
    assert phi_combined == pytest.approx(summed, abs=1e-9)


def test_exact_at_twenty_players_keeps_efficiency() -> None:
    rng = np.random.default_rng(20)
    table = rng.integers(-(10**9), 10**9, size=1 << 20).astype(np.float64)
    table[0] = 0.0
    result = shapley_exact(table_game_from_values(names(20), table))
    assert math.fsum(result.values) == pytest.approx(table[-1], abs=1e-3)


# --- Builders ------------------------------------------------------------------------------------

GLOVE_JSON = b"""{
  "players": ["left", "right1", "right2"],
  "coalitions": [
    {"members": ["left", "right1"], "value": 1},
    {"members": ["left", "right2"], "value": 1},
    {"members": ["left", "right1", "right2"], "value": 1}
  ],
  "default_value": 0
}"""


def test_table_spec_from_json_with_default() -> None:
    game = table_game_from_spec(decode_table_game_spec(GLOVE_JSON))
    assert game.value_by_mask.tolist() == [0, 0, 0, 1, 0, 1, 0, 1]
    assert not game.value_by_mask.flags.writeable


def test_table_spec_missing_coalition_is_an_error_without_default() -> None:
    spec = msgspec.structs.replace(decode_table_game_spec(GLOVE_JSON), default_value=None)
    with pytest.raises(GameError, match=r"4 coalitions are missing, first \['left'\]"):
        table_game_from_spec(spec)


@pytest.mark.parametrize(
    ("coalitions", "message"),
    [
        ([CoalitionWorth(members=("a", "zed"), value=1)], r"coalitions\[0\]\.members: .*'zed'"),
        ([CoalitionWorth(members=("a", "a"), value=1)], r"listed twice"),
        ([CoalitionWorth(members=(), value=1)], r"empty coalition is worth 0"),
        ([CoalitionWorth(members=("a",), value=float("nan"))], r"coalitions\[0\]\.value"),
        ([CoalitionWorth(members=("a",), value=2.0**60)], r"2\^53"),
        (
            [CoalitionWorth(members=("a",), value=1), CoalitionWorth(members=("a",), value=2)],
            r"coalitions\[1\]: coalition \['a'\] is listed twice",
        ),
    ],
)
def test_table_spec_rejects_bad_rows(coalitions: list[CoalitionWorth], message: str) -> None:
    spec = TableGameSpec(players=("a", "b"), coalitions=tuple(coalitions), default_value=0.0)
    with pytest.raises(GameError, match=message):
        table_game_from_spec(spec)


def test_table_spec_rejects_repeated_players_and_too_many() -> None:
    with pytest.raises(GameError, match="repeats"):
        table_game_from_spec(TableGameSpec(players=("a", "a"), coalitions=(), default_value=0))
    with pytest.raises(GameError, match="expected 1 to 20 players, got 21"):
        table_game_from_spec(TableGameSpec(players=tuple(names(21)), coalitions=()))


def test_decoding_names_the_bad_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.coalitions\[0\]\.value"):
        decode_table_game_spec(b'{"players":["a"],"coalitions":[{"members":["a"],"value":"x"}]}')
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode_synergy_game_spec(b'{"values":{"a":1},"synergy":[]}')


SYNERGY_JSON = b"""{
  "values": {"scout": 3, "analyst": 5, "executor": 1},
  "synergies": [
    {"members": ["scout", "analyst"], "bonus": 4},
    {"members": ["scout", "analyst", "executor"], "bonus": 6}
  ]
}"""


def test_synergy_spec_example() -> None:
    game = synergy_game_from_spec(decode_synergy_game_spec(SYNERGY_JSON))
    assert game.players == ("analyst", "executor", "scout")
    result = shapley(game)
    # Each bonus splits equally among its members: analyst 5 + 2 + 2, executor 1 + 2, scout 3+2+2.
    assert result.values == pytest.approx([9.0, 3.0, 7.0], abs=1e-12)
    assert result.grand_coalition_value == 19.0


def test_synergy_spec_rejects_unknown_and_repeated_members() -> None:
    with pytest.raises(GameError, match=r"synergies\[0\]\.members: 'b' is not a key"):
        synergy_game_from_spec(
            SynergyGameSpec(values={"a": 1}, synergies=(SynergyTerm(members=("b",), bonus=1),))
        )
    with pytest.raises(GameError, match="listed twice"):
        synergy_game_from_spec(
            SynergyGameSpec(values={"a": 1}, synergies=(SynergyTerm(members=("a", "a"), bonus=1),))
        )


@st.composite
def synergy_specs(draw: st.DrawFn, n_max: int = 6) -> SynergyGameSpec:
    n = draw(st.integers(1, n_max))
    players = names(n)
    values = {p: float(draw(st.integers(-100, 100))) for p in players}
    terms = draw(
        st.lists(
            st.tuples(
                st.lists(st.sampled_from(players), min_size=1, max_size=n, unique=True),
                st.integers(-50, 50),
            ),
            max_size=8,
        )
    )
    synergies = tuple(SynergyTerm(members=tuple(m), bonus=float(b)) for m, b in terms)
    return SynergyGameSpec(values=values, synergies=synergies)


@given(synergy_specs())
def test_synergy_builder_equals_the_table_builder(spec: SynergyGameSpec) -> None:
    players = sorted(spec.values)
    rows = []
    for size in range(1, len(players) + 1):
        for members in itertools.combinations(players, size):
            worth = sum(spec.values[p] for p in members) + sum(
                term.bonus for term in spec.synergies if set(term.members) <= set(members)
            )
            rows.append(CoalitionWorth(members=members, value=worth))
    from_table = table_game_from_spec(TableGameSpec(players=tuple(players), coalitions=tuple(rows)))
    from_rule = table_game_from_synergy(synergy_game_from_spec(spec))
    assert from_rule.players == from_table.players
    assert from_rule.value_by_mask.tolist() == from_table.value_by_mask.tolist()


@given(synergy_specs(n_max=8))
def test_synergy_closed_form_equals_the_table_algorithm(spec: SynergyGameSpec) -> None:
    game = synergy_game_from_spec(spec)
    closed_form = shapley_synergy_exact(game)
    assert closed_form.values == pytest.approx(
        shapley_exact(table_game_from_synergy(game)).values, abs=1e-9
    )
    assert closed_form.grand_coalition_value == table_game_from_synergy(game).value_by_mask[-1]


# --- Sampling ------------------------------------------------------------------------------------


def test_splitmix64_gives_the_reference_outputs() -> None:
    # The first outputs of the reference SplitMix64 (Vigna's splitmix64.c; Java's SplittableRandom
    # with the same seed): sampled shares in the journal replay only if these never change.
    first_three = np.arange(3, dtype=np.uint64)
    assert splitmix64(0, first_three.copy()).tolist() == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]
    assert splitmix64(1234567, first_three.copy()).tolist() == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
    ]
    # Draw 1,000,000 is computed from its number alone, as the 1,000,001st of the sequence.
    one_draw = splitmix64(0, np.array([1_000_000], dtype=np.uint64))
    assert one_draw[0] == splitmix64(0, np.arange(1_000_001, dtype=np.uint64))[-1]


def test_seeds_are_taken_mod_two_to_the_64() -> None:
    assert np.array_equal(arrival_keys(-1, 0, 3, 5), arrival_keys(2**64 - 1, 0, 3, 5))
    assert np.array_equal(arrival_keys(2**64 + 7, 0, 3, 5), arrival_keys(7, 0, 3, 5))


def test_the_permutations_of_a_seed_are_pinned() -> None:
    # A journal's sampled shares (games of more than 20 players) replay only if a seed keeps
    # giving these orders on every machine and numpy version.
    orders = np.argsort(arrival_keys(5, 0, 4, 6), axis=1).tolist()
    assert orders == [
        [3, 4, 2, 5, 0, 1],
        [5, 2, 4, 1, 3, 0],
        [1, 5, 4, 0, 3, 2],
        [2, 0, 4, 1, 5, 3],
    ]
    assert np.argsort(arrival_keys(5, 2, 2, 6), axis=1).tolist() == orders[2:]


@given(st.integers(-(2**70), 2**70), st.integers(0, 10**6), st.integers(1, 300))
@settings(max_examples=50)
def test_arrival_keys_are_distinct_and_non_negative(seed: int, first: int, n: int) -> None:
    keys = arrival_keys(seed, first, 3, n)
    assert keys.shape == (3, n) and keys.dtype == np.int64
    assert np.all(keys >= 0)
    assert all(len(set(row)) == n for row in keys.tolist())


def test_orders_of_four_players_are_uniform() -> None:
    # 48,000 permutations, 2,000 expected per order: chi-square with 23 degrees of freedom, whose
    # 99.99th percentile is about 57 (a fixed seed, so the test is deterministic, not flaky).
    orders = np.argsort(arrival_keys(11, 0, 48_000, 4), axis=1)
    codes = orders @ np.array([64, 16, 4, 1])
    counts = np.unique(codes, return_counts=True)[1]
    assert counts.size == 24
    assert float(((counts - 2000) ** 2 / 2000).sum()) < 57


def test_each_player_arrives_at_each_place_equally_often() -> None:
    # 30 players, 30,000 permutations: each (player, place) count is Binomial(30,000, 1/30),
    # mean 1,000 and standard deviation ~31; every one of the 900 lies within 5 of those.
    n, count = 30, 30_000
    orders = np.argsort(arrival_keys(3, 0, count, n), axis=1)
    at_place = np.zeros((n, n), dtype=np.int64)
    np.add.at(at_place, (orders, np.arange(n)), 1)
    assert np.all(np.abs(at_place - count / n) < 5 * math.sqrt(count / n * (1 - 1 / n)))


def random_table_game(n: int, seed: int) -> TableGame:
    table = np.random.default_rng(seed).integers(0, 100, size=1 << n).astype(np.float64)
    table[0] = 0.0
    return table_game_from_values(names(n), table)


def test_sampling_lies_within_three_standard_errors_at_twelve_players() -> None:
    game = random_table_game(12, seed=12)
    exact = np.array(shapley_exact(game).values)
    sampled = shapley_sample(game, permutations=20_000, seed=2024)
    assert sampled.method == "sampled" and sampled.permutations == 20_000 and sampled.seed == 2024
    assert sampled.standard_errors is not None
    errors = np.array(sampled.standard_errors)
    assert np.all(errors > 0)
    assert np.all(np.abs(np.array(sampled.values) - exact) <= 3 * errors)


@given(synergy_specs(n_max=8), st.integers(0, 2**32))
@settings(max_examples=30)
def test_sampled_synergy_estimates_sum_to_the_grand_coalition(
    spec: SynergyGameSpec, seed: int
) -> None:
    game = synergy_game_from_spec(spec)
    result = shapley_sample(game, permutations=50, seed=seed)
    expected = sum(spec.values.values()) + sum(term.bonus for term in spec.synergies)
    assert result.grand_coalition_value == expected
    assert math.fsum(result.values) == pytest.approx(expected, abs=1e-9)


def test_synergy_sampling_at_twelve_players_matches_exact() -> None:
    rng = np.random.default_rng(7)
    players = names(12)
    synergies = tuple(
        SynergyTerm(
            members=tuple(rng.choice(players, size=int(rng.integers(2, 5)), replace=False)),
            bonus=float(rng.integers(-5, 20)),
        )
        for _ in range(15)
    )
    spec = SynergyGameSpec(
        values={p: float(rng.integers(0, 10)) for p in players}, synergies=synergies
    )
    game = synergy_game_from_spec(spec)
    exact = np.array(shapley(game).values)
    sampled = shapley_sample(game, permutations=10_000, seed=99)
    assert sampled.standard_errors is not None
    assert np.all(np.abs(np.array(sampled.values) - exact) <= 3 * np.array(sampled.standard_errors))


def test_same_seed_same_permutations_across_representations() -> None:
    spec = decode_synergy_game_spec(SYNERGY_JSON)
    rule = synergy_game_from_spec(spec)
    table = table_game_from_synergy(rule)
    from_rule = shapley_sample(rule, permutations=500, seed=5)
    from_table = shapley_sample(table, permutations=500, seed=5)
    from_callable = shapley_sample_callable(
        table.players, lambda m: float(table.value_by_mask[m]), permutations=500, seed=5
    )
    assert from_rule.values == pytest.approx(from_table.values, abs=1e-12)
    assert from_callable.values == pytest.approx(from_table.values, abs=1e-12)
    assert from_rule == shapley_sample(rule, permutations=500, seed=5)
    assert from_rule != shapley_sample(rule, permutations=500, seed=6)


def test_sampling_does_not_depend_on_the_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    game = random_table_game(6, seed=1)
    whole = shapley_sample(game, permutations=1000, seed=3)
    monkeypatch.setattr(shapley_module, "_SAMPLE_BATCH_ELEMENTS_MAX", 64)
    batched = shapley_sample(game, permutations=1000, seed=3)
    assert batched.values == pytest.approx(whole.values, abs=1e-12)
    assert batched.standard_errors == pytest.approx(whole.standard_errors, rel=1e-9)


def test_large_synergy_game_is_sampled_and_needs_a_seed() -> None:
    players = names(300)
    spec = SynergyGameSpec(
        values={p: 1.0 for p in players},
        synergies=(SynergyTerm(members=("p0", "p1"), bonus=10.0),),
    )
    game = synergy_game_from_spec(spec)
    with pytest.raises(GameError, match="pass a seed"):
        shapley(game)
    result = shapley(game, permutations=200, seed=1)
    assert result.method == "sampled"
    # Only p0 and p1 share the bonus; the additive part has no sampling noise.
    assert result.values[players.index("p2")] == 1.0
    assert result.values[0] + result.values[1] == pytest.approx(12.0)
    assert result.standard_errors is not None
    exact = np.array(shapley_synergy_exact(game).values)
    errors = np.abs(np.array(result.values) - exact)
    assert np.all(errors <= 3 * np.array(result.standard_errors) + 1e-12)


def test_sampling_rejects_bad_arguments() -> None:
    game = random_table_game(3, seed=0)
    with pytest.raises(GameError, match="permutations: expected 2"):
        shapley_sample(game, permutations=1, seed=0)
    with pytest.raises(GameError, match="empty coalition"):
        shapley_sample_callable(names(2), lambda m: 1.0, permutations=10, seed=0)


def test_result_encodes_to_json() -> None:
    result = shapley_exact(random_table_game(3, seed=0))
    decoded = msgspec.json.decode(msgspec.json.encode(result), type=ShapleyResult)
    assert decoded == result


def test_all_is_the_public_surface() -> None:
    from exchange.core import coalitions, swarm_metrics

    for module in (shapley_module, coalitions, swarm_metrics):
        exported = set(module.__all__)
        assert all(hasattr(module, name) for name in exported)
        defined_here = {
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and callable(obj)
            and getattr(obj, "__module__", None) == module.__name__
        }
        assert defined_here <= exported, f"{module.__name__} exports too little"
