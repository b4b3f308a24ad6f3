"""Replies: the result envelope and the result object of every command and query.

Every request gets exactly one reply: ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": {"code": ..., "message": ..., ...details}}``. Amounts are decimal
strings of tokens. Result Structs skip unknown fields when decoded (tolerant readers).
"""

from typing import Any

import msgspec


class Result(msgspec.Struct, frozen=True, kw_only=True):
    pass


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A refusal. ``code`` is stable; ``message`` says what was expected, what came, what to do."""

    code: str
    message: str
    path: str | None = None
    limit: str | None = None
    used: str | None = None
    requested: str | None = None
    available: str | None = None
    retry_after_s: int | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    ok: bool
    result: Any = None
    error: ErrorBody | None = None


# omit_defaults: ``staked``, ``owed``, ``lent`` and ``defaults`` (docs/economy.md, Staking and
# Lending) appear only when not 0, so a balance that never staked or lent reads as before.
class BalanceResult(Result, frozen=True, kw_only=True, omit_defaults=True):
    agent: str
    balance: str
    earned: str
    spent: str
    held: str
    staked: str = "0"
    owed: str = "0"
    lent: str = "0"
    defaults: int = 0
    # Margin it posted as the writer of futures not yet ended, and the notional it holds in open
    # futures (docs/economy.md, Compute futures).
    in_futures: str = "0"


class TransferResult(Result, frozen=True, kw_only=True):
    sender: str
    recipient: str
    amount: str
    balance: str


class AwardResult(Result, frozen=True, kw_only=True):
    agent: str
    amount: str
    source: str
    balance: str


class CommitResult(Result, frozen=True, kw_only=True):
    agent: str
    reward: str
    contract: str
    project_multiplier: str
    commit_bonus: str
    budget_exhausted: bool
    budget_remaining: str
    balance: str


class IssueResult(Result, frozen=True, kw_only=True):
    agent: str
    issue_id: str
    reward: str
    priority: str
    issue_type: str
    balance: str


class LlmResult(Result, frozen=True, kw_only=True):
    agent: str
    model: str
    tokens: int
    cost: str
    balance: str


class AuthorizationResult(Result, frozen=True, kw_only=True):
    authorization_id: str
    agent: str
    model: str
    tokens: int
    held: str
    expires_at_ns: int


class SettlementResult(Result, frozen=True, kw_only=True):
    authorization_id: str
    agent: str
    model: str
    tokens: int
    cost: str
    released: str
    balance: str


class RatesView(Result, frozen=True, kw_only=True):
    """An agent's gateway limits: requests and tokens per minute (null: none), the models it may
    call (empty: all), and what the last minute used."""

    rpm: int | None
    tpm: int | None
    models: list[str]
    requests_used: int
    tokens_used: int


# omit_defaults: ``rates`` appears only for an agent that has gateway limits, so every reply
# made before they existed stays byte for byte the same (a replay compares replies).
class LimitsResult(Result, frozen=True, kw_only=True, omit_defaults=True):
    agent: str
    burst: str
    reserve: str
    hourly: str
    daily: str
    hourly_used: str
    daily_used: str
    hourly_remaining: str
    daily_remaining: str
    rates: RatesView | None = None


class GatewayAuthorizationResult(Result, frozen=True, kw_only=True):
    authorization_id: str
    agent: str
    model: str
    prompt_tokens: int
    max_tokens: int
    held: str
    expires_at_ns: int


class GatewayQuotaResult(Result, frozen=True, kw_only=True):
    """What was granted (``requests`` and ``tokens``, at most what was asked), the money
    ``held`` for it, and the model's prices per 1,000 prompt (``input_per_1k``) and completion
    (``output_per_1k``) tokens, with which the gateway costs each request it admits."""

    quota_id: str
    agent: str
    model: str
    requests: int
    tokens: int
    held: str
    input_per_1k: str
    output_per_1k: str
    admit_until_ns: int
    expires_at_ns: int


class GatewayQuotaSettlementResult(Result, frozen=True, kw_only=True):
    """``requests`` charged and their tokens; ``cost``, ``released`` and ``unpaid`` as for
    ``gateway.settle``, summed over them."""

    quota_id: str
    agent: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: str
    released: str
    unpaid: str
    balance: str


class GatewaySettlementResult(Result, frozen=True, kw_only=True):
    """``cost`` is what was charged; ``unpaid`` what the usage cost above the hold and the
    agent's balance (0 unless the prompt estimate was short and the agent ran dry)."""

    authorization_id: str
    agent: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: str
    released: str
    unpaid: str
    balance: str


class GatewayReleaseResult(Result, frozen=True, kw_only=True):
    authorization_id: str
    agent: str
    released: str
    balance: str


class AgentInfo(Result, frozen=True, kw_only=True):
    agent: str
    level: str
    base_rate: str
    primary_llm: str
    preferences: dict[str, str]
    role: str | None
    capabilities: list[str]
    balance: str
    performance: str


class AgentsResult(Result, frozen=True, kw_only=True):
    agents: list[AgentInfo]


class RegisterResult(Result, frozen=True, kw_only=True):
    agent: str
    balance: str


class HistoryEntry(Result, frozen=True, kw_only=True):
    seq: int
    at_ns: int
    kind: str
    counterparty: str
    amount: str
    balance: str
    memo: str


class HistoryResult(Result, frozen=True, kw_only=True):
    agent: str
    entries: list[HistoryEntry]


class PoolResult(Result, frozen=True, kw_only=True):
    pool_id: str
    name: str
    creator: str
    min_contribution: str
    target: str | None
    funded: bool
    closed: bool
    balance: str
    contributed: str
    spent: str
    members: list[str]
    contributions: dict[str, str]
    credits: dict[str, str]
    refunds: dict[str, str] = {}
    profit: str = "0"
    distributed: str = "0"


class PoolsResult(Result, frozen=True, kw_only=True):
    pools: list[PoolResult]


class TimerDropped(Result, frozen=True, kw_only=True):
    kind: str
    ref: str
    deadline_ns: int


class StatusResult(Result, frozen=True, kw_only=True):
    commands_applied: int
    now_ns: int
    digest: str
    agents: int
    accounts: int
    supply: str
    open_holds: int


class MetricOut(Result, frozen=True, kw_only=True):
    name: str
    value: float | None
    target: str
    warning: str
    status: str


class MetricsResult(Result, frozen=True, kw_only=True):
    """Swarm health: each metric with its target, warning level and status
    (``ok`` | ``watch`` | ``warning`` | ``no_data``), and the counts behind them."""

    metrics: list[MetricOut]
    inputs: dict[str, Any]


class ImportHistoryResult(Result, frozen=True, kw_only=True):
    """``import.history``'s reply: the postings it posted, those it skipped (between two accounts
    that both map to ``@import``), and the agents whose totals it added to."""

    posted: int
    skipped: int
    totals: int
