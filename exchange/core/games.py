"""Turns a wire ``Game`` into a computable game of ``exchange.core.shapley``. Pure."""

import msgspec

from exchange.core.shapley import (
    GameError,
    SynergyGame,
    SynergyGameSpec,
    TableGame,
    TableGameSpec,
    synergy_game_from_spec,
    table_game_from_spec,
)
from protocols.cooperation import Game


def compile_game(game: Game) -> TableGame | SynergyGame:
    """Raises ``GameError`` naming the bad field when the game is not one of the two forms."""
    as_table = game.players is not None or game.coalitions is not None
    as_rule = game.values is not None
    if as_table == as_rule:
        raise GameError(
            "game: give either a table (players + coalitions) or a rule (values + synergies)"
        )
    data = msgspec.to_builtins(game)
    try:
        if as_table:
            spec = msgspec.convert(
                {k: data[k] for k in ("players", "coalitions", "default_value") if k in data},
                TableGameSpec,
            )
            return table_game_from_spec(spec)
        rule = msgspec.convert(
            {k: data[k] for k in ("values", "synergies") if k in data}, SynergyGameSpec
        )
        return synergy_game_from_spec(rule)
    except msgspec.ValidationError as exc:
        raise GameError(f"game: {exc}") from exc
