"""The service API's documents and error convention, without NATS: the PING/INFO/STATS bodies are
read back by nats-py's own ``nats.micro`` parsers and checked against ADR-32's fields (a JSON
schema written from the ADR), and a refusal maps to its headers, numeric code and ``last_error``.
"""

from datetime import UTC, datetime
from typing import Any

import jsonschema
import msgspec
import pytest
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

from exchange.core.refusals import refusal_reply, result_reply
from exchange.daemon import discovery
from exchange.daemon.discovery import (
    EndpointCounters,
    ServiceError,
    ServiceIdentity,
    service_error,
    service_error_of,
    service_error_status,
)
from protocols.errors import ErrorCode
from protocols.results import BalanceResult, ErrorBody

_SEMVER = r"^\d+\.\d+\.\d+"
_IDENTITY: dict[str, Any] = {
    "type": {"type": "string"},
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
    "id": {"type": "string", "minLength": 1},
    "version": {"type": "string", "pattern": _SEMVER},
    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
}
_STRICT: dict[str, Any] = {"type": "object", "additionalProperties": False}
_ENDPOINT_INFO = {
    **_STRICT,
    "required": ["name", "subject", "queue_group", "metadata"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "queue_group": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_COUNT = {"type": "integer", "minimum": 0}
_ENDPOINT_STATS = {
    **_STRICT,
    "required": [
        "name",
        "subject",
        "queue_group",
        "num_requests",
        "num_errors",
        "last_error",
        "processing_time",
        "average_processing_time",
    ],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "queue_group": {"type": "string"},
        "num_requests": _COUNT,
        "num_errors": _COUNT,
        "last_error": {"type": "string"},
        "processing_time": _COUNT,
        "average_processing_time": _COUNT,
        "data": {"type": ["object", "null"]},
    },
}
SCHEMAS: dict[discovery.Verb, dict[str, Any]] = {
    "PING": {**_STRICT, "required": list(_IDENTITY), "properties": _IDENTITY},
    "INFO": {
        **_STRICT,
        "required": [*_IDENTITY, "description", "endpoints"],
        "properties": {
            **_IDENTITY,
            "description": {"type": "string"},
            "endpoints": {"type": "array", "items": _ENDPOINT_INFO},
        },
    },
    "STATS": {
        **_STRICT,
        "required": [*_IDENTITY, "started", "endpoints"],
        "properties": {
            **_IDENTITY,
            "started": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$"},
            "endpoints": {"type": "array", "items": _ENDPOINT_STATS},
        },
    },
}
TYPES = {
    "PING": "io.nats.micro.v1.ping_response",
    "INFO": "io.nats.micro.v1.info_response",
    "STATS": "io.nats.micro.v1.stats_response",
}


def _identity() -> ServiceIdentity:
    commands = EndpointCounters("commands", "exchange.cmd.>")
    commands.record(elapsed_ns=3_000)
    commands.record(
        elapsed_ns=5_000, error=ServiceError("insufficient_funds", "claude has 2 tokens")
    )
    return ServiceIdentity(
        service_id="abc123",
        started_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        endpoints=[commands, EndpointCounters("queries", "exchange.query.>")],
    )


@pytest.mark.parametrize("verb", discovery.VERBS)
def test_each_response_matches_adr_32_and_nats_py_reads_it(verb: discovery.Verb) -> None:
    document = msgspec.json.decode(_identity().respond(verb))
    jsonschema.validate(document, SCHEMAS[verb])
    assert document["type"] == TYPES[verb]
    parser = {"PING": ServicePing, "INFO": ServiceInfo, "STATS": ServiceStats}[verb]
    parsed = parser.from_dict(document)
    # nats-py writes back every field it knows: none of ours is missing or extra.
    assert set(parsed.to_dict()) == set(document)


def test_stats_report_requests_errors_and_the_last_error() -> None:
    stats = ServiceStats.from_dict(msgspec.json.decode(_identity().respond("STATS")))
    commands, queries = stats.endpoints
    assert (commands.num_requests, commands.num_errors) == (2, 1)
    assert commands.last_error == "insufficient_funds: claude has 2 tokens"
    assert (commands.processing_time, commands.average_processing_time) == (8_000, 4_000)
    assert (queries.num_requests, queries.num_errors, queries.last_error) == (0, 0, "")
    assert queries.average_processing_time == 0


def test_numeric_codes_class_every_refusal_code() -> None:
    assert service_error_status(ErrorCode.internal_error) == 500
    assert service_error_status(ErrorCode.overloaded) == 503
    assert service_error_status(ErrorCode.query_timed_out) == 504
    for code in ErrorCode:
        if code not in (ErrorCode.internal_error, ErrorCode.overloaded, ErrorCode.query_timed_out):
            assert service_error_status(code) == 400, code


def test_a_refusal_reply_gives_its_headers_and_last_error() -> None:
    body = ErrorBody(code="invalid_message", message="Expected `int`, got `str`", path="$.amount")
    error = service_error_of(refusal_reply(body))
    assert error == service_error(body)
    assert error.headers == {
        "Nats-Service-Error": "Expected `int`, got `str`",
        "Nats-Service-Error-Code": "400",
    }
    assert error.last_error == "invalid_message: Expected `int`, got `str`"


def test_a_long_message_is_cut_in_the_header_only() -> None:
    message = "x" * (discovery.service_error_chars_max * 2)
    error = service_error(ErrorBody(code="unknown_verb", message=message))
    assert len(error.headers["Nats-Service-Error"]) == discovery.service_error_chars_max
    assert len(error.last_error) == discovery.service_error_chars_max
    assert error.headers["Nats-Service-Error"].endswith("\u2026")


def test_a_success_reply_is_no_refusal() -> None:
    ok = result_reply(BalanceResult(agent="a", balance="1", earned="0", spent="0", held="0"))
    with pytest.raises(msgspec.DecodeError):
        service_error_of(ok)
