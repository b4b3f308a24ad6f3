"""Metering (issue 18): the gateway's holds on behalf of agents, priced by prompt and completion
tokens, under per-agent requests and tokens per minute, a model allowlist and the money limits.

Sent only by the ``gateway`` identity (or ``admin``): an agent cannot settle a metered request
itself. Admission is decided here, in the single-writer core, atomically with the hold, so however
many requests arrive at once none is admitted past a window or the balance.

The minute window is deterministic from the command stamps: a request admitted at ``t`` counts
until ``t + 60 s`` (excluded). Its tokens count as the worst case (prompt bound + max_tokens) at
authorization, are corrected to the upstream's usage at settle and to 0 at release; an expired
hold keeps its worst case (the gateway never said what the upstream used).

A quota (``gateway.quota``) grants the gateway several requests of one agent to one model, which
it admits without asking until the end of the quota's admission period, and settles at once with
each request's usage (``gateway.quota_settle``): one durable command for many requests. Its
requests and tokens count in the minute as one entry stamped at the end of the admission period,
so a request the gateway admits at its last moment still counts for a full minute from then.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Final

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Agent, Hold, Ledger
from exchange.core.limits import LimitBreach, check_spend
from exchange.core.money import _div_half_even
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import kept_note
from exchange.core.spending import Spending
from protocols import commands as c
from protocols import results as r
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.ids import ADMIN, GATEWAY
from protocols.units import NS_PER_S

MINUTE_NS: Final = 60 * NS_PER_S
HOLD_KIND: Final = "gateway"
# The id prefix of a quota's hold ("gq-7"); a per-request authorization's is "gw".
QUOTA_PREFIX: Final = "gq"


def metered_cost_micro(
    input_micro_per_1k: int, output_micro_per_1k: int, prompt_tokens: int, completion_tokens: int
) -> int:
    """(input price × prompt + output price × completion) / 1000, prices in micro-tokens per
    1,000 tokens, rounded half-even once, on the sum. Exact; monotone in both token counts, so
    the cost of actual usage never exceeds the cost of a larger worst case."""
    assert min(input_micro_per_1k, output_micro_per_1k, prompt_tokens, completion_tokens) >= 0
    total = input_micro_per_1k * prompt_tokens + output_micro_per_1k * completion_tokens
    return _div_half_even(total, 1000)


def quota_hold_micro(price_max_micro_per_1k: int, requests: int, tokens: int) -> int:
    """What a quota of ``requests`` using ``tokens`` in all holds: every token at the higher of
    the model's two prices, rounded up, plus 1 micro-token a request. Each request's cost is
    rounded half-even on its own, at most 0.5 micro-token above its exact cost, so whatever the
    split of the tokens among the requests, their costs never sum above the hold."""
    return -(-price_max_micro_per_1k * tokens // 1000) + requests


def is_quota(hold: Hold) -> bool:
    return hold.id.startswith(QUOTA_PREFIX + "-")


@dataclass(slots=True)
class MinuteEntry:
    at_ns: int
    tokens: int
    hold_id: str
    # A quota's entry counts its requests; a per-request authorization's is one.
    requests: int = 1


@dataclass(slots=True)
class Rates:
    """An agent's gateway limits (None: no limit; empty models: every model) and its minute."""

    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] = ()
    # Oldest first, by at_ns: a quota's entry, stamped ahead of the clock, is put in its place.
    entries: deque[MinuteEntry] = field(default_factory=deque)
    tokens: int = 0
    requests: int = 0
    # The entries of open or settled requests still in the window, by hold id (for corrections).
    by_hold: dict[str, MinuteEntry] = field(default_factory=dict)

    def advance(self, now_ns: int) -> None:
        cutoff = now_ns - MINUTE_NS
        while self.entries and self.entries[0].at_ns <= cutoff:
            entry = self.entries.popleft()
            self.tokens -= entry.tokens
            self.requests -= entry.requests
            self.by_hold.pop(entry.hold_id, None)
        assert self.tokens >= 0
        assert self.requests >= 0

    def record(self, at_ns: int, tokens: int, hold_id: str, requests: int = 1) -> None:
        entry = MinuteEntry(at_ns, tokens, hold_id, requests)
        entries = self.entries
        if not entries or entries[-1].at_ns <= at_ns:
            entries.append(entry)
        else:
            # Behind a quota's entry (stamped at the end of its admission period). Kept in time
            # order so that advance evicts exactly the entries that left the minute: a snapshot
            # holds only those inside, and a restored exchange must count what this one counts.
            index = len(entries) - 1
            while index > 0 and entries[index - 1].at_ns > at_ns:
                index -= 1
            entries.insert(index, entry)
        self.by_hold[hold_id] = entry
        self.tokens += tokens
        self.requests += requests

    def correct(self, hold_id: str, tokens: int, requests: int | None = None) -> None:
        """Sets a request's (or a quota's) tokens, and a quota's requests, if its entry is still
        in the window, to what it actually used."""
        entry = self.by_hold.get(hold_id)
        if entry is not None:
            self.tokens += tokens - entry.tokens
            entry.tokens = tokens
            if requests is not None:
                self.requests += requests - entry.requests
                entry.requests = requests

    def restamp(self, hold_id: str, at_ns: int) -> None:
        """Moves a quota's entry back to ``at_ns`` if it is still in the window and stamped
        later: settled before its admission period ended, the quota admitted nothing after."""
        entry = self.by_hold.get(hold_id)
        if entry is None or entry.at_ns <= at_ns:
            return
        self.entries.remove(entry)
        self.tokens -= entry.tokens
        self.requests -= entry.requests
        self.record(at_ns, entry.tokens, hold_id, entry.requests)

    def wait_for_requests_s(self, now_ns: int, rpm: int) -> int:
        """Seconds until fewer than ``rpm`` requests are in the window (called when it is full)."""
        used = self.requests
        wait_ns = 0
        for entry in self.entries:
            if used < rpm:
                break
            used -= entry.requests
            wait_ns = entry.at_ns + MINUTE_NS - now_ns
        return _seconds(wait_ns)

    def wait_for_tokens_s(self, now_ns: int, tpm: int, tokens: int) -> int:
        """Seconds until ``tokens`` more fit under ``tpm`` (called with tokens <= tpm)."""
        used = self.tokens
        wait_ns = 0
        for entry in self.entries:
            if used + tokens <= tpm:
                break
            used -= entry.tokens
            wait_ns = entry.at_ns + MINUTE_NS - now_ns
        return _seconds(wait_ns)

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or bool(self.models)


def _seconds(wait_ns: int) -> int:
    """Whole seconds, rounded up, at least 1 (a client told 0 would retry at once)."""
    return max(1, -(-wait_ns // NS_PER_S))


class MeteringState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Each agent with gateway limits or requests in the last minute: (rpm, tpm, models) and its
    minute's entries (at_ns, tokens, hold id), oldest first, and the requests of each entry that
    counts other than one (a quota's), by hold id. Empty until the gateway is used.

    omit_defaults: the request counts are left out when there are none, so the state (and the
    digest) of an exchange that never used a quota is what it was before quotas existed."""

    gateway_rates: dict[str, tuple[int | None, int | None, list[str]]]
    gateway_minute: dict[str, list[tuple[int, int, str]]]
    gateway_minute_requests: dict[str, int] = {}


def _check_quota_bounds(cmd: c.GatewayQuota) -> Refusal | None:
    if cmd.min_tokens > cmd.tokens:
        return refuse(
            ErrorCode.parameter_out_of_bounds,
            f"min_tokens ({cmd.min_tokens}) must be <= tokens ({cmd.tokens}): the least "
            "worth granting is part of what is asked",
            path="$.min_tokens",
        )
    if cmd.timeout_s < cmd.admit_s:
        return refuse(
            ErrorCode.parameter_out_of_bounds,
            f"timeout_s ({cmd.timeout_s}) must be >= admit_s ({cmd.admit_s}): a quota is "
            "settled after its last request is admitted",
            path="$.timeout_s",
        )
    return None


class Metering:
    def __init__(self, ledger: Ledger, spending: Spending) -> None:
        self.ledger = ledger
        self.spending = spending
        self.rates: dict[str, Rates] = {}

    # ------------------------------------------------------------------------------ prices

    def prices_micro(self, model: str) -> tuple[int, int]:
        """The model's (input, output) prices in micro-tokens per 1,000 tokens."""
        ledger = self.ledger
        price_in = int(ledger.prices_micro[model])
        return price_in, ledger.output_prices_micro.get(model, price_in)

    def cost_micro(self, model: str, prompt_tokens: int, completion_tokens: int) -> int:
        price_in, price_out = self.prices_micro(model)
        return metered_cost_micro(price_in, price_out, prompt_tokens, completion_tokens)

    # ------------------------------------------------------------------------------ commands

    def _require_gateway(self, sender: str, verb: str) -> Refusal | None:
        if sender in (GATEWAY, ADMIN):
            return None
        return refuse(
            ErrorCode.not_authorized,
            f"{verb} is sent by the metering gateway for the agent it meters; an agent pays "
            "its own inference with llm or llm.authorize",
        )

    def _metered(
        self, sender: str, verb: str, agent_id: str, model_name: str
    ) -> tuple[Agent, str] | Refusal:
        """The agent and the model a gateway command meters, or why it may not."""
        if (denied := self._require_gateway(sender, verb)) is not None:
            return denied
        agent = self.ledger.acting_agent(agent_id)
        if isinstance(agent, Refusal):
            return agent
        model = self.ledger.known_model(model_name)
        if isinstance(model, Refusal):
            return model
        return agent, model

    def authorize(self, sender: str, cmd: c.GatewayAuthorize) -> msgspec.Struct | Refusal:
        metered = self._metered(sender, "gateway.authorize", cmd.agent, cmd.model)
        if isinstance(metered, Refusal):
            return metered
        agent, model = metered
        ledger = self.ledger
        now_ns = ledger.book.now_ns
        rates = self.rates.get(agent.id)
        worst_tokens = cmd.prompt_tokens + cmd.max_tokens
        if rates is not None:
            if (denied := self._check_model(agent, rates, model)) is not None:
                return denied
            rates.advance(now_ns)
            denied = self._check_requests(agent, rates, now_ns)
            if denied is None:
                denied = self._check_tokens(agent, rates, worst_tokens, now_ns)
            if denied is not None:
                return denied
        cost = self.cost_micro(model, cmd.prompt_tokens, cmd.max_tokens)
        if cost == 0:
            return refuse(ErrorCode.amount_must_be_positive, f"{model} is free: nothing to hold")
        agent.windows.advance(now_ns)
        breach = check_spend(
            agent.limits, agent.windows, ledger.book.balance(agent.id), cost, now_ns
        )
        if breach is not None:
            return ledger.limit_refusal(agent, breach)
        expires_at_ns = now_ns + cmd.timeout_s * NS_PER_S
        hold = ledger.hold(agent.id, cost, HOLD_KIND, expires_at_ns=expires_at_ns, prefix="gw")
        hold.model, hold.tokens = model, worst_tokens
        hold.spend = agent.windows.record(now_ns, cost)
        if rates is None:
            rates = self.rates[agent.id] = Rates()
        rates.record(now_ns, worst_tokens, hold.id)
        return r.GatewayAuthorizationResult(
            authorization_id=hold.id,
            agent=agent.id,
            model=model,
            prompt_tokens=cmd.prompt_tokens,
            max_tokens=cmd.max_tokens,
            held=format_micro(cost),
            expires_at_ns=expires_at_ns,
        )

    def _check_model(self, agent: Agent, rates: Rates, model: str) -> Refusal | None:
        if not rates.models or model in rates.models:
            return None
        return refuse(
            ErrorCode.model_not_allowed,
            f"{agent.id} may call {', '.join(rates.models)}, not {model}; ask the "
            "operator to allow it (exchange limits set --models)",
        )

    def _check_requests(self, agent: Agent, rates: Rates, now_ns: int) -> Refusal | None:
        """One more request under the agent's rpm (``rates`` advanced to now)."""
        if rates.rpm is not None and rates.requests + 1 > rates.rpm:
            wait = rates.wait_for_requests_s(now_ns, rates.rpm)
            return refuse(
                ErrorCode.rate_limited_rpm,
                f"{agent.id} made {rates.requests} of {rates.rpm} requests in the last "
                f"minute; retry in {wait} s",
                limit=str(rates.rpm),
                used=str(rates.requests),
                requested="1",
                retry_after_s=wait,
            )
        return None

    def _check_tokens(
        self, agent: Agent, rates: Rates, worst_tokens: int, now_ns: int
    ) -> Refusal | None:
        """A request of ``worst_tokens`` under the agent's tpm (``rates`` advanced to now)."""
        if rates.tpm is not None and rates.tokens + worst_tokens > rates.tpm:
            fits = worst_tokens <= rates.tpm
            tokens_wait = rates.wait_for_tokens_s(now_ns, rates.tpm, worst_tokens) if fits else None
            advice = (
                f"retry in {tokens_wait} s"
                if tokens_wait is not None
                else "lower max_tokens or shorten the prompt: it can never fit"
            )
            return refuse(
                ErrorCode.rate_limited_tpm,
                f"{agent.id} used {rates.tokens} of {rates.tpm} tokens in the last minute and "
                f"this request may use {worst_tokens} (prompt bound + max_tokens); {advice}",
                limit=str(rates.tpm),
                used=str(rates.tokens),
                requested=str(worst_tokens),
                retry_after_s=tokens_wait,
            )
        return None

    def _open_hold(
        self, sender: str, authorization_id: str, verb: str, *, quota: bool = False
    ) -> Hold | Refusal:
        """The open gateway hold ``verb`` closes: a quota's for quota_settle, else a request's."""
        if (denied := self._require_gateway(sender, verb)) is not None:
            return denied
        hold = self.ledger.holds.get(authorization_id)
        opener = "gateway.quota" if quota else "gateway.authorize"
        if hold is None or hold.kind != HOLD_KIND:
            return refuse(
                ErrorCode.unknown_authorization,
                f"no gateway authorization {authorization_id!r}; use the id {opener} returned "
                + kept_note(self.ledger.config.closed_authorizations_kept, "closed ones"),
            )
        if is_quota(hold) != quota:
            return refuse(
                ErrorCode.unknown_authorization,
                f"{hold.id} is a quota: settle it with gateway.quota_settle (an empty usage "
                "releases it whole)"
                if is_quota(hold)
                else f"{hold.id} is one request's authorization, not a quota: close it with "
                "gateway.settle or gateway.release",
            )
        if hold.state != "open":
            return refuse(
                ErrorCode.authorization_closed,
                f"gateway authorization {hold.id} is already {hold.state}",
            )
        return hold

    def settle(self, sender: str, cmd: c.GatewaySettle) -> msgspec.Struct | Refusal:
        hold = self._open_hold(sender, cmd.authorization_id, "gateway.settle")
        if isinstance(hold, Refusal):
            return hold
        ledger = self.ledger
        agent = ledger.agents[hold.account]
        cost = self.cost_micro(hold.model, cmd.prompt_tokens, cmd.completion_tokens)
        held = hold.amount_micro
        charged, unpaid = self._charge(agent, hold, cost)
        if (rates := self.rates.get(agent.id)) is not None:
            rates.correct(hold.id, cmd.prompt_tokens + cmd.completion_tokens)
        return r.GatewaySettlementResult(
            authorization_id=hold.id,
            agent=agent.id,
            model=hold.model,
            prompt_tokens=cmd.prompt_tokens,
            completion_tokens=cmd.completion_tokens,
            cost=format_micro(charged),
            released=format_micro(max(0, held - cost)),
            unpaid=format_micro(unpaid),
            balance=format_micro(ledger.book.balances[agent.id]),
        )

    def _charge(self, agent: Agent, hold: Hold, cost_micro: int) -> tuple[int, int]:
        """Closes ``hold`` charging ``cost_micro`` for usage the upstream reported, and moves the
        agent's money windows and spend with it. Returns (charged, unpaid)."""
        ledger = self.ledger
        held = hold.amount_micro
        # The upstream has answered: its usage is owed. Above the hold (a prompt bound that fell
        # short) the agent pays the rest from its balance as far as it goes; never below zero.
        extra = max(0, cost_micro - held)
        paid_extra = min(extra, max(0, ledger.book.balance(agent.id)))
        sink = acc.llm_account(hold.model)
        ledger.post_hold(hold, sink, min(cost_micro, held), "llm")
        if paid_extra:
            ledger.book.post(agent.id, sink, paid_extra, "llm", f"{hold.id} above hold")
        assert hold.spend is not None
        agent.windows.advance(ledger.book.now_ns)
        if extra:
            if paid_extra:
                agent.windows.record(ledger.book.now_ns, paid_extra)
        else:
            agent.windows.adjust(hold.spend, cost_micro)
        charged = min(cost_micro, held) + paid_extra
        agent.spent_micro += charged
        return charged, extra - paid_extra

    def release(self, sender: str, cmd: c.GatewayRelease) -> msgspec.Struct | Refusal:
        hold = self._open_hold(sender, cmd.authorization_id, "gateway.release")
        if isinstance(hold, Refusal):
            return hold
        ledger = self.ledger
        held = hold.amount_micro
        ledger.void_hold(hold)
        if (rates := self.rates.get(hold.account)) is not None:
            rates.correct(hold.id, 0)
        return r.GatewayReleaseResult(
            authorization_id=hold.id,
            agent=hold.account,
            released=format_micro(held),
            balance=format_micro(ledger.book.balances[hold.account]),
        )

    # ------------------------------------------------------------------------------ quotas

    def quota(self, sender: str, cmd: c.GatewayQuota) -> msgspec.Struct | Refusal:
        """gateway.quota: as many of the requests and tokens asked as the agent's minute and
        money leave, held at their worst case; at least one request of ``min_tokens``."""
        metered = self._metered(sender, "gateway.quota", cmd.agent, cmd.model)
        if isinstance(metered, Refusal):
            return metered
        agent, model = metered
        ledger = self.ledger
        if (denied := _check_quota_bounds(cmd)) is not None:
            return denied
        now_ns = ledger.book.now_ns
        rates = self.rates.get(agent.id)
        grant = self._minute_grant(agent, model, rates, cmd, now_ns)
        if isinstance(grant, Refusal):
            return grant
        money = self._money_grant(agent, model, *grant, cmd.min_tokens)
        if isinstance(money, Refusal):
            return money
        requests, tokens, held = money
        admit_until_ns = now_ns + cmd.admit_s * NS_PER_S
        expires_at_ns = now_ns + cmd.timeout_s * NS_PER_S
        hold = ledger.hold(
            agent.id, held, HOLD_KIND, expires_at_ns=expires_at_ns, prefix=QUOTA_PREFIX
        )
        hold.model, hold.tokens, hold.requests = model, tokens, requests
        hold.spend = agent.windows.record(now_ns, held)
        if rates is None:
            rates = self.rates[agent.id] = Rates()
        # Stamped at the end of the admission period: the gateway may admit a request then.
        rates.record(admit_until_ns, tokens, hold.id, requests)
        price_in, price_out = self.prices_micro(model)
        return r.GatewayQuotaResult(
            quota_id=hold.id,
            agent=agent.id,
            model=model,
            requests=requests,
            tokens=tokens,
            held=format_micro(held),
            input_per_1k=format_micro(price_in),
            output_per_1k=format_micro(price_out),
            admit_until_ns=admit_until_ns,
            expires_at_ns=expires_at_ns,
        )

    def _minute_grant(
        self, agent: Agent, model: str, rates: Rates | None, cmd: c.GatewayQuota, now_ns: int
    ) -> tuple[int, int] | Refusal:
        """The (requests, tokens) the agent's allowlist and minute leave of those asked; refused
        as gateway.authorize would refuse one request of ``min_tokens`` if not even that fits."""
        if rates is None:
            return cmd.requests, cmd.tokens
        if (denied := self._check_model(agent, rates, model)) is not None:
            return denied
        rates.advance(now_ns)
        if (denied := self._check_requests(agent, rates, now_ns)) is not None:
            return denied
        if (denied := self._check_tokens(agent, rates, cmd.min_tokens, now_ns)) is not None:
            return denied
        requests, tokens = cmd.requests, cmd.tokens
        if rates.rpm is not None:
            requests = min(requests, rates.rpm - rates.requests)
        if rates.tpm is not None:
            tokens = min(tokens, rates.tpm - rates.tokens)
        return requests, tokens

    def _money_grant(
        self, agent: Agent, model: str, requests: int, tokens: int, min_tokens: int
    ) -> tuple[int, int, int] | Refusal:
        """(requests, tokens, held): the most of the grant the agent's money limits allow a hold
        for, at least one request of ``min_tokens``; else the money limit's refusal of that one
        request. A part of the grant has its tokens in proportion, from ``min_tokens`` for one
        request up to ``tokens`` for all."""
        ledger = self.ledger
        price_max = max(self.prices_micro(model))
        if price_max == 0:
            return refuse(ErrorCode.amount_must_be_positive, f"{model} is free: nothing to hold")
        now_ns = ledger.book.now_ns
        agent.windows.advance(now_ns)
        balance = ledger.book.balance(agent.id)

        def part(count: int) -> tuple[int, int, int]:
            extra = 0 if requests == 1 else (tokens - min_tokens) * (count - 1) // (requests - 1)
            part_tokens = min_tokens + extra
            return count, part_tokens, quota_hold_micro(price_max, count, part_tokens)

        def breach_of(count: int) -> LimitBreach | None:
            return check_spend(agent.limits, agent.windows, balance, part(count)[2], now_ns)

        if (breach := breach_of(1)) is not None:
            return ledger.limit_refusal(agent, breach)
        # The hold grows with the count, and a larger hold never passes where a smaller one
        # breaches: the largest count that passes is found by bisection.
        low, high = 1, requests
        while low < high:
            middle = (low + high + 1) // 2
            if breach_of(middle) is None:
                low = middle
            else:
                high = middle - 1
        return part(low)

    def quota_settle(self, sender: str, cmd: c.GatewayQuotaSettle) -> msgspec.Struct | Refusal:
        """gateway.quota_settle: each request charged its own usage's cost (rounded on its own,
        as gateway.settle would charge it), the rest of the hold and of the minute given back."""
        hold = self._open_hold(sender, cmd.quota_id, "gateway.quota_settle", quota=True)
        if isinstance(hold, Refusal):
            return hold
        if len(cmd.usage) > hold.requests:
            return refuse(
                ErrorCode.parameter_out_of_bounds,
                f"usage lists {len(cmd.usage)} requests but {hold.id} granted {hold.requests}",
                path="$.usage",
                limit=str(hold.requests),
                requested=str(len(cmd.usage)),
            )
        ledger = self.ledger
        agent = ledger.agents[hold.account]
        cost = sum(
            self.cost_micro(hold.model, used_in, used_out) for used_in, used_out in cmd.usage
        )
        held = hold.amount_micro
        charged, unpaid = self._charge(agent, hold, cost)
        prompt_tokens = sum(used_in for used_in, _ in cmd.usage)
        completion_tokens = sum(used_out for _, used_out in cmd.usage)
        if (rates := self.rates.get(agent.id)) is not None:
            rates.correct(hold.id, prompt_tokens + completion_tokens, len(cmd.usage))
            # The gateway settles a quota once it admits no more: every request it admitted
            # came before this command, so the minute may count them from now, not from the end
            # of the admission period.
            rates.restamp(hold.id, ledger.book.now_ns)
        return r.GatewayQuotaSettlementResult(
            quota_id=hold.id,
            agent=agent.id,
            model=hold.model,
            requests=len(cmd.usage),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=format_micro(charged),
            released=format_micro(max(0, held - cost)),
            unpaid=format_micro(unpaid),
            balance=format_micro(ledger.book.balances[agent.id]),
        )

    # ------------------------------------------------------------------------------ limits

    def set_limits(self, sender: str, cmd: c.SetLimits) -> msgspec.Struct | Refusal:
        """limits.set: the money limits (spending's) and the gateway's rates, checked whole
        before either changes."""
        spec = cmd.rates
        for model in () if spec is None or spec.models is None else spec.models:
            known = self.ledger.known_model(model)
            if isinstance(known, Refusal):
                return known
        result = self.spending.set_limits(sender, cmd)
        if isinstance(result, Refusal) or spec is None:
            return result
        assert isinstance(result, r.LimitsResult)
        rates = self.rates.setdefault(result.agent, Rates())
        if spec.rpm is not None:
            rates.rpm = spec.rpm or None
        if spec.tpm is not None:
            rates.tpm = spec.tpm or None
        if spec.models is not None:
            rates.models = tuple(sorted(set(spec.models)))
        return self.with_rates(result)

    def with_rates(self, result: r.LimitsResult) -> r.LimitsResult:
        """The limits with the agent's gateway rates, if it has any (omitted otherwise)."""
        rates = self.rates_view(result.agent)
        return result if rates is None else msgspec.structs.replace(result, rates=rates)

    def rates_view(self, agent_id: str) -> r.RatesView | None:
        rates = self.rates.get(agent_id)
        if rates is None or not rates.limited:
            return None
        rates.advance(self.ledger.book.now_ns)
        return r.RatesView(
            rpm=rates.rpm,
            tpm=rates.tpm,
            models=list(rates.models),
            requests_used=rates.requests,
            tokens_used=rates.tokens,
        )

    # ------------------------------------------------------------------------------ snapshot

    def snapshot(self) -> MeteringState:
        """The limits, and the requests inside the minute as of the exchange's clock: those
        older are left out whether or not a command has evicted them yet, so evicting them (a
        refused request does, on its way to the refusal) never changes the digest."""
        limits: dict[str, tuple[int | None, int | None, list[str]]] = {}
        minute: dict[str, list[tuple[int, int, str]]] = {}
        requests: dict[str, int] = {}
        cutoff = self.ledger.book.now_ns - MINUTE_NS
        for agent_id, rates in sorted(self.rates.items()):
            if rates.limited:
                limits[agent_id] = (rates.rpm, rates.tpm, list(rates.models))
            inside = [e for e in rates.entries if e.at_ns > cutoff]
            if inside:
                minute[agent_id] = [(e.at_ns, e.tokens, e.hold_id) for e in inside]
                requests.update((e.hold_id, e.requests) for e in inside if e.requests != 1)
        return MeteringState(
            gateway_rates=limits, gateway_minute=minute, gateway_minute_requests=requests
        )

    def restore(self, state: MeteringState) -> None:
        self.rates.clear()
        for agent_id, (rpm, tpm, models) in state.gateway_rates.items():
            self.rates[agent_id] = Rates(rpm=rpm, tpm=tpm, models=tuple(models))
        for agent_id, entries in state.gateway_minute.items():
            rates = self.rates.setdefault(agent_id, Rates())
            for at_ns, tokens, hold_id in entries:
                requests = state.gateway_minute_requests.get(hold_id, 1)
                rates.record(at_ns, tokens, hold_id, requests)
