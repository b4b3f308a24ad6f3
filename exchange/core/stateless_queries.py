"""Queries answered from the request alone: they read no ledger state. Today only ``shapley``.

Owns: which queries those are (``STATELESS_QUERIES``), the bounds of one such query (beyond them
it is refused as ``query_too_large`` before any work is done) and its answer, as the very bytes
``Exchange.query`` returns, since ``Exchange.query`` answers them through these same functions.
Because nothing here reads the state, the daemon answers these queries off its single writer, in
a separate process under a time bound (exchange/daemon/query_pool.py), and refuses an oversized
one at the wire with ``size_refusal``. The other queries all read the ledger (balances, tasks,
the metrics...) and are answered by the writer, in order.
Must not: read the ledger, a clock or the environment, or do I/O (pure like the rest of the core).

The bounds of a Shapley query, in one place (docs/shapley.md and docs/daemon.md quote them):

- ``SHAPLEY_QUERY_PLAYERS_MAX`` players (the reply carries a name, a value and a standard error
  per player, so this also bounds the reply: ~100 bytes a player);
- a sampled game (a synergy rule with more than ``PLAYERS_EXACT_MAX`` players) at most
  ``SHAPLEY_QUERY_SAMPLED_WORK_MAX`` player arrivals, where one permutation costs one arrival
  per player plus one per synergy member slot (``shapley_sample``'s own cost model:
  permutations x (players + terms x the longest term's members)). Measured on the 2-core
  development VM at ~20-30 ns an arrival: the bound is ~0.2-0.3 s of one core;
- an exact game is already bounded by ``PLAYERS_EXACT_MAX`` (20 players: ~50-70 ms) and the
  wire's ``permutations`` by ``ShapleyQuery`` (at most 100,000; protocols/cooperation.py).

The daemon's time bound (``Settings.query_time_s_max``, 2 s by default) is the backstop for a
machine slower than measured; these bounds are what makes a query within them finish well inside
it.
"""

from collections.abc import Callable
from typing import Any, Final

import msgspec

from exchange.core.games import compile_game
from exchange.core.refusals import Refusal, refusal_reply, refuse, result_reply
from exchange.core.shapley import PLAYERS_EXACT_MAX, GameError, shapley
from protocols import cooperation as coop
from protocols.errors import ErrorCode
from protocols.queries import Query

SHAPLEY_QUERY_PLAYERS_MAX: Final = 2_000
SHAPLEY_QUERY_SAMPLED_WORK_MAX: Final = 10_000_000

Answer = msgspec.Struct | Refusal


def shapley_players(query: coop.ShapleyQuery) -> int:
    """The number of players the query's game names (either form; 0 when it names none)."""
    game = query.game
    if game.values is not None:
        return len(game.values)
    return len(game.players or ())


def shapley_sampled_work(query: coop.ShapleyQuery) -> int:
    """Player arrivals the query costs if it is sampled; 0 when its game is computed exactly.

    Mirrors ``shapley``'s choice (a table is exact; a rule is sampled above ``PLAYERS_EXACT_MAX``
    players) and ``shapley_sample``'s cost (terms are padded to the longest one's width).
    """
    game = query.game
    if game.values is None or len(game.values) <= PLAYERS_EXACT_MAX:
        return 0
    width = max((len(term.members) for term in game.synergies), default=1)
    per_permutation = len(game.values) + len(game.synergies) * width
    return query.permutations * per_permutation


def shapley_size_refusal(query: coop.ShapleyQuery) -> Refusal | None:
    """``query_too_large`` when the query is beyond the bounds above, else None. Cheap: O(terms)."""
    players = shapley_players(query)
    if players > SHAPLEY_QUERY_PLAYERS_MAX:
        return refuse(
            ErrorCode.query_too_large,
            f"the game has {players} players and a shapley query takes at most "
            f"{SHAPLEY_QUERY_PLAYERS_MAX}; split the players into smaller games",
            path="$.game",
        )
    work = shapley_sampled_work(query)
    if work > SHAPLEY_QUERY_SAMPLED_WORK_MAX:
        per_permutation = work // query.permutations
        return refuse(
            ErrorCode.query_too_large,
            f"sampling {players} players costs {query.permutations} permutations x "
            f"{per_permutation} (players plus synergy member slots) = {work} player arrivals, "
            f"and a shapley query takes at most {SHAPLEY_QUERY_SAMPLED_WORK_MAX}; ask for at most "
            f"{SHAPLEY_QUERY_SAMPLED_WORK_MAX // per_permutation} permutations",
            path="$.permutations",
        )
    return None


def answer_shapley(query: coop.ShapleyQuery) -> Answer:
    """Each player's Shapley share, or a refusal (too large, or a game that is not valid)."""
    refused = shapley_size_refusal(query)
    if refused is not None:
        return refused
    try:
        result = shapley(compile_game(query.game), permutations=query.permutations, seed=query.seed)
    except GameError as exc:
        return refuse(ErrorCode.invalid_message, str(exc), path="$.game")
    return coop.ShapleyShares(
        players=list(result.players),
        values=list(result.values),
        standard_errors=None if result.standard_errors is None else list(result.standard_errors),
        grand_coalition_value=result.grand_coalition_value,
        method=result.method,
        permutations=result.permutations,
    )


# Each stateless query type, with its answer and its size check (None: it has no size to check).
STATELESS_QUERIES: Final[dict[type[Query], Callable[[Any], Answer]]] = {
    coop.ShapleyQuery: answer_shapley,
}
_SIZE_CHECKS: Final[dict[type[Query], Callable[[Any], Refusal | None]]] = {
    coop.ShapleyQuery: shapley_size_refusal,
}
assert _SIZE_CHECKS.keys() == STATELESS_QUERIES.keys(), "every stateless query has a size check"


def is_stateless(query: Query) -> bool:
    return type(query) in STATELESS_QUERIES


def size_refusal(query: Query) -> Refusal | None:
    """``query_too_large`` for a stateless query beyond its bounds, else None."""
    return _SIZE_CHECKS[type(query)](query)


def answer(query: Query) -> bytes:
    """The envelope ``Exchange.query`` would return for this stateless query, byte for byte."""
    value = STATELESS_QUERIES[type(query)](query)
    if isinstance(value, Refusal):
        return refusal_reply(value.body)
    return result_reply(value)
