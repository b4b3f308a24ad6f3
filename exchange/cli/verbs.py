"""The CLI verbs that talk to a running exchange: one table row per verb, nothing else.

Owns: for each verb, its arguments and the request it makes: a query on ``exchange.query.<verb>``
or a command on ``exchange.cmd.<sender>.<verb>``. A command's sender is the agent it names, or
``None``: whoever acts (admin, or the user of ``--creds FILE``; ``main`` decides, and refuses a
named sender that is not the ``--creds`` user). With admin credentials the CLI acts for any agent
by publishing under that agent's id (admin may publish anywhere). Must not: interpret a
reply (the exchange decides; ``main`` prints what it answered), or parse amounts (they travel as
the decimal strings typed, and the exchange refuses a bad one with a clear code).
"""

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class QueryRequest:
    verb: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """``sender=None``: the acting user (admin, or the ``--creds`` user)."""

    sender: str | None
    verb: str
    body: dict[str, Any]


Request = QueryRequest | CommandRequest

_QUERY_WORDS = frozenset(
    {
        "status",
        "balance",
        "history",
        "agents",
        "tasks",
        "signals",
        "pheromones",
        "metrics",
        "shapley",
        "stakes",
        "loans",
        "futures",
    }
)


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


def _kept_list(query: str, help: str) -> NetVerb:
    """A query verb listing what is kept (``loans``, ``futures``), with ``--agent`` and
    ``--limit``."""
    return NetVerb(
        (query,),
        help,
        _with(
            _positional(),
            ("--agent", {"default": None}),
            ("--limit", {"type": int, "default": 100}),
        ),
        lambda a: QueryRequest(query, _drop_none({"agent": a.agent, "limit": a.limit})),
    )


_LIMIT_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = tuple(
    (f"--{name}", {"default": None, "metavar": "TOKENS", "help": text})
    for name, text in (
        ("burst", "most one inference payment may cost"),
        ("reserve", "balance a spend must leave"),
        ("hourly", "spending per hour"),
        ("daily", "spending per day"),
    )
)


def _limits(a: argparse.Namespace, *, required: bool = False) -> dict[str, Any]:
    """The limits options given. ValueError if ``required`` and none is (a no-op change)."""
    given = _drop_none(
        {"burst": a.burst, "reserve": a.reserve, "hourly": a.hourly, "daily": a.daily}
    )
    if required and not given:
        raise ValueError(
            "limits set changes nothing without --burst, --reserve, --hourly, --daily, --rpm, "
            "--tpm or --models"
        )
    return given


# The metering gateway's limits (docs/gateway.md): requests and tokens per minute, models.
_RATE_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--rpm", {"type": int, "default": None, "help": "gateway requests per minute (0: none)"}),
    ("--tpm", {"type": int, "default": None, "help": "gateway tokens per minute (0: none)"}),
    (
        "--models",
        {"default": None, "help": "models the gateway lets it call, comma-separated ('': all)"},
    ),
)


def _limits_set(a: argparse.Namespace) -> dict[str, Any]:
    """limits.set's body: the money limits and the gateway's rates given (at least one)."""
    models = None if a.models is None else [m for m in a.models.split(",") if m]
    rates = _drop_none({"rpm": a.rpm, "tpm": a.tpm, "models": models})
    body: dict[str, Any] = {"agent": a.agent, "limits": _limits(a, required=not rates)}
    if rates:
        body["rates"] = rates
    return body


def _preferences(pairs: list[str]) -> dict[str, str]:
    """``--prefer TASK_TYPE=MODEL`` options (the exchange refuses a model it does not know)."""
    preferences = {}
    for pair in pairs:
        task_type, equals, model = pair.partition("=")
        if not (task_type and equals and model):
            raise ValueError(f"--prefer takes TASK_TYPE=MODEL, got {pair!r}")
        preferences[task_type] = model
    return preferences


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
            None,
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
            None,
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
            None,
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
        ("limits", "show"),
        "an agent's rate limits and what it has used (also: limits AGENT)",
        _positional("agent"),
        lambda a: QueryRequest("limits", {"agent": a.agent}),
    ),
    NetVerb(
        ("limits", "set"),
        "change an agent's rate limits, in tokens, and its gateway limits (admin); the others "
        "are kept",
        _with(_positional("agent"), *_LIMIT_OPTIONS, *_RATE_OPTIONS),
        lambda a: CommandRequest(None, "limits.set", _limits_set(a)),
    ),
    NetVerb(
        ("agent", "register"),
        "register an agent and mint its opening balance (admin)",
        _with(
            _positional("agent"),
            ("--role", {"default": None, "help": "its role (exchange agents --role R finds it)"}),
            ("--base-rate", {"default": "100", "metavar": "TOKENS", "help": "default %(default)s"}),
            (
                "--llm",
                {
                    "default": "llama3.2",
                    "dest": "primary_llm",
                    "metavar": "MODEL",
                    "help": "default %(default)s",
                },
            ),
            ("--level", {"default": "L5", "help": "default %(default)s"}),
            ("--capabilities", {"default": None, "metavar": "LIST", "help": "comma-separated"}),
            (
                "--prefer",
                {
                    "action": "append",
                    "default": [],
                    "metavar": "TASK_TYPE=MODEL",
                    "help": "a model for one task type (repeatable)",
                },
            ),
            *_LIMIT_OPTIONS,
        ),
        lambda a: CommandRequest(
            None,
            "agent.register",
            _drop_none(
                {
                    "agent": a.agent,
                    "base_rate": a.base_rate,
                    "primary_llm": a.primary_llm,
                    "level": a.level,
                    "preferences": _preferences(a.prefer),
                    "role": a.role,
                    "capabilities": _split(a.capabilities),
                    "limits": _limits(a) or None,
                }
            ),
        ),
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
            ("--agent", {"default": None}),
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
        _with(_positional("pool_id"), ("--agent", {"default": None})),
        lambda a: CommandRequest(a.agent, "pool.close", {"pool_id": a.pool_id}),
    ),
    NetVerb(
        ("pool", "show"),
        "a pool's members, contributions and credits",
        _positional("pool_id"),
        lambda a: QueryRequest("pool", {"pool_id": a.pool_id}),
    ),
    # ------------------------------------------------------------------ market (Contract Net)
    NetVerb(
        ("tasks",),
        "Contract Net tasks with their state",
        _with(
            _positional(), ("--state", {"default": None}), ("--limit", {"type": int, "default": 50})
        ),
        lambda a: QueryRequest("tasks", _drop_none({"state": a.state, "limit": a.limit})),
    ),
    NetVerb(
        ("task", "show"),
        "one task: its bids and scores, winner, escrow and result",
        _positional("task_id"),
        lambda a: QueryRequest("task", {"task_id": a.task_id}),
    ),
    NetVerb(
        ("task", "announce"),
        "announce a task for bids (the max cost is held from the manager)",
        _with(
            _positional("manager", "task_type", "asset", "max_cost"),
            ("--deadline-ms", {"type": int, "default": 1000}),
            ("--bid-window-ms", {"type": int, "default": None}),
            ("--referrer", {"default": None}),
        ),
        lambda a: CommandRequest(
            a.manager,
            "task.announce",
            _drop_none(
                {
                    "task_type": a.task_type,
                    "asset": a.asset,
                    "max_cost": a.max_cost,
                    "deadline_ms": a.deadline_ms,
                    "bid_window_ms": a.bid_window_ms,
                    "referrer": a.referrer,
                }
            ),
        ),
    ),
    NetVerb(
        ("task", "verify"),
        "score a task's result: >= 0.7 releases the escrow, below disputes it",
        _positional("manager", "task_id", "score", score=float),
        lambda a: CommandRequest(
            a.manager, "task.verify", {"task_id": a.task_id, "score": a.score}
        ),
    ),
    NetVerb(
        ("task", "cancel"),
        "cancel a task (its hold or escrow goes back to the manager)",
        _positional("manager", "task_id"),
        lambda a: CommandRequest(a.manager, "task.cancel", {"task_id": a.task_id}),
    ),
    # ------------------------------------------------------------------ escrow
    NetVerb(
        ("escrow", "lock"),
        "lock a payer's tokens for a payee",
        _with(
            _positional("payer", "payee", "amount"),
            ("--referrer", {"default": None}),
            ("--lock-timeout-s", {"type": int, "default": 86_400, "dest": "lock_timeout_s"}),
        ),
        lambda a: CommandRequest(
            a.payer,
            "escrow.lock",
            _drop_none(
                {
                    "payee": a.payee,
                    "amount": a.amount,
                    "referrer": a.referrer,
                    "timeout_s": a.lock_timeout_s,
                }
            ),
        ),
    ),
    NetVerb(
        ("escrow", "release"),
        "release with a verification score (>= 0.7 pays, less disputes)",
        _with(_positional("payer", "escrow_id"), ("--score", {"type": float, "default": 1.0})),
        lambda a: CommandRequest(
            a.payer, "escrow.release", {"escrow_id": a.escrow_id, "score": a.score}
        ),
    ),
    NetVerb(
        ("escrow", "dispute"),
        "dispute a locked escrow (payer or payee)",
        _positional("agent", "escrow_id"),
        lambda a: CommandRequest(a.agent, "escrow.dispute", {"escrow_id": a.escrow_id}),
    ),
    NetVerb(
        ("escrow", "resolve"),
        "settle a dispute as an arbiter: release or refund",
        _with(_positional("escrow_id", "outcome"), ("--arbiter", {"default": None})),
        lambda a: CommandRequest(
            a.arbiter, "escrow.resolve", {"escrow_id": a.escrow_id, "outcome": a.outcome}
        ),
    ),
    NetVerb(
        ("escrow", "show"),
        "one escrow and its state",
        _positional("escrow_id"),
        lambda a: QueryRequest("escrow", {"escrow_id": a.escrow_id}),
    ),
    # ------------------------------------------------------------------ votes
    NetVerb(
        ("vote", "propose"),
        "open a weighted vote (--action takes a JSON parameter change)",
        _with(
            _positional("proposer", "title"),
            ("--kind", {"default": "plurality"}),
            ("--quorum", {"type": int, "default": 0}),
            ("--deadline-s", {"type": int, "default": 3600}),
            ("--eligible", {"default": None, "help": "comma-separated agent ids"}),
            ("--options", {"default": None, "help": "comma-separated (approval votes)"}),
            ("--action", {"default": None, "help": 'e.g. {"type":"model_price",...}'}),
        ),
        lambda a: CommandRequest(
            a.proposer,
            "vote.propose",
            _drop_none(
                {
                    "title": a.title,
                    "kind": a.kind,
                    "quorum": a.quorum,
                    "deadline_s": a.deadline_s,
                    "eligible": _split(a.eligible),
                    "options": _split(a.options),
                    "action": None if a.action is None else json.loads(a.action),
                }
            ),
        ),
    ),
    NetVerb(
        ("vote", "cast"),
        "cast a ballot: yes, no or abstain (or --approve options; --votes for quadratic)",
        _with(
            _positional("voter", "proposal_id"),
            ("choice", {"nargs": "?", "default": None}),
            ("--approve", {"default": None, "help": "comma-separated options"}),
            ("--votes", {"type": int, "default": 1}),
        ),
        lambda a: CommandRequest(
            a.voter,
            "vote.cast",
            {
                "proposal_id": a.proposal_id,
                "ballot": _drop_none(
                    {"choice": a.choice, "approvals": _split(a.approve), "votes": a.votes}
                ),
            },
        ),
    ),
    NetVerb(
        ("vote", "ratify"),
        "as the operator, apply an approved action an agent proposed (--veto to refuse it)",
        _with(_positional("proposal_id"), ("--veto", {"action": "store_true"})),
        lambda a: CommandRequest(
            None, "vote.ratify", {"proposal_id": a.proposal_id, "approve": not a.veto}
        ),
    ),
    NetVerb(
        ("vote", "show"),
        "a proposal and, once closed, its tally",
        _positional("proposal_id"),
        lambda a: QueryRequest("proposal", {"proposal_id": a.proposal_id}),
    ),
    # ------------------------------------------------------------------ signals and health
    NetVerb(
        ("signals", "recent"),
        "the latest signals seen on swarm.signal.*",
        _with(
            _positional(),
            ("--type", {"default": None, "dest": "signal_type"}),
            ("--limit", {"type": int, "default": 20}),
        ),
        lambda a: QueryRequest(
            "signals", _drop_none({"signal_type": a.signal_type, "limit": a.limit})
        ),
    ),
    NetVerb(
        ("pheromones", "top"),
        "the strongest trails of the pheromone map",
        _with(_positional(), ("n", {"type": int, "nargs": "?", "default": 10})),
        lambda a: QueryRequest("pheromones", {"limit": a.n}),
    ),
    NetVerb(
        ("metrics",),
        "swarm health: each metric with its target, warning level and status",
        _positional(),
        lambda a: QueryRequest("metrics", {}),
    ),
    # ------------------------------------------------------------------ cooperation
    NetVerb(
        ("pool", "deposit"),
        "put profit into a pool (minted as admin, or --agent pays it)",
        _with(_positional("pool_id", "amount"), ("--agent", {"default": None})),
        lambda a: CommandRequest(
            a.agent, "pool.deposit", {"pool_id": a.pool_id, "amount": a.amount}
        ),
    ),
    NetVerb(
        ("pool", "distribute"),
        "pay a pool's profit to contributors, pro rata or by Shapley value of a game file",
        _with(
            _positional("pool_id"),
            ("--amount", {"default": None}),
            ("--shapley", {"default": None, "metavar": "VALUES_FILE", "type": Path}),
            ("--agent", {"default": None}),
        ),
        lambda a: CommandRequest(
            a.agent,
            "pool.distribute",
            _drop_none(
                {
                    "pool_id": a.pool_id,
                    "amount": a.amount,
                    "method": "shapley" if a.shapley else "proportional",
                    "game": None if a.shapley is None else _read_json(a.shapley),
                }
            ),
        ),
    ),
    NetVerb(
        ("shapley",),
        "Shapley values of a game (JSON file: a table or values + synergies)",
        _with(
            _positional("game_file", game_file=Path),
            ("--permutations", {"type": int, "default": 10_000}),
            ("--seed", {"type": int, "default": None}),
        ),
        lambda a: QueryRequest(
            "shapley",
            _drop_none(
                {"game": _read_json(a.game_file), "permutations": a.permutations, "seed": a.seed}
            ),
        ),
    ),
    # ------------------------------------------------------------------ staking and lending
    NetVerb(
        ("stake", "lock"),
        "lock AMOUNT of AGENT's tokens as stake for LOCK_S seconds (docs/economy.md, Staking)",
        _positional("agent", "amount", "lock_s", lock_s=int),
        lambda a: CommandRequest(a.agent, "stake", {"amount": a.amount, "lock_s": a.lock_s}),
    ),
    NetVerb(
        ("stake", "unstake"),
        "start the cooling of a stake whose lock is over; it returns at the cooling's end",
        _positional("stake_id", "agent"),
        lambda a: CommandRequest(a.agent, "stake.unstake", {"stake_id": a.stake_id}),
    ),
    NetVerb(
        ("stakes",),
        "an agent's stakes, its active stake and its ballot weight",
        _positional("agent"),
        lambda a: QueryRequest("stakes", {"agent": a.agent}),
    ),
    NetVerb(
        ("loan", "offer"),
        "LENDER offers BORROWER a loan (RATE per day, TERM_S seconds); the principal is held",
        _with(
            _positional("lender", "borrower", "principal", "rate", "term_s", term_s=int),
            ("--collateral", {"default": None}),
        ),
        lambda a: CommandRequest(
            a.lender,
            "loan.offer",
            _drop_none(
                {
                    "borrower": a.borrower,
                    "principal": a.principal,
                    "rate_per_day": a.rate,
                    "term_s": a.term_s,
                    "collateral": a.collateral,
                }
            ),
        ),
    ),
    NetVerb(
        ("loan", "accept"),
        "the borrower accepts an offered loan (its collateral is held, the principal paid)",
        _positional("loan_id", "borrower"),
        lambda a: CommandRequest(a.borrower, "loan.accept", {"loan_id": a.loan_id}),
    ),
    NetVerb(
        ("loan", "cancel"),
        "the lender or the borrower withdraws an offered loan",
        _with(_positional("loan_id", "agent"), ("--reason", {"default": ""})),
        lambda a: CommandRequest(
            a.agent, "loan.cancel", {"loan_id": a.loan_id, "reason": a.reason}
        ),
    ),
    NetVerb(
        ("loan", "repay"),
        "the borrower repays (all it owes, or --amount)",
        _with(_positional("loan_id", "borrower"), ("--amount", {"default": None})),
        lambda a: CommandRequest(
            a.borrower, "loan.repay", _drop_none({"loan_id": a.loan_id, "amount": a.amount})
        ),
    ),
    NetVerb(
        ("loan", "show"),
        "one loan: its terms, state and what is owed",
        _positional("loan_id"),
        lambda a: QueryRequest("loan", {"loan_id": a.loan_id}),
    ),
    _kept_list("loans", "the loans kept (with --agent, those it lent or borrowed)"),
    NetVerb(
        ("future", "write"),
        "WRITER offers TOKENS of MODEL at PRICE per 1K, expiring in EXPIRES_S seconds; its "
        "margin is held (docs/economy.md, Compute futures)",
        _with(
            _positional(
                "writer", "model", "tokens", "price", "expires_s", tokens=int, expires_s=int
            ),
            ("--buyer", {"default": None, "help": "the one agent that may take it"}),
        ),
        lambda a: CommandRequest(
            a.writer,
            "future.write",
            _drop_none(
                {
                    "model": a.model,
                    "tokens": a.tokens,
                    "price": a.price,
                    "expires_in_s": a.expires_s,
                    "buyer": a.buyer,
                }
            ),
        ),
    ),
    NetVerb(
        ("future", "buy"),
        "BUYER buys TOKENS of MODEL from the exchange at today's price, expiring in EXPIRES_S",
        _positional("buyer", "model", "tokens", "expires_s", tokens=int, expires_s=int),
        lambda a: CommandRequest(
            a.buyer,
            "future.buy",
            {"model": a.model, "tokens": a.tokens, "expires_in_s": a.expires_s},
        ),
    ),
    NetVerb(
        ("future", "take"),
        "BUYER takes an offered or listed future at exactly PRICE tokens in all",
        _positional("future_id", "buyer", "price"),
        lambda a: CommandRequest(
            a.buyer, "future.take", {"future_id": a.future_id, "price": a.price}
        ),
    ),
    NetVerb(
        ("future", "list"),
        "HOLDER offers its future for resale at PRICE tokens in all",
        _with(
            _positional("future_id", "holder", "price"),
            ("--to", {"default": None, "help": "the one agent that may take it"}),
        ),
        lambda a: CommandRequest(
            a.holder,
            "future.list",
            _drop_none({"future_id": a.future_id, "price": a.price, "to": a.to}),
        ),
    ),
    NetVerb(
        ("future", "show"),
        "one future: its terms, parties, margin, state and settlement",
        _positional("future_id"),
        lambda a: QueryRequest("future", {"future_id": a.future_id}),
    ),
    _kept_list("futures", "the futures kept (with --agent, those it wrote, holds or may take)"),
)


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _read_json(path: Path) -> Any:
    """A JSON file given on the command line (the exchange validates what it contains)."""
    return json.loads(path.read_text(encoding="utf-8"))
