"""What the dashboard page shows: one ``View`` document, sent whole to the browser on each change.

Owns: the shape of that document (msgspec Structs, encoded as JSON). The live feed
(``model.Board``) and the simulation reader (``simulation.py``) both produce it, so the page draws
a live exchange and a finished simulation with the same components. Amounts are decimal strings of
tokens, as on the wire; the balance series are floats because they only draw a chart.
No I/O here.
"""

import msgspec

__all__ = [
    "AgentView",
    "AuctionView",
    "BidView",
    "CoalitionView",
    "EventLine",
    "FlowView",
    "HeatCell",
    "LimitsView",
    "MetricView",
    "PoolView",
    "RefusalView",
    "SignalView",
    "View",
    "VoteView",
]


class LimitsView(msgspec.Struct, frozen=True, kw_only=True):
    """One agent's rate limits and what it used of them (``burst_used``: its largest recent
    single spend, which the burst limit caps)."""

    burst: str
    burst_used: str
    hourly: str
    hourly_used: str
    daily: str
    daily_used: str


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    role: str
    balance: str
    earned: str
    spent: str
    held: str
    performance: str
    limits: LimitsView | None = None
    refusals: dict[str, int] = {}


class FlowView(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens moved from ``source`` to ``target`` (agents or system accounts such as ``@fees``)."""

    source: str
    target: str
    amount: str
    count: int


class BidView(msgspec.Struct, frozen=True, kw_only=True):
    bidder: str
    cost: str
    time_ms: int
    confidence: float
    score: str = ""
    accepted: bool = False


class AuctionView(msgspec.Struct, frozen=True, kw_only=True):
    task_id: str
    manager: str
    task_type: str
    asset: str
    max_cost: str
    state: str
    bids: list[BidView]
    winner: str | None = None
    cost: str | None = None
    escrow_id: str | None = None
    escrow_state: str | None = None
    paid: str = "0"
    fee: str = "0"
    refunded: str = "0"
    reason: str = ""


class RefusalView(msgspec.Struct, frozen=True, kw_only=True):
    at_ms: int
    agent: str
    verb: str
    code: str
    message: str


class SignalView(msgspec.Struct, frozen=True, kw_only=True):
    at_ms: int
    sender: str
    signal_type: str
    asset: str
    direction: str
    confidence: float


class HeatCell(msgspec.Struct, frozen=True, kw_only=True):
    """The pheromone strength of one asset and direction, summed over scanners."""

    asset: str
    direction: str
    strength: float


class VoteView(msgspec.Struct, frozen=True, kw_only=True):
    proposal_id: str
    title: str
    kind: str
    state: str
    votes_cast: int
    outcome: str = ""
    yes_share: str | None = None
    winner: str | None = None


class PoolView(msgspec.Struct, frozen=True, kw_only=True):
    pool_id: str
    name: str
    balance: str
    members: list[str]
    funded: bool
    closed: bool


class CoalitionView(msgspec.Struct, frozen=True, kw_only=True):
    coalition_id: str
    members: list[str]
    value: float
    in_core: bool
    state: str


class MetricView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: float | None
    target: str
    warning: str
    status: str


class EventLine(msgspec.Struct, frozen=True, kw_only=True):
    at_ms: int
    kind: str
    text: str


class View(msgspec.Struct, frozen=True, kw_only=True):
    """The whole page. ``mode`` is ``live`` or ``simulation``; ``series`` maps an agent to its
    balance over time as [seconds since the start, tokens] points."""

    mode: str
    title: str
    connected: bool
    updated_ms: int
    summary: dict[str, str]
    agents: list[AgentView]
    series: dict[str, list[tuple[float, float]]]
    flows: list[FlowView]
    auctions: list[AuctionView]
    refusals: list[RefusalView]
    signals: list[SignalView]
    heat: list[HeatCell]
    votes: list[VoteView]
    pools: list[PoolView]
    coalitions: list[CoalitionView]
    metrics: list[MetricView]
    events: list[EventLine]
