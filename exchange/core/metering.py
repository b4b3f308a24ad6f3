"""Metering (issue 18): the gateway's holds on behalf of agents, priced by prompt and completion
tokens, under per-agent requests and tokens per minute, a model allowlist and the money limits.

Sent only by the ``gateway`` identity (or ``admin``): an agent cannot settle a metered request
itself. Admission is decided here, in the single-writer core, atomically with the hold, so however
many requests arrive at once none is admitted past a window or the balance.

The minute window is deterministic from the command stamps: a request admitted at ``t`` counts
until ``t + 60 s`` (excluded). Its tokens count as the worst case (prompt bound + max_tokens) at
authorization, are corrected to the upstream's usage at settle and to 0 at release; an expired
hold keeps its worst case (the gateway never said what the upstream used).
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Final

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Agent, Hold, Ledger
from exchange.core.limits import check_spend
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


def metered_cost_micro(
    input_micro_per_1k: int, output_micro_per_1k: int, prompt_tokens: int, completion_tokens: int
) -> int:
    """(input price × prompt + output price × completion) / 1000, prices in micro-tokens per
    1,000 tokens, rounded half-even once, on the sum. Exact; monotone in both token counts, so
    the cost of actual usage never exceeds the cost of a larger worst case."""
    assert min(input_micro_per_1k, output_micro_per_1k, prompt_tokens, completion_tokens) >= 0
    total = input_micro_per_1k * prompt_tokens + output_micro_per_1k * completion_tokens
    return _div_half_even(total, 1000)


@dataclass(slots=True)
class MinuteEntry:
    at_ns: int
    tokens: int
    hold_id: str


@dataclass(slots=True)
class Rates:
    """An agent's gateway limits (None: no limit; empty models: every model) and its minute."""

    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] = ()
    entries: deque[MinuteEntry] = field(default_factory=deque)
    tokens: int = 0
    # The entries of open or settled requests still in the window, by hold id (for corrections).
    by_hold: dict[str, MinuteEntry] = field(default_factory=dict)

    def advance(self, now_ns: int) -> None:
        cutoff = now_ns - MINUTE_NS
        while self.entries and self.entries[0].at_ns <= cutoff:
            entry = self.entries.popleft()
            self.tokens -= entry.tokens
            self.by_hold.pop(entry.hold_id, None)
        assert self.tokens >= 0

    def record(self, now_ns: int, tokens: int, hold_id: str) -> None:
        entry = MinuteEntry(now_ns, tokens, hold_id)
        self.entries.append(entry)
        self.by_hold[hold_id] = entry
        self.tokens += tokens

    def correct(self, hold_id: str, tokens: int) -> None:
        """Sets a request's tokens (if it is still in the window) to what it actually used."""
        entry = self.by_hold.get(hold_id)
        if entry is not None:
            self.tokens += tokens - entry.tokens
            entry.tokens = tokens

    def wait_for_requests_s(self, now_ns: int, rpm: int) -> int:
        """Seconds until fewer than ``rpm`` requests are in the window (called when it is full)."""
        entry = self.entries[len(self.entries) - rpm]
        return _seconds(entry.at_ns + MINUTE_NS - now_ns)

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


class MeteringState(msgspec.Struct, frozen=True, kw_only=True):
    """Each agent with gateway limits or requests in the last minute: (rpm, tpm, models) and its
    minute's entries (at_ns, tokens, hold id), oldest first. Empty until the gateway is used."""

    gateway_rates: dict[str, tuple[int | None, int | None, list[str]]]
    gateway_minute: dict[str, list[tuple[int, int, str]]]


class Metering:
    def __init__(self, ledger: Ledger, spending: Spending) -> None:
        self.ledger = ledger
        self.spending = spending
        self.rates: dict[str, Rates] = {}

    # ------------------------------------------------------------------------------ prices

    def cost_micro(self, model: str, prompt_tokens: int, completion_tokens: int) -> int:
        ledger = self.ledger
        price_in = int(ledger.prices_micro[model])
        price_out = ledger.output_prices_micro.get(model, price_in)
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

    def authorize(self, sender: str, cmd: c.GatewayAuthorize) -> msgspec.Struct | Refusal:
        if (denied := self._require_gateway(sender, "gateway.authorize")) is not None:
            return denied
        ledger = self.ledger
        agent = ledger.acting_agent(cmd.agent)
        if isinstance(agent, Refusal):
            return agent
        model = ledger.known_model(cmd.model)
        if isinstance(model, Refusal):
            return model
        now_ns = ledger.book.now_ns
        rates = self.rates.get(agent.id)
        worst_tokens = cmd.prompt_tokens + cmd.max_tokens
        if rates is not None:
            if rates.models and model not in rates.models:
                return refuse(
                    ErrorCode.model_not_allowed,
                    f"{agent.id} may call {', '.join(rates.models)}, not {model}; ask the "
                    "operator to allow it (exchange limits set --models)",
                )
            rates.advance(now_ns)
            denied = self._check_rates(agent, rates, worst_tokens, now_ns)
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

    def _check_rates(
        self, agent: Agent, rates: Rates, worst_tokens: int, now_ns: int
    ) -> Refusal | None:
        if rates.rpm is not None and len(rates.entries) + 1 > rates.rpm:
            wait = rates.wait_for_requests_s(now_ns, rates.rpm)
            return refuse(
                ErrorCode.rate_limited_rpm,
                f"{agent.id} made {len(rates.entries)} of {rates.rpm} requests in the last "
                f"minute; retry in {wait} s",
                limit=str(rates.rpm),
                used=str(len(rates.entries)),
                requested="1",
                retry_after_s=wait,
            )
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

    def _open_hold(self, sender: str, authorization_id: str, verb: str) -> Hold | Refusal:
        if (denied := self._require_gateway(sender, verb)) is not None:
            return denied
        hold = self.ledger.holds.get(authorization_id)
        if hold is None or hold.kind != HOLD_KIND:
            return refuse(
                ErrorCode.unknown_authorization,
                f"no gateway authorization {authorization_id!r}; use the id gateway.authorize "
                "returned "
                + kept_note(self.ledger.config.closed_authorizations_kept, "closed ones"),
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
        # The upstream has answered: its usage is owed. Above the hold (a prompt bound that fell
        # short) the agent pays the rest from its balance as far as it goes; never below zero.
        extra = max(0, cost - held)
        paid_extra = min(extra, max(0, ledger.book.balance(agent.id)))
        sink = acc.llm_account(hold.model)
        ledger.post_hold(hold, sink, min(cost, held), "llm")
        if paid_extra:
            ledger.book.post(agent.id, sink, paid_extra, "llm", f"{hold.id} above hold")
        assert hold.spend is not None
        agent.windows.advance(ledger.book.now_ns)
        if extra:
            if paid_extra:
                agent.windows.record(ledger.book.now_ns, paid_extra)
        else:
            agent.windows.adjust(hold.spend, cost)
        charged = min(cost, held) + paid_extra
        agent.spent_micro += charged
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
            unpaid=format_micro(extra - paid_extra),
            balance=format_micro(ledger.book.balances[agent.id]),
        )

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
            requests_used=len(rates.entries),
            tokens_used=rates.tokens,
        )

    # ------------------------------------------------------------------------------ snapshot

    def snapshot(self) -> MeteringState:
        """The limits, and the requests inside the minute as of the exchange's clock: those
        older are left out whether or not a command has evicted them yet, so evicting them (a
        refused request does, on its way to the refusal) never changes the digest."""
        limits: dict[str, tuple[int | None, int | None, list[str]]] = {}
        minute: dict[str, list[tuple[int, int, str]]] = {}
        cutoff = self.ledger.book.now_ns - MINUTE_NS
        for agent_id, rates in sorted(self.rates.items()):
            if rates.limited:
                limits[agent_id] = (rates.rpm, rates.tpm, list(rates.models))
            inside = [(e.at_ns, e.tokens, e.hold_id) for e in rates.entries if e.at_ns > cutoff]
            if inside:
                minute[agent_id] = inside
        return MeteringState(gateway_rates=limits, gateway_minute=minute)

    def restore(self, state: MeteringState) -> None:
        self.rates.clear()
        for agent_id, (rpm, tpm, models) in state.gateway_rates.items():
            self.rates[agent_id] = Rates(rpm=rpm, tpm=tpm, models=tuple(models))
        for agent_id, entries in state.gateway_minute.items():
            rates = self.rates.setdefault(agent_id, Rates())
            for at_ns, tokens, hold_id in entries:
                rates.record(at_ns, tokens, hold_id)
