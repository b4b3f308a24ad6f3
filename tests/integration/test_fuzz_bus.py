"""Fuzzing every subject family from the published schemas (schema/): a few thousand malformed
messages, each breaking its schema in one definite way, sent to a real daemon.

Asserted: the daemon stays alive, every request gets a refusal whose code is documented
(protocols.errors), and the state's digest is exactly what it was. Seeded, so a failure names
the message that caused it and replays the same way.
"""

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
import pytest
from daemon_support import client_for, running_exchange, status_of
from nats.errors import TimeoutError as NatsTimeoutError

from protocols.errors import ErrorCode
from protocols.schema import SWARM_BODIES

pytestmark = pytest.mark.anyio

SEED: Final = 13
VARIANTS_PER_SCHEMA: Final = 60
SCHEMA_DIR: Final = Path(__file__).resolve().parents[2] / "schema"
# Bodies the exchange takes on swarm subjects, with a subject for each (placeholders filled).
SWARM_TAKEN: Final = ("AgentSignal", "Bid", "RefuseTask", "TaskReport", "Ballot", "Heartbeat")
DOCUMENTED: Final = frozenset(code.value for code in ErrorCode)
BAD_AMOUNTS: Final = ["1_0", "+1", " 1 ", "1.", ".5", "1E+0", "\u0661", "\uff11", "NaN", "1e3", ""]
JSON_OF_TYPE: Final[dict[str, list[Any]]] = {
    "string": ["x", ""],
    "integer": [7, -1],
    "number": [1.5],
    "boolean": [True],
    "array": [[1, "a"]],
    "object": [{"k": 1}],
    "null": [None],
}
Mutation = Callable[[random.Random, dict[str, Any], dict[str, Any]], bytes | None]


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[1]]
    return node


def _types_of(node: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """The JSON types a property allows (a $ref to a Struct is an object)."""
    node = _resolve(node, defs)
    if "anyOf" in node:
        return set().union(*(_types_of(option, defs) for option in node["anyOf"]))
    if "enum" in node or "const" in node:
        return {"string"}
    kind = node.get("type")
    found = {kind} if isinstance(kind, str) else set(kind or ("object",))
    if "integer" in found:
        found.add("number")  # 7 is also a number
    if "number" in found:
        found.add("integer")
    return found


def _plausible(node: dict[str, Any], defs: dict[str, Any], rng: random.Random) -> Any:
    """A value of roughly the right shape (it need not be valid: another field breaks the body)."""
    node = _resolve(node, defs)
    if "anyOf" in node:
        return _plausible(rng.choice(node["anyOf"]), defs, rng)
    if "enum" in node:
        return rng.choice(node["enum"])
    kind = node.get("type", "object")
    if kind == "object":
        return {}
    if kind == "array":
        return []
    if kind == "integer":
        return int(node.get("minimum", node.get("exclusiveMinimum", 0)) + 1)
    if kind == "number":
        return 0.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "zero"


# ------------------------------------------------------------------------------- mutations


def _missing_required(
    rng: random.Random, body: dict[str, Any], obj: dict[str, Any]
) -> bytes | None:
    required = obj.get("required", [])
    if not required:
        return None
    broken = dict(body)
    del broken[rng.choice(required)]
    return json.dumps(broken).encode()


def _wrong_type(rng: random.Random, body: dict[str, Any], obj: dict[str, Any]) -> bytes | None:
    defs = obj["$defs"]
    names = [n for n in obj["properties"] if n in body]
    if not names:
        return None
    name = rng.choice(names)
    allowed = _types_of(obj["properties"][name], defs)
    choices = [v for kind, values in JSON_OF_TYPE.items() if kind not in allowed for v in values]
    return json.dumps({**body, name: rng.choice(choices)}).encode()


def _bad_string(rng: random.Random, body: dict[str, Any], obj: dict[str, Any]) -> bytes | None:
    defs = obj["$defs"]
    candidates = []
    for name, prop in obj["properties"].items():
        node = _resolve(prop, defs)
        if node.get("type") != "string":
            continue
        if "maxLength" in node:
            candidates.append((name, "y" * (node["maxLength"] + 1)))
        if node.get("minLength", 0) > 0:
            candidates.append((name, ""))
        if "pattern" in node:
            candidates.append((name, "has space\u0000"))
        if "enum" in node:
            candidates.append((name, "not-one-of-them"))
    if not candidates:
        return None
    name, value = rng.choice(candidates)
    return json.dumps({**body, name: value}).encode()


def _bad_amount(rng: random.Random, body: dict[str, Any], obj: dict[str, Any]) -> bytes | None:
    defs = obj["$defs"]
    amounts = [  # the schema's token amounts, as protocols.schema publishes them
        name
        for name, prop in obj["properties"].items()
        if _resolve(prop, defs).get("description", "").startswith("tokens:")
    ]
    if not amounts:
        return None
    return json.dumps({**body, rng.choice(amounts): rng.choice(BAD_AMOUNTS)}).encode()


def _out_of_range(rng: random.Random, body: dict[str, Any], obj: dict[str, Any]) -> bytes | None:
    defs = obj["$defs"]
    candidates = []
    for name, prop in obj["properties"].items():
        node = _resolve(prop, defs)
        if node.get("type") not in ("integer", "number"):
            continue
        if "maximum" in node:
            candidates.append((name, node["maximum"] + 1))
        if "minimum" in node:
            candidates.append((name, node["minimum"] - 1))
        if "exclusiveMinimum" in node:
            candidates.append((name, node["exclusiveMinimum"]))
    if not candidates:
        return None
    name, value = rng.choice(candidates)
    return json.dumps({**body, name: value}).encode()


def _unknown_field(rng: random.Random, body: dict[str, Any], obj: dict[str, Any]) -> bytes | None:
    if obj.get("additionalProperties", True) is not False:
        return None  # unknown fields are skipped there, by design: not a violation
    return json.dumps({**body, f"unknown_{rng.randrange(100)}": 1}).encode()


def _deep(rng: random.Random, body: dict[str, Any], obj: dict[str, Any]) -> bytes | None:
    depth = rng.choice([100, 1000, 3000])
    nested = "[" * depth + "]" * depth
    name = rng.choice([*obj["properties"], "x"])
    return json.dumps({**body, name: "@"}).encode().replace(b'"@"', nested.encode())


def _not_an_object(rng: random.Random, body: dict[str, Any], obj: dict[str, Any]) -> bytes | None:
    return rng.choice([b"[]", b'"text"', b"42", b"null", b"true", b"[{}]"])


def _not_json(rng: random.Random, body: dict[str, Any], obj: dict[str, Any]) -> bytes | None:
    whole = json.dumps(body).encode()
    return rng.choice(
        [
            whole[: max(1, len(whole) // 2)],
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
            b"\xff\xfe" + whole,
            b"{" * 10,
            whole + b"}",
        ]
    )


MUTATIONS: Final[list[Mutation]] = [
    _missing_required,
    _wrong_type,
    _bad_string,
    _bad_amount,
    _out_of_range,
    _unknown_field,
    _deep,
    _not_an_object,
    _not_json,
]


# ------------------------------------------------------------------------------- messages


def _schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    """(subject, schema) of every body an agent may send the exchange."""
    for path in sorted((SCHEMA_DIR / "commands").glob("*.json")):
        yield f"exchange.cmd.claude.{path.stem}", json.loads(path.read_text())
    for path in sorted((SCHEMA_DIR / "queries").glob("*.json")):
        yield f"exchange.query.{path.stem}", json.loads(path.read_text())
    fill = {"sender": "claude", "signal_type": "opportunity", "asset": "btc", "task_id": "task-1"}
    fill["proposal_id"] = "proposal-1"
    for name in SWARM_TAKEN:
        pattern = SWARM_BODIES[name][0].split(" | ")[0]
        schema = json.loads((SCHEMA_DIR / "swarm" / f"{name}.json").read_text())
        yield pattern.format(**fill), schema


def messages(seed: int) -> list[tuple[str, bytes, str]]:
    """(subject, payload, mutation name) of every message, in sending order."""
    rng = random.Random(seed)
    made: list[tuple[str, bytes, str]] = []
    for subject, schema in _schemas():
        defs = schema["$defs"]
        obj = {**_resolve(schema, defs), "$defs": defs}
        obj.setdefault("properties", {})
        body = {name: _plausible(prop, defs, rng) for name, prop in obj["properties"].items()}
        made_here = 0
        while made_here < VARIANTS_PER_SCHEMA:
            mutation = rng.choice(MUTATIONS)
            payload = mutation(rng, body, obj)
            if payload is not None:
                made.append((subject, payload, mutation.__name__))
                made_here += 1
    return made


def test_every_mutation_breaks_its_schema() -> None:
    """The generator's own check: jsonschema agrees each JSON body is invalid (a valid body
    would be applied, and the digest check below would then be meaningless)."""
    jsonschema = pytest.importorskip("jsonschema")
    for path in sorted(SCHEMA_DIR.glob("*/*.json")):
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))
    schemas = dict(_schemas())
    for subject, payload, mutation in messages(SEED):
        if mutation == "_deep":
            continue  # valid JSON Schema, beyond the exchange's documented nesting bound
        try:
            value = json.loads(payload)
        except (ValueError, RecursionError):
            continue  # not JSON at all
        validator = jsonschema.Draft202012Validator(schemas[subject])
        try:
            valid = validator.is_valid(value)
        except RecursionError:
            continue  # 3,000 levels: too deep for the validator too
        assert not valid, (subject, payload[:200])


async def test_malformed_messages_on_every_subject_change_nothing(tmp_path: Path) -> None:
    sent = messages(SEED)
    assert len(sent) >= 2500
    codes: dict[str, int] = {}
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        before = await status_of(admin)
        nc = admin.nc
        for index, (subject, payload, _) in enumerate(sent):
            try:
                message = await nc.request(subject, payload, timeout=10.0)
            except NatsTimeoutError:
                pytest.fail(f"message {index} on {subject} got no reply: {payload[:200]!r}")
            envelope = msgspec.json.decode(message.data)
            assert envelope["ok"] is False, (index, subject, payload[:200], envelope)
            code = envelope["error"]["code"]
            assert code in DOCUMENTED, (index, subject, code)
            codes[code] = codes.get(code, 0) + 1
        for control in ("$SRV.PING", "$SRV.INFO", "$SRV.STATS"):
            with anyio.fail_after(10):
                assert (await nc.request(control, b"\xff{[", timeout=10.0)).data
        after = await status_of(admin)
    assert after["digest"] == before["digest"]
    assert after["commands_applied"] == before["commands_applied"]
    # Every kind of refusal the fuzzing should reach, reached.
    assert {"invalid_message", "invalid_amount"} <= set(codes), codes
    assert codes["invalid_message"] > len(sent) // 2
