"""Properties of the ledger core over random command sequences: a Hypothesis state machine drives
every seed-1 command (valid and invalid, with time moving by random steps) and checks, after each
step, conservation, no negative balances, no admitted spend beyond a window's limit (against a
model of the spends kept here), idempotent retries, refusals that change nothing, a restored
snapshot that keeps behaving identically, and at the end that folding the log into a fresh
exchange reproduces every reply and the digest."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from exchange.core.config import EconomyConfig
from exchange.core.ledger import Outcome, RememberedRow
from exchange.core.machine import Exchange, genesis_commands
from protocols import commands as c
from protocols.amounts import MICRO_PER_TOKEN
from protocols.errors import ErrorCode
from protocols.ids import ADMIN, EXCHANGE
from protocols.registry import COMMAND_DECODERS, VERB_OF
from protocols.units import NS_PER_HOUR, NS_PER_S, S_PER_DAY

ROSTER: Final = ("claude", "builder", "lambda", "spark", "observer", "zero")
MODELS: Final = ("claude-opus", "claude-sonnet", "gemini-pro", "llama3.2", "qwen2.5-coder")

# Strategies. Agents, pools and authorizations that exist only at run time are drawn by index.
whoever = st.integers(min_value=0, max_value=10_000)
valid_amounts = st.one_of(
    st.integers(min_value=1, max_value=3000).map(Decimal),
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(600), places=6, allow_nan=False),
)
invalid_amounts = st.sampled_from(
    [
        Decimal(0),
        Decimal("-0"),
        Decimal(-1),
        Decimal("-0.000001"),
        Decimal("1.0000001"),
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        Decimal("1E+13"),
        Decimal("1000000000000000000000000.1234567"),
    ]
)
amounts = st.one_of(valid_amounts, valid_amounts, valid_amounts, invalid_amounts)
maybe_amounts = st.one_of(st.none(), amounts)
tokens = st.one_of(
    st.integers(min_value=1, max_value=60_000),
    st.sampled_from([1, 1000, 5000, 33_333, 44_000, 250_000]),
)
models = st.one_of(st.none(), st.sampled_from([*MODELS, "gpt-9"]))
task_types = st.sampled_from(["code", "chat", "planning"])
seconds = st.one_of(
    st.sampled_from([0, 1, 59, 60, 299, 300, 3599, 3600, 3601, 7200, 86_399, 86_400, 90_000]),
    st.integers(min_value=0, max_value=100_000),
)
new_agent_ids = st.sampled_from(
    ["new-1", "new-2", "scout", "a" * 64, "Bad.Id", "a*", "admin", "claude", "x y"]
)


@dataclass
class Spend:
    """One admitted inference spend in the model: when it counts from, and how much."""

    at_ns: int
    amount_micro: int


@dataclass
class OpenAuthorization:
    agent: str
    spend: Spend
    expires_at_ns: int


def micro(text: str) -> int:
    return int(Decimal(text) * MICRO_PER_TOKEN)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Two closed authorizations and one closed pool kept, so that forgetting happens in most
        # runs.
        self.config = EconomyConfig(closed_authorizations_kept=2, closed_pools_kept=1)
        self.ex = Exchange(self.config)
        self.shadow: Exchange | None = None
        self.now_ns = 0
        self.ids = 0
        self.log: list[tuple[str, c.Command, int, bytes]] = []
        self.successes: list[tuple[str, c.Command, bytes]] = []
        self.success_keys: set[tuple[str, str]] = set()
        self.refused_keys: list[tuple[str, str]] = []
        self.agents: list[str] = []
        self.pools: list[str] = []
        self.authorizations: list[str] = []
        self.open_authorizations: dict[str, OpenAuthorization] = {}
        self.spends: dict[str, list[Spend]] = {}
        # burst, reserve, hourly, daily in micro-tokens, as the exchange last reported them.
        self.limits: dict[str, tuple[int, int, int, int]] = {}
        for outcome in self.ex.genesis(now_ns=0):
            assert outcome.ok
        for command in genesis_commands(self.config):
            self.log.append((ADMIN, command, 0, self._genesis_reply(command.agent)))
            self._add_agent(command.agent)

    def _genesis_reply(self, agent: str) -> bytes:
        return b'{"ok":true,"result":{"agent":"%s","balance":"10000"}}' % agent.encode()

    def _add_agent(self, agent: str) -> None:
        self.agents.append(agent)
        self.spends[agent] = []
        lc = self.config.limits
        self.limits[agent] = (
            micro(str(lc.burst)),
            micro(str(lc.reserve)),
            micro(str(lc.hourly)),
            micro(str(lc.daily)),
        )

    # ------------------------------------------------------------------------------ helpers

    def rid(self) -> str:
        self.ids += 1
        return f"r{self.ids}"

    def agent(self, index: int) -> str:
        """An agent most of the time (claude or spark half the time, so that one agent's
        spends pile up in its windows); now and then a stranger or a system sender."""
        if index % 23 == 0:
            return "nobody"
        if index % 29 == 0:
            return ADMIN
        if index % 2:
            return ("claude", "spark")[index // 2 % 2]
        return self.agents[index // 2 % len(self.agents)]

    def balance(self, account: str) -> int:
        return self.ex.ledger.book.balance(account)

    def apply(self, sender: str, command: c.Command) -> Outcome:
        """Applies to the exchange (and the restored shadow), logs it, and checks the step."""
        now_ns = self.now_ns
        for auth_id, auth in list(self.open_authorizations.items()):
            if auth.expires_at_ns <= now_ns:
                auth.spend.amount_micro = 0
                del self.open_authorizations[auth_id]
        next_timer_ns = self.ex.next_timer_ns()
        timers_due = next_timer_ns is not None and next_timer_ns <= now_ns
        # The digest is of the state as of the exchange's clock (spends leave the windows as it
        # moves), so a refusal is compared only at an unchanged clock with no timer due.
        same_time = self.ex.now_ns == now_ns and not timers_due
        digest_before = self.ex.digest() if same_time else None
        balances_before = dict(self.ex.ledger.book.balances)
        outcome = self.ex.apply(sender, command, now_ns=now_ns)
        self.log.append((sender, command, now_ns, outcome.reply))
        self.check_postings_explain_balances(balances_before, outcome)
        if self.shadow is not None:
            mirrored = self.shadow.apply(sender, command, now_ns=now_ns)
            assert mirrored == outcome
        envelope = json.loads(outcome.reply)
        assert envelope["ok"] is outcome.ok
        if outcome.ok:
            assert outcome.code is None
            key = (sender, command.request_id)
            if command.remembered and not outcome.duplicate:
                assert key not in self.success_keys
                self.successes.append((sender, command, outcome.reply))
                self.success_keys.add(key)
        else:
            assert envelope["error"]["code"] == outcome.code
            assert not outcome.duplicate
            assert all(p.kind.startswith("void.") for p in outcome.postings)
            if digest_before is not None:
                assert outcome.postings == ()
                assert self.ex.digest() == digest_before, f"{outcome.code} changed the state"
            key = (sender, command.request_id)
            if key not in self.success_keys:
                self.refused_keys.append(key)
        return outcome

    def check_postings_explain_balances(self, before: dict[str, int], outcome: Outcome) -> None:
        """Every balance changed by exactly the postings the outcome reports (timers included)."""
        expected = dict(before)
        for posting in outcome.postings:
            assert posting.amount_micro > 0
            assert posting.debit != posting.credit
            expected[posting.debit] = expected.get(posting.debit, 0) - posting.amount_micro
            expected[posting.credit] = expected.get(posting.credit, 0) + posting.amount_micro
        after = self.ex.ledger.book.balances
        for account in sorted(set(after) | set(expected)):
            assert after.get(account, 0) == expected.get(account, 0), account

    def result(self, outcome: Outcome) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(outcome.reply)["result"]
        return result

    def check_admitted(self, agent: str, cost_micro: int) -> None:
        """An admitted spend kept the burst, the reserve and both windows (as modelled here)."""
        burst, reserve, hourly, daily = self.limits[agent]
        assert cost_micro <= burst
        assert self.balance(agent) >= reserve
        now_ns = self.now_ns
        spends = self.spends[agent]
        in_hour = sum(s.amount_micro for s in spends if s.at_ns > now_ns - NS_PER_HOUR)
        in_day = sum(s.amount_micro for s in spends if s.at_ns > now_ns - S_PER_DAY * NS_PER_S)
        assert in_hour <= hourly, f"{agent} spent {in_hour} µ in an hour, limit {hourly}"
        assert in_day <= daily, f"{agent} spent {in_day} µ in a day, limit {daily}"

    # ------------------------------------------------------------------------------ time

    @rule(step_s=seconds, step_ns=st.integers(min_value=0, max_value=NS_PER_S - 1))
    def advance(self, step_s: int, step_ns: int) -> None:
        self.now_ns += step_s * NS_PER_S + step_ns

    @rule()
    def tick(self) -> None:
        assert self.apply(EXCHANGE, c.Tick(request_id=self.rid())).ok

    @rule(who=whoever)
    def tick_from_someone_else(self, who: int) -> None:
        outcome = self.apply(self.agent(who), c.Tick(request_id=self.rid()))
        assert outcome.code == ErrorCode.not_authorized

    # ------------------------------------------------------------------------------ money

    @rule(who=whoever, to=whoever, amount=amounts, memo=st.sampled_from(["", "m"]))
    def transfer(self, who: int, to: int, amount: Decimal, memo: str) -> None:
        sender, recipient = self.agent(who), self.agent(to)
        command = c.Transfer(request_id=self.rid(), to=recipient, amount=amount, memo=memo)
        outcome = self.apply(sender, command)
        if outcome.ok:
            moved = [p for p in outcome.postings if p.kind == "transfer"]
            assert [(p.debit, p.credit, p.amount_micro) for p in moved] == [
                (sender, recipient, micro(self.result(outcome)["amount"]))
            ]
            assert self.balance(sender) >= self.limits[sender][1]

    @rule(who=whoever, agent=whoever, amount=amounts, by_admin=st.booleans())
    def award(self, who: int, agent: int, amount: Decimal, by_admin: bool) -> None:
        sender = ADMIN if by_admin else self.agent(who)
        command = c.Award(request_id=self.rid(), agent=self.agent(agent), amount=amount, source="s")
        outcome = self.apply(sender, command)
        assert outcome.ok or outcome.code != ErrorCode.request_id_reused

    @rule(
        author=whoever,
        project=st.sampled_from(["nexushive-setup", "claude-monitor", "scheme-x", "other"]),
        message=st.sampled_from(["fix: bug", "docs: readme", "prefix", "hotfix critical", "x"]),
        sha=st.one_of(st.none(), st.sampled_from(["aaaa", "bbbb", "cccc"])),
    )
    def commit(self, author: int, project: str, message: str, sha: str | None) -> None:
        command = c.Commit(
            request_id=self.rid(),
            author=f"{self.agent(author)}@aygp-dr.ai",
            project=project,
            message=message,
            sha=sha,
        )
        self.apply(ADMIN, command)

    @rule(
        issue_id=st.sampled_from(["i-1", "i-2", "i-3"]),
        agent=whoever,
        priority=st.sampled_from(["P1", "P2", "P5", "0", "4", "P9"]),
        issue_type=st.sampled_from(["bug", "security", "chore", "epic"]),
    )
    def issue_close(self, issue_id: str, agent: int, priority: str, issue_type: str) -> None:
        command = c.IssueClose(
            request_id=self.rid(),
            issue_id=issue_id,
            agent=self.agent(agent),
            priority=priority,
            issue_type=issue_type,
        )
        self.apply(ADMIN, command)

    # ------------------------------------------------------------------------------ inference

    @rule(who=whoever, task_type=task_types, tokens=tokens, model=models)
    def llm(self, who: int, task_type: str, tokens: int, model: str | None) -> None:
        sender = self.agent(who)
        command = c.LlmRequest(
            request_id=self.rid(), task_type=task_type, tokens=tokens, model=model
        )
        outcome = self.apply(sender, command)
        if outcome.ok:
            cost = micro(self.result(outcome)["cost"])
            self.spends[sender].append(Spend(self.now_ns, cost))
            self.check_admitted(sender, cost)

    @rule(who=whoever, task_type=task_types, times=st.integers(min_value=1, max_value=8))
    def spend_to_the_limit(self, who: int, task_type: str, times: int) -> None:
        """Spends as much as the burst allows, again and again, until a limit says no."""
        sender = self.agent(who)
        for _ in range(times):
            command = c.LlmRequest(
                request_id=self.rid(), task_type=task_type, tokens=33_333, model="claude-opus"
            )
            outcome = self.apply(sender, command)
            if not outcome.ok:
                return
            cost = micro(self.result(outcome)["cost"])
            self.spends[sender].append(Spend(self.now_ns, cost))
            self.check_admitted(sender, cost)

    @rule(
        who=whoever,
        tokens=tokens,
        model=models,
        timeout_s=st.sampled_from([1, 60, 300, 3600, 7200, 90_000]),
    )
    def authorize(self, who: int, tokens: int, model: str | None, timeout_s: int) -> None:
        sender = self.agent(who)
        command = c.LlmAuthorize(
            request_id=self.rid(), task_type="code", tokens=tokens, model=model, timeout_s=timeout_s
        )
        outcome = self.apply(sender, command)
        if outcome.ok:
            self.authorize_succeeded(sender, self.result(outcome))

    def authorize_succeeded(self, sender: str, result: dict[str, Any]) -> None:
        spend = Spend(self.now_ns, micro(result["held"]))
        self.spends[sender].append(spend)
        auth_id = result["authorization_id"]
        self.authorizations.append(auth_id)
        self.open_authorizations[auth_id] = OpenAuthorization(
            sender, spend, result["expires_at_ns"]
        )
        self.check_admitted(sender, spend.amount_micro)

    @rule(pick=whoever, tokens=st.one_of(st.just(0), tokens), by_admin=st.booleans())
    def settle(self, pick: int, tokens: int, by_admin: bool) -> None:
        known = self.authorizations
        auth_id = known[pick % len(known)] if known and pick % 7 else "auth-999"
        auth = self.open_authorizations.get(auth_id)
        owner = auth.agent if auth else self.agent(pick)
        self.settle_as(ADMIN if by_admin else owner, auth_id, tokens)

    def settle_as(self, sender: str, auth_id: str, tokens: int) -> None:
        command = c.LlmSettle(request_id=self.rid(), authorization_id=auth_id, tokens=tokens)
        outcome = self.apply(sender, command)
        auth = self.open_authorizations.get(auth_id)
        if not outcome.ok or auth is None:
            return
        del self.open_authorizations[auth_id]
        cost = micro(self.result(outcome)["cost"])
        held = auth.spend.amount_micro
        if cost <= held:
            # Within what was admitted at authorization (under the limits of that moment).
            auth.spend.amount_micro = cost
        else:
            # The difference is spent now and admitted under the limits of now.
            self.spends[auth.agent].append(Spend(self.now_ns, cost - held))
            self.check_admitted(auth.agent, cost)

    @rule(
        who=whoever,
        held_tokens=st.integers(min_value=1, max_value=20_000),
        late_s=st.integers(min_value=0, max_value=89_999),
        more_tokens=st.integers(min_value=0, max_value=33_000),
    )
    def settle_late(self, who: int, held_tokens: int, late_s: int, more_tokens: int) -> None:
        """Authorizes, lets time pass (often past the windows, never past the timeout) and
        settles for as much or more than was held."""
        sender = self.agent(who)
        command = c.LlmAuthorize(
            request_id=self.rid(), task_type="code", tokens=held_tokens, timeout_s=90_000
        )
        outcome = self.apply(sender, command)
        if not outcome.ok:
            return
        self.authorize_succeeded(sender, self.result(outcome))
        self.now_ns += late_s * NS_PER_S
        auth_id = self.authorizations[-1]
        self.settle_as(sender, auth_id, held_tokens + more_tokens)

    @rule(
        agent=whoever,
        burst=maybe_amounts,
        reserve=maybe_amounts,
        hourly=maybe_amounts,
        daily=maybe_amounts,
    )
    def set_limits(
        self,
        agent: int,
        burst: Decimal | None,
        reserve: Decimal | None,
        hourly: Decimal | None,
        daily: Decimal | None,
    ) -> None:
        limits = c.LimitsSpec(burst=burst, reserve=reserve, hourly=hourly, daily=daily)
        target = self.agent(agent)
        outcome = self.apply(ADMIN, c.SetLimits(request_id=self.rid(), agent=target, limits=limits))
        if outcome.ok:
            r = self.result(outcome)
            self.limits[target] = tuple(  # type: ignore[assignment]
                micro(r[name]) for name in ("burst", "reserve", "hourly", "daily")
            )

    @rule(agent_id=new_agent_ids, model=st.sampled_from([*MODELS, "gpt-9"]), by_admin=st.booleans())
    def register(self, agent_id: str, model: str, by_admin: bool) -> None:
        sender = ADMIN if by_admin else "claude"
        command = c.RegisterAgent(
            request_id=self.rid(), agent=agent_id, base_rate=Decimal(42), primary_llm=model
        )
        outcome = self.apply(sender, command)
        if outcome.ok:
            self._add_agent(agent_id)

    # ------------------------------------------------------------------------------ pools

    def pool(self, pick: int) -> str:
        return self.pools[pick % len(self.pools)] if self.pools and pick % 11 else "pool-999"

    @rule(who=whoever, minimum=amounts)
    def pool_create(self, who: int, minimum: Decimal) -> None:
        command = c.PoolCreate(request_id=self.rid(), name="team", min_contribution=minimum)
        outcome = self.apply(self.agent(who), command)
        if outcome.ok:
            self.pools.append(self.result(outcome)["pool_id"])

    @rule(who=whoever, pick=whoever)
    def pool_join(self, who: int, pick: int) -> None:
        self.apply(self.agent(who), c.PoolJoin(request_id=self.rid(), pool_id=self.pool(pick)))

    @rule(who=whoever, pick=whoever, amount=amounts)
    def pool_contribute(self, who: int, pick: int, amount: Decimal) -> None:
        sender = self.agent(who)
        command = c.PoolContribute(request_id=self.rid(), pool_id=self.pool(pick), amount=amount)
        if self.apply(sender, command).ok:
            assert self.balance(sender) >= self.limits[sender][1]

    @rule(who=whoever, pick=whoever, model=st.sampled_from([*MODELS, "gpt-9"]), tokens=tokens)
    def pool_spend(self, who: int, pick: int, model: str, tokens: int) -> None:
        command = c.PoolSpend(
            request_id=self.rid(), pool_id=self.pool(pick), model=model, tokens=tokens
        )
        self.apply(self.agent(who), command)

    @rule(who=whoever, pick=whoever)
    def pool_close(self, who: int, pick: int) -> None:
        pool_id = self.pool(pick)
        outcome = self.apply(self.agent(who), c.PoolClose(request_id=self.rid(), pool_id=pool_id))
        if outcome.ok:
            assert self.balance(f"@pool.{pool_id}") == 0

    # ------------------------------------------------------------------------------ retries

    @rule(pick=whoever)
    def retry_a_success(self, pick: int) -> None:
        if not self.successes:
            return
        sender, command, reply = self.successes[pick % len(self.successes)]
        self.apply(EXCHANGE, c.Tick(request_id=self.rid()))  # let due timers fire first
        balances = dict(self.ex.ledger.book.balances)
        digest = self.ex.digest()
        outcome = self.apply(sender, command)
        assert outcome.ok
        assert outcome.duplicate
        assert outcome.reply == reply
        assert outcome.postings == ()
        assert self.ex.ledger.book.balances == balances
        assert self.ex.digest() == digest

    @rule(pick=whoever)
    def reuse_a_request_id_for_another_body(self, pick: int) -> None:
        if not self.successes:
            return
        sender, command, _ = self.successes[pick % len(self.successes)]
        other = c.PoolJoin(request_id=command.request_id, pool_id="never-a-pool")
        assert self.apply(sender, other).code == ErrorCode.request_id_reused

    @rule(pick=whoever, amount=valid_amounts)
    def reuse_a_refused_request_id(self, pick: int, amount: Decimal) -> None:
        if not self.refused_keys:
            return
        sender, request_id = self.refused_keys[pick % len(self.refused_keys)]
        if (sender, request_id) in self.success_keys:
            return
        command = c.Transfer(request_id=request_id, to="zero", amount=amount)
        outcome = self.apply(sender, command)
        assert outcome.code != ErrorCode.request_id_reused
        assert not outcome.duplicate

    # ------------------------------------------------------------------------------ snapshots

    @rule()
    def snapshot_and_restore(self) -> None:
        """The restored copy has the same digest and, from now on, gets every command too."""
        # The remembered replies come from the log, as the daemon reads them from its journal.
        restored = Exchange.restore(self.config, self.ex.snapshot(), self.journal_rows)
        assert restored.digest() == self.ex.digest()
        assert restored.snapshot() == self.ex.snapshot()
        assert restored.ledger.remembered_records() == self.ex.ledger.remembered_records()
        self.shadow = restored

    def journal_rows(self, seqs: list[int]) -> Iterator[RememberedRow]:
        """The log's entries at ``seqs`` as the journal keeps them (seq n is the n-th command)."""
        assert len(self.log) == self.ex.seq
        for seq in seqs:
            sender, command, _, reply = self.log[seq - 1]
            yield sender, VERB_OF[type(command)], msgspec.json.encode(command), reply

    # ------------------------------------------------------------------------------ invariants

    @invariant()
    def conservation_and_holds(self) -> None:
        self.ex.check_invariants()

    @invariant()
    def no_negative_agent_balance(self) -> None:
        for agent in self.agents:
            assert self.balance(agent) >= 0

    @invariant()
    def the_shadow_stays_identical(self) -> None:
        if self.shadow is not None:
            assert self.shadow.digest() == self.ex.digest()

    def teardown(self) -> None:
        """Replay: the log folded into a fresh exchange gives every reply and the same digest."""
        fresh = Exchange(self.config)
        for sender, command, now_ns, reply in self.log:
            assert fresh.apply(sender, command, now_ns=now_ns).reply == reply
        assert fresh.digest() == self.ex.digest()
        # The wire form of every command decodes to the same command (the journal's path).
        for _, command, _, _ in self.log[-20:]:
            raw = msgspec.json.encode(command)
            # Bytes, not Structs: Decimal("NaN") != Decimal("NaN").
            decoded = COMMAND_DECODERS[VERB_OF[type(command)]].decode(raw)
            assert msgspec.json.encode(decoded) == raw


LedgerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerCore = LedgerMachine.TestCase
