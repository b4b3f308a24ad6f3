"""Queries on ``exchange.query.<verb>``: read-only, answered from memory, never journaled.

Queries skip unknown fields; an empty body is the same as ``{}``.
"""

from typing import Annotated

import msgspec

from protocols.ids import AgentRef, Name, Token

HistoryLimit = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class Query(msgspec.Struct, frozen=True, kw_only=True):
    pass


class BalanceQuery(Query, frozen=True, kw_only=True):
    agent: AgentRef


class HistoryQuery(Query, frozen=True, kw_only=True):
    agent: AgentRef
    limit: HistoryLimit = 50


class LimitsQuery(Query, frozen=True, kw_only=True):
    agent: AgentRef


class AgentsQuery(Query, frozen=True, kw_only=True):
    role: Token | None = None


class PoolQuery(Query, frozen=True, kw_only=True):
    pool_id: Name


class PoolsQuery(Query, frozen=True, kw_only=True):
    pass


class StatusQuery(Query, frozen=True, kw_only=True):
    pass


class SignalsQuery(Query, frozen=True, kw_only=True):
    signal_type: Token | None = None
    limit: HistoryLimit = 20


class PheromonesQuery(Query, frozen=True, kw_only=True):
    limit: HistoryLimit = 10


class TaskQuery(Query, frozen=True, kw_only=True):
    task_id: Name


class TasksQuery(Query, frozen=True, kw_only=True):
    state: Token | None = None
    limit: HistoryLimit = 50


class EscrowQuery(Query, frozen=True, kw_only=True):
    escrow_id: Name


class ProposalQuery(Query, frozen=True, kw_only=True):
    proposal_id: Name


class MetricsQuery(Query, frozen=True, kw_only=True):
    pass
