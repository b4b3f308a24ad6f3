"""Compute futures (docs/economy.md, Compute futures): the right to ``tokens`` inference tokens of
``model`` at a fixed ``price`` per 1,000, settled in cash at expiry against the model's price then.

Commands on ``exchange.cmd.<sender>.future.*``, queries on ``exchange.query.future(s)``:

- ``future.write``: the sender writes a future and posts its margin; it waits to be taken.
- ``future.buy``: the sender buys one from the exchange (writer ``@llm.<model>``) at today's price.
- ``future.take``: the sender takes a written offer or a resale listing at its exact price.
- ``future.list``: the holder offers its position for resale at a price.
"""

from decimal import Decimal
from typing import Annotated, Final

import msgspec

from protocols.commands import InferenceTokens, StrictCommand
from protocols.ids import AgentRef, ModelName, Name
from protocols.queries import Query
from protocols.results import Result
from protocols.units import S_PER_DAY

ExpiresInSeconds = Annotated[int, msgspec.Meta(gt=0, le=30 * S_PER_DAY)]

FUTURE_STATES: Final = ("offered", "open", "settled", "liquidated", "lapsed")
FutureStateName = Annotated[
    str,
    msgspec.Meta(description="the future's state", extra_json_schema={"enum": list(FUTURE_STATES)}),
]


class WriteFuture(StrictCommand, frozen=True, kw_only=True):
    """Writes a future: ``tokens`` of ``model`` at ``price`` tokens per 1,000, expiring
    ``expires_in_s`` from now. The writer's margin is held at once; ``buyer`` names the one agent
    that may take it (anyone if absent)."""

    model: ModelName
    tokens: InferenceTokens
    price: Decimal
    expires_in_s: ExpiresInSeconds
    buyer: AgentRef | None = None


class BuyFuture(StrictCommand, frozen=True, kw_only=True):
    """Buys a future from the exchange at the model's price now; ``@llm.<model>`` writes it."""

    model: ModelName
    tokens: InferenceTokens
    expires_in_s: ExpiresInSeconds


class TakeFuture(StrictCommand, frozen=True, kw_only=True):
    """Takes a written offer (paying its notional into the future) or a resale listing (paying the
    holder). ``price`` is the whole amount the taker expects to pay; any other is refused."""

    future_id: Name
    price: Decimal


class ListFuture(StrictCommand, frozen=True, kw_only=True):
    """The holder offers its position for resale at ``price`` tokens in all, to ``to`` only if
    given. Listing again replaces the listing."""

    future_id: Name
    price: Decimal
    to: AgentRef | None = None


class FutureQuery(Query, frozen=True, kw_only=True):
    future_id: Name


class FuturesQuery(Query, frozen=True, kw_only=True):
    """The futures kept, newest last; with ``agent``, those it wrote or holds."""

    agent: AgentRef | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class FutureView(Result, frozen=True, kw_only=True):
    """A future. ``writer`` is an agent or ``@llm.<model>``; ``holder`` is None until taken.
    Amounts are tokens; ``spot``, ``to_holder`` and ``to_writer`` are set once it has ended."""

    future_id: str
    model: str
    tokens: int
    price: str
    notional: str
    writer: str
    holder: str | None
    buyer: str | None
    state: FutureStateName
    expires_at_ns: int
    margin: str
    listing_price: str | None
    listing_to: str | None
    spot: str | None
    to_holder: str | None
    to_writer: str | None


class FuturesResult(Result, frozen=True, kw_only=True):
    futures: list[FutureView]
