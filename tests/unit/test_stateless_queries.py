"""The stateless queries' bounds and answers: an oversized Shapley query is refused before any work,
the work estimate is the sampler's own cost, and the answer is the bytes ``Exchange.query`` gives.
Pure: no daemon, no processes."""

import msgspec
import pytest

from exchange.core import stateless_queries
from exchange.core.config import EconomyConfig
from exchange.core.games import compile_game
from exchange.core.machine import Exchange
from exchange.core.refusals import Refusal
from exchange.core.shapley import PLAYERS_EXACT_MAX, SynergyGame
from exchange.core.stateless_queries import (
    SHAPLEY_QUERY_PLAYERS_MAX,
    SHAPLEY_QUERY_SAMPLED_WORK_MAX,
    answer,
    shapley_sampled_work,
    size_refusal,
)
from protocols.cooperation import Game, ShapleyQuery, Synergy, Worth
from protocols.queries import BalanceQuery, Query
from protocols.registry import QUERIES


def _rule(players: int, *, permutations: int = 10_000, synergies: int = 0) -> ShapleyQuery:
    names = [f"p{index:05d}" for index in range(players)]
    terms = [Synergy(members=names[index : index + 3], bonus=1.0) for index in range(synergies)]
    game = Game(
        values={name: float(index % 7) for index, name in enumerate(names)}, synergies=terms
    )
    return ShapleyQuery(game=game, permutations=permutations, seed=1)


def _code(refused: object) -> str:
    assert isinstance(refused, Refusal), refused
    return refused.body.code


def test_the_issue_s_query_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a query beyond the bounds must not be computed")

    monkeypatch.setattr(stateless_queries, "shapley", no_work)
    query = _rule(1_800, permutations=100_000, synergies=100)
    envelope = msgspec.json.decode(answer(query))
    assert envelope["ok"] is False
    assert envelope["error"]["code"] == "query_too_large"
    assert envelope["error"]["path"] == "$.permutations"
    # The message says what to ask for instead: a permutation count within the bound.
    allowed = SHAPLEY_QUERY_SAMPLED_WORK_MAX // (1_800 + 100 * 3)
    assert f"at most {allowed} permutations" in envelope["error"]["message"]


def test_the_work_bound_is_inclusive() -> None:
    # 500 players: every permutation costs 500 arrivals.
    at_bound = _rule(500, permutations=SHAPLEY_QUERY_SAMPLED_WORK_MAX // 500)
    assert shapley_sampled_work(at_bound) == SHAPLEY_QUERY_SAMPLED_WORK_MAX
    assert size_refusal(at_bound) is None
    over = _rule(500, permutations=SHAPLEY_QUERY_SAMPLED_WORK_MAX // 500 + 1)
    assert _code(size_refusal(over)) == "query_too_large"


def test_the_players_bound_holds_for_any_permutation_count() -> None:
    assert size_refusal(_rule(SHAPLEY_QUERY_PLAYERS_MAX, permutations=2)) is None
    refused = size_refusal(_rule(SHAPLEY_QUERY_PLAYERS_MAX + 1, permutations=2))
    assert _code(refused) == "query_too_large"
    assert isinstance(refused, Refusal) and refused.body.path == "$.game"


def test_exact_games_cost_no_sampling() -> None:
    assert shapley_sampled_work(_rule(PLAYERS_EXACT_MAX, permutations=100_000)) == 0
    table = ShapleyQuery(
        game=Game(players=["a", "b"], coalitions=[Worth(members=["a", "b"], value=1)]),
        permutations=100_000,
    )
    assert shapley_sampled_work(table) == 0
    assert size_refusal(table) is None


@pytest.mark.parametrize(("players", "synergies"), [(21, 0), (40, 7), (300, 120)])
def test_the_work_estimate_is_the_sampler_s_own_cost(players: int, synergies: int) -> None:
    query = _rule(players, permutations=1_000, synergies=synergies)
    compiled = compile_game(query.game)
    assert isinstance(compiled, SynergyGame)
    # shapley_sample's temporaries per permutation: one arrival per player, one per member slot.
    per_permutation = len(compiled.players) + compiled.synergy_members.size
    assert shapley_sampled_work(query) == query.permutations * per_permutation


def test_within_bounds_the_answer_is_exchange_query_s_envelope() -> None:
    exchange = Exchange(EconomyConfig())
    glove = ShapleyQuery(
        game=Game(
            players=["left", "right1", "right2"],
            coalitions=[
                Worth(members=["left", "right1"], value=1),
                Worth(members=["left", "right2"], value=1),
                Worth(members=["left", "right1", "right2"], value=1),
            ],
            default_value=0,
        )
    )
    sampled = _rule(60, permutations=2_000, synergies=10)
    for query in (glove, sampled):
        assert answer(query) == exchange.query(query)
    glove_values = msgspec.json.decode(answer(glove))["result"]["values"]
    assert glove_values == pytest.approx([2 / 3, 1 / 6, 1 / 6])
    assert answer(sampled).startswith(b'{"ok":true,"result":{"players":["p00000"')


def test_an_invalid_game_is_refused_as_before() -> None:
    both_forms = ShapleyQuery(game=Game(players=["a"], values={"a": 1.0}))
    envelope = msgspec.json.decode(answer(both_forms))
    assert envelope["error"]["code"] == "invalid_message"
    assert envelope["error"]["path"] == "$.game"


def test_only_shapley_reads_no_state() -> None:
    # Every other query reads the ledger (balances, tasks, the metrics...) and must stay on the
    # writer's ordered path. A new query listed here is a claim to check by reading it.
    stateless = {
        verb for verb, kind in QUERIES.items() if kind in stateless_queries.STATELESS_QUERIES
    }
    assert stateless == {"shapley"}
    query: Query = BalanceQuery(agent="zero")
    assert not stateless_queries.is_stateless(query)
