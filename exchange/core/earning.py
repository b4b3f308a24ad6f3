"""Earning (seed 1): agent registration with its opening balance, awards, commit rewards under
contract budgets (one reward per SHA), and closed-issue rewards (once per issue id).

Handlers installed into a ``Ledger``; the reward arithmetic lives in ``rewards.py``.
"""

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Agent, Ledger
from exchange.core.limits import SpendWindows
from exchange.core.money import micro_of
from exchange.core.refusals import Refusal, refuse
from exchange.core.rewards import agent_of_author, normalise_priority
from protocols import commands as c
from protocols import results as r
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.ids import GATEWAY, SYSTEM_SENDERS, is_agent_id


class Earning:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def register(self, sender: str, cmd: c.RegisterAgent) -> msgspec.Struct | Refusal:
        if (denied := self.ledger.require_admin(sender, "agent.register")) is not None:
            return denied
        if not is_agent_id(cmd.agent):
            return refuse(
                ErrorCode.invalid_agent_id,
                f"agent id {cmd.agent!r} is not 1-64 characters of a-z, 0-9, - and _ (it appears "
                "in NATS subjects, so no dots, spaces or wildcards)",
                path="$.agent",
            )
        if cmd.agent in SYSTEM_SENDERS or cmd.agent == GATEWAY:
            # An agent named "admin" could never act (the sender would be the operator), and
            # one named "gateway" would share the metering gateway's login.
            return refuse(
                ErrorCode.invalid_agent_id,
                f"agent id {cmd.agent!r} is reserved for the exchange itself; choose another id",
                path="$.agent",
            )
        if cmd.agent in self.ledger.agents:
            return refuse(ErrorCode.agent_exists, f"agent {cmd.agent!r} is already registered")
        for model in (cmd.primary_llm, *cmd.preferences.values()):
            if isinstance(unknown := self.ledger.known_model(model), Refusal):
                return unknown
        base_rate = self.ledger.amount(cmd.base_rate, "base_rate")
        if isinstance(base_rate, Refusal):
            return base_rate
        limits = self.ledger.limits_of(cmd.limits, self.ledger.default_limits())
        if isinstance(limits, Refusal):
            return limits
        lc = self.ledger.config.limits
        agent = Agent(
            id=cmd.agent,
            level=cmd.level,
            base_rate_micro=base_rate,
            primary_llm=cmd.primary_llm,
            preferences=dict(cmd.preferences),
            role=cmd.role,
            capabilities=tuple(cmd.capabilities),
            limits=limits,
            windows=SpendWindows.new(lc.hourly_window_s, lc.daily_window_s),
        )
        self.ledger.agents[agent.id] = agent
        self.ledger.book.open(agent.id)
        opening = micro_of(self.ledger.config.opening_balance)
        if opening:
            self.ledger.book.post(acc.MINT, agent.id, opening, "opening", "opening balance")
        return r.RegisterResult(
            agent=agent.id, balance=format_micro(self.ledger.book.balance(agent.id))
        )

    def award(self, sender: str, cmd: c.Award) -> msgspec.Struct | Refusal:
        if (denied := self.ledger.require_admin(sender, "award")) is not None:
            return denied
        agent = self.ledger.agent(cmd.agent)
        if isinstance(agent, Refusal):
            return agent
        amount = self.ledger.amount(cmd.amount, "amount")
        if isinstance(amount, Refusal):
            return amount
        self.ledger.mint(agent, amount, "award", f"{cmd.source}: {cmd.description}")
        return r.AwardResult(
            agent=agent.id,
            amount=format_micro(amount),
            source=cmd.source,
            balance=format_micro(self.ledger.book.balances[agent.id]),
        )

    def commit(self, sender: str, cmd: c.Commit) -> msgspec.Struct | Refusal:
        if (denied := self.ledger.require_admin(sender, "commit")) is not None:
            return denied
        agent = self.ledger.agent(agent_of_author(cmd.author))
        if isinstance(agent, Refusal):
            return agent
        if cmd.sha is not None and cmd.sha in self.ledger.rewarded_shas:
            return refuse(ErrorCode.already_rewarded, f"commit {cmd.sha} was already rewarded")
        quote = self.ledger.rules.quote_commit(agent.base_rate_micro, cmd.project, cmd.message)
        if quote is None:
            return refuse(
                ErrorCode.no_contract,
                f"no contract matches project {cmd.project!r}; add a contract (or a default)",
            )
        minted = self.ledger.contract_minted_micro.get(quote.contract, 0)
        remaining = quote.budget_micro - minted
        if remaining <= 0:
            return refuse(
                ErrorCode.contract_budget_exhausted,
                f"contract {quote.contract!r} has minted its whole budget of "
                f"{format_micro(quote.budget_micro)} tokens; raise the budget to reward more work",
            )
        reward = min(quote.reward_micro, remaining)
        if reward <= 0:
            return _nothing_to_reward(
                f"{agent.id}'s base rate × contract {quote.contract!r}'s multiplier "
                f"{quote.project_multiplier} × bonus {quote.commit_bonus}"
            )
        if cmd.sha is not None:
            self.ledger.rewarded_shas.add(cmd.sha)
        self.ledger.contract_minted_micro[quote.contract] = minted + reward
        self.ledger.mint(agent, reward, "reward.commit", f"{cmd.project}: {cmd.message[:120]}")
        return r.CommitResult(
            agent=agent.id,
            reward=format_micro(reward),
            contract=quote.contract,
            project_multiplier=str(quote.project_multiplier),
            commit_bonus=str(quote.commit_bonus),
            budget_exhausted=quote.reward_micro > remaining,
            budget_remaining=format_micro(remaining - reward),
            balance=format_micro(self.ledger.book.balances[agent.id]),
        )

    def issue_close(self, sender: str, cmd: c.IssueClose) -> msgspec.Struct | Refusal:
        if (denied := self.ledger.require_admin(sender, "issue.close")) is not None:
            return denied
        agent = self.ledger.agent(cmd.agent)
        if isinstance(agent, Refusal):
            return agent
        if cmd.issue_id in self.ledger.rewarded_issues:
            return refuse(
                ErrorCode.already_rewarded, f"issue {cmd.issue_id!r} was already rewarded"
            )
        if self.ledger.rules.priority_micro(cmd.priority) is None:
            return refuse(
                ErrorCode.unknown_priority,
                f"priority {cmd.priority!r} is not one of "
                f"{', '.join(self.ledger.rules.priorities)} (or beads' 0-4)",
                path="$.priority",
            )
        reward = self.ledger.rules.quote_issue(cmd.priority, cmd.issue_type)
        if reward is None:
            return refuse(
                ErrorCode.unknown_issue_type,
                f"issue type {cmd.issue_type!r} is not one of "
                f"{', '.join(self.ledger.rules.issue_types)}",
                path="$.issue_type",
            )
        if reward <= 0:
            return _nothing_to_reward(f"issue type {cmd.issue_type!r} at {cmd.priority}")
        self.ledger.rewarded_issues.add(cmd.issue_id)
        self.ledger.mint(agent, reward, "reward.issue", cmd.issue_id)
        return r.IssueResult(
            agent=agent.id,
            issue_id=cmd.issue_id,
            reward=format_micro(reward),
            priority=normalise_priority(cmd.priority),
            issue_type=cmd.issue_type.lower(),
            balance=format_micro(self.ledger.book.balances[agent.id]),
        )


def _nothing_to_reward(what: str) -> Refusal:
    # A posting moves a positive amount: a reward of 0 is refused here, never posted (a contract
    # or issue multiplier that small is a configuration to fix, not a reason to stop the ledger).
    return refuse(
        ErrorCode.reward_rounds_to_zero,
        f"{what} rounds to 0 micro-tokens; nothing was rewarded. Raise the multiplier or base "
        "rate (the config, or a contract vote)",
    )
