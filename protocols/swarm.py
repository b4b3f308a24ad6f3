"""Swarm coordination messages: signals, Contract Net, escrow and votes (seed 2).

Bodies that agents publish on ``swarm.*`` subjects (signals, bids, refusals, results, ballots)
skip unknown fields, because other languages' clients may add their own; the ids they concern and
the sender come from the subject. The exchange turns each into a command for the ledger
(``Observe*``/``Submit*`` below), adding what the subject says.

Commands on ``exchange.cmd.<sender>.task.*``, ``escrow.*`` and ``vote.propose`` move money or
bind the sender, so they forbid unknown fields.
"""

from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from protocols.commands import Command, StrictCommand
from protocols.ids import AgentRef, ModelName, Name, Text, Token
from protocols.results import Result
from protocols.state_names import (
    ActionStateName,
    EscrowStateName,
    ProposalStateName,
    TaskStateName,
)
from protocols.units import MS_PER_S, S_PER_DAY

Confidence = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Score = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
# A task's deadline or bid window: at most a week. An escrow's or a vote's time: at most 30 days.
DURATION_MS_MAX: Final = 7 * S_PER_DAY * MS_PER_S
DURATION_S_MAX: Final = 30 * S_PER_DAY
Milliseconds = Annotated[int, msgspec.Meta(gt=0, le=DURATION_MS_MAX)]
Seconds = Annotated[int, msgspec.Meta(gt=0, le=DURATION_S_MAX)]
SignalType = Literal["opportunity", "risk_alert", "price_update"]
Direction = Literal["long", "short", "exit", "hold"]
# Small free-form objects travel with signals and tasks; their size is bounded by the message size.
Metadata = dict[str, Any]


# ----------------------------------------------------------------------------- signals


class AgentSignal(msgspec.Struct, frozen=True, kw_only=True):
    """Seed 2's ``AgentSignal``, published on ``swarm.signal.<sender>.<signal_type>.<asset>``.

    ``agent_id``, ``signal_type`` and ``asset`` may be omitted: the subject says them.
    """

    confidence: Confidence
    direction: Direction
    metadata: Metadata = {}
    agent_id: str | None = None
    signal_type: SignalType | None = None
    asset: str | None = None
    timestamp: str | None = None


class ObserveSignal(Command, frozen=True, kw_only=True):
    """The exchange's record of a signal seen on the bus (made by the shell, not sent by agents)."""

    remembered: ClassVar[bool] = False
    sender: AgentRef
    signal_type: Token
    asset: Token
    confidence: Confidence
    direction: Direction
    scanner: Token | None = None


class PriceUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """Published by oracles on ``swarm.price.<asset>``."""

    asset: str
    price: Decimal
    at_ns: int
    source: str = ""


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """Published by a worker on ``exchange.cmd.<agent>.heartbeat``, with or without a reply inbox.

    Liveness only: the exchange records when it last heard from each agent (the Prometheus
    gauge ``exchange_agent_heartbeat_age_seconds``); it is not a command and is not journaled.
    ``at_ms`` is the worker's own clock (milliseconds since the epoch).
    """

    role: Annotated[str, msgspec.Meta(max_length=64)] = ""
    capabilities: Annotated[list[Token], msgspec.Meta(max_length=64)] = []
    at_ms: Annotated[int, msgspec.Meta(ge=0)] = 0


HEARTBEAT_VERB: Final = "heartbeat"


# ----------------------------------------------------------------------------- Contract Net


class Weights(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cost: Decimal = Decimal("0.4")
    time: Decimal = Decimal("0.3")
    confidence: Decimal = Decimal("0.3")


class AnnounceTask(StrictCommand, frozen=True, kw_only=True):
    """A manager announces a task; the max cost is held from its account at once."""

    task_type: Token
    asset: Token
    deadline_ms: Milliseconds
    max_cost: Decimal
    payload: Metadata = {}
    bid_window_ms: Milliseconds | None = None
    weights: Weights | None = None
    referrer: AgentRef | None = None


class CallForProposals(msgspec.Struct, frozen=True, kw_only=True):
    """Published on ``swarm.task.cfp.<task_type>``."""

    task_id: str
    manager: str
    task_type: str
    asset: str
    deadline_ms: int
    max_cost: str
    payload: Metadata
    weights: Weights
    closes_at_ns: int
    eligible: list[str]


class Bid(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``swarm.task.<task_id>.propose.<sender>``."""

    cost: Decimal
    time_ms: Annotated[int, msgspec.Meta(gt=0)]
    confidence: Confidence
    capability_proof: Annotated[str, msgspec.Meta(max_length=256)] = ""


class RefuseTask(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``swarm.task.<task_id>.refuse.<sender>``."""

    reason: Text = ""


class TaskReport(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``swarm.task.<task_id>.inform.<sender>`` (done) or ``.failure.<sender>``."""

    output: Metadata = {}
    reason: Text = ""


class SubmitBid(Command, frozen=True, kw_only=True):
    task_id: Name
    bid: Bid


class SubmitRefusal(Command, frozen=True, kw_only=True):
    task_id: Name
    reason: Text = ""


class SubmitResult(Command, frozen=True, kw_only=True):
    task_id: Name
    success: bool
    output: Metadata = {}
    reason: Text = ""


class VerifyTask(StrictCommand, frozen=True, kw_only=True):
    """The manager scores the result: at or above the threshold releases, below disputes."""

    task_id: Name
    score: Score


class CancelTask(StrictCommand, frozen=True, kw_only=True):
    task_id: Name
    reason: Text = ""


class BidScore(msgspec.Struct, frozen=True, kw_only=True):
    bidder: str
    cost: str
    time_ms: int
    confidence: float
    score: str
    accepted: bool


class TaskAward(msgspec.Struct, frozen=True, kw_only=True):
    """Published on ``swarm.task.<task_id>.award``: the winner (accept) and every loser (reject)."""

    task_id: str
    manager: str
    winner: str | None
    cost: str | None
    escrow_id: str | None
    result_due_at_ns: int | None
    bids: list[BidScore]


class TaskDisputed(msgspec.Struct, frozen=True, kw_only=True):
    """Published on ``swarm.task.<task_id>.disputed`` so arbiters can act at once."""

    task_id: str
    escrow_id: str
    manager: str
    winner: str | None
    amount: str
    resolve_by_ns: int


class TaskClosed(msgspec.Struct, frozen=True, kw_only=True):
    """Published on ``swarm.task.<task_id>.closed`` when a task reaches its final state."""

    task_id: str
    state: TaskStateName
    winner: str | None
    paid: str
    fee: str
    refunded: str
    reason: str = ""


# ----------------------------------------------------------------------------- escrow

EscrowOutcome = Literal["release", "refund"]


class LockEscrow(StrictCommand, frozen=True, kw_only=True):
    """Locks the sender's tokens for ``payee``; refunded if not released within ``timeout_s``."""

    payee: AgentRef
    amount: Decimal
    referrer: AgentRef | None = None
    timeout_s: Seconds = 86_400
    memo: Text = ""


class ReleaseEscrow(StrictCommand, frozen=True, kw_only=True):
    """Releases with a verification score: at or above the threshold pays, below disputes."""

    escrow_id: Name
    score: Score = 1.0


class DisputeEscrow(StrictCommand, frozen=True, kw_only=True):
    escrow_id: Name
    reason: Text = ""


class ResolveEscrow(StrictCommand, frozen=True, kw_only=True):
    """An arbiter (admin or a treasury agent, not a party) settles a dispute."""

    escrow_id: Name
    outcome: EscrowOutcome


# ----------------------------------------------------------------------------- votes

VoteKind = Literal["plurality", "supermajority", "consensus", "approval", "quadratic"]
Choice = Literal["yes", "no", "abstain"]


class ModelPriceAction(msgspec.Struct, frozen=True, kw_only=True, tag="model_price"):
    model: ModelName
    price: Decimal


class LimitsAction(msgspec.Struct, frozen=True, kw_only=True, tag="limits"):
    agent: AgentRef
    burst: Decimal | None = None
    reserve: Decimal | None = None
    hourly: Decimal | None = None
    daily: Decimal | None = None


class ContractAction(msgspec.Struct, frozen=True, kw_only=True, tag="contract"):
    name: Name
    multiplier: Decimal | None = None
    budget: Decimal | None = None


Action = ModelPriceAction | LimitsAction | ContractAction


class ProposeVote(StrictCommand, frozen=True, kw_only=True):
    title: Name
    kind: VoteKind = "plurality"
    options: list[Name] = []
    quorum: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    deadline_s: Seconds = 3600
    eligible: list[AgentRef] = []
    action: Action | None = None


class RatifyVote(StrictCommand, frozen=True, kw_only=True):
    """The operator applies (or, with ``approve`` false, vetoes) an approved action that an agent
    proposed. Sent by ``admin``."""

    proposal_id: Name
    approve: bool = True


class Ballot(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``swarm.vote.<proposal_id>.cast.<sender>``."""

    choice: Choice | None = None
    approvals: list[Name] = []
    votes: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1


class CastVote(Command, frozen=True, kw_only=True):
    proposal_id: Name
    ballot: Ballot


class VoteOpened(msgspec.Struct, frozen=True, kw_only=True):
    proposal_id: str
    proposer: str
    title: str
    kind: str
    options: list[str]
    quorum: int
    closes_at_ns: int
    eligible: list[str]
    action: Action | None


class VoteTally(msgspec.Struct, frozen=True, kw_only=True):
    """Published on ``swarm.vote.<proposal_id>.closed``."""

    proposal_id: str
    outcome: str
    kind: str
    yes_weight: str
    no_weight: str
    abstentions: int
    votes_cast: int
    yes_share: str | None
    winner: str | None
    approvals: dict[str, str]
    action_applied: bool


# ----------------------------------------------------------------------------- views (replies)


class TaskView(Result, frozen=True, kw_only=True):
    task_id: str
    manager: str
    task_type: str
    asset: str
    state: TaskStateName
    max_cost: str
    deadline_ms: int
    closes_at_ns: int
    eligible: list[str]
    bids: list[BidScore]
    refused: list[str]
    winner: str | None
    escrow_id: str | None
    escrow_state: EscrowStateName | None
    output: dict[str, Any]
    reason: str
    payload: Metadata = {}


class EscrowView(Result, frozen=True, kw_only=True):
    escrow_id: str
    payer: str
    payee: str
    amount: str
    referrer: str | None
    state: EscrowStateName
    task_id: str | None
    fee: str


class TasksResult(Result, frozen=True, kw_only=True):
    tasks: list[TaskView]


class AnnounceResult(Result, frozen=True, kw_only=True):
    task_id: str
    held: str
    closes_at_ns: int
    eligible: list[str]


class SignalRecordOut(Result, frozen=True, kw_only=True):
    seq: int
    at_ns: int
    sender: str
    signal_type: str
    asset: str
    confidence: float
    direction: str
    scanner: str


class SignalsResult(Result, frozen=True, kw_only=True):
    signals: list[SignalRecordOut]
    signals_seen: int


class PheromoneOut(Result, frozen=True, kw_only=True):
    key: str
    strength: float


class PheromonesResult(Result, frozen=True, kw_only=True):
    pheromones: list[PheromoneOut]


class ProposalView(Result, frozen=True, kw_only=True):
    proposal_id: str
    proposer: str
    title: str
    kind: str
    options: list[str]
    quorum: int
    closes_at_ns: int
    eligible: list[str]
    state: ProposalStateName
    outcome: str
    votes_cast: int
    tally: VoteTally | None
    action: Action | None = None
    # "" (no action), "pending" (the vote is open), "awaiting_ratification", "applied",
    # "not_applied" (rejected, no quorum, or a target gone since) or "vetoed".
    action_state: ActionStateName = ""
    # A vote that changes the economy counts only if its ballots' weight reaches this.
    quorum_weight: str | None = None
