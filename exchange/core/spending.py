"""Spending (seed 1): transfers under the reserve, inference paid at once or through
authorize/settle holds, under burst, reserve and sliding hourly/daily limits; limit changes.

Handlers installed into a ``Ledger``; the window arithmetic lives in ``limits.py``.
"""

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Agent, Ledger
from exchange.core.limits import LimitBreach, check_spend
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import kept_note
from protocols import commands as c
from protocols import results as r
from protocols.amounts import format_amount, format_micro, to_micro
from protocols.errors import ErrorCode
from protocols.ids import ADMIN, SYSTEM_SENDERS
from protocols.units import NS_PER_S


class Spending:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def transfer(self, sender: str, cmd: c.Transfer) -> bytes | Refusal:
        # The hot path: the common case is checked inline and each refusal is made by the
        # general lookup that explains it (same checks, same order).
        agents = self.ledger.agents
        source = agents.get(sender)
        if source is None or sender in SYSTEM_SENDERS:
            return self._refusal(self.ledger.acting_agent(sender))
        target = agents.get(cmd.to)
        if target is None:
            return self._refusal(self.ledger.agent(cmd.to))
        if target is source:
            return refuse(ErrorCode.not_authorized, "a transfer needs two different agents")
        amount = to_micro(cmd.amount)
        if type(amount) is not int or amount <= 0:
            return self._refusal(self.ledger.amount(cmd.amount, "amount"))
        book = self.ledger.book
        balance_after = book.balances[sender] - amount
        if balance_after < source.limits.reserve_micro or balance_after < 0:
            denied = self.ledger.check_debit(source, amount)
            assert denied is not None
            return denied
        book.post(sender, cmd.to, amount, "transfer", cmd.memo)
        # The reply r.TransferResult encodes to, from a template: agent ids are registered only
        # if they match AGENT_ID_PATTERN and amounts are digits and a dot, so nothing needs
        # escaping (a unit test holds the template to the Struct's encoding).
        return (
            f'{{"ok":true,"result":{{"sender":"{sender}","recipient":"{cmd.to}",'
            f'"amount":"{format_amount(cmd.amount, amount)}",'
            f'"balance":"{format_micro(balance_after)}"}}}}'
        ).encode()

    @staticmethod
    def _refusal(value: "Agent | int | Refusal") -> Refusal:
        """The refusal a general check returned where the fast path already knew one was due."""
        assert isinstance(value, Refusal)
        return value

    def _check_inference(
        self, sender: str, task_type: str, tokens: int, model: str | None
    ) -> tuple[Agent, str, int] | Refusal:
        agent = self.ledger.acting_agent(sender)
        if isinstance(agent, Refusal):
            return agent
        if self.ledger.config.gateway.required:
            return refuse(
                ErrorCode.gateway_required,
                "this exchange charges inference only through its metering gateway: send the "
                "OpenAI-compatible requests to the gateway with your key (an operator issues it "
                "with `exchange gateway key AGENT`); docs/gateway.md",
            )
        chosen = self.ledger.model_for(agent, task_type, model)
        if isinstance(chosen, Refusal):
            return chosen
        cost = self.ledger.cost_micro(chosen, tokens)
        agent.windows.advance(self.ledger.book.now_ns)
        breach = check_spend(
            agent.limits,
            agent.windows,
            self.ledger.book.balance(agent.id),
            cost,
            self.ledger.book.now_ns,
        )
        if breach is not None:
            return self.ledger.limit_refusal(agent, breach)
        return agent, chosen, cost

    def llm(self, sender: str, cmd: c.LlmRequest) -> msgspec.Struct | Refusal:
        checked = self._check_inference(sender, cmd.task_type, cmd.tokens, cmd.model)
        if isinstance(checked, Refusal):
            return checked
        agent, model, cost = checked
        if cost:
            self.ledger.book.post(agent.id, acc.llm_account(model), cost, "llm", cmd.task_type)
            agent.windows.record(self.ledger.book.now_ns, cost)
            agent.spent_micro += cost
        return r.LlmResult(
            agent=agent.id,
            model=model,
            tokens=cmd.tokens,
            cost=format_micro(cost),
            balance=format_micro(self.ledger.book.balances[agent.id]),
        )

    def llm_authorize(self, sender: str, cmd: c.LlmAuthorize) -> msgspec.Struct | Refusal:
        checked = self._check_inference(sender, cmd.task_type, cmd.tokens, cmd.model)
        if isinstance(checked, Refusal):
            return checked
        agent, model, cost = checked
        if cost == 0:
            return refuse(ErrorCode.amount_must_be_positive, f"{model} is free: nothing to hold")
        expires_at_ns = self.ledger.book.now_ns + cmd.timeout_s * NS_PER_S
        hold = self.ledger.hold(agent.id, cost, "llm", expires_at_ns=expires_at_ns, prefix="auth")
        hold.model, hold.tokens = model, cmd.tokens
        hold.spend = agent.windows.record(self.ledger.book.now_ns, cost)
        return r.AuthorizationResult(
            authorization_id=hold.id,
            agent=agent.id,
            model=model,
            tokens=cmd.tokens,
            held=format_micro(cost),
            expires_at_ns=expires_at_ns,
        )

    def llm_settle(self, sender: str, cmd: c.LlmSettle) -> msgspec.Struct | Refusal:
        hold = self.ledger.holds.get(cmd.authorization_id)
        if hold is None or hold.kind != "llm" or (hold.account != sender and sender != ADMIN):
            return refuse(
                ErrorCode.unknown_authorization,
                f"{sender!r} has no authorization {cmd.authorization_id!r}; use the id that "
                "llm.authorize returned "
                + kept_note(self.ledger.config.closed_authorizations_kept, "closed ones"),
            )
        if hold.state != "open":
            return refuse(
                ErrorCode.authorization_closed,
                f"authorization {hold.id} is already {hold.state}; authorize again",
            )
        agent = self.ledger.agents[hold.account]
        cost = self.ledger.cost_micro(hold.model, cmd.tokens)
        extra = cost - hold.amount_micro
        if extra > 0:
            agent.windows.advance(self.ledger.book.now_ns)
            if cost > agent.limits.burst_micro:
                breach: LimitBreach | None = LimitBreach(
                    ErrorCode.burst_limit_exceeded, agent.limits.burst_micro, 0, cost
                )
            else:
                breach = check_spend(
                    agent.limits,
                    agent.windows,
                    self.ledger.book.balance(agent.id),
                    extra,
                    self.ledger.book.now_ns,
                )
            if breach is not None:
                return self.ledger.limit_refusal(agent, breach)
        sink = acc.llm_account(hold.model)
        self.ledger.post_hold(hold, sink, min(cost, hold.amount_micro), "llm")
        if extra > 0:
            self.ledger.book.post(agent.id, sink, extra, "llm", f"{hold.id} above hold")
        assert hold.spend is not None
        if extra > 0:
            # The extra is spent now: it must count in the windows from now on, even when the
            # hold's own spend (counted at authorization) has already left them.
            agent.windows.record(self.ledger.book.now_ns, extra)
        else:
            agent.windows.adjust(hold.spend, cost)
        agent.spent_micro += cost
        return r.SettlementResult(
            authorization_id=hold.id,
            agent=agent.id,
            model=hold.model,
            tokens=cmd.tokens,
            cost=format_micro(cost),
            released=format_micro(max(0, -extra)),
            balance=format_micro(self.ledger.book.balances[agent.id]),
        )

    def set_limits(self, sender: str, cmd: c.SetLimits) -> msgspec.Struct | Refusal:
        if (denied := self.ledger.require_admin(sender, "limits.set")) is not None:
            return denied
        agent = self.ledger.agent(cmd.agent)
        if isinstance(agent, Refusal):
            return agent
        limits = self.ledger.limits_of(cmd.limits, agent.limits)
        if isinstance(limits, Refusal):
            return limits
        agent.limits = limits
        return self.ledger.limits_result(agent)
