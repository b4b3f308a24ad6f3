"""Earning rules of seed 1: commit rewards (contracts × keyword tiers) and closed-issue rewards.

Pure functions over an ``EconomyConfig``; the ledger posts what they compute.
"""

import re
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from exchange.core.config import Contract, EconomyConfig
from exchange.core.money import micro_of, scale


@dataclass(frozen=True, slots=True)
class _CompiledContract:
    contract: Contract
    pattern: re.Pattern[str]
    budget_micro: int


@dataclass(frozen=True, slots=True)
class _CompiledTier:
    multiplier: Decimal
    pattern: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class CommitQuote:
    contract: str
    project_multiplier: Decimal
    commit_bonus: Decimal
    reward_micro: int
    budget_micro: int


class RewardRules:
    """The compiled reward tables of one configuration."""

    def __init__(self, config: EconomyConfig) -> None:
        self._contracts = [
            _CompiledContract(c, re.compile(c.pattern), micro_of(c.budget))
            for c in config.contracts
        ]
        # Highest multiplier first: the highest tier whose keyword appears wins; tiers never stack.
        tiers = sorted(config.commit_bonuses, key=lambda t: t.multiplier, reverse=True)
        self._tiers = [
            _CompiledTier(
                t.multiplier,
                re.compile(
                    r"\b(?:" + "|".join(re.escape(k) for k in t.keywords) + r")\b", re.IGNORECASE
                ),
            )
            for t in tiers
            if t.keywords
        ]
        self._priorities = {p.upper(): micro_of(v) for p, v in config.issue_priorities.items()}
        self._issue_types = dict(config.issue_types)
        # Contract changes made by votes since the configuration was loaded (snapshotted).
        self.amendments: dict[str, tuple[str, int]] = {}

    def amend_contract(
        self, name: str, multiplier: Decimal | None, budget_micro: int | None
    ) -> bool:
        """Changes a contract's multiplier or budget (an approved vote); False if unknown."""
        for index, compiled in enumerate(self._contracts):
            if compiled.contract.name != name:
                continue
            contract = compiled.contract
            if multiplier is not None:
                contract = msgspec.structs.replace(contract, multiplier=multiplier)
            self._contracts[index] = _CompiledContract(
                contract,
                compiled.pattern,
                compiled.budget_micro if budget_micro is None else budget_micro,
            )
            self.amendments[name] = (str(contract.multiplier), self._contracts[index].budget_micro)
            return True
        return False

    def commit_bonus(self, message: str) -> Decimal:
        for tier in self._tiers:
            if tier.pattern.search(message):
                return tier.multiplier
        return Decimal(1)

    def contract_for(self, project: str) -> _CompiledContract | None:
        for compiled in self._contracts:
            if compiled.pattern.fullmatch(project):
                return compiled
        return None

    def quote_commit(self, base_rate_micro: int, project: str, message: str) -> CommitQuote | None:
        """The full reward before the contract's budget cap; None if no contract matches."""
        compiled = self.contract_for(project)
        if compiled is None:
            return None
        bonus = self.commit_bonus(message)
        multiplier = compiled.contract.multiplier
        return CommitQuote(
            contract=compiled.contract.name,
            project_multiplier=multiplier,
            commit_bonus=bonus,
            reward_micro=scale(base_rate_micro, multiplier * bonus),
            budget_micro=compiled.budget_micro,
        )

    def priority_micro(self, priority: str) -> int | None:
        return self._priorities.get(normalise_priority(priority))

    def issue_type_multiplier(self, issue_type: str) -> Decimal | None:
        return self._issue_types.get(issue_type.lower())

    def quote_issue(self, priority: str, issue_type: str) -> int | None:
        base = self.priority_micro(priority)
        multiplier = self.issue_type_multiplier(issue_type)
        if base is None or multiplier is None:
            return None
        return scale(base, multiplier)

    @property
    def priorities(self) -> list[str]:
        return sorted(self._priorities)

    @property
    def issue_types(self) -> list[str]:
        return sorted(self._issue_types)


def normalise_priority(priority: str) -> str:
    """``p2``, ``P2`` and ``2``... are not the same: a bare digit is beads' 0-4 scale (0 -> P1)."""
    text = priority.strip().upper()
    if text.isdigit():
        return f"P{int(text) + 1}"
    return text


def agent_of_author(author: str) -> str:
    """``claude@aygp-dr.ai`` -> ``claude``; an author without ``@`` is the agent id itself."""
    return author.split("@", 1)[0].strip().lower()
