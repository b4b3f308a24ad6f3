"""The exchange's state machine: the ledger with every rule module installed, its queries, its
snapshot and its digest. This is the object the daemon, the simulator and the tests drive.

Pure like the rest of the core: ``apply`` and ``query`` take time as an argument and do no I/O.
"""

import hashlib
from collections import deque
from decimal import Decimal
from typing import Any, Final

import msgspec

from exchange.core.accounts import Book, history_posting, history_row
from exchange.core.coalition_rules import CoalitionRecord, CoalitionRules
from exchange.core.config import EconomyConfig
from exchange.core.earning import Earning
from exchange.core.escrow import SETTLED_ESCROW_STATES, Escrow, Escrows, ForgottenEscrows
from exchange.core.ledger import (
    Agent,
    Hold,
    Ledger,
    Outcome,
    Refusal,
    RememberedRows,
    refusal_reply,
    result_reply,
)
from exchange.core.limits import Limits, SpendEntry, SpendWindows, Window
from exchange.core.market import WORK_FINISHED_STATES, ForgottenTasks, Market, Task
from exchange.core.pools import Pool, Pools
from exchange.core.spending import Spending
from exchange.core.stateless_queries import answer_shapley
from exchange.core.stigmergy import SignalsRules, Stigmergy
from exchange.core.swarm_metrics import SwarmMetricInputs, evaluate
from exchange.core.votes import Proposal, Votes
from protocols import commands as c
from protocols import cooperation as coop
from protocols import queries as q
from protocols import results as r
from protocols import swarm as s
from protocols.amounts import format_micro
from protocols.ids import ADMIN

# 3: the idempotency records as the ledger keeps them ("done": {"keys", "records"}).
# 4: only the seqs of the remembered commands ("done_seqs"), the records coming from the journal;
#    finished tasks, settled escrows, closed LLM authorizations, vote proposals, pools and ended
#    coalitions past the kept number forgotten (with the counts the metrics need).
# 5: proposals carry their action's state (governance: pending, awaiting ratification, ...).
SNAPSHOT_VERSION: Final = 5
_snapshot_encoder: Final = msgspec.msgpack.Encoder()
_snapshot_decoder: Final = msgspec.msgpack.Decoder()


class _Versioned(msgspec.Struct):
    version: int | None = None


_version_decoder: Final = msgspec.msgpack.Decoder(_Versioned)


class Exchange:
    """One exchange: apply commands, answer queries, snapshot, digest."""

    def __init__(self, config: EconomyConfig) -> None:
        self.config = config
        self.ledger = Ledger(config)
        # apply(sender, command, *, now_ns) -> Outcome is the ledger's own method, not a wrapper
        # around it: a Python call per command is a measurable share of a transfer's cost.
        self.apply: Final = self.ledger.apply
        self.earning = Earning(self.ledger)
        self.spending = Spending(self.ledger)
        self.pools = Pools(self.ledger)
        self.signals = SignalsRules(self.ledger, config.stigmergy)
        self.escrows = Escrows(self.ledger, config.escrow)
        self.market = Market(self.ledger, config, self.escrows)
        self.votes = Votes(self.ledger)
        self.coalitions = CoalitionRules(self.ledger)
        self._queries = self._query_table()

    def _query_table(self) -> dict[type, Any]:
        return {
            q.SignalsQuery: lambda x: self.signals.signals_result(x.signal_type, x.limit),
            q.PheromonesQuery: lambda x: self.signals.pheromones_result(x.limit),
            q.TaskQuery: self._task,
            q.TasksQuery: self._tasks,
            q.EscrowQuery: self._escrow,
            q.ProposalQuery: self._proposal,
            q.MetricsQuery: self._metrics,
            # Reads no state: the daemon answers it in a query process through the same function.
            coop.ShapleyQuery: answer_shapley,
            q.BalanceQuery: self._balance,
            q.HistoryQuery: self._history,
            q.LimitsQuery: self._limits,
            q.AgentsQuery: self._agents,
            q.PoolQuery: self._pool,
            q.PoolsQuery: self._pools,
            q.StatusQuery: self._status,
        }

    # ---------------------------------------------------------------------------- commands

    def genesis(self, *, now_ns: int) -> list[Outcome]:
        """Registers the configured roster: the first commands of a new exchange."""
        return [
            self.apply(ADMIN, command, now_ns=now_ns) for command in genesis_commands(self.config)
        ]

    def take_state_of(self, other: "Exchange") -> None:
        """Becomes ``other`` (a rebuilt copy of this exchange), in place.

        The daemon's parts hold this object; after a command broke an invariant, the shell
        rebuilds the state from the journal and swaps it in here, so that every holder sees it.
        The rule objects refer to each other and to the ledger, never to the Exchange, so taking
        ``other``'s attributes is taking its whole state; only the query table is bound to
        ``other`` and is made again for ``self``."""
        assert other.config == self.config, "the same economy"
        self.__dict__.clear()
        self.__dict__.update(other.__dict__)
        self._queries = self._query_table()

    @property
    def now_ns(self) -> int:
        return self.ledger.book.now_ns

    @property
    def seq(self) -> int:
        return self.ledger.book.seq

    def next_timer_ns(self) -> int | None:
        return self.ledger.next_timer_ns()

    # ---------------------------------------------------------------------------- queries

    def answered_queries(self) -> frozenset[type]:
        return frozenset(self._queries)

    def query(self, query: q.Query) -> bytes:
        """Answers a read-only query with an encoded envelope. Changes nothing observable."""
        value = self._queries[type(query)](query)
        if isinstance(value, Refusal):
            return refusal_reply(value.body)
        return result_reply(value)

    def balance_result(self, agent: Agent) -> r.BalanceResult:
        book = self.ledger.book
        held = sum(h.amount_micro for h in self.ledger.open_holds.values() if h.account == agent.id)
        return r.BalanceResult(
            agent=agent.id,
            balance=format_micro(book.balance(agent.id)),
            earned=format_micro(agent.earned_micro),
            spent=format_micro(agent.spent_micro),
            held=format_micro(held),
        )

    def _balance(self, query: q.BalanceQuery) -> msgspec.Struct | Refusal:
        agent = self.ledger.agent(query.agent)
        return agent if isinstance(agent, Refusal) else self.balance_result(agent)

    def _history(self, query: q.HistoryQuery) -> msgspec.Struct | Refusal:
        agent = self.ledger.agent(query.agent)
        if isinstance(agent, Refusal):
            return agent
        postings = list(self.ledger.book.histories.get(agent.id, ()))[-query.limit :]
        rows = [history_row(agent.id, posting) for posting in postings]
        return r.HistoryResult(
            agent=agent.id,
            entries=[
                r.HistoryEntry(
                    seq=seq,
                    at_ns=at_ns,
                    kind=kind,
                    counterparty=other,
                    amount=format_micro(amount),
                    balance=format_micro(balance),
                    memo=memo,
                )
                for seq, at_ns, kind, other, amount, balance, memo in rows
            ],
        )

    def _limits(self, query: q.LimitsQuery) -> msgspec.Struct | Refusal:
        agent = self.ledger.agent(query.agent)
        return agent if isinstance(agent, Refusal) else self.ledger.limits_result(agent)

    def agent_info(self, agent: Agent) -> r.AgentInfo:
        return r.AgentInfo(
            agent=agent.id,
            level=agent.level,
            base_rate=format_micro(agent.base_rate_micro),
            primary_llm=agent.primary_llm,
            preferences=dict(agent.preferences),
            role=agent.role,
            capabilities=list(agent.capabilities),
            balance=format_micro(self.ledger.book.balance(agent.id)),
            performance=str(agent.performance),
        )

    def _agents(self, query: q.AgentsQuery) -> msgspec.Struct:
        agents = [
            self.agent_info(a)
            for a in self.ledger.agents.values()
            if query.role is None or a.role == query.role
        ]
        return r.AgentsResult(agents=agents)

    def _pool(self, query: q.PoolQuery) -> msgspec.Struct | Refusal:
        pool = self.pools.find(query.pool_id, open_only=False)
        return pool if isinstance(pool, Refusal) else self.pools.result(pool)

    def _pools(self, query: q.PoolsQuery) -> msgspec.Struct:
        return r.PoolsResult(pools=[self.pools.result(p) for p in self.pools.pools.values()])

    def _task(self, query: q.TaskQuery) -> msgspec.Struct | Refusal:
        task = self.market.find_task(query.task_id)
        return task if isinstance(task, Refusal) else self.market.task_view(task)

    def _tasks(self, query: q.TasksQuery) -> msgspec.Struct:
        tasks = [
            t for t in self.market.tasks.values() if query.state is None or t.state == query.state
        ]
        return s.TasksResult(tasks=[self.market.task_view(t) for t in tasks[-query.limit :]])

    def _escrow(self, query: q.EscrowQuery) -> msgspec.Struct | Refusal:
        escrow = self.escrows.find(query.escrow_id)
        return escrow if isinstance(escrow, Refusal) else self.escrows.view(escrow)

    def _proposal(self, query: q.ProposalQuery) -> msgspec.Struct | Refusal:
        proposal = self.votes.find(query.proposal_id)
        return proposal if isinstance(proposal, Refusal) else self.votes.view(proposal)

    def metric_inputs(self) -> SwarmMetricInputs:
        """The swarm metrics' counts, from the ledger's own records (see docs/metrics.md)."""
        ledger, market = self.ledger, self.market
        # The tasks and escrows still kept, plus the counts of those forgotten.
        gone_tasks, gone_escrows = market.forgotten, self.escrows.forgotten
        tasks = [t for t in market.tasks.values() if t.state in WORK_FINISHED_STATES]
        settled = [e for e in self.escrows.by_id.values() if e.state in SETTLED_ESCROW_STATES]
        fees = ledger.book.balance("@fees")
        inference = sum(b for a, b in ledger.book.balances.items() if a.startswith("@llm."))
        task_payments = gone_escrows.released_micro + sum(
            e.amount_micro for e in settled if e.state == "released"
        )
        formed, intact = self.coalitions.counts()
        emitted = self.signals.state.signals_seen
        acted = gone_tasks.on_signal + sum(
            1 for t in market.tasks.values() if "signal" in t.payload
        )
        return SwarmMetricInputs(
            tasks_total=gone_tasks.finished + len(tasks),
            tasks_successful=gone_tasks.completed + sum(1 for t in tasks if t.state == "completed"),
            cost_total_micro=inference + task_payments + fees,
            coordination_cost_micro=fees,
            earnings_micro_by_agent=tuple(a.earned_micro for a in ledger.agents.values()),
            coalitions_formed=formed,
            coalitions_intact=intact,
            signals_emitted=emitted,
            signals_acted_on=min(acted, emitted),
            escrow_settlements=gone_escrows.settled + len(settled),
            escrow_disputes=gone_escrows.disputed + sum(1 for e in settled if e.disputed),
        )

    def _metrics(self, query: q.MetricsQuery) -> msgspec.Struct:
        inputs = self.metric_inputs()
        readings = [
            r.MetricOut(
                name=m.name, value=m.value, target=m.target, warning=m.warning, status=m.status
            )
            for m in evaluate(inputs)
        ]
        return r.MetricsResult(metrics=readings, inputs=msgspec.to_builtins(inputs))

    def _status(self, query: q.StatusQuery) -> msgspec.Struct:
        ledger = self.ledger
        return r.StatusResult(
            commands_applied=ledger.book.seq,
            now_ns=ledger.book.now_ns,
            digest=self.digest(),
            agents=len(ledger.agents),
            accounts=len(ledger.book.balances),
            supply=format_micro(ledger.book.supply_micro()),
            open_holds=len(ledger.open_holds),
        )

    # ---------------------------------------------------------------------------- invariants

    def check_invariants(self) -> None:
        """Every invariant, in full (O(state)): conservation, no negative balances, holds."""
        ledger = self.ledger
        ledger.book.assert_conserved()
        open_ids = [h.id for h in ledger.holds.values() if h.state == "open"]
        assert open_ids == list(ledger.open_holds), "open_holds is not the open holds"
        open_held = sum(h.amount_micro for h in ledger.open_holds.values())
        escrow = ledger.book.balance("@escrow")
        assert escrow == open_held, f"@escrow holds {escrow} but open holds sum to {open_held}"
        for pool in self.pools.pools.values():
            if pool.closed:
                assert ledger.book.balance(f"@pool.{pool.id}") == 0, f"closed {pool.id} not empty"

    # ---------------------------------------------------------------------------- snapshot

    def state(self) -> dict[str, Any]:
        """The whole state as plain data, in a deterministic order."""
        ledger = self.ledger
        book = ledger.book
        for agent in ledger.agents.values():
            # Lazy eviction is invisible to the rules; doing it here makes the state canonical.
            agent.windows.advance(book.now_ns)
        spend_refs: dict[int, tuple[str, int]] = {}
        agents = []
        for agent in ledger.agents.values():
            day = agent.windows.day.entries
            for index, entry in enumerate(day):
                spend_refs[id(entry)] = (agent.id, index)
            agents.append(
                {
                    "id": agent.id,
                    "level": agent.level,
                    "base_rate": agent.base_rate_micro,
                    "primary_llm": agent.primary_llm,
                    "preferences": agent.preferences,
                    "role": agent.role,
                    "capabilities": list(agent.capabilities),
                    "limits": [
                        agent.limits.burst_micro,
                        agent.limits.reserve_micro,
                        agent.limits.hourly_micro,
                        agent.limits.daily_micro,
                    ],
                    "spends": [[e.at_ns, e.amount_micro, e.in_hour] for e in day],
                    "earned": agent.earned_micro,
                    "spent": agent.spent_micro,
                    "performance": str(agent.performance),
                }
            )
        holds = [
            {
                "id": h.id,
                "account": h.account,
                "amount": h.amount_micro,
                "kind": h.kind,
                "expires_at_ns": h.expires_at_ns,
                "state": h.state,
                "model": h.model,
                "tokens": h.tokens,
                "spend": None if h.spend is None else spend_refs.get(id(h.spend)),
            }
            for h in ledger.holds.values()
        ]
        return {
            "version": SNAPSHOT_VERSION,
            "seq": book.seq,
            "now_ns": book.now_ns,
            "balances": book.balances,
            "histories": {
                account: [history_row(account, posting) for posting in postings]
                for account, postings in book.histories.items()
            },
            "agents": agents,
            "holds": holds,
            "closed_authorizations": list(ledger.closed_authorizations),
            "rewarded_shas": sorted(ledger.rewarded_shas),
            "rewarded_issues": sorted(ledger.rewarded_issues),
            "contract_minted": ledger.contract_minted_micro,
            "counters": ledger.counters,
            "timers": sorted(ledger.timers),
            "done_seqs": ledger.remembered(),
            "pools": [msgspec.to_builtins(p) for p in self.pools.pools.values()],
            "closed_pools": list(self.pools.closed),
            "prices": {m: str(p) for m, p in ledger.prices_micro.items()},
            "amendments": ledger.rules.amendments,
            # Structs, encoded as they are (the same bytes as their builtins, much faster).
            "tasks": list(self.market.tasks.values()),
            "escrows": list(self.escrows.by_id.values()),
            "finished_tasks": list(self.market.finished_tasks),
            "settled_escrows": list(self.escrows.settled),
            "forgotten_tasks": msgspec.to_builtins(self.market.forgotten),
            "forgotten_escrows": msgspec.to_builtins(self.escrows.forgotten),
            "coalitions": [msgspec.to_builtins(c) for c in self.coalitions.coalitions.values()],
            "ended_coalitions": list(self.coalitions.ended),
            "forgotten_coalitions": [
                self.coalitions.forgotten_ended,
                self.coalitions.forgotten_intact,
            ],
            "proposals": [msgspec.to_builtins(p) for p in self.votes.proposals.values()],
            "closed_proposals": list(self.votes.closed),
            "stigmergy": msgspec.to_builtins(self.signals.state),
        }

    def snapshot(self) -> bytes:
        return _snapshot_encoder.encode(self.state())

    def snapshot_and_digest(self) -> tuple[bytes, str]:
        """``snapshot()`` and ``digest()`` of this moment, walking the state once."""
        state = self.state()
        snapshot = _snapshot_encoder.encode(state)
        del state["seq"], state["now_ns"]
        return snapshot, hashlib.sha256(_snapshot_encoder.encode(state)).hexdigest()

    def digest(self) -> str:
        """A hash of the logical state. The command counter and the clock are left out, so a
        refused command (which changes nothing) leaves the digest as it was."""
        state = self.state()
        del state["seq"], state["now_ns"]
        return hashlib.sha256(_snapshot_encoder.encode(state)).hexdigest()

    @staticmethod
    def snapshot_version(snapshot: bytes) -> int | None:
        """The format version of ``snapshot()`` bytes (None if they say none or are not one).
        Only ``SNAPSHOT_VERSION`` restores; an older snapshot is replaced by a replay."""
        try:
            return _version_decoder.decode(snapshot).version
        except msgspec.DecodeError:
            return None

    @classmethod
    def restore(
        cls, config: EconomyConfig, snapshot: bytes, remembered_rows: RememberedRows
    ) -> "Exchange":
        """Rebuilds an exchange from ``snapshot()`` bytes and the journal entries of the commands
        it remembers (``remembered_rows`` is given their seqs: see ``Ledger.remembered``).
        Raises ValueError on a bad snapshot."""
        data = _snapshot_decoder.decode(snapshot)
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {data.get('version')} is not {SNAPSHOT_VERSION}")
        exchange = cls(config)
        ledger = exchange.ledger
        book = ledger.book
        book.seq, book.now_ns = data["seq"], data["now_ns"]
        book.balances.update(data["balances"])
        for agent_id, rows in data["histories"].items():
            book.open(agent_id)
            book.histories[agent_id].extend(history_posting(agent_id, tuple(row)) for row in rows)
        lc = config.limits
        entries_of: dict[str, list[SpendEntry]] = {}
        for a in data["agents"]:
            windows = SpendWindows.new(lc.hourly_window_s, lc.daily_window_s)
            entries = [SpendEntry(at, amount, in_hour) for at, amount, in_hour in a["spends"]]
            entries_of[a["id"]] = entries
            _fill(windows.day, entries)
            _fill(windows.hour, [e for e in entries if e.in_hour])
            ledger.agents[a["id"]] = Agent(
                id=a["id"],
                level=a["level"],
                base_rate_micro=a["base_rate"],
                primary_llm=a["primary_llm"],
                preferences=a["preferences"],
                role=a["role"],
                capabilities=tuple(a["capabilities"]),
                limits=Limits(*a["limits"]),
                windows=windows,
                earned_micro=a["earned"],
                spent_micro=a["spent"],
                performance=Decimal(a["performance"]),
            )
        for h in data["holds"]:
            spend = None
            if h["spend"] is not None:
                owner, index = h["spend"]
                spend = entries_of[owner][index]
            elif h["kind"] == "llm":
                # Its spend left both windows before the snapshot: adjusting it changes no sum.
                spend = SpendEntry(0, h["amount"], in_hour=False, in_day=False)
            hold = Hold(
                h["id"],
                h["account"],
                h["amount"],
                h["kind"],
                h["expires_at_ns"],
                h["state"],
                h["model"],
                h["tokens"],
                spend,
            )
            ledger.holds[hold.id] = hold
            if hold.state == "open":
                ledger.open_holds[hold.id] = hold
        ledger.closed_authorizations.extend(data["closed_authorizations"])
        ledger.rewarded_shas.update(data["rewarded_shas"])
        ledger.rewarded_issues.update(data["rewarded_issues"])
        ledger.contract_minted_micro.update(data["contract_minted"])
        ledger.counters.update(data["counters"])
        ledger.timers.extend(tuple(t) for t in data["timers"])
        seqs = data["done_seqs"]
        ledger.restore_remembered(seqs, remembered_rows(seqs))
        for p in data["pools"]:
            exchange.pools.pools[p["id"]] = msgspec.convert(p, Pool)
        exchange.pools.closed.extend(data["closed_pools"])
        ledger.prices_micro = {m: Decimal(p) for m, p in data["prices"].items()}
        for name, (multiplier, budget_micro) in data["amendments"].items():
            ledger.rules.amend_contract(name, Decimal(multiplier), int(budget_micro))
        market = exchange.market
        for t in data["tasks"]:
            market.tasks[t["id"]] = msgspec.convert(t, Task)
        for e in data["escrows"]:
            exchange.escrows.by_id[e["id"]] = msgspec.convert(e, Escrow)
        market.finished_tasks.extend(data["finished_tasks"])
        exchange.escrows.settled.extend(data["settled_escrows"])
        market.forgotten = msgspec.convert(data["forgotten_tasks"], ForgottenTasks)
        exchange.escrows.forgotten = msgspec.convert(data["forgotten_escrows"], ForgottenEscrows)
        for record in data["coalitions"]:
            exchange.coalitions.coalitions[record["id"]] = msgspec.convert(record, CoalitionRecord)
        exchange.coalitions.ended.extend(data["ended_coalitions"])
        (
            exchange.coalitions.forgotten_ended,
            exchange.coalitions.forgotten_intact,
        ) = data["forgotten_coalitions"]
        for p in data["proposals"]:
            exchange.votes.proposals[p["id"]] = msgspec.convert(p, Proposal)
        exchange.votes.closed.extend(data["closed_proposals"])
        exchange.signals.state = msgspec.convert(data["stigmergy"], Stigmergy)
        return exchange


def _fill(window: Window, entries: list[SpendEntry]) -> None:
    window.entries = deque(entries)
    window.sum_micro = sum(e.amount_micro for e in entries)


def genesis_commands(config: EconomyConfig) -> list[c.RegisterAgent]:
    return [
        c.RegisterAgent(
            request_id=f"genesis-{spec.id}",
            agent=spec.id,
            level=spec.level,
            base_rate=spec.base_rate,
            primary_llm=spec.primary_llm,
            preferences=dict(spec.preferences),
            role=spec.role,
            capabilities=list(spec.capabilities),
        )
        for spec in config.agents
    ]


__all__ = ["Book", "Exchange", "Outcome", "genesis_commands"]
