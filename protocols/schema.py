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

from protocols import cooperation as coop
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
        out[f"queries/{verb}.json"] = schema_of(query_type, verb, f"exchange.query.{verb}")
    for name, (subject, body_type) in sorted(SWARM_BODIES.items()):
        out[f"swarm/{name}.json"] = schema_of(body_type, name, subject)
    out["envelope.json"] = schema_of(r.Envelope, "Envelope", "reply to any request")
    out["results/ShapleyShares.json"] = schema_of(coop.ShapleyShares, "ShapleyShares", "reply")
    return out


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document: one channel per subject pattern, messages by JSON Schema."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for path, schema in json_schemas().items():
        name = path.removesuffix(".json").replace("/", "_").replace(".", "_")
        address = schema["x-subject"]
        if not address.startswith(("exchange.", "swarm.")):
            continue
        channels[name] = {
            "address": address.split(" | ")[0],
            "messages": {"body": {"payload": {"$ref": f"./{path}"}}},
        }
        operations[name] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": schema.get("$defs", {}).get(schema["title"], {}).get("description", ""),
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Agent Exchange",
            "version": "1",
            "description": "Coordination and payment for swarms of AI agents, on NATS.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
    }


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
        lines += ["", f"### `{verb}`", "", *_fields_table(query_type)]
    lines += ["", "## Swarm bodies"]
    for name, (subject, body_type) in sorted(SWARM_BODIES.items()):
        lines += ["", f"### {name} on `{subject}`", "", *_fields_table(body_type)]
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
