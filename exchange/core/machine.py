"""The exchange's state machine: the ledger with every rule module installed, its queries, its
snapshot and its digest. This is the object the daemon, the simulator and the tests drive.

Pure like the rest of the core: ``apply`` and ``query`` take time as an argument and do no I/O.
"""

import hashlib
from typing import Any, Final

import msgspec

from exchange.core.accounts import (
    ESCROW,
    FEES,
    MINT,
    ROUNDING,
    Book,
    BookState,
    history_row,
    is_system,
)
from exchange.core.coalition_rules import CoalitionRules, CoalitionsState
from exchange.core.config import EconomyConfig
from exchange.core.earning import Earning
from exchange.core.escrow import EscrowsState
from exchange.core.futures import Futures, FuturesState
from exchange.core.imports import Imports
from exchange.core.ledger import (
    Agent,
    Handler,
    Ledger,
    LedgerState,
    Outcome,
    RememberedRows,
    TimerFire,
    command_table,
    on,
)
from exchange.core.lending import Lending, LendingState
from exchange.core.market import Market, MarketState
from exchange.core.metering import Metering, MeteringState
from exchange.core.pools import Pools, PoolsState
from exchange.core.refusals import Refusal, refusal_reply, refuse, result_reply
from exchange.core.spending import Spending
from exchange.core.staking import Staking, StakingState
from exchange.core.stateless_queries import answer_shapley
from exchange.core.states import SETTLED_ESCROW_STATES, WORK_FINISHED_STATES
from exchange.core.stigmergy import SignalsRules, Stigmergy
from exchange.core.swarm_metrics import SwarmMetricInputs, evaluate
from exchange.core.votes import Votes, VotesState
from protocols import commands as c
from protocols import cooperation as coop
from protocols import credit as cr
from protocols import futures as fu
from protocols import queries as q
from protocols import results as r
from protocols import swarm as s
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.ids import ADMIN

# 3: the idempotency records as the ledger keeps them ("done": {"keys", "records"}).
# 4: only the seqs of the remembered commands ("done_seqs"), the records coming from the journal;
#    finished tasks, settled escrows, closed LLM authorizations, vote proposals, pools and ended
#    coalitions past the kept number forgotten (with the counts the metrics need).
# 5: proposals carry their action's state (governance: pending, awaiting ratification, ...).
# 6: a Struct of each rule module's own part (ExchangeSnapshot), decoded typed.
# 7: parts added since (OPTIONAL_PARTS), the metering gateway's rates and minute windows among them.
SNAPSHOT_VERSION: Final = 7
# The system accounts a balance query answers for before any posting has touched them.
FIXED_ACCOUNTS: Final = (FEES, ESCROW, MINT, ROUNDING)
_snapshot_encoder: Final = msgspec.msgpack.Encoder()


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
        self.market = Market(self.ledger, config)
        self.escrows = self.market.escrows
        self.votes = Votes(self.ledger)
        self.coalitions = CoalitionRules(self.ledger)
        self.futures = Futures(self.ledger)
        self.imports = Imports(self.ledger)
        self.metering = Metering(self.ledger, self.spending)
        self.staking = Staking(self.ledger, config.staking)
        self.lending = Lending(self.ledger, config.lending)
        # Staking's terms in other rules (docs/economy.md, Staking): ballots weigh the stake,
        # bids score it, a failed executor's stake is slashed. Lending recovers a default from
        # the borrower's later earnings. With no stake and no loan, each hook changes nothing.
        self.votes.weight_of = self.staking.vote_weight
        self.market.stake_of = self.staking.active_micro
        self.market.stake_bonus = self.staking.bid_bonus
        self.market.on_executor_failed = self.staking.slash
        self.ledger.on_earned = self.lending.recover
        self.ledger.install(self._command_table(), self._timer_table())
        self._queries = self._query_table()

    def _command_table(self) -> dict[type[c.Command], Handler]:
        """Every command the exchange applies, and the rule that applies it: the one place a
        command is wired (docs/adding-a-command.md). ``on`` makes the type checker hold each
        handler to its command type; a test checks the table against the wire's registry."""
        ledger, earning, spending = self.ledger, self.earning, self.spending
        pools, market, escrows = self.pools, self.market, self.escrows
        votes, coalitions, signals = self.votes, self.coalitions, self.signals
        return command_table(
            on(c.Tick, ledger.tick),
            on(c.DropTimer, ledger.drop_timer),
            on(c.RegisterAgent, earning.register),
            on(c.Award, earning.award),
            on(c.Commit, earning.commit),
            on(c.IssueClose, earning.issue_close),
            on(c.Transfer, spending.transfer),
            on(c.LlmRequest, spending.llm),
            on(c.LlmAuthorize, spending.llm_authorize),
            on(c.LlmSettle, spending.llm_settle),
            on(c.SetLimits, self.metering.set_limits),
            on(c.GatewayAuthorize, self.metering.authorize),
            on(c.GatewaySettle, self.metering.settle),
            on(c.GatewayRelease, self.metering.release),
            on(c.GatewayQuota, self.metering.quota),
            on(c.GatewayQuotaSettle, self.metering.quota_settle),
            on(c.PoolCreate, pools.create),
            on(c.PoolJoin, pools.join),
            on(c.PoolContribute, pools.contribute),
            on(c.PoolSpend, pools.spend),
            on(c.PoolClose, pools.close),
            on(coop.PoolDeposit, pools.deposit),
            on(coop.PoolDistribute, pools.distribute),
            on(s.AnnounceTask, market.announce),
            on(s.SubmitBid, market.propose),
            on(s.SubmitRefusal, market.refuse_task),
            on(s.SubmitResult, market.report),
            on(s.VerifyTask, market.verify),
            on(s.CancelTask, market.cancel),
            on(s.LockEscrow, escrows.lock),
            on(s.ReleaseEscrow, escrows.release_cmd),
            on(s.DisputeEscrow, escrows.dispute_cmd),
            on(s.ResolveEscrow, escrows.resolve_cmd),
            on(s.ProposeVote, votes.propose),
            on(s.CastVote, votes.cast),
            on(s.RatifyVote, votes.ratify),
            on(coop.FormCoalition, coalitions.form),
            on(coop.EndCoalition, coalitions.end),
            on(s.ObserveSignal, signals.observe),
            on(fu.WriteFuture, self.futures.write),
            on(fu.BuyFuture, self.futures.buy),
            on(fu.TakeFuture, self.futures.take),
            on(fu.ListFuture, self.futures.list_for_sale),
            on(c.ImportOpening, self.imports.opening),
            on(c.ImportHistory, self.imports.history),
            on(cr.Stake, self.staking.stake),
            on(cr.Unstake, self.staking.unstake),
            on(cr.OfferLoan, self.lending.offer),
            on(cr.AcceptLoan, self.lending.accept),
            on(cr.CancelLoan, self.lending.cancel),
            on(cr.RepayLoan, self.lending.repay),
        )

    def _timer_table(self) -> dict[str, TimerFire]:
        """Every kind of timer, and the rule that fires it (``Ledger.add_timer`` checks kinds)."""
        return {
            "hold_expiry": self.ledger.expire_hold,
            "auction_close": self.market.on_auction_close,
            "task_result_due": self.market.on_result_due,
            "escrow_deadline": self.escrows.on_deadline,
            "vote_deadline": self.votes.on_deadline,
            "future_expiry": self.futures.on_expiry,
            "future_margin": self.futures.on_margin_check,
            "stake_release": self.staking.on_release,
            "stake_yield": self.staking.on_yield,
            "loan_offer_expiry": self.lending.on_offer_expiry,
            "loan_due": self.lending.on_due,
        }

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
            fu.FutureQuery: self.futures.query_one,
            fu.FuturesQuery: self.futures.query_many,
            cr.StakesQuery: self._stakes,
            cr.LoanQuery: self._loan,
            cr.LoansQuery: lambda x: self.lending.loans_result(x.agent, x.limit),
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
            staked=_optional(self.staking.total_micro(agent.id)),
            owed=_optional(self.lending.owed_micro(agent.id)),
            lent=_optional(self.lending.lent_micro(agent.id)),
            defaults=self.lending.defaults.get(agent.id, 0),
            in_futures=_optional(self.futures.committed_micro(agent.id)),
        )

    def _stakes(self, query: cr.StakesQuery) -> msgspec.Struct | Refusal:
        agent = self.ledger.agent(query.agent)
        return agent if isinstance(agent, Refusal) else self.staking.stakes_result(agent)

    def _loan(self, query: cr.LoanQuery) -> msgspec.Struct | Refusal:
        loan = self.lending.find(query.loan_id)
        return loan if isinstance(loan, Refusal) else self.lending.view(loan)

    def _balance(self, query: q.BalanceQuery) -> msgspec.Struct | Refusal:
        if is_system(query.agent):
            return self._system_balance(query.agent)
        agent = self.ledger.agent(query.agent)
        return agent if isinstance(agent, Refusal) else self.balance_result(agent)

    def _system_balance(self, account: str) -> msgspec.Struct | Refusal:
        """A system account's balance (``@fees``, ``@llm.<model>``...): it earns, spends and holds
        nothing of its own, so those read 0. The fixed accounts always answer, the others once a
        posting has made them."""
        book = self.ledger.book
        if account not in book.balances and account not in FIXED_ACCOUNTS:
            return refuse(
                ErrorCode.unknown_agent,
                f"no account {account!r}; system accounts are {', '.join(FIXED_ACCOUNTS)}, "
                "@llm.<model> and @pool.<pool_id> once used",
            )
        zero = format_micro(0)
        balance = format_micro(book.balance(account))
        return r.BalanceResult(agent=account, balance=balance, earned=zero, spent=zero, held=zero)

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
        if isinstance(agent, Refusal):
            return agent
        return self.metering.with_rates(self.ledger.limits_result(agent))

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
        inference -= self.futures.llm_net_micro  # not paid for inference: futures' margins
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
        self.futures.check_accounts()
        self.staking.check()
        self.lending.check()

    # ---------------------------------------------------------------------------- snapshot

    def _parts(self) -> dict[str, Any]:
        """Who owns each part of a snapshot, by ``ExchangeSnapshot`` field, in restore order (the
        book before the ledger that reads its balances)."""
        return {
            "book": self.ledger.book,
            "ledger": self.ledger,
            "pools": self.pools,
            "market": self.market,
            "escrows": self.escrows,
            "coalitions": self.coalitions,
            "votes": self.votes,
            "signals": self.signals,
            "futures": self.futures,
            "metering": self.metering,
            "staking": self.staking,
            "lending": self.lending,
        }

    def snapshot_state(self) -> "ExchangeSnapshot":
        """The whole state, each rule module's part as that module's own Struct."""
        book = self.ledger.book
        parts = {name: owner.snapshot() for name, owner in self._parts().items()}
        return ExchangeSnapshot(version=SNAPSHOT_VERSION, seq=book.seq, now_ns=book.now_ns, **parts)

    def state(self) -> dict[str, Any]:
        """The logical state as the digest hashes it: every part's fields in one flat map, in
        ``DIGEST_LAYOUT`` order (the command counter and the clock left out)."""
        return _digest_map(self.snapshot_state())

    def snapshot(self) -> bytes:
        return _snapshot_encoder.encode(self.snapshot_state())

    def snapshot_and_digest(self) -> tuple[bytes, str]:
        """``snapshot()`` and ``digest()`` of this moment, walking the state once."""
        taken = self.snapshot_state()
        return _snapshot_encoder.encode(taken), _hash(_digest_map(taken))

    def digest(self) -> str:
        """A hash of the logical state. The command counter and the clock are left out, so a
        refused command (which changes nothing) leaves the digest as it was."""
        return _hash(self.state())

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
        if (version := cls.snapshot_version(snapshot)) != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {version} is not {SNAPSHOT_VERSION}")
        try:
            taken = _snapshot_decoder.decode(snapshot)
        except msgspec.DecodeError as exc:
            raise ValueError(f"the snapshot does not decode: {exc}") from exc
        exchange = cls(config)
        for name, owner in exchange._parts().items():
            owner.restore(getattr(taken, name))
        book = exchange.ledger.book
        book.seq, book.now_ns = taken.seq, taken.now_ns
        seqs = taken.ledger.done_seqs
        exchange.ledger.restore_remembered(seqs, remembered_rows(seqs))
        return exchange


class ExchangeSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot: its format version, where it stands, and each rule module's own state.

    A rule module that keeps state owns its part (``snapshot``/``restore``); a new one adds its
    field here, and tests/unit/test_core_structure.py fails until it does."""

    version: int
    seq: int
    now_ns: int
    book: BookState
    ledger: LedgerState
    pools: PoolsState
    market: MarketState
    escrows: EscrowsState
    coalitions: CoalitionsState
    votes: VotesState
    signals: Stigmergy
    # A default, so that a snapshot written before futures existed still restores.
    futures: FuturesState = msgspec.field(
        default_factory=lambda: FuturesState(futures=[], ended=[])
    )
    metering: MeteringState
    # Defaults, so that a snapshot written before staking and lending existed still restores.
    staking: StakingState = msgspec.field(default_factory=StakingState)
    lending: LendingState = msgspec.field(default_factory=LendingState)


# The digest hashes the parts' fields as one flat map in this order, under this version: the
# layout of format 5's snapshot, kept when snapshots became Structs of parts, so that the digest
# of every existing journal's state stayed what it was. A field a part adds goes at the end
# (DIGEST_LAYOUT gets it; a test checks every field is listed), and changes every digest.
DIGEST_LAYOUT_VERSION: Final = 5
DIGEST_LAYOUT: Final = (
    "balances",
    "histories",
    "agents",
    "holds",
    "closed_authorizations",
    "rewarded_shas",
    "rewarded_issues",
    "contract_minted",
    "counters",
    "timers",
    "done_seqs",
    "pools",
    "closed_pools",
    "prices",
    "amendments",
    "tasks",
    "escrows",
    "finished_tasks",
    "settled_escrows",
    "forgotten_tasks",
    "forgotten_escrows",
    "coalitions",
    "ended_coalitions",
    "forgotten_coalitions",
    "proposals",
    "closed_proposals",
    "stigmergy",
)
# Parts added after the layout was fixed, each hashed whole under its own name after the layout's
# fields, and only when it holds anything. So an exchange that never used the feature keeps the
# digest it always had (tests/unit/test_digest_golden.py), while one that did has every part of its
# state in its digest, and a snapshot or replay that lost any of it is caught. (Appending their
# fields to DIGEST_LAYOUT instead would have changed every existing journal's digests.)
OPTIONAL_PARTS: Final = ("futures", "metering", "staking", "lending")
# The parts hashed field by field (the stigmergy is hashed whole, under its own name).
_PARTS: Final = tuple(
    name
    for name in ExchangeSnapshot.__struct_fields__
    if name not in ("version", "seq", "now_ns", "signals", *OPTIONAL_PARTS)
)


def _digest_map(taken: ExchangeSnapshot) -> dict[str, Any]:
    fields: dict[str, Any] = {"stigmergy": taken.signals}
    for part in _PARTS:
        fields.update(msgspec.structs.asdict(getattr(taken, part)))
    assert len(fields) == len(DIGEST_LAYOUT), sorted(set(fields) ^ set(DIGEST_LAYOUT))
    digested = {"version": DIGEST_LAYOUT_VERSION} | {name: fields[name] for name in DIGEST_LAYOUT}
    for part in OPTIONAL_PARTS:
        value = getattr(taken, part)
        if any(msgspec.structs.astuple(value)):
            digested[part] = value
    return digested


def _optional(micro: int) -> str:
    """An amount of a reply field that is left out at 0 (``omit_defaults``): msgspec leaves out a
    str default only when the value is that very object, so 0 is given as the literal."""
    return "0" if micro == 0 else format_micro(micro)


def _hash(state: dict[str, Any]) -> str:
    return hashlib.sha256(_snapshot_encoder.encode(state)).hexdigest()


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


_snapshot_decoder: Final = msgspec.msgpack.Decoder(ExchangeSnapshot)

__all__ = ["Book", "Exchange", "ExchangeSnapshot", "Outcome", "genesis_commands"]
