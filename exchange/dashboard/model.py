"""The live dashboard's state: everything seen on the bus and in query replies, folded into a View.

Owns: ``Board``, a pure model. The feed hands it each message it receives (``observe``: subject,
reply subject, body) and each query result it polls (``on_*``); ``view()`` returns the page's
document. Everything it keeps is bounded (the ``*_max`` constants). Messages that do not decode
as the protocol's Structs are ignored: the dashboard reads the bus, it does not police it.

Must not: do I/O, read a clock (time comes in as ``now_ms``), or decide anything about money. The
flows are read from posting events, already double-entry; the board only sums them per pair.
"""

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final, TypeVar

import msgspec

from exchange.dashboard.view import (
    AgentView,
    AuctionView,
    BidView,
    CoalitionView,
    EventLine,
    FlowView,
    HeatCell,
    LimitsView,
    MetricView,
    PoolView,
    RefusalView,
    SignalView,
    View,
    VoteView,
)
from protocols import subjects
from protocols.amounts import format_micro, to_micro
from protocols.cooperation import CoalitionResult, EndCoalition
from protocols.events import PostingEvent
from protocols.results import (
    AgentsResult,
    BalanceResult,
    Envelope,
    LimitsResult,
    MetricsResult,
    PoolsResult,
    StatusResult,
)
from protocols.swarm import (
    AgentSignal,
    Bid,
    CallForProposals,
    PheromonesResult,
    TaskAward,
    TaskClosed,
    TaskDisputed,
    TasksResult,
    VoteOpened,
    VoteTally,
)

__all__ = ["Board"]

auctions_max: Final = 40
refusals_max: Final = 60
signals_max: Final = 40
events_max: Final = 60
votes_max: Final = 20
coalitions_max: Final = 20
flows_shown_max: Final = 24
# Requests whose reply is awaited (reply subject -> sender, verb, the task id of a bid shown
# before its reply); the oldest are dropped first.
pending_max: Final = 10_000
# Posting events arrive once per agent side; (seq, idx) pairs remembered to count each once.
postings_seen_max: Final = 8_192
series_points_max: Final = 720

T = TypeVar("T")
_envelope: Final = msgspec.json.Decoder(Envelope)
_FINAL_TASK_STATES: Final = frozenset(
    {"completed", "refunded", "unawarded", "failed", "expired", "cancelled"}
)


def _decode(payload: bytes, kind: type[T]) -> T | None:
    try:
        return msgspec.json.decode(payload, type=kind)
    except (msgspec.DecodeError, RecursionError):
        return None


def _micro(text: str | None) -> int:
    """Micro-tokens of a decimal string from the wire; 0 for anything that is not one."""
    if not text:
        return 0
    try:
        micro = to_micro(Decimal(text))
    except InvalidOperation:
        return 0
    return micro if isinstance(micro, int) else 0


@dataclass(slots=True)
class _Auction:
    cfp: CallForProposals | None = None
    task_id: str = ""
    bids: dict[str, BidView] = field(default_factory=dict)
    award: TaskAward | None = None
    closed: TaskClosed | None = None
    disputed: bool = False
    state: str = "open"
    escrow_state: str | None = None


@dataclass(slots=True)
class _Agent:
    role: str = ""
    balance: str = "0"
    earned: str = "0"
    spent: str = "0"
    held: str = "0"
    performance: str = ""
    limits: LimitsResult | None = None
    last_spend_micro: int = 0


@dataclass(slots=True)
class Board:
    """The dashboard's model of one exchange. ``started_ms`` anchors the balance chart's x axis."""

    title: str = "Agent Exchange"
    started_ms: int = 0
    connected: bool = False
    agents: dict[str, _Agent] = field(default_factory=dict)
    series: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    flows: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    postings_seen: OrderedDict[tuple[int, int], None] = field(default_factory=OrderedDict)
    auctions: OrderedDict[str, _Auction] = field(default_factory=OrderedDict)
    pending: OrderedDict[str, tuple[str, str, str]] = field(default_factory=OrderedDict)
    refusals: deque[RefusalView] = field(default_factory=lambda: deque(maxlen=refusals_max))
    refusal_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    signals: deque[SignalView] = field(default_factory=lambda: deque(maxlen=signals_max))
    signals_seen: int = 0
    heat: list[HeatCell] = field(default_factory=list)
    votes: OrderedDict[str, VoteView] = field(default_factory=OrderedDict)
    pools: list[PoolView] = field(default_factory=list)
    coalitions: OrderedDict[str, CoalitionView] = field(default_factory=OrderedDict)
    metrics: list[MetricView] = field(default_factory=list)
    status: StatusResult | None = None
    events: deque[EventLine] = field(default_factory=lambda: deque(maxlen=events_max))

    # ------------------------------------------------------------------ the bus

    def observe(self, subject: str, reply: str | None, payload: bytes, *, now_ms: int) -> None:
        """Folds one message: a request seen on its way in (remembered until its reply), a reply
        to one, or a swarm message (calls, bids, awards, closures, signals, ballots, tallies)."""
        if reply is not None and reply in self.pending:
            return  # a resend of a request already awaited
        if (command := subjects.parse_command(subject)) is not None:
            self._await_reply(reply, command.sender, command.verb)
            if command.verb == "coalition.end":
                self._on_coalition_end(payload)
            return
        if subject.startswith(subjects.EVENT_PREFIX + "."):
            self._on_posting(payload)
            return
        if (task := subjects.parse_task_message(subject)) is not None:
            shown = task.performative == "propose" and self._on_bid(
                task.task_id, task.sender, payload, now_ms
            )
            self._await_reply(
                reply, task.sender, f"task.{task.performative}", task.task_id if shown else ""
            )
            return
        if (sig := subjects.parse_signal(subject)) is not None:
            self._on_signal(sig, payload, now_ms)
            return
        parts = subject.split(".")
        if parts[:3] == ["swarm", "task", "cfp"]:
            self._on_cfp(payload, now_ms)
        elif parts[:2] == ["swarm", "task"] and len(parts) == 4:
            self._on_task_news(parts[2], parts[3], payload, now_ms)
        elif parts[:2] == ["swarm", "vote"] and len(parts) == 4:
            self._on_vote(parts[2], parts[3], payload, now_ms)
        elif (awaited := self.pending.pop(subject, None)) is not None:
            self._on_reply(*awaited, payload, now_ms)

    def _await_reply(self, reply: str | None, sender: str, verb: str, bid_on: str = "") -> None:
        if reply is None:
            return
        self.pending[reply] = (sender, verb, bid_on)
        while len(self.pending) > pending_max:
            self.pending.popitem(last=False)

    def _on_reply(self, sender: str, verb: str, bid_on: str, payload: bytes, now_ms: int) -> None:
        envelope = _decode(payload, Envelope)
        if envelope is None:
            return
        if envelope.ok:
            if verb == "coalition.form":
                self._on_coalition(msgspec.convert(envelope.result, CoalitionResult, strict=False))
            return
        error = envelope.error
        if error is None:
            return  # Not the exchange's (its refusals always carry one): anyone may publish here.
        self.refusals.append(
            RefusalView(
                at_ms=now_ms, agent=sender, verb=verb, code=error.code, message=error.message
            )
        )
        counts = self.refusal_counts.setdefault(sender, {})
        counts[error.code] = counts.get(error.code, 0) + 1
        auction = self.auctions.get(bid_on)
        if auction is not None and auction.award is None:
            auction.bids.pop(sender, None)  # shown on arrival, withdrawn: the exchange refused it
        self._event(now_ms, "refusal", f"{sender} {verb} refused: {error.code}")

    def _on_posting(self, payload: bytes) -> None:
        event = _decode(payload, PostingEvent)
        if event is None or (event.seq, event.idx) in self.postings_seen:
            return
        self.postings_seen[(event.seq, event.idx)] = None
        while len(self.postings_seen) > postings_seen_max:
            self.postings_seen.popitem(last=False)
        micro = _micro(event.amount)
        pair = self.flows.setdefault((event.debit_account, event.credit_account), [0, 0])
        pair[0] += micro
        pair[1] += 1
        if event.verb in ("llm", "llm.settle") and event.debit_account in self.agents:
            self.agents[event.debit_account].last_spend_micro = micro

    def _on_cfp(self, payload: bytes, now_ms: int) -> None:
        cfp = _decode(payload, CallForProposals)
        if cfp is None:
            return
        auction = self._auction(cfp.task_id)
        auction.cfp = cfp
        self._event(
            now_ms,
            "cfp",
            f"call for {cfp.task_type} on {cfp.asset}, max {cfp.max_cost}, from {cfp.manager} "
            f"({cfp.task_id})",
        )

    def _on_bid(self, task_id: str, bidder: str, payload: bytes, now_ms: int) -> bool:
        """Shows a bid as it arrives; True when shown (a refusal then withdraws it)."""
        bid = _decode(payload, Bid)
        if bid is None:
            return False
        self._event(now_ms, "bid", f"{bidder} bids {bid.cost} on {task_id}")
        auction = self._auction(task_id)
        if bidder in auction.bids or auction.award is not None:
            return False  # the exchange refuses it (duplicate_bid, bid_window_closed)
        auction.bids[bidder] = BidView(
            bidder=bidder, cost=str(bid.cost), time_ms=bid.time_ms, confidence=bid.confidence
        )
        return True

    def _on_task_news(self, task_id: str, kind: str, payload: bytes, now_ms: int) -> None:
        auction = self._auction(task_id)
        if kind == "award":
            award = _decode(payload, TaskAward)
            if award is None:
                return
            auction.award = award
            auction.bids = {
                b.bidder: BidView(
                    bidder=b.bidder,
                    cost=b.cost,
                    time_ms=b.time_ms,
                    confidence=b.confidence,
                    score=b.score,
                    accepted=b.accepted,
                )
                for b in award.bids
            }
            auction.state = "awarded" if award.winner else "unawarded"
            auction.escrow_state = "locked" if award.escrow_id else None
            text = (
                f"{task_id} awarded to {award.winner} at {award.cost}; escrow locked"
                if award.winner
                else f"{task_id}: no acceptable bid"
            )
            self._event(now_ms, "award", text)
        elif kind == "disputed":
            if _decode(payload, TaskDisputed) is None:
                return
            auction.disputed, auction.state, auction.escrow_state = True, "disputed", "disputed"
            self._event(now_ms, "dispute", f"{task_id} disputed: escrow held for the arbiter")
        elif kind == "closed":
            closed = _decode(payload, TaskClosed)
            if closed is None:
                return
            auction.closed, auction.state = closed, closed.state
            self._event(
                now_ms,
                "closed",
                f"{task_id} {closed.state}: paid {closed.paid}, fee {closed.fee}, "
                f"refunded {closed.refunded}",
            )

    def _on_signal(self, sig: subjects.SignalSubject, payload: bytes, now_ms: int) -> None:
        body = _decode(payload, AgentSignal)
        if body is None:
            return
        self.signals_seen += 1
        self.signals.append(
            SignalView(
                at_ms=now_ms,
                sender=sig.sender,
                signal_type=sig.signal_type,
                asset=sig.asset,
                direction=body.direction,
                confidence=body.confidence,
            )
        )
        if sig.signal_type == "risk_alert":
            self._event(now_ms, "risk", f"risk alert on {sig.asset} from {sig.sender}")

    def _on_vote(self, proposal_id: str, kind: str, payload: bytes, now_ms: int) -> None:
        if kind == "open":
            opened = _decode(payload, VoteOpened)
            if opened is None:
                return
            self.votes[proposal_id] = VoteView(
                proposal_id=proposal_id,
                title=opened.title,
                kind=opened.kind,
                state="open",
                votes_cast=0,
            )
            while len(self.votes) > votes_max:
                self.votes.popitem(last=False)
            self._event(now_ms, "vote", f"vote opened: {opened.title} ({opened.kind})")
        elif kind == "closed" and proposal_id in self.votes:
            tally = _decode(payload, VoteTally)
            if tally is None:
                return
            self.votes[proposal_id] = msgspec.structs.replace(
                self.votes[proposal_id],
                state="closed",
                votes_cast=tally.votes_cast,
                outcome=tally.outcome,
                yes_share=tally.yes_share,
                winner=tally.winner,
            )
            self._event(now_ms, "vote", f"vote {proposal_id} closed: {tally.outcome}")

    def _on_coalition(self, result: CoalitionResult) -> None:
        self.coalitions[result.coalition_id] = CoalitionView(
            coalition_id=result.coalition_id,
            members=result.members,
            value=result.value,
            in_core=result.in_core,
            state=result.state,
        )
        while len(self.coalitions) > coalitions_max:
            self.coalitions.popitem(last=False)

    def _on_coalition_end(self, payload: bytes) -> None:
        ended = _decode(payload, EndCoalition)
        if ended is None or ended.coalition_id not in self.coalitions:
            return
        state = "intact" if ended.intact else "broken"
        self.coalitions[ended.coalition_id] = msgspec.structs.replace(
            self.coalitions[ended.coalition_id], state=state
        )

    def _auction(self, task_id: str) -> _Auction:
        auction = self.auctions.get(task_id)
        if auction is None:
            auction = self.auctions[task_id] = _Auction(task_id=task_id)
            while len(self.auctions) > auctions_max:
                self.auctions.popitem(last=False)
        return auction

    def _event(self, now_ms: int, kind: str, text: str) -> None:
        self.events.append(EventLine(at_ms=now_ms, kind=kind, text=text))

    # ------------------------------------------------------------------ polled queries

    def on_agents(self, result: AgentsResult, *, now_ms: int) -> None:
        for info in result.agents:
            agent = self.agents.setdefault(info.agent, _Agent())
            agent.role, agent.balance = info.role or "", info.balance
            agent.performance = info.performance
            points = self.series.setdefault(info.agent, deque(maxlen=series_points_max))
            value = float(Decimal(info.balance))
            at_s = (now_ms - self.started_ms) / 1000
            # A point when the balance changes, and the latest time kept for a flat stretch.
            if len(points) >= 2 and points[-1][1] == value and points[-2][1] == value:
                points[-1] = (at_s, value)
            else:
                points.append((at_s, value))

    def on_balance(self, result: BalanceResult) -> None:
        agent = self.agents.setdefault(result.agent, _Agent())
        agent.balance, agent.earned, agent.spent = result.balance, result.earned, result.spent
        agent.held = result.held

    def on_limits(self, result: LimitsResult) -> None:
        self.agents.setdefault(result.agent, _Agent()).limits = result

    def on_tasks(self, result: TasksResult) -> None:
        for task in result.tasks:
            auction = self.auctions.get(task.task_id)
            if auction is None:
                continue  # seen only through the bus: the board shows what happened since start
            auction.escrow_state = task.escrow_state
            if task.state in _FINAL_TASK_STATES or auction.state == "open":
                auction.state = task.state

    def on_pheromones(self, result: PheromonesResult) -> None:
        cells: dict[tuple[str, str], float] = {}
        for pheromone in result.pheromones:
            asset, _, rest = pheromone.key.partition(":")
            direction = rest.partition(":")[0]
            cells[(asset, direction)] = cells.get((asset, direction), 0.0) + pheromone.strength
        self.heat = [
            HeatCell(asset=a, direction=d, strength=round(s, 4))
            for (a, d), s in sorted(cells.items())
        ]

    def on_pools(self, result: PoolsResult) -> None:
        self.pools = [
            PoolView(
                pool_id=p.pool_id,
                name=p.name,
                balance=p.balance,
                members=p.members,
                funded=p.funded,
                closed=p.closed,
            )
            for p in result.pools
        ]

    def on_metrics(self, result: MetricsResult) -> None:
        self.metrics = [
            MetricView(
                name=m.name, value=m.value, target=m.target, warning=m.warning, status=m.status
            )
            for m in result.metrics
        ]

    def on_status(self, result: StatusResult) -> None:
        self.status = result

    # ------------------------------------------------------------------ the page

    def view(self, *, now_ms: int) -> View:
        agents = [self._agent_view(name, agent) for name, agent in sorted(self.agents.items())]
        flows = sorted(self.flows.items(), key=lambda kv: (-kv[1][0], kv[0]))[:flows_shown_max]
        summary = {"signals seen": str(self.signals_seen), "agents": str(len(self.agents))}
        if self.status is not None:
            summary["commands applied"] = str(self.status.commands_applied)
            summary["supply"] = self.status.supply
            summary["open holds"] = str(self.status.open_holds)
        return View(
            mode="live",
            title=self.title,
            connected=self.connected,
            updated_ms=now_ms,
            summary=summary,
            agents=agents,
            series={name: list(points) for name, points in sorted(self.series.items())},
            flows=[
                FlowView(source=s, target=t, amount=format_micro(m), count=n)
                for (s, t), (m, n) in flows
            ],
            auctions=[_auction_view(a) for a in reversed(self.auctions.values())],
            refusals=list(reversed(self.refusals)),
            signals=list(reversed(self.signals)),
            heat=self.heat,
            votes=list(reversed(self.votes.values())),
            pools=self.pools,
            coalitions=list(reversed(self.coalitions.values())),
            metrics=self.metrics,
            events=list(reversed(self.events)),
        )

    def _agent_view(self, name: str, agent: _Agent) -> AgentView:
        limits = None
        if agent.limits is not None:
            lim = agent.limits
            limits = LimitsView(
                burst=lim.burst,
                burst_used=format_micro(agent.last_spend_micro),
                hourly=lim.hourly,
                hourly_used=lim.hourly_used,
                daily=lim.daily,
                daily_used=lim.daily_used,
            )
        return AgentView(
            agent=name,
            role=agent.role,
            balance=agent.balance,
            earned=agent.earned,
            spent=agent.spent,
            held=agent.held,
            performance=agent.performance,
            limits=limits,
            refusals=dict(sorted(self.refusal_counts.get(name, {}).items())),
        )


def _auction_view(auction: _Auction) -> AuctionView:
    cfp, award, closed = auction.cfp, auction.award, auction.closed
    return AuctionView(
        task_id=auction.task_id,
        manager=cfp.manager if cfp else (award.manager if award else ""),
        task_type=cfp.task_type if cfp else "",
        asset=cfp.asset if cfp else "",
        max_cost=cfp.max_cost if cfp else "",
        state=auction.state,
        bids=list(auction.bids.values()),
        winner=award.winner if award else None,
        cost=award.cost if award else None,
        escrow_id=award.escrow_id if award else None,
        escrow_state=auction.escrow_state,
        paid=closed.paid if closed else "0",
        fee=closed.fee if closed else "0",
        refunded=closed.refunded if closed else "0",
        reason=closed.reason if closed else "",
    )
