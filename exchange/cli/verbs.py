"""The CLI verbs that talk to a running exchange: one table row per verb, nothing else.

Owns: for each verb, its arguments and the request it makes: a query on ``exchange.query.<verb>``
or a command on ``exchange.cmd.<sender>.<verb>`` (the CLI acts for an agent by publishing under
that agent's id, with admin credentials; admin may publish anywhere). Must not: interpret a
reply (the exchange decides; ``main`` prints what it answered), or parse amounts (they travel as
the decimal strings typed, and the exchange refuses a bad one with a clear code).
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocols.ids import ADMIN


@dataclass(frozen=True, slots=True)
class QueryRequest:
    verb: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandRequest:
    sender: str
    verb: str
    body: dict[str, Any]


Request = QueryRequest | CommandRequest

_QUERY_WORDS = frozenset({"status", "balance", "history", "limits", "agents"})


@dataclass(frozen=True, slots=True)
class NetVerb:
    """``words`` is the command line path (``("pool", "create")``)."""

    words: tuple[str, ...]
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    request: Callable[[argparse.Namespace], Request]

    @property
    def mutating(self) -> bool:
        """Whether the verb sends a command (it then takes ``--request-id``)."""
        return self.words[0] not in _QUERY_WORDS and self.words[-1] != "show"


def _positional(*names: str, **typed: type) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        for name in names:
            parser.add_argument(name, type=typed.get(name, str))

    return add


def _with(
    base: Callable[[argparse.ArgumentParser], None], *options: tuple[str, dict[str, Any]]
) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        base(parser)
        for flag, kwargs in options:
            parser.add_argument(flag, **kwargs)

    return add


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}


NET_VERBS: tuple[NetVerb, ...] = (
    NetVerb(
        ("status",),
        "the exchange's counters and state digest",
        _positional(),
        lambda a: QueryRequest("status", {}),
    ),
    NetVerb(
        ("balance",),
        "an agent's balance, earnings, spending and holds",
        _positional("agent"),
        lambda a: QueryRequest("balance", {"agent": a.agent}),
    ),
    NetVerb(
        ("history",),
        "an agent's latest postings",
        _with(_positional("agent"), ("--limit", {"type": int, "default": 50})),
        lambda a: QueryRequest("history", {"agent": a.agent, "limit": a.limit}),
    ),
    NetVerb(
        ("transfer",),
        "move tokens from one agent to another",
        _with(_positional("sender", "to", "amount"), ("--memo", {"default": ""})),
        lambda a: CommandRequest(
            a.sender, "transfer", {"to": a.to, "amount": a.amount, "memo": a.memo}
        ),
    ),
    NetVerb(
        ("award",),
        "mint tokens to an agent for work done elsewhere (admin)",
        _positional("agent", "amount", "source", "description"),
        lambda a: CommandRequest(
            ADMIN,
            "award",
            {
                "agent": a.agent,
                "amount": a.amount,
                "source": a.source,
                "description": a.description,
            },
        ),
    ),
    NetVerb(
        ("commit",),
        "reward a git commit (admin)",
        _with(_positional("author", "project", "message"), ("--sha", {"default": None})),
        lambda a: CommandRequest(
            ADMIN,
            "commit",
            _drop_none(
                {"author": a.author, "project": a.project, "message": a.message, "sha": a.sha}
            ),
        ),
    ),
    NetVerb(
        ("issue", "close"),
        "reward a closed issue, once per issue id (admin)",
        _with(
            _positional("issue_id"),
            ("--agent", {"required": True}),
            ("--priority", {"required": True}),
            ("--type", {"required": True, "dest": "issue_type"}),
        ),
        lambda a: CommandRequest(
            ADMIN,
            "issue.close",
            {
                "issue_id": a.issue_id,
                "agent": a.agent,
                "priority": a.priority,
                "issue_type": a.issue_type,
            },
        ),
    ),
    NetVerb(
        ("llm",),
        "pay for inference: TOKENS inference tokens for TASK_TYPE",
        _with(_positional("agent", "task_type", "tokens", tokens=int), ("--model", {})),
        lambda a: CommandRequest(
            a.agent,
            "llm",
            _drop_none({"task_type": a.task_type, "tokens": a.tokens, "model": a.model}),
        ),
    ),
    NetVerb(
        ("limits",),
        "an agent's rate limits and what it has used",
        _positional("agent"),
        lambda a: QueryRequest("limits", {"agent": a.agent}),
    ),
    NetVerb(
        ("agents",),
        "the registered agents",
        _with(_positional(), ("--role", {})),
        lambda a: QueryRequest("agents", _drop_none({"role": a.role})),
    ),
    NetVerb(
        ("pool", "create"),
        "open a team pool; CREATOR is its first member",
        _with(_positional("name", "creator", "min_contribution"), ("--target", {})),
        lambda a: CommandRequest(
            a.creator,
            "pool.create",
            _drop_none(
                {"name": a.name, "min_contribution": a.min_contribution, "target": a.target}
            ),
        ),
    ),
    NetVerb(
        ("pool", "join"),
        "join a pool",
        _positional("pool_id", "agent"),
        lambda a: CommandRequest(a.agent, "pool.join", {"pool_id": a.pool_id}),
    ),
    NetVerb(
        ("pool", "contribute"),
        "put tokens into a pool",
        _positional("pool_id", "agent", "amount"),
        lambda a: CommandRequest(
            a.agent, "pool.contribute", {"pool_id": a.pool_id, "amount": a.amount}
        ),
    ),
    NetVerb(
        ("pool", "spend"),
        "pay for inference from a pool (as admin, or --agent a member)",
        _with(
            _positional("pool_id", "model", "tokens", "description", tokens=int),
            ("--agent", {"default": ADMIN}),
        ),
        lambda a: CommandRequest(
            a.agent,
            "pool.spend",
            {
                "pool_id": a.pool_id,
                "model": a.model,
                "tokens": a.tokens,
                "description": a.description,
            },
        ),
    ),
    NetVerb(
        ("pool", "close"),
        "close a pool and refund what is left pro rata (as admin, or --agent its creator)",
        _with(_positional("pool_id"), ("--agent", {"default": ADMIN})),
        lambda a: CommandRequest(a.agent, "pool.close", {"pool_id": a.pool_id}),
    ),
    NetVerb(
        ("pool", "show"),
        "a pool's members, contributions and credits",
        _positional("pool_id"),
        lambda a: QueryRequest("pool", {"pool_id": a.pool_id}),
    ),
)
