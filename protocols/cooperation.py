"""Cooperation messages (seed 2): shared-pool profit, Shapley shares, coalitions.

A characteristic function travels as a ``Game``: either a table (``players`` + ``coalitions``,
optionally ``default_value``) or a rule (``values`` per agent + ``synergies``). Worths are plain
numbers of tokens (they weigh shares; they are not themselves paid). See docs/shapley.md.
"""

from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from protocols.commands import StrictCommand
from protocols.ids import AgentRef, Name, Text
from protocols.queries import Query
from protocols.results import Result
from protocols.state_names import CoalitionStateName

PlayerName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Worth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    members: list[PlayerName]
    value: float


class Synergy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    members: list[PlayerName]
    bonus: float


class Game(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    players: list[PlayerName] | None = None
    coalitions: list[Worth] | None = None
    default_value: float | None = None
    values: dict[PlayerName, float] | None = None
    synergies: list[Synergy] = []


class PoolDeposit(StrictCommand, frozen=True, kw_only=True):
    """Puts profit into a pool: from the sender's account, or minted when sent by admin."""

    pool_id: Name
    amount: Decimal
    memo: Text = ""


class PoolDistribute(StrictCommand, frozen=True, kw_only=True):
    """Pays out profit to the contributors: pro rata to contributions, or by Shapley value."""

    pool_id: Name
    amount: Decimal | None = None
    method: Literal["proportional", "shapley"] = "proportional"
    game: Game | None = None


class FormCoalition(StrictCommand, frozen=True, kw_only=True):
    """Greedy formation among ``candidates`` (add while the marginal gain exceeds ``threshold``)."""

    candidates: list[AgentRef]
    game: Game
    threshold: float = 0.05
    purpose: Text = ""


class EndCoalition(StrictCommand, frozen=True, kw_only=True):
    """Ends a coalition; ``intact`` says whether it held together to the end."""

    coalition_id: Name
    intact: bool


class ShapleyQuery(Query, frozen=True, kw_only=True):
    game: Game
    permutations: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10_000
    seed: int | None = None


class ShapleyShares(Result, frozen=True, kw_only=True):
    players: list[str]
    values: list[float]
    standard_errors: list[float] | None
    grand_coalition_value: float
    method: str
    permutations: int | None = None


class Payout(Result, frozen=True, kw_only=True):
    agent: str
    share: str
    amount: str
    paid: bool


class DistributionResult(Result, frozen=True, kw_only=True):
    pool_id: str
    method: str
    distributed: str
    paid: str
    kept_in_pool: str
    payouts: list[Payout]


class CoalitionResult(Result, frozen=True, kw_only=True):
    coalition_id: str
    members: list[str]
    value: float
    shares: dict[str, float]
    in_core: bool
    blocking: list[str] | None
    state: CoalitionStateName
