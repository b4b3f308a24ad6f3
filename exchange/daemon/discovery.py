"""The NATS service API (``$SRV.PING``, ``$SRV.INFO``, ``$SRV.STATS``) under the name ``exchange``.

Owns: the three response bodies (the ``io.nats.micro.v1`` schemas), the per-endpoint counters they
report, the subjects a service answers on (``$SRV.<VERB>``, ``$SRV.<VERB>.exchange`` and
``$SRV.<VERB>.exchange.<id>``), and the service API's error convention: a refusal's reply carries
the headers ``Nats-Service-Error`` (its message) and ``Nats-Service-Error-Code`` (a number,
``service_error_status``), and is counted in its endpoint's ``num_errors`` and ``last_error``.
Must not: change any state of the exchange, or parse request bodies (every request gets its
answer whatever it carries).

Numeric codes (the JSON body keeps the stable string code; the number only classes it, as HTTP's
status classes a response): 500 ``internal_error`` (a bug, logged; the state is as before); 503
``overloaded`` (the exchange's capacity: retry the same request later); 504 ``query_timed_out``
(the query ran out of time); 400 every other refusal (caused by the request, or by the state it
met: fix it before retrying).

Why not ``nats.micro``: in nats-py 2.16 it subscribes with callbacks (a detached task per
subscription), answers a failing handler with ``repr(exc)``, and calls ``datetime.utcnow()``
(deprecated, so a warning under ``filterwarnings=error``). The protocol is three small JSON
documents, so the daemon answers them itself, from loops it owns, with the same schemas.
"""

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from protocols.errors import ErrorCode
from protocols.results import ErrorBody

SERVICE_NAME: Final = "exchange"
SERVICE_DESCRIPTION: Final = (
    "Agent Exchange: the ledger, escrow and market of an agent swarm; the protocol is in the "
    "repository's docs/protocol-guide.md"
)
PING_RESPONSE_TYPE: Final = "io.nats.micro.v1.ping_response"
INFO_RESPONSE_TYPE: Final = "io.nats.micro.v1.info_response"
STATS_RESPONSE_TYPE: Final = "io.nats.micro.v1.stats_response"
Verb = Literal["PING", "INFO", "STATS"]
VERBS: Final[tuple[Verb, ...]] = ("PING", "INFO", "STATS")

SERVICE_ERROR_HEADER: Final = "Nats-Service-Error"
SERVICE_ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"
# A refusal's message in a header, and ``last_error``, is cut to this many characters: the JSON
# body carries it whole. Messages are short (the longest lists a family's verbs).
service_error_chars_max: Final = 1024
_STATUS_OF: Final[dict[str, int]] = {
    ErrorCode.internal_error: 500,
    ErrorCode.overloaded: 503,
    ErrorCode.query_timed_out: 504,
}
_STATUS_REFUSED: Final = 400

_encoder: Final = msgspec.json.Encoder()


class _Refused(msgspec.Struct, frozen=True):
    """What ``service_error_of`` reads from a refusal reply: ``{"ok": false, "error": {...}}``."""

    error: ErrorBody


_refused_decoder: Final = msgspec.json.Decoder(_Refused)


def service_version() -> str:
    """The installed package's version (a semver, as the service API requires)."""
    try:
        return importlib.metadata.version("agent-exchange")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def control_subjects(service_id: str) -> tuple[str, ...]:
    """The three subscriptions that cover every control subject this instance answers."""
    return ("$SRV.*", f"$SRV.*.{SERVICE_NAME}", f"$SRV.*.{SERVICE_NAME}.{service_id}")


def verb_of(subject: str) -> Verb | None:
    """``$SRV.PING.exchange`` -> ``PING``; None for a subject that is not a known control verb."""
    parts = subject.split(".")
    if len(parts) < 2 or parts[0] != "$SRV":
        return None
    for verb in VERBS:
        if parts[1] == verb:
            return verb
    return None


def service_error_status(code: str) -> int:
    """The ``Nats-Service-Error-Code`` of a refusal code (see the module doc)."""
    return _STATUS_OF.get(code, _STATUS_REFUSED)


def _cut(text: str) -> str:
    if len(text) <= service_error_chars_max:
        return text
    return text[: service_error_chars_max - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class ServiceError:
    """A refusal as the service API reports it: in the reply's headers and in ``$SRV.STATS``."""

    code: str
    message: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            SERVICE_ERROR_HEADER: _cut(self.message),
            SERVICE_ERROR_CODE_HEADER: str(service_error_status(self.code)),
        }

    @property
    def last_error(self) -> str:
        return _cut(f"{self.code}: {self.message}")


def service_error(body: ErrorBody) -> ServiceError:
    return ServiceError(body.code, body.message)


def service_error_of(reply: bytes) -> ServiceError:
    """The refusal in a reply that is not ``{"ok":true...``. Every refusal the exchange sends is an
    encoded ``Envelope(ok=False, error=ErrorBody(...))``.

    Raises msgspec.DecodeError for anything else (a bug: the exchange made that reply).
    """
    return service_error(_refused_decoder.decode(reply).error)


@dataclass(slots=True)
class EndpointCounters:
    """What ``$SRV.STATS`` reports for one subscription. Mutated only on the event loop."""

    name: str
    subject: str
    requests: int = 0
    errors: int = 0
    processing_ns_total: int = 0
    last_error: str = ""
    # Told of every request too (elapsed_ns, the refusal's code or None): the Prometheus
    # histogram and refusal counters, when ``--metrics-port`` is given.
    on_record: Callable[[int, str | None], None] | None = None

    def record(self, *, elapsed_ns: int, error: ServiceError | None = None) -> None:
        """One request answered (or refused without a reply subject): a refusal if ``error``."""
        self.requests += 1
        self.processing_ns_total += elapsed_ns
        if error is not None:
            self.errors += 1
            self.last_error = error.last_error
        if self.on_record is not None:
            self.on_record(elapsed_ns, None if error is None else error.code)


class EndpointInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subject: str
    queue_group: str = ""
    metadata: dict[str, str] = {}


class EndpointStats(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subject: str
    queue_group: str
    num_requests: int
    num_errors: int
    last_error: str
    processing_time: int
    average_processing_time: int
    data: None = None


class PingResponse(msgspec.Struct, frozen=True, kw_only=True):
    type: str = PING_RESPONSE_TYPE
    name: str
    id: str
    version: str
    metadata: dict[str, str]


class InfoResponse(msgspec.Struct, frozen=True, kw_only=True):
    type: str = INFO_RESPONSE_TYPE
    name: str
    id: str
    version: str
    description: str
    metadata: dict[str, str]
    endpoints: list[EndpointInfo]


class StatsResponse(msgspec.Struct, frozen=True, kw_only=True):
    type: str = STATS_RESPONSE_TYPE
    name: str
    id: str
    version: str
    metadata: dict[str, str]
    started: str
    endpoints: list[EndpointStats]


class ServiceIdentity:
    """This instance: its id, when it started, its endpoints' counters; builds the responses."""

    def __init__(
        self, *, service_id: str, started_at: datetime, endpoints: list[EndpointCounters]
    ) -> None:
        self.service_id = service_id
        self.version = service_version()
        self.started_at = started_at
        self.endpoints = endpoints
        self.metadata: dict[str, str] = {}

    def respond(self, verb: Verb) -> bytes:
        if verb == "PING":
            return _encoder.encode(
                PingResponse(
                    name=SERVICE_NAME, id=self.service_id, version=self.version, metadata={}
                )
            )
        if verb == "INFO":
            return _encoder.encode(
                InfoResponse(
                    name=SERVICE_NAME,
                    id=self.service_id,
                    version=self.version,
                    description=SERVICE_DESCRIPTION,
                    metadata=self.metadata,
                    endpoints=[
                        EndpointInfo(name=e.name, subject=e.subject) for e in self.endpoints
                    ],
                )
            )
        return _encoder.encode(
            StatsResponse(
                name=SERVICE_NAME,
                id=self.service_id,
                version=self.version,
                metadata=self.metadata,
                started=self.started_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                endpoints=[
                    EndpointStats(
                        name=e.name,
                        subject=e.subject,
                        queue_group="",
                        num_requests=e.requests,
                        num_errors=e.errors,
                        last_error=e.last_error,
                        processing_time=e.processing_ns_total,
                        average_processing_time=e.processing_ns_total // max(1, e.requests),
                    )
                    for e in self.endpoints
                ],
            )
        )
