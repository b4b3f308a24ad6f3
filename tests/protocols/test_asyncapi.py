"""The published AsyncAPI document is valid and complete: validate schema/asyncapi.json against
the official AsyncAPI 3.0.0 JSON Schema (vendored in tests/fixtures, no network), then check what
that schema cannot: every address parameter is declared, every reference resolves, and every
subject the exchange, its CLI and its workers build lands on a channel."""

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
from referencing.jsonschema import DRAFT7

from protocols import events, registry, subjects
from protocols.schema import _INTERNAL_VERBS, asyncapi

ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = ROOT / "tests" / "fixtures" / "asyncapi-3.0.0.schema.json"


def _no_network(uri: str) -> referencing.Resource[Any]:
    raise LookupError(f"the AsyncAPI schema refers outside its bundle: {uri}")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    published: dict[str, Any] = json.loads((ROOT / "schema" / "asyncapi.json").read_text())
    assert published == json.loads(json.dumps(asyncapi())), "run python -m protocols.schema"
    return published


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    official = json.loads(OFFICIAL.read_text())
    registry_ = referencing.Registry(retrieve=_no_network).with_resource(
        official["$id"], DRAFT7.create_resource(official)
    )
    validator = jsonschema.Draft7Validator(official, registry=registry_)
    errors = [
        f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)
    ]
    assert errors == []
    broken = json.loads(json.dumps(document))
    broken["operations"]["query_balance"]["action"] = "push"
    assert not validator.is_valid(broken), "the validator must see a wrong action"


def test_every_address_parameter_is_declared(document: dict[str, Any]) -> None:
    for name, channel in document["channels"].items():
        used = set(re.findall(r"\{(\w+)\}", channel["address"] or ""))
        assert used == set(channel.get("parameters", {})), name


def _resolve(document: dict[str, Any], ref: str) -> Any:
    if ref.startswith("./"):
        path = ROOT / "schema" / ref[2:]
        assert path.is_file(), ref
        return json.loads(path.read_text())
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                _resolve(document, node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def test_requests_reply_and_publications_do_not(document: dict[str, Any]) -> None:
    operations = document["operations"]
    for verb in registry.QUERIES:
        reply = operations[f"query_{verb}"]["reply"]
        message = _resolve(document, reply["messages"][0]["$ref"])
        result = registry.QUERY_RESULTS[verb].__name__
        assert message["payload"]["properties"]["result"]["$ref"] == f"./results/{result}.json"
    for verb in set(registry.COMMANDS) - _INTERNAL_VERBS:
        assert "reply" in operations[f"command_{verb.replace('.', '_')}"], verb
    for name in ("swarm_Bid", "swarm_Ballot", "swarm_TaskReport_failure", "swarm_Heartbeat"):
        assert "reply" in operations[name]
    for name in ("swarm_CallForProposals", "swarm_TaskAward", "event_posting"):
        assert (operations[name]["action"], "reply" in operations[name]) == ("send", False)


def _pattern(address: str) -> re.Pattern[str]:
    parts = [r"[^.]+" if p.startswith("{") else re.escape(p) for p in address.split(".")]
    return re.compile(r"\.".join(parts))


def test_every_subject_in_use_has_a_channel(document: dict[str, Any]) -> None:
    patterns = [_pattern(c["address"]) for c in document["channels"].values() if c["address"]]
    in_use = [
        *(subjects.command("zero", verb) for verb in set(registry.COMMANDS) - _INTERNAL_VERBS),
        subjects.command("zero", "heartbeat"),
        *(subjects.query(verb) for verb in registry.QUERIES),
        *(subjects.event("zero", kind) for kind in events.EVENT_KINDS),
        subjects.signal("zero", "opportunity", "BTC"),
        subjects.task_cfp("analyze"),
        *(subjects.task_message("t-1", p, "zero") for p in ("propose", "refuse")),
        *(subjects.task_message("t-1", p, "zero") for p in ("inform", "failure")),
        subjects.task_award("t-1"),
        subjects.task_closed("t-1"),
        subjects.task_disputed("t-1"),
        subjects.vote_open("v-1"),
        subjects.vote_cast("v-1", "zero"),
        subjects.vote_closed("v-1"),
        subjects.price("BTC"),
        "$SRV.PING",
        "$SRV.INFO",
        "$SRV.STATS",
    ]
    missing = [s for s in in_use if not any(p.fullmatch(s) for p in patterns)]
    assert missing == []
