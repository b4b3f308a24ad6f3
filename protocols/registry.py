"""Which Struct each verb carries, and one reusable Decoder per verb (built once, at import)."""

from typing import Final

import msgspec

from protocols import commands as c
from protocols import queries as q

COMMANDS: Final[dict[str, type[c.Command]]] = {
    "agent.register": c.RegisterAgent,
    "transfer": c.Transfer,
    "award": c.Award,
    "commit": c.Commit,
    "issue.close": c.IssueClose,
    "llm": c.LlmRequest,
    "llm.authorize": c.LlmAuthorize,
    "llm.settle": c.LlmSettle,
    "limits.set": c.SetLimits,
    "pool.create": c.PoolCreate,
    "pool.join": c.PoolJoin,
    "pool.contribute": c.PoolContribute,
    "pool.spend": c.PoolSpend,
    "pool.close": c.PoolClose,
    "tick": c.Tick,
}

QUERIES: Final[dict[str, type[q.Query]]] = {
    "balance": q.BalanceQuery,
    "history": q.HistoryQuery,
    "limits": q.LimitsQuery,
    "agents": q.AgentsQuery,
    "pool": q.PoolQuery,
    "pools": q.PoolsQuery,
    "status": q.StatusQuery,
}

VERB_OF: Final[dict[type[c.Command], str]] = {t: v for v, t in COMMANDS.items()}

COMMAND_DECODERS: Final[dict[str, msgspec.json.Decoder[c.Command]]] = {
    verb: msgspec.json.Decoder(t) for verb, t in COMMANDS.items()
}
QUERY_DECODERS: Final[dict[str, msgspec.json.Decoder[q.Query]]] = {
    verb: msgspec.json.Decoder(t) for verb, t in QUERIES.items()
}
