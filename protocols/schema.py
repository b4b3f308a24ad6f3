"""JSON Schema and AsyncAPI 3 documents generated from the protocol Structs.

``python -m protocols.schema [DIR]`` writes them (default ``schema/``); a test fails when the files
in the repository differ from what the Structs generate, so the published schema never drifts.
"""

import inspect
import json
import sys
from pathlib import Path
from typing import Any, Final

import msgspec

from protocols import events as ev
from protocols import registry
from protocols import results as r
from protocols import swarm as s
from protocols.amounts import AMOUNT_PATTERN

SCHEMA_DIR: Final = "schema"
_DECIMAL: Final = {"type": "string", "format": "decimal"}
# protocols.wire refuses a string outside the pattern (invalid_amount) and takes any JSON number;
# decimal places are a rule on the value, for numbers and strings alike (too_many_decimals).
# Keep the "tokens:" prefix of the description: tests and clients find amounts by it.
_TOKENS: Final = {
    "description": (
        "tokens: a JSON number, or a string of ASCII digits with an optional leading '-' and an "
        "optional '.' between digits (\"12.5\"); at most 6 decimal places, trailing zeros aside"
    ),
    "anyOf": [{"type": "string", "pattern": AMOUNT_PATTERN}, {"type": "number"}],
}

# Bodies agents publish on swarm subjects, and what the exchange publishes there.
SWARM_BODIES: Final[dict[str, tuple[str, type[msgspec.Struct]]]] = {
    "AgentSignal": ("swarm.signal.{sender}.{signal_type}.{asset}", s.AgentSignal),
    "Bid": ("swarm.task.{task_id}.propose.{sender}", s.Bid),
    "RefuseTask": ("swarm.task.{task_id}.refuse.{sender}", s.RefuseTask),
    "TaskReport": ("swarm.task.{task_id}.inform.{sender} | .failure.{sender}", s.TaskReport),
    "Ballot": ("swarm.vote.{proposal_id}.cast.{sender}", s.Ballot),
    "PriceUpdate": ("swarm.price.{asset}", s.PriceUpdate),
    "Heartbeat": ("exchange.cmd.{sender}.heartbeat", s.Heartbeat),
    "CallForProposals": ("swarm.task.cfp.{task_type}", s.CallForProposals),
    "TaskAward": ("swarm.task.{task_id}.award", s.TaskAward),
    "TaskClosed": ("swarm.task.{task_id}.closed", s.TaskClosed),
    "TaskDisputed": ("swarm.task.{task_id}.disputed", s.TaskDisputed),
    "VoteOpened": ("swarm.vote.{proposal_id}.open", s.VoteOpened),
    "VoteTally": ("swarm.vote.{proposal_id}.closed", s.VoteTally),
}
# What the exchange publishes on exchange.event.<agent>.<kind>, by kind.
EVENT_BODIES: Final[dict[str, tuple[str, type[msgspec.Struct]]]] = {
    ev.POSTING_EVENT_KIND: (f"exchange.event.{{agent}}.{ev.POSTING_EVENT_KIND}", ev.PostingEvent),
}
# Swarm messages the exchange answers (the body becomes a command; the reply is the envelope).
_SWARM_REQUESTS: Final = frozenset({"Bid", "RefuseTask", "TaskReport", "Ballot", "Heartbeat"})
_EXCHANGE_PUBLISHES: Final = frozenset(
    {"CallForProposals", "TaskAward", "TaskClosed", "TaskDisputed", "VoteOpened", "VoteTally"}
)
_SWARM_NOTES: Final = {
    "AgentSignal": " Fire and forget: the exchange records it and sends no reply.",
    "PriceUpdate": " Between agents: the exchange does not subscribe to it.",
}
# The NATS service API requests the exchange answers, and their response types.
_SERVICE_API: Final = {
    "PING": "io.nats.micro.v1.ping_response",
    "INFO": "io.nats.micro.v1.info_response",
    "STATS": "io.nats.micro.v1.stats_response",
}
_PARAMETERS: Final[dict[str, dict[str, Any]]] = {
    "sender": {"description": "the publishing agent's id: in secure mode, its own login"},
    "agent": {"description": "the agent the event is for (only that agent may subscribe)"},
    "task_id": {"description": "the task's id, from task.announce's reply or the call"},
    "task_type": {"description": "the kind of work (a capability agents register with)"},
    "proposal_id": {"description": "the proposal's id, from vote.propose's reply or the open"},
    "signal_type": {"enum": ["opportunity", "price_update", "risk_alert"]},
    "asset": {"description": "the asset the message is about (BTC, ETH...)"},
}
# Commands the exchange makes itself from swarm messages: not sent on exchange.cmd by agents.
_INTERNAL_VERBS: Final = frozenset(
    {
        "tick",
        "timer.drop",
        "signal.observe",
        "task.propose",
        "task.refuse",
        "task.report",
        "vote.cast",
    }
)


def _normalise(node: Any) -> Any:
    """Tokens instead of msgspec's Decimal schema, and descriptions as ``inspect.cleandoc``
    gives them (msgspec releases differ on whether a docstring's indentation is kept, and the
    published files must not change with the msgspec version)."""
    if isinstance(node, dict):
        if {k: v for k, v in node.items() if k != "default"} == _DECIMAL:
            fixed = dict(_TOKENS)
            if "default" in node:
                fixed["default"] = node["default"]
            return fixed
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _normalise(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return node


def schema_of(struct_type: Any, title: str, subject: str) -> dict[str, Any]:
    body = _normalise(msgspec.json.schema(struct_type))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "x-subject": subject,
        **body,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name (relative to the schema dir) → JSON Schema."""
    out: dict[str, dict[str, Any]] = {}
    for verb, struct_type in sorted(registry.COMMANDS.items()):
        if verb not in _INTERNAL_VERBS:
            subject = f"exchange.cmd.{{sender}}.{verb}"
            out[f"commands/{verb}.json"] = schema_of(struct_type, verb, subject)
    for verb, query_type in sorted(registry.QUERIES.items()):
        query_schema = schema_of(query_type, verb, f"exchange.query.{verb}")
        query_schema["x-result"] = _result_file(registry.QUERY_RESULTS[verb])
        out[f"queries/{verb}.json"] = query_schema
    for name, (subject, body_type) in sorted(SWARM_BODIES.items()):
        out[f"swarm/{name}.json"] = schema_of(body_type, name, subject)
    for kind, (subject, body_type) in sorted(EVENT_BODIES.items()):
        out[f"events/{kind}.json"] = schema_of(body_type, body_type.__name__, subject)
    out["envelope.json"] = schema_of(r.Envelope, "Envelope", "reply to any request")
    for verb, result_type in sorted(registry.QUERY_RESULTS.items()):
        title = result_type.__name__
        out[_result_file(result_type)] = schema_of(result_type, title, f"reply to {verb}")
    return out


def _result_file(result_type: type) -> str:
    return f"results/{result_type.__name__}.json"


def _parameters(address: str) -> dict[str, Any]:
    """The AsyncAPI parameter of every ``{name}`` in ``address``."""
    names = [part[1:-1] for part in address.split(".") if part.startswith("{")]
    return {name: dict(_PARAMETERS[name]) for name in names}


def _request(
    address: str, body: str, description: str, reply: str, *, publisher: str = "agent"
) -> dict[str, Any]:
    """A channel the exchange receives on and answers on the request's reply subject."""
    return {
        "address": address,
        "body": body,
        "description": description,
        "action": "receive",
        "reply": reply,
        "publisher": publisher,
    }


def _channel_specs() -> dict[str, dict[str, Any]]:
    """Channel name → address, body file, who publishes it and the reply it gets (if any)."""
    specs: dict[str, dict[str, Any]] = {}
    for verb, struct_type in sorted(registry.COMMANDS.items()):
        if verb not in _INTERNAL_VERBS:
            doc = (struct_type.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            specs[f"command.{verb}"] = _request(
                f"exchange.cmd.{{sender}}.{verb}", f"commands/{verb}.json", doc, "envelope.json"
            )
    for verb in sorted(registry.QUERIES):
        result = _result_file(registry.QUERY_RESULTS[verb])
        specs[f"query.{verb}"] = _request(
            f"exchange.query.{verb}", f"queries/{verb}.json", f"The `{verb}` query.", result
        )
    for name, (subject, body_type) in sorted(SWARM_BODIES.items()):
        doc = (body_type.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        for index, address in enumerate(_addresses(subject)):
            # TaskReport's second address (.failure.) is the channel swarm.TaskReport.failure.
            channel = f"swarm.{name}" + ("" if index == 0 else f".{address.split('.')[-2]}")
            if name in _SWARM_REQUESTS:
                specs[channel] = _request(address, f"swarm/{name}.json", doc, "envelope.json")
                continue
            publisher = "exchange" if name in _EXCHANGE_PUBLISHES else "agent"
            specs[channel] = {
                "address": address,
                "body": f"swarm/{name}.json",
                "description": doc + _SWARM_NOTES.get(name, ""),
                "action": "send" if publisher == "exchange" else "receive",
                "publisher": publisher,
            }
    for kind, (subject, body_type) in sorted(EVENT_BODIES.items()):
        doc = (body_type.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        specs[f"event.{kind}"] = {
            "address": subject,
            "body": f"events/{kind}.json",
            "description": doc,
            "action": "send",
            "publisher": "exchange",
        }
    for verb, response in _SERVICE_API.items():
        specs[f"service.{verb.lower()}"] = {
            "address": f"$SRV.{verb}",
            "body": None,
            "description": (
                f"The NATS service API: {verb} for every service (also `$SRV.{verb}.exchange` "
                f"and `$SRV.{verb}.exchange.<id>`); answered with an `{response}`."
            ),
            "action": "receive",
            "reply": response,
            "publisher": "agent",
        }
    return specs


def _addresses(subject: str) -> list[str]:
    """``a.b.{x}.c | .d`` → ``a.b.{x}.c`` and ``a.b.{x}.d``: the alternatives after the first
    replace its tail from the first differing token on."""
    first, *others = subject.split(" | ")
    out = [first]
    for other in others:
        tail = other.lstrip(".").split(".")
        out.append(".".join(first.split(".")[: -len(tail)] + tail))
    return out


def _message(title: str, payload: Any) -> dict[str, Any]:
    return {"name": title, "title": title, "payload": payload}


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the exchange: every subject it receives or publishes on, the
    body each carries, and the reply each request gets. ``action`` is the exchange's side: it
    receives what agents send, and sends calls, awards, tallies and events."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    replies: dict[str, Any] = {}
    for name, spec in _channel_specs().items():
        key = name.replace(".", "_")
        body = spec["body"]
        payload = {"$ref": f"./{body}"} if body else {"type": "object"}
        title = body.removesuffix(".json").rsplit("/", 1)[-1] if body else "empty"
        channels[key] = {
            "address": spec["address"],
            "description": spec["description"],
            "messages": {"body": _message(title, payload)},
        }
        if parameters := _parameters(spec["address"]):
            channels[key]["parameters"] = parameters
        operation: dict[str, Any] = {
            "action": spec["action"],
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/body"}],
            "summary": spec["description"][:200],
            "x-published-by": spec["publisher"],
        }
        if reply := spec.get("reply"):
            reply_key = reply.removesuffix(".json").rsplit("/", 1)[-1]
            replies[reply_key] = _reply_message(reply, reply_key)
            operation["reply"] = {
                "channel": {"$ref": "#/channels/reply"},
                "messages": [{"$ref": f"#/channels/reply/messages/{reply_key}"}],
            }
        operations[key] = operation
    channels["reply"] = {
        "address": None,
        "description": (
            "The reply subject of the request (NATS request-reply): an inbox the requester "
            "chose, `_INBOX_<agent>.…` in secure mode. The exchange answers every request once."
        ),
        "messages": dict(sorted(replies.items())),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Agent Exchange",
            "version": "1",
            "description": (
                "Coordination and payment for swarms of AI agents, on NATS. Operations are from "
                "the exchange's side (`receive`: agents publish, the exchange answers; `send`: "
                "the exchange publishes); `x-published-by` names the publisher. The guide is "
                "docs/protocol-guide.md in the repository."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": (
                    "The NATS server of the exchange (the daemon starts its own on port 4222 "
                    "unless given a URL). In secure mode each agent logs in with its own "
                    "credentials and may publish only under its own id (docs/trust-boundary.md)."
                ),
            }
        },
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
    }


def _reply_message(reply: str, title: str) -> dict[str, Any]:
    if reply.endswith(".json") and reply != "envelope.json":
        payload: dict[str, Any] = {
            "description": f"The envelope; on success its `result` is a {title}.",
            "allOf": [{"$ref": "./envelope.json"}],
            "properties": {"result": {"$ref": f"./{reply}"}},
        }
    elif reply == "envelope.json":
        payload = {"$ref": "./envelope.json"}
    else:
        payload = {"type": "object", "description": f"An `{reply}` (the NATS micro schema)."}
    return _message(title, payload)


def _type_text(field_type: Any) -> str:
    """A short, human name for a msgspec type (``string``, ``tokens``, ``list[string]``...)."""
    t = field_type
    names = {
        msgspec.inspect.StrType: "string",
        msgspec.inspect.IntType: "integer",
        msgspec.inspect.FloatType: "number",
        msgspec.inspect.BoolType: "boolean",
        msgspec.inspect.DecimalType: "tokens",
        msgspec.inspect.AnyType: "any",
        msgspec.inspect.NoneType: "null",
    }
    for kind, name in names.items():
        if isinstance(t, kind):
            return name
    if isinstance(t, msgspec.inspect.Metadata):
        # A state name: a string from a published list (protocols.state_names).
        enum = (t.extra_json_schema or {}).get("enum")
        if not enum:
            return _type_text(t.type)
        return " or ".join(f"`{v}`" if v else '`""`' for v in enum)
    if isinstance(t, msgspec.inspect.UnionType):
        return " or ".join(_type_text(x) for x in t.types)
    if isinstance(t, msgspec.inspect.ListType):
        return f"list[{_type_text(t.item_type)}]"
    if isinstance(t, msgspec.inspect.DictType):
        return f"object[{_type_text(t.value_type)}]"
    if isinstance(t, msgspec.inspect.LiteralType):
        return " or ".join(f"`{v}`" for v in t.values)
    if isinstance(t, msgspec.inspect.StructType):
        return t.cls.__name__
    return type(t).__name__.removesuffix("Type").lower()


def _constraints(t: Any) -> str:
    parts = []
    for attr, text in (
        ("min_length", "≥ {} chars"),
        ("max_length", "≤ {} chars"),
        ("ge", "≥ {}"),
        ("gt", "> {}"),
        ("le", "≤ {}"),
        ("pattern", "matches `{}`"),
    ):
        value = getattr(t, attr, None)
        if value is not None:
            parts.append(text.format(value))
    return ", ".join(parts)


def _fields_table(struct_type: Any) -> list[str]:
    info = msgspec.inspect.type_info(struct_type)
    assert isinstance(info, msgspec.inspect.StructType)
    rows = ["| field | type | required | default | constraints |", "|---|---|---|---|---|"]
    for f in info.fields:
        default = ""
        if f.default is not msgspec.NODEFAULT:
            default = f"`{json.dumps(msgspec.to_builtins(f.default))}`"
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f"`{json.dumps(msgspec.to_builtins(f.default_factory()))}`"
        rows.append(
            f"| `{f.encode_name}` | {_type_text(f.type)} | {'yes' if f.required else ''} "
            f"| {default} | {_constraints(f.type)} |"
        )
    strict = info.forbid_unknown_fields
    rows.append("")
    rows.append("Unknown fields are **refused**." if strict else "Unknown fields are ignored.")
    return rows


def reference_markdown() -> str:
    """docs/protocol-reference.md: every verb and body with its fields, and every error code."""
    from protocols.errors import ErrorCode

    lines = [
        "# Protocol reference",
        "",
        "Generated from `protocols/` by `python -m protocols.schema`; do not edit by hand.",
        "The guide with examples is `docs/protocol-guide.md`; JSON Schema files are in `schema/`.",
        "`tokens` is an amount: a JSON number, or a string matching "
        f'`{AMOUNT_PATTERN}` (`"12.5"`), with at most 6 decimal places.',
        "",
        "## Commands: `exchange.cmd.<sender>.<verb>`",
    ]
    for verb, struct_type in sorted(registry.COMMANDS.items()):
        if verb in _INTERNAL_VERBS:
            continue
        doc = (struct_type.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += ["", f"### `{verb}`", "", doc, "", *_fields_table(struct_type)]
    lines += ["", "## Queries: `exchange.query.<verb>`"]
    for verb, query_type in sorted(registry.QUERIES.items()):
        result = registry.QUERY_RESULTS[verb].__name__
        lines += ["", f"### `{verb}`", "", f"Result: [{result}](#{result.lower()}).", ""]
        lines += _fields_table(query_type)
    lines += ["", "## Query results", "", "In the reply's `result`; `schema/results/` has each."]
    for result_type in sorted(set(registry.QUERY_RESULTS.values()), key=lambda t: t.__name__):
        lines += ["", f"### {result_type.__name__}", "", *_fields_table(result_type)]
    lines += ["", "## Swarm bodies"]
    for name, (subject, body_type) in sorted(SWARM_BODIES.items()):
        lines += ["", f"### {name} on `{subject}`", "", *_fields_table(body_type)]
    lines += ["", "## Events: `exchange.event.<agent>.<kind>`"]
    for subject, body_type in sorted(EVENT_BODIES.values(), key=lambda v: v[0]):
        lines += ["", f"### {body_type.__name__} on `{subject}`", "", *_fields_table(body_type)]
    lines += ["", "## Error codes", "", "Stable names; a shipped code never changes meaning.", ""]
    lines += [f"- `{code.value}`" for code in ErrorCode]

    return "\n".join(lines) + "\n"


def render() -> dict[str, str]:
    files = {p: json.dumps(v, indent=2, sort_keys=True) + "\n" for p, v in json_schemas().items()}
    files["asyncapi.json"] = json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n"
    return files


def write(directory: Path) -> list[Path]:
    written = []
    for relative, text in render().items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


REFERENCE_PATH: Final = "docs/protocol-reference.md"

if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else SCHEMA_DIR)
    print(f"wrote {len(write(target))} files to {target}/")
    Path(REFERENCE_PATH).write_text(reference_markdown(), encoding="utf-8")
    print(f"wrote {REFERENCE_PATH}")
