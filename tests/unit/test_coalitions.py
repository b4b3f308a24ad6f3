"""Coalition formation and the core: small games worked by hand, the table and rule paths agreeing
on random games, and Shapley's theorem that a convex game's Shapley value lies in its core."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core.coalitions import core_check, form_coalition_greedy
from exchange.core.shapley import (
    GameError,
    SynergyGameSpec,
    SynergyTerm,
    TableGame,
    shapley_exact,
    synergy_game_from_spec,
    table_game_from_synergy,
    table_game_from_values,
)


def glove_game() -> TableGame:
    # Player 0 holds the only left glove; a matched pair is worth 1.
    return table_game_from_values(["left", "right1", "right2"], [0, 0, 0, 1, 0, 1, 0, 1])


SWARM = SynergyGameSpec(
    values={"scout": 2.0, "analyst": 3.0, "executor": 1.0, "spammer": 0.5},
    synergies=(
        SynergyTerm(members=("scout", "executor"), bonus=4.0),
        SynergyTerm(members=("analyst", "executor"), bonus=1.0),
        # The spammer floods the bus: anyone working with it loses more than it brings.
        SynergyTerm(members=("spammer", "scout"), bonus=-3.0),
    ),
)


def test_greedy_formation_on_a_small_swarm() -> None:
    formation = form_coalition_greedy(synergy_game_from_spec(SWARM), min_marginal_gain=0.05)
    # analyst is the best alone (3); then executor gains 1 + 1 = 2 over scout's 2 (tie goes to
    # the lower index: "analyst" < "executor" < "scout" < "spammer", so executor); then scout
    # gains 2 + 4 = 6; the spammer would bring 0.5 - 3 = -2.5 and is left out.
    assert formation.members == ("analyst", "executor", "scout")
    assert formation.gains == (3.0, 2.0, 6.0)
    assert formation.value == 11.0
    assert formation.best_rejected_gain == -2.5


def test_greedy_formation_always_takes_the_best_single_player() -> None:
    spec = SynergyGameSpec(values={"a": -1.0, "b": -2.0})
    formation = form_coalition_greedy(synergy_game_from_spec(spec))
    assert formation.members == ("a",)
    assert formation.value == -1.0
    assert formation.best_rejected_gain == -2.0


def test_greedy_formation_can_take_everyone() -> None:
    spec = SynergyGameSpec(values={"a": 1.0, "b": 2.0})
    formation = form_coalition_greedy(synergy_game_from_spec(spec))
    assert formation.members == ("b", "a")
    assert formation.best_rejected_gain is None


@st.composite
def synergy_specs(draw: st.DrawFn) -> SynergyGameSpec:
    n = draw(st.integers(1, 7))
    players = [f"p{i}" for i in range(n)]
    terms = draw(
        st.lists(
            st.tuples(
                st.lists(st.sampled_from(players), min_size=1, max_size=n, unique=True),
                st.integers(-20, 20),
            ),
            max_size=10,
        )
    )
    return SynergyGameSpec(
        values={p: float(draw(st.integers(-10, 10))) for p in players},
        synergies=tuple(SynergyTerm(members=tuple(m), bonus=float(b)) for m, b in terms),
    )


@given(synergy_specs(), st.sampled_from([-100.0, 0.0, 0.05, 3.0]))
def test_rule_and_table_formation_agree(spec: SynergyGameSpec, threshold: float) -> None:
    rule = synergy_game_from_spec(spec)
    from_rule = form_coalition_greedy(rule, min_marginal_gain=threshold)
    from_table = form_coalition_greedy(table_game_from_synergy(rule), min_marginal_gain=threshold)
    assert from_rule == from_table
    assert all(gain > threshold for gain in from_rule.gains[1:])
    assert math.fsum(from_rule.gains) == pytest.approx(from_rule.value)


def test_glove_game_core_holds_only_the_left_glove_taking_all() -> None:
    game = glove_game()
    check = core_check(game, (1.0, 0.0, 0.0))
    assert check.in_core and check.efficient
    assert check.most_blocking is None
    assert check.excess_max == 0.0


def test_glove_game_equal_split_is_blocked() -> None:
    check = core_check(glove_game(), (1 / 3, 1 / 3, 1 / 3))
    assert not check.in_core
    assert check.efficient
    # {left, right1} and {left, right2} both have excess 1/3; the lower mask is named.
    assert check.most_blocking == ("left", "right1")
    assert check.excess_max == pytest.approx(1 / 3)


def test_glove_game_shapley_value_is_not_in_the_core() -> None:
    check = core_check(glove_game(), shapley_exact(glove_game()).values)
    assert not check.in_core
    assert check.most_blocking == ("left", "right1")
    assert check.excess_max == pytest.approx(1 / 6)


def test_under_and_over_allocation() -> None:
    under = core_check(glove_game(), (0.5, 0.0, 0.0))
    assert not under.efficient and not under.in_core
    assert under.most_blocking == ("left", "right1")
    over = core_check(glove_game(), (1.0, 1.0, 1.0))
    assert not over.efficient and not over.in_core
    assert over.most_blocking is None


def test_core_check_rejects_a_wrong_allocation() -> None:
    with pytest.raises(GameError, match="expected 3 payoffs"):
        core_check(glove_game(), (1.0, 0.0))
    with pytest.raises(GameError, match="finite"):
        core_check(glove_game(), (math.nan, 0.0, 1.0))


@given(st.lists(st.integers(0, 50), min_size=1, max_size=8))
def test_convex_game_shapley_value_is_in_the_core(weights: list[int]) -> None:
    # v(S) = (sum of weights in S)^2 is supermodular (convex), and a convex game's Shapley value
    # lies in its core (Shapley, "Cores of convex games", Int. J. Game Theory 1 (1971)).
    n = len(weights)
    masks = np.arange(1 << n)
    sums = np.zeros(1 << n, dtype=np.float64)
    for i, w in enumerate(weights):
        sums += w * ((masks >> i) & 1)
    game = table_game_from_values([f"p{i}" for i in range(n)], sums**2)
    assert core_check(game, shapley_exact(game).values).in_core
