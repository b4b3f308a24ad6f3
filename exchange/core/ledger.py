"""The ledger: a deterministic state machine that applies commands to the book.

``Ledger.apply(sender, command, now_ns=...) -> Outcome`` is the only way state changes. It fires
the timers due by ``now_ns``, then answers a repeated (sender, request_id) from its record, or
runs the command's handler. A handler checks first and changes nothing until every check passed,
so a refusal is a value that changes nothing. No I/O, no clock, no randomness here: time arrives as
``now_ns`` and ids are counters.
"""

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, TypeVar

import msgspec

from exchange.core import accounts as acc
from exchange.core.accounts import Book, Posting
from exchange.core.config import (
    EconomyConfig,
    LimitsConfig,
    ModelPrice,
    input_price,
    output_price,
)
from exchange.core.limits import (
    LimitBreach,
    Limits,
    SpendEntry,
    SpendWindows,
    check_reserve,
)
from exchange.core.money import micro_of, round_half_even
from exchange.core.refusals import Refusal, refusal_reply, refuse
from exchange.core.retention import keep_newest
from exchange.core.rewards import RewardRules
from exchange.core.states import HOLD, HoldEvent, HoldState
from protocols import commands as c
from protocols import results as r
from protocols.amounts import format_micro, to_micro
from protocols.errors import ErrorCode
from protocols.ids import EXCHANGE, SYSTEM_SENDERS, is_agent_id
from protocols.registry import VERB_OF

# Successful (sender, request_id) records kept for idempotent replies; the oldest is forgotten
# past this bound, so a retry more than this many commands later counts as a new command.
idempotency_keys_max: Final = 1_000_000

_encoder: Final = msgspec.json.Encoder()
# Inference holds: an agent's own (llm.authorize) and the metering gateway's (gateway.authorize).
# Each counts in its agent's spend windows; closed ones are kept as closed authorizations.
METERED_HOLD_KINDS: Final = frozenset({"llm", "gateway"})


class _RequestIdOnly(msgspec.Struct):
    request_id: str


_request_id_decoder: Final = msgspec.json.Decoder(_RequestIdOnly)
# One journal entry of a remembered command: (sender, verb, canonical JSON body, reply).
RememberedRow = tuple[str, str, bytes, bytes]
# Given seqs, their journal entries in the same order (the journal, or a test's log).
RememberedRows = Callable[[list[int]], Iterable[RememberedRow]]
_verb_prefixes: Final = {kind: verb.encode() + b" " for kind, verb in VERB_OF.items()}


# Publication and Outcome are Structs, not frozen dataclasses: one Outcome is made for every
# command, and a frozen dataclass's __init__ costs about ten times as much.
class Publication(msgspec.Struct, frozen=True):
    """A message the shell publishes after the command is durable."""

    subject: str
    payload: msgspec.Struct


class Outcome(msgspec.Struct, frozen=True, gc=False):
    ok: bool
    reply: bytes
    postings: tuple[Posting, ...] = ()
    publications: tuple[Publication, ...] = ()
    duplicate: bool = False
    code: str | None = None


@dataclass(slots=True)
class Agent:
    id: str
    level: str
    base_rate_micro: int
    primary_llm: str
    preferences: dict[str, str]
    role: str | None
    capabilities: tuple[str, ...]
    limits: Limits
    windows: SpendWindows
    earned_micro: int = 0
    spent_micro: int = 0
    # Performance score (1.0 to start), moved by task outcomes; the weight of the agent's votes.
    performance: Decimal = Decimal(1)


@dataclass(slots=True)
class Hold:
    """Funds moved from an account to ``@escrow`` until posted (to a payee) or voided (back)."""

    id: str
    account: str
    amount_micro: int
    kind: str
    expires_at_ns: int | None
    state: HoldState = HoldState.open
    model: str = ""
    tokens: int = 0
    spend: SpendEntry | None = None
    # The requests a gateway quota grants (metering.py); 1 for every other hold.
    requests: int = 1


class AgentSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An agent in a snapshot. ``spends`` are its day window's entries, (at_ns, amount, in_hour)."""

    id: str
    level: str
    base_rate: int
    primary_llm: str
    preferences: dict[str, str]
    role: str | None
    capabilities: list[str]
    limits: tuple[int, int, int, int]
    spends: list[tuple[int, int, bool]]
    earned: int
    spent: int
    performance: str


# omit_defaults: ``requests`` (a gateway quota's) is left out at 1, so a snapshot without quotas,
# and its digest, is what it was before quotas (no other field has a default).
class HoldSnapshot(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A hold in a snapshot. ``spend`` names its window entry as (agent, index in the day)."""

    id: str
    account: str
    amount: int
    kind: str
    expires_at_ns: int | None
    state: HoldState
    model: str
    tokens: int
    spend: tuple[str, int] | None
    requests: int = 1


class LedgerState(msgspec.Struct, frozen=True, kw_only=True):
    """What the ledger itself keeps (the book apart), in a snapshot."""

    agents: list[AgentSnapshot]
    holds: list[HoldSnapshot]
    closed_authorizations: list[str]
    rewarded_shas: list[str]
    rewarded_issues: list[str]
    contract_minted: dict[str, int]
    counters: dict[str, int]
    timers: list[tuple[int, int, str, str]]
    # The seqs of the remembered commands: their records are their journal entries.
    done_seqs: list[int]
    prices: dict[str, str]
    amendments: dict[str, tuple[str, int]]


# A handler returns its result Struct, a Refusal, or (on the hottest paths, where encoding a
# Struct is a large share of the cost) the whole reply already encoded, byte for byte what
# ``result_reply`` would make of the result Struct.
Handler = Callable[[str, Any], "msgspec.Struct | bytes | Refusal"]
CommandT = TypeVar("CommandT", bound=c.Command)
# A timer kind's rule, given the timer's ref.
TimerFire = Callable[[str], None]


def on(
    kind: type[CommandT], handler: Callable[[str, CommandT], "msgspec.Struct | bytes | Refusal"]
) -> tuple[type[c.Command], Handler]:
    """One row of the command table. Generic, so the type checker holds each handler to the
    command type it is listed with (the table itself can only say Any)."""
    return kind, handler


def command_table(*rows: tuple[type[c.Command], Handler]) -> dict[type[c.Command], Handler]:
    table = dict(rows)
    assert len(table) == len(rows), "a command type listed twice"
    return table


class Ledger:
    """The whole state of one exchange and the rules that change it."""

    def __init__(self, config: EconomyConfig) -> None:
        self.config = config
        self.rules = RewardRules(config)
        self.prices_micro: dict[str, Decimal] = {
            m: Decimal(micro_of(input_price(p))) for m, p in config.models.items()
        }
        # Completion-token prices of the models the config prices apart (``ModelPrice``); any
        # other model's completion tokens cost its one price. From the config, not the state: a
        # vote on a model's price changes its one (input) price only (docs/gateway.md).
        self.output_prices_micro: dict[str, int] = {
            m: micro_of(output_price(p))
            for m, p in config.models.items()
            if isinstance(p, ModelPrice)
        }
        self.book = Book()
        self.agents: dict[str, Agent] = {}
        self.holds: dict[str, Hold] = {}
        # The open ones among them, so that counting or summing open holds costs O(open), not
        # O(every hold ever made). Kept by hold(), pay_out() and void_hold().
        self.open_holds: dict[str, Hold] = {}
        # Closed LLM authorizations, oldest first (task and escrow holds go with their task or
        # escrow: market.py, escrow.py). Beyond ``config.closed_authorizations_kept`` the oldest is
        # forgotten.
        self.closed_authorizations: deque[str] = deque()
        self.rewarded_shas: set[str] = set()
        self.rewarded_issues: set[str] = set()
        self.contract_minted_micro: dict[str, int] = {}
        self.counters: dict[str, int] = {}
        # (deadline_ns, tie-break seq, kind, ref): fired in order when time passes them.
        self.timers: list[tuple[int, int, str, str]] = []
        # Keyed by "<sender> <request_id>" (a request id has no space, so the last space splits
        # it): a str, unlike a tuple, is never tracked by the garbage collector, and smaller.
        # Each value is one bytes object, "<fingerprint>\n<reply>", rather than a pair: up to
        # idempotency_keys_max of them live, and one object instead of three (a tuple and two
        # bytes) is less memory, fewer cache misses when the oldest is forgotten, and nothing
        # for the collector. Neither part can hold a raw newline (compact JSON escapes it).
        self._done: dict[str, bytes] = {}
        self._done_order: deque[str] = deque()
        # The seq of the command that made each record, in the same order. A snapshot keeps
        # these numbers, not the records: every record is its command's journal entry (sender,
        # verb, canonical body, reply), so a restore reads them back from the journal, and a
        # snapshot stays small however many commands are remembered (see ``restore_remembered``).
        self._done_seqs: deque[int] = deque()
        self._publications: list[Publication] = []
        # The command and timer tables, installed once by the Exchange (machine.py), which
        # builds every rule module and lists each command's handler in one place.
        self._handlers: dict[type[c.Command], Handler] = {}
        self._timer_kinds: dict[str, TimerFire] = {}
        # The timer being fired, while it fires: if its rule breaks an invariant, the shell
        # drops exactly this one (``DropTimer``) rather than fail every later command with it.
        self.firing: tuple[int, int, str, str] | None = None
        # Told of every earning of an agent (a reward or award minted, an escrow paid to it as
        # payee) after it is credited: lending recovers a default from it (machine.py).
        self.on_earned: Callable[[Agent, int], None] | None = None

    # ----------------------------------------------------------------------------- the one door

    def apply(self, sender: str, command: c.Command, *, now_ns: int) -> Outcome:
        """Applies one command from ``sender`` at exchange time ``now_ns``."""
        book = self.book
        assert now_ns >= book.now_ns, "the exchange clock went backwards"
        book.now_ns = now_ns
        book.seq += 1
        timer_postings: tuple[Posting, ...] = ()
        timers = self.timers
        if timers and timers[0][0] <= now_ns and command.fires_timers:
            self._fire_timers(now_ns)
            timer_postings = book.take_postings()
        remembered = command.remembered
        if remembered:
            key = f"{sender} {command.request_id}"
            if (record := self._done.get(key)) is not None:
                return self._finish(self._repeat(command, record), timer_postings)
        handler = self._handlers.get(type(command))
        assert handler is not None, f"no handler for {type(command).__name__}"
        value = handler(sender, command)
        if type(value) is bytes:
            reply = value  # a hot handler's reply, built from a template (see Handler)
        elif isinstance(value, Refusal):
            assert not book.pending, "a refusal must change nothing"
            refused = Outcome(ok=False, reply=refusal_reply(value.body), code=value.body.code)
            return self._finish(refused, timer_postings)
        else:
            reply = b'{"ok":true,"result":' + _encoder.encode(value) + b"}"  # result_reply
        if remembered:
            # self.remember and self._fingerprint, inlined: the fingerprint and the reply joined
            # into one bytes object.
            done_order = self._done_order
            self._done[key] = b"".join(
                (_verb_prefixes[type(command)], _encoder.encode(command), b"\n", reply)
            )
            done_order.append(key)
            self._done_seqs.append(book.seq)
            if len(done_order) > idempotency_keys_max:
                del self._done[done_order.popleft()]
                self._done_seqs.popleft()
        pending = book.pending
        postings = timer_postings + tuple(pending) if pending else timer_postings
        pending.clear()
        if self._publications:
            return self._finish(Outcome(True, reply), postings)
        return Outcome(True, reply, postings)

    def _finish(self, outcome: Outcome, postings: tuple[Posting, ...]) -> Outcome:
        """Attaches the postings and publications made while applying (timers included)."""
        publications = tuple(self._publications)
        self._publications.clear()
        if not postings and not publications:
            return outcome
        return Outcome(
            ok=outcome.ok,
            reply=outcome.reply,
            postings=postings,
            publications=publications,
            duplicate=outcome.duplicate,
            code=outcome.code,
        )

    def _repeat(self, command: c.Command, record: bytes) -> Outcome:
        fingerprint, _, reply = record.partition(b"\n")
        if fingerprint == self._fingerprint(command):
            return Outcome(ok=True, reply=reply, duplicate=True)
        body = r.ErrorBody(
            code=ErrorCode.request_id_reused.value,
            message=(
                f"request_id {command.request_id!r} was already used by this sender for a "
                "different command; use a new request_id for a new command, or resend the "
                "original body unchanged to get its reply again"
            ),
        )
        return Outcome(ok=False, reply=refusal_reply(body), code=body.code)

    @staticmethod
    def _fingerprint(command: c.Command) -> bytes:
        """The command's verb and canonical JSON, compared exactly on a retry. The verb is part
        of it: pool.join and pool.close bodies can be the same JSON. (Kept whole rather than
        hashed: hashing cost more than the ~50 bytes a record it would save.)"""
        return _verb_prefixes[type(command)] + _encoder.encode(command)

    def remembered(self) -> list[int]:
        """The seqs of the commands whose replies are remembered, oldest first, for snapshots.

        Only the numbers: a remembered record is exactly its command's journal entry, so a
        snapshot need not copy up to ``idempotency_keys_max`` records (hundreds of megabytes at
        the bound, serialised and hashed with the loop blocked); ``restore_remembered`` reads
        them back."""
        return list(self._done_seqs)

    def remembered_records(self) -> list[tuple[str, bytes]]:
        """The remembered (key, record) pairs, oldest first, in the order of ``remembered``:
        a key is "<sender> <request_id>", a record "<verb> <canonical body>\\n<reply>"."""
        return list(self._done.items())

    def restore_remembered(self, seqs: list[int], rows: Iterable[RememberedRow]) -> None:
        """Takes back what ``remembered`` gave, into a ledger that remembers nothing yet: ``rows``
        are the journal entries at ``seqs``, in that order, as (sender, verb, body, reply)."""
        assert not self._done, "restore into a ledger that remembers nothing"
        done, order = self._done, self._done_order
        count = 0
        for sender, verb, body, reply in rows:
            # Checked, not asserted: the rows come from a file.
            try:
                request_id = _request_id_decoder.decode(body).request_id
            except msgspec.DecodeError as exc:
                raise ValueError(f"a remembered {verb} command has no request_id: {exc}") from exc
            key = f"{sender} {request_id}"
            if key in done or not reply.startswith(b'{"ok":true'):
                raise ValueError(f"{key!r} is remembered twice, or was not a success")
            # The same bytes apply() keeps: the journal's body is the command's canonical JSON
            # (recovery.encode_command), and its verb is the command's registered verb.
            done[key] = b"".join((verb.encode(), b" ", body, b"\n", reply))
            order.append(key)
            count += 1
        if not count == len(seqs) <= idempotency_keys_max or any(
            a >= b for a, b in itertools.pairwise(seqs)
        ):
            raise ValueError(f"{count} rows for {len(seqs)} remembered seqs, or seqs out of order")
        self._done_seqs.extend(seqs)

    # ----------------------------------------------------------------------------- snapshot

    def snapshot(self) -> LedgerState:
        """The ledger's state, canonical: windows advanced to now, sets and timers sorted."""
        now_ns = self.book.now_ns
        spend_refs: dict[int, tuple[str, int]] = {}
        agents = []
        for agent in self.agents.values():
            # Lazy eviction is invisible to the rules; doing it here makes the state canonical.
            agent.windows.advance(now_ns)
            day = agent.windows.day.entries
            for index, entry in enumerate(day):
                spend_refs[id(entry)] = (agent.id, index)
            lim = agent.limits
            agents.append(
                AgentSnapshot(
                    id=agent.id,
                    level=agent.level,
                    base_rate=agent.base_rate_micro,
                    primary_llm=agent.primary_llm,
                    preferences=agent.preferences,
                    role=agent.role,
                    capabilities=list(agent.capabilities),
                    limits=(lim.burst_micro, lim.reserve_micro, lim.hourly_micro, lim.daily_micro),
                    spends=[(e.at_ns, e.amount_micro, e.in_hour) for e in day],
                    earned=agent.earned_micro,
                    spent=agent.spent_micro,
                    performance=str(agent.performance),
                )
            )
        holds = [
            HoldSnapshot(
                id=h.id,
                account=h.account,
                amount=h.amount_micro,
                kind=h.kind,
                expires_at_ns=h.expires_at_ns,
                state=h.state,
                model=h.model,
                tokens=h.tokens,
                spend=None if h.spend is None else spend_refs.get(id(h.spend)),
                requests=h.requests,
            )
            for h in self.holds.values()
        ]
        return LedgerState(
            agents=agents,
            holds=holds,
            closed_authorizations=list(self.closed_authorizations),
            rewarded_shas=sorted(self.rewarded_shas),
            rewarded_issues=sorted(self.rewarded_issues),
            contract_minted=self.contract_minted_micro,
            counters=self.counters,
            timers=sorted(self.timers),
            done_seqs=self.remembered(),
            prices={m: str(p) for m, p in self.prices_micro.items()},
            amendments=dict(self.rules.amendments),
        )

    def restore(self, state: LedgerState) -> None:
        """Takes back what ``snapshot`` gave, into a new ledger whose book is restored. The
        remembered replies come back through ``restore_remembered`` (they are journal rows)."""
        assert not self.agents, "restore into a new ledger"
        lc = self.config.limits
        entries_of: dict[str, list[SpendEntry]] = {}
        for a in state.agents:
            windows = SpendWindows.new(lc.hourly_window_s, lc.daily_window_s)
            entries = [SpendEntry(at, amount, in_hour) for at, amount, in_hour in a.spends]
            entries_of[a.id] = entries
            windows.day.fill(entries)
            windows.hour.fill([e for e in entries if e.in_hour])
            self.agents[a.id] = Agent(
                id=a.id,
                level=a.level,
                base_rate_micro=a.base_rate,
                primary_llm=a.primary_llm,
                preferences=a.preferences,
                role=a.role,
                capabilities=tuple(a.capabilities),
                limits=Limits(*a.limits),
                windows=windows,
                earned_micro=a.earned,
                spent_micro=a.spent,
                performance=Decimal(a.performance),
            )
        for h in state.holds:
            spend = None
            if h.spend is not None:
                owner, index = h.spend
                spend = entries_of[owner][index]
            elif h.kind in METERED_HOLD_KINDS:
                # Its spend left both windows before the snapshot: adjusting it changes no sum.
                spend = SpendEntry(0, h.amount, in_hour=False, in_day=False)
            hold = Hold(
                h.id,
                h.account,
                h.amount,
                h.kind,
                h.expires_at_ns,
                h.state,
                h.model,
                h.tokens,
                spend,
                h.requests,
            )
            self.holds[hold.id] = hold
            if hold.state == "open":
                self.open_holds[hold.id] = hold
        self.closed_authorizations.extend(state.closed_authorizations)
        self.rewarded_shas.update(state.rewarded_shas)
        self.rewarded_issues.update(state.rewarded_issues)
        self.contract_minted_micro.update(state.contract_minted)
        self.counters.update(state.counters)
        self.timers.extend(state.timers)
        heapq.heapify(self.timers)
        self.prices_micro = {m: Decimal(p) for m, p in state.prices.items()}
        for name, (multiplier, budget_micro) in state.amendments.items():
            self.rules.amend_contract(name, Decimal(multiplier), budget_micro)

    # ----------------------------------------------------------------------------- timers

    def add_timer(self, deadline_ns: int, kind: str, ref: str) -> None:
        assert kind in self._timer_kinds, f"unknown timer kind {kind}"
        heapq.heappush(self.timers, (deadline_ns, self._next("timer"), kind, ref))

    def next_timer_ns(self) -> int | None:
        """When the shell should next feed a ``Tick`` so that due timers fire."""
        return self.timers[0][0] if self.timers else None

    def _fire_timers(self, now_ns: int) -> None:
        while self.timers and self.timers[0][0] <= now_ns:
            self.firing = timer = heapq.heappop(self.timers)
            self._timer_kinds[timer[2]](timer[3])
        self.firing = None
        # Timer effects belong to no command: they are journaled with the command that fired them
        # and reach the outcome through the book's pending postings.

    def install(
        self, commands: dict[type[c.Command], Handler], timers: dict[str, TimerFire]
    ) -> None:
        """Takes the command and timer tables (once, before the first command)."""
        assert not self._handlers and not self._timer_kinds, "the tables are installed once"
        self._handlers, self._timer_kinds = commands, timers

    def skip(self, *, now_ns: int) -> None:
        """Takes the seq and stamp of a command the exchange failed to apply (journaled as an
        ``internal_error`` refusal) and changes nothing else: its effects were thrown away with
        the state they were half made in. Timers due by ``now_ns`` fire with the next command."""
        assert now_ns >= self.book.now_ns, "the exchange clock went backwards"
        self.book.now_ns = now_ns
        self.book.seq += 1

    def handled_commands(self) -> frozenset[type]:
        """The command types with a handler (checked against the wire's registry by a test)."""
        return frozenset(self._handlers)

    def publish(self, subject: str, payload: msgspec.Struct) -> None:
        self._publications.append(Publication(subject, payload))

    def _next(self, counter: str) -> int:
        value = self.counters.get(counter, 0) + 1
        self.counters[counter] = value
        return value

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{self._next(prefix)}"

    # ----------------------------------------------------------------------------- lookups

    def agent(self, agent_id: str) -> Agent | Refusal:
        agent = self.agents.get(agent_id)
        if agent is not None:
            return agent
        hint = (
            "" if is_agent_id(agent_id) else " (agent ids are 1-64 characters of a-z, 0-9, - and _)"
        )
        return refuse(
            ErrorCode.unknown_agent,
            f"no agent {agent_id!r} is registered{hint}; list agents with `exchange agents` "
            "or register it with agent.register",
        )

    def acting_agent(self, sender: str) -> Agent | Refusal:
        """The agent a command acts for: the subject's sender, which must be a registered agent."""
        if sender in SYSTEM_SENDERS:
            return refuse(
                ErrorCode.not_authorized,
                f"{sender!r} holds no balance; publish on exchange.cmd.<agent>.<verb> to act for "
                "an agent",
            )
        return self.agent(sender)

    def require_admin(self, sender: str, verb: str) -> Refusal | None:
        if sender in SYSTEM_SENDERS:
            return None
        return refuse(
            ErrorCode.not_authorized,
            f"{verb} mints or configures and is for the operator only: publish it on "
            f"exchange.cmd.admin.{verb} with admin credentials",
        )

    def model_for(self, agent: Agent, task_type: str, model: str | None) -> str | Refusal:
        chosen = model or agent.preferences.get(task_type) or agent.primary_llm
        return self.known_model(chosen)

    def known_model(self, model: str) -> str | Refusal:
        if model in self.prices_micro:
            return model
        known = ", ".join(sorted(self.prices_micro))
        return refuse(
            ErrorCode.unknown_model,
            f"model {model!r} has no price; use one of {known} (or add it to the config)",
        )

    def cost_micro(self, model: str, tokens: int) -> int:
        """price × tokens / 1000, exact, rounded half-even to the micro-token."""
        return round_half_even(self.prices_micro[model] * tokens / 1000)

    def amount(self, value: Decimal, field: str) -> int | Refusal:
        micro = to_micro(value)
        if type(micro) is int:
            if micro > 0:
                return micro
            micro = ErrorCode.amount_must_be_positive
        assert isinstance(micro, ErrorCode)
        messages = {
            ErrorCode.amount_must_be_positive: f"{field} must be more than 0, got {value}",
            ErrorCode.too_many_decimals: f"{field} has at most 6 decimal places, got {value}",
            ErrorCode.amount_not_finite: f"{field} must be a finite number of tokens, got {value}",
            ErrorCode.amount_too_large: f"{field} is at most 10^12 tokens, got {value}",
        }
        return refuse(
            micro, messages[micro] + '; send tokens as a string like "12.5"', path=f"$.{field}"
        )

    # ----------------------------------------------------------------------------- money primitives

    def mint(self, agent: Agent, amount_micro: int, kind: str, memo: str) -> None:
        self.book.post(acc.MINT, agent.id, amount_micro, kind, memo)
        agent.earned_micro += amount_micro
        if self.on_earned is not None:
            self.on_earned(agent, amount_micro)

    def hold(
        self,
        account: str,
        amount_micro: int,
        kind: str,
        *,
        expires_at_ns: int | None,
        prefix: str = "hold",
    ) -> Hold:
        hold = Hold(self.new_id(prefix), account, amount_micro, kind, expires_at_ns)
        self.book.post(account, acc.ESCROW, amount_micro, f"hold.{kind}", hold.id)
        self.holds[hold.id] = hold
        self.open_holds[hold.id] = hold
        if expires_at_ns is not None:
            self.add_timer(expires_at_ns, "hold_expiry", hold.id)
        return hold

    def post_hold(self, hold: Hold, payee: str, amount_micro: int, kind: str) -> None:
        """Pays at most the held amount to ``payee``; the rest goes back to the holder."""
        self.pay_out(hold, [(payee, amount_micro, kind)] if amount_micro else [])

    def pay_out(self, hold: Hold, payments: list[tuple[str, int, str]]) -> None:
        """Pays from a hold to several accounts; what is left returns to the holder."""
        paid = 0
        for account, amount_micro, kind in payments:
            assert amount_micro > 0
            self.book.post(acc.ESCROW, account, amount_micro, kind, hold.id)
            paid += amount_micro
        assert paid <= hold.amount_micro, "a hold pays out at most what it holds"
        rest = hold.amount_micro - paid
        if rest:
            self.book.post(acc.ESCROW, hold.account, rest, f"release.{hold.kind}", hold.id)
        hold.state = HOLD.next(hold.state, HoldEvent.post)
        del self.open_holds[hold.id]
        self._closed(hold)

    def shrink_hold(self, hold: Hold, amount_micro: int) -> None:
        """Returns the part of an open hold above ``amount_micro`` to the holder."""
        assert hold.state == "open"
        assert 0 < amount_micro <= hold.amount_micro
        rest = hold.amount_micro - amount_micro
        if rest:
            self.book.post(acc.ESCROW, hold.account, rest, f"release.{hold.kind}", hold.id)
        hold.amount_micro = amount_micro

    def void_hold(self, hold: Hold) -> None:
        self.book.post(acc.ESCROW, hold.account, hold.amount_micro, f"void.{hold.kind}", hold.id)
        hold.state = HOLD.next(hold.state, HoldEvent.void)
        del self.open_holds[hold.id]
        if hold.spend is not None:
            self.agents[hold.account].windows.adjust(hold.spend, 0)
        self._closed(hold)

    def _closed(self, hold: Hold) -> None:
        if hold.kind not in METERED_HOLD_KINDS:
            return
        # A forgotten authorization's spend, if any, stays in the agent's windows until it ages out.
        keep_newest(
            self.closed_authorizations,
            hold.id,
            self.config.closed_authorizations_kept,
            self.forget_hold,
        )

    def forget_hold(self, hold_id: str) -> None:
        """Drops a closed hold (nothing if it is gone already: a task's hold is its escrow's)."""
        hold = self.holds.pop(hold_id, None)
        assert hold is None or hold.state != "open", f"{hold_id} is open"

    def expire_hold(self, hold_id: str) -> None:
        hold = self.holds.get(hold_id)
        if hold is not None and hold.state == "open":
            self.void_hold(hold)

    def check_debit(self, agent: Agent, amount_micro: int) -> Refusal | None:
        """Reserve (and funds) for a debit the agent initiates that is not inference."""
        breach = check_reserve(agent.limits, self.book.balance(agent.id), amount_micro)
        return None if breach is None else self.limit_refusal(agent, breach)

    def limit_refusal(self, agent: Agent, breach: LimitBreach) -> Refusal:
        limit, used, asked = (
            format_micro(breach.limit_micro),
            format_micro(breach.used_micro),
            format_micro(breach.requested_micro),
        )
        texts = {
            ErrorCode.burst_limit_exceeded: f"one spend is at most {limit} tokens for {agent.id}; "
            f"asked {asked}. Split the request or use a cheaper model",
            ErrorCode.reserve_would_be_breached: f"{agent.id} must keep {limit} tokens in reserve; "
            f"balance {used}, asked {asked}. Earn or receive tokens first",
            ErrorCode.insufficient_funds: f"{agent.id} has {used} tokens, asked {asked}",
            ErrorCode.hourly_limit_exceeded: f"{agent.id} spent {used} of {limit} tokens in the "
            f"last hour and asked {asked}",
            ErrorCode.daily_limit_exceeded: f"{agent.id} spent {used} of {limit} tokens in the "
            f"last day and asked {asked}",
        }
        message = texts[breach.code]
        if breach.retry_after_s is not None:
            message += f"; retry in {breach.retry_after_s} s"
        return refuse(
            breach.code,
            message,
            limit=limit,
            used=used,
            requested=asked,
            retry_after_s=breach.retry_after_s,
        )

    def limits_of(self, spec: LimitsConfig | c.LimitsSpec | None, base: Limits) -> Limits | Refusal:
        if spec is None:
            return base
        values = {}
        for name in ("burst", "reserve", "hourly", "daily"):
            raw = getattr(spec, name)
            if raw is None:
                values[name] = getattr(base, f"{name}_micro")
                continue
            micro = self.amount(raw, f"limits.{name}")
            if isinstance(micro, Refusal):
                return micro
            values[name] = micro
        return Limits(values["burst"], values["reserve"], values["hourly"], values["daily"])

    def default_limits(self) -> Limits:
        lc = self.config.limits
        return Limits(
            micro_of(lc.burst), micro_of(lc.reserve), micro_of(lc.hourly), micro_of(lc.daily)
        )

    # ----------------------------------------------------------------------------- ticks and views

    def tick(self, sender: str, cmd: c.Tick) -> msgspec.Struct | Refusal:
        if sender != EXCHANGE:
            return refuse(ErrorCode.not_authorized, "tick is sent by the exchange itself")
        return r.StatusResult(
            commands_applied=self.book.seq,
            now_ns=self.book.now_ns,
            digest="",
            agents=len(self.agents),
            accounts=len(self.book.balances),
            supply=format_micro(self.book.supply_micro()),
            open_holds=len(self.open_holds),
        )

    def drop_timer(self, sender: str, cmd: c.DropTimer) -> msgspec.Struct | Refusal:
        if sender != EXCHANGE:
            return refuse(ErrorCode.not_authorized, "timer.drop is sent by the exchange itself")
        timer = (cmd.deadline_ns, cmd.timer_seq, cmd.kind, cmd.ref)
        if timer not in self.timers:
            return refuse(ErrorCode.invalid_message, f"no timer {timer} is set")
        self.timers.remove(timer)
        heapq.heapify(self.timers)
        return r.TimerDropped(kind=cmd.kind, ref=cmd.ref, deadline_ns=cmd.deadline_ns)

    def limits_result(self, agent: Agent) -> r.LimitsResult:
        agent.windows.advance(self.book.now_ns)
        lim = agent.limits
        hour, day = agent.windows.hour.sum_micro, agent.windows.day.sum_micro
        return r.LimitsResult(
            agent=agent.id,
            burst=format_micro(lim.burst_micro),
            reserve=format_micro(lim.reserve_micro),
            hourly=format_micro(lim.hourly_micro),
            daily=format_micro(lim.daily_micro),
            hourly_used=format_micro(hour),
            daily_used=format_micro(day),
            hourly_remaining=format_micro(max(0, lim.hourly_micro - hour)),
            daily_remaining=format_micro(max(0, lim.daily_micro - day)),
        )
