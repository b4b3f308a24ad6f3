"""Coalitions as ledger records: formed by seed 2's greedy rule, split by Shapley value, checked
for stability (is the split in the core, and if not, which coalition blocks it), and counted for
the coalition-stability metric when they end (intact or not). The math lives in
``coalitions.py`` and ``shapley.py``; this module only records and answers.
"""

from collections import deque
from dataclasses import dataclass

import msgspec
import numpy as np

from exchange.core.coalitions import core_check, form_coalition_greedy
from exchange.core.games import compile_game
from exchange.core.ledger import Ledger
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import keep_newest, kept_note
from exchange.core.shapley import (
    GameError,
    SynergyGame,
    TableGame,
    shapley,
    table_game_from_synergy,
    table_game_from_values,
)
from exchange.core.states import COALITION, CoalitionEvent, CoalitionState
from protocols import cooperation as coop
from protocols.errors import ErrorCode
from protocols.ids import SYSTEM_SENDERS


@dataclass(slots=True)
class CoalitionRecord:
    id: str
    founder: str
    members: list[str]
    value: float
    shares: dict[str, float]
    in_core: bool
    blocking: list[str] | None
    purpose: str
    state: CoalitionState = CoalitionState.active


class CoalitionsState(msgspec.Struct, frozen=True, kw_only=True):
    coalitions: list[CoalitionRecord]
    ended_coalitions: list[str]
    # (ended, intact) of the ended coalitions forgotten: the stability metric counts them.
    forgotten_coalitions: tuple[int, int]


class CoalitionRules:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.coalitions: dict[str, CoalitionRecord] = {}
        # Ended coalitions, oldest first: beyond ``config.ended_coalitions_kept`` the oldest is
        # forgotten, its end counted in ``forgotten_ended`` and ``forgotten_intact``.
        self.ended: deque[str] = deque()
        self.forgotten_ended = 0
        self.forgotten_intact = 0

    def snapshot(self) -> CoalitionsState:
        return CoalitionsState(
            coalitions=list(self.coalitions.values()),
            ended_coalitions=list(self.ended),
            forgotten_coalitions=(self.forgotten_ended, self.forgotten_intact),
        )

    def restore(self, state: CoalitionsState) -> None:
        self.coalitions.update((c.id, c) for c in state.coalitions)
        self.ended.extend(state.ended_coalitions)
        self.forgotten_ended, self.forgotten_intact = state.forgotten_coalitions

    def form(self, sender: str, cmd: coop.FormCoalition) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        if sender not in SYSTEM_SENDERS and isinstance(
            found := ledger.acting_agent(sender), Refusal
        ):
            return found
        for agent_id in cmd.candidates:
            if isinstance(found := ledger.agent(agent_id), Refusal):
                return found
        try:
            game = compile_game(cmd.game)
            if sorted(game.players) != sorted(set(cmd.candidates)):
                raise GameError("game: its players must be exactly the candidates")
            formed = form_coalition_greedy(game, min_marginal_gain=cmd.threshold)
            sub = _restrict(game, cmd.game, list(formed.members))
            split = shapley(sub, seed=0)
            check = core_check(sub, list(split.values))
        except GameError as exc:
            return refuse(ErrorCode.invalid_message, str(exc), path="$.game")
        record = CoalitionRecord(
            id=ledger.new_id("coalition"),
            founder=sender,
            members=list(formed.members),
            value=formed.value,
            shares=dict(zip(split.players, split.values, strict=True)),
            in_core=check.in_core,
            blocking=None if check.most_blocking is None else list(check.most_blocking),
            purpose=cmd.purpose,
        )
        self.coalitions[record.id] = record
        return self.view(record)

    def end(self, sender: str, cmd: coop.EndCoalition) -> msgspec.Struct | Refusal:
        record = self.coalitions.get(cmd.coalition_id)
        if record is None:
            return refuse(
                ErrorCode.invalid_message,
                f"no coalition {cmd.coalition_id!r} "
                + kept_note(self.ledger.config.ended_coalitions_kept, "ended coalitions"),
            )
        if sender not in SYSTEM_SENDERS and sender != record.founder:
            return refuse(ErrorCode.not_authorized, f"only {record.founder} ends {record.id}")
        event = CoalitionEvent.end_intact if cmd.intact else CoalitionEvent.end_broken
        if (
            ended := COALITION.refusal(record.state, event, record.id, "it already ended")
        ) is not None:
            return ended
        record.state = COALITION.next(record.state, event)
        keep_newest(self.ended, record.id, self.ledger.config.ended_coalitions_kept, self._forget)
        return self.view(record)

    def _forget(self, coalition_id: str) -> None:
        forgotten = self.coalitions.pop(coalition_id)
        self.forgotten_ended += 1
        self.forgotten_intact += forgotten.state == CoalitionState.intact

    def counts(self) -> tuple[int, int]:
        """(formed and ended, ended intact) for the coalition-stability metric."""
        ended = [c for c in self.coalitions.values() if c.state != CoalitionState.active]
        return (
            self.forgotten_ended + len(ended),
            self.forgotten_intact + sum(1 for c in ended if c.state == CoalitionState.intact),
        )

    def view(self, record: CoalitionRecord) -> coop.CoalitionResult:
        return coop.CoalitionResult(
            coalition_id=record.id,
            members=list(record.members),
            value=record.value,
            shares=dict(record.shares),
            in_core=record.in_core,
            blocking=record.blocking,
            state=record.state,
        )


def _restrict(game: TableGame | SynergyGame, wire: coop.Game, members: list[str]) -> TableGame:
    """The table of the game played by ``members`` alone. Raises ``GameError`` past 20 members."""
    if isinstance(game, SynergyGame):
        inside = set(members)
        restricted = coop.Game(
            values={m: v for m, v in (wire.values or {}).items() if m in inside},
            synergies=[t for t in wire.synergies if set(t.members) <= inside],
        )
        compiled = compile_game(restricted)
        assert isinstance(compiled, SynergyGame)
        return table_game_from_synergy(compiled)
    index = {p: i for i, p in enumerate(game.players)}
    sub_masks = np.arange(1 << len(members), dtype=np.int64)
    full_masks = np.zeros_like(sub_masks)
    for bit, name in enumerate(members):
        full_masks |= ((sub_masks >> bit) & 1) << index[name]
    return table_game_from_values(members, game.value_by_mask[full_masks])
