"""A small Python client for the exchange: commands and queries as request/reply, with the envelope.

Owns: ``Credentials`` (the shape of ``DATA/creds/<user>.json`` and of ``exchange creds --json``),
``connect``, and ``ExchangeClient``, which sends a command or query, waits for its one reply and
decodes the result envelope. A command keeps its ``request_id`` across retries (after a timeout, or
while no exchange answers), so a retry is answered by the first reply and never applied twice.
Must not: import the core, the journal or the daemon (agents use this file alone, with protocols/),
or decide anything about the reply beyond decoding it.

Errors::

    ExchangeClientError          anything this client could not do
    ├── ExchangeUnavailableError no reply after every attempt: not running, overloaded, unreachable
    └── ReplyMalformedError      the reply is not a result envelope
"""

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import msgspec
import nats
import nats.errors
import structlog
from nats.aio.client import Client

from protocols import subjects
from protocols.errors import ErrorCode
from protocols.results import Envelope, ErrorBody

__all__ = [
    "Credentials",
    "ExchangeClient",
    "ExchangeClientError",
    "ExchangeUnavailableError",
    "ReplyMalformedError",
    "connect",
    "new_request_id",
]

log = structlog.get_logger()

REQUEST_TIMEOUT_S_DEFAULT: Final = 5.0
ATTEMPTS_MAX_DEFAULT: Final = 4
CONNECT_TIMEOUT_S_DEFAULT: Final = 5.0
# Waits between attempts when no exchange is subscribed (it is restarting): 0.1 s, 0.2 s, 0.4 s...
RETRY_BACKOFF_S_FIRST: Final = 0.1
RETRY_BACKOFF_S_MAX: Final = 2.0
DEFAULT_INBOX_PREFIX: Final = "_INBOX"

_envelope_decoder: Final = msgspec.json.Decoder(Envelope)
_encoder: Final = msgspec.json.Encoder()


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """What a NATS client needs to connect as one user. ``user=None`` is open mode."""

    url: str
    user: str | None = None
    password: str | None = None
    inbox_prefix: str = DEFAULT_INBOX_PREFIX

    def __repr__(self) -> str:
        # The password must not reach logs or tracebacks.
        return f"Credentials(url={self.url!r}, user={self.user!r}, password='***')"


class ExchangeClientError(Exception):
    """Base class for every error of this client."""


class ExchangeUnavailableError(ExchangeClientError):
    """No reply came after every attempt: no exchange listens, it is overloaded, or NATS is down."""


class ReplyMalformedError(ExchangeClientError):
    """The reply is not a result envelope (``{"ok": ...}``)."""


def new_request_id() -> str:
    """A fresh request id: a random UUID, as the CLI uses."""
    return str(uuid.uuid4())


class ExchangeClient:
    """Request/reply with the exchange over one NATS connection (see ``connect``)."""

    def __init__(
        self,
        nc: Client,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S_DEFAULT,
        attempts_max: int = ATTEMPTS_MAX_DEFAULT,
    ) -> None:
        assert request_timeout_s > 0, request_timeout_s
        assert attempts_max >= 1, attempts_max
        self.nc = nc
        self._request_timeout_s = request_timeout_s
        self._attempts_max = attempts_max

    async def command(
        self,
        sender: str,
        verb: str,
        body: Mapping[str, Any] | msgspec.Struct,
        *,
        request_id: str | None = None,
    ) -> Envelope:
        """Sends command ``verb`` as ``sender`` and returns its reply envelope.

        A mapping body gets ``request_id`` (the argument, else a new UUID) unless it has one; a
        Struct body is sent as it is. Retries keep the same body, so the same request id.
        Raises ExchangeUnavailableError, ReplyMalformedError.
        """
        if isinstance(body, msgspec.Struct):
            payload = _encoder.encode(body)
        else:
            fields = dict(body)
            fields.setdefault("request_id", request_id or new_request_id())
            payload = _encoder.encode(fields)
        return await self.request(subjects.command(sender, verb), payload)

    async def query(self, verb: str, body: Mapping[str, Any] | None = None) -> Envelope:
        """Sends query ``verb`` and returns its reply envelope.

        Raises ExchangeUnavailableError, ReplyMalformedError.
        """
        return await self.request(subjects.query(verb), _encoder.encode(dict(body or {})))

    async def request(self, subject: str, payload: bytes) -> Envelope:
        """One request with retries: on a timeout, on no responders, and on ``overloaded``.

        Raises ExchangeUnavailableError after ``attempts_max`` attempts, ReplyMalformedError.
        """
        backoff_s = RETRY_BACKOFF_S_FIRST
        last_problem = "no attempt made"
        for attempt in range(1, self._attempts_max + 1):
            try:
                msg = await self.nc.request(subject, payload, timeout=self._request_timeout_s)
            except nats.errors.TimeoutError:
                last_problem = f"no reply within {self._request_timeout_s} s"
            except nats.errors.NoRespondersError:
                last_problem = "no exchange is subscribed to the subject"
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                last_problem = "the NATS connection is down"
            else:
                envelope = _decode_envelope(msg.data, subject)
                if envelope.ok or not _is_overloaded(envelope.error):
                    return envelope
                last_problem = "the exchange answered overloaded"
            log.debug("request_retried", subject=subject, attempt=attempt, problem=last_problem)
            if attempt < self._attempts_max:
                await anyio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)
        raise ExchangeUnavailableError(
            f"{subject}: {last_problem} after {self._attempts_max} attempts; check that the "
            "exchange runs (`exchange status`) and that --nats / EXCHANGE_NATS_URL points at it"
        )


def _is_overloaded(error: ErrorBody | None) -> bool:
    return error is not None and error.code == ErrorCode.overloaded.value


def _decode_envelope(data: bytes, subject: str) -> Envelope:
    try:
        return _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ReplyMalformedError(
            f"the reply to {subject} is not a result envelope ({exc}); is something other than "
            "the exchange answering on this subject?"
        ) from exc


async def _log_nats_error(error: Exception) -> None:
    # Permission violations and slow-consumer notices arrive here; the request then times out.
    log.debug("nats_error_reported", error=str(error), error_type=type(error).__name__)


@asynccontextmanager
async def connect(
    credentials: Credentials,
    *,
    name: str = "exchange-client",
    request_timeout_s: float = REQUEST_TIMEOUT_S_DEFAULT,
    attempts_max: int = ATTEMPTS_MAX_DEFAULT,
    connect_timeout_s: float = CONNECT_TIMEOUT_S_DEFAULT,
    reconnect: bool = True,
) -> AsyncIterator[ExchangeClient]:
    """An ``ExchangeClient`` on a new NATS connection, closed on exit.

    ``reconnect=True`` keeps retrying the server while the block runs (an exchange restart is then
    invisible apart from a slower reply); nats-py then also retries a failing first connection,
    for up to a minute. ``reconnect=False`` fails at once.
    Raises ExchangeUnavailableError if the first connection fails.
    """
    options: dict[str, Any] = {
        "name": name,
        "connect_timeout": connect_timeout_s,
        "allow_reconnect": reconnect,
        "reconnect_time_wait": 0.2,
        # nats-py also applies this bound to the first connection; 0 would mean "forever" there.
        "max_reconnect_attempts": 300 if reconnect else 1,
        "error_cb": _log_nats_error,
        "inbox_prefix": credentials.inbox_prefix,
    }
    if credentials.user is not None:
        options["user"] = credentials.user
        options["password"] = credentials.password
    try:
        nc = await nats.connect(credentials.url, **options)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise ExchangeUnavailableError(
            f"cannot connect to NATS at {credentials.url} as {credentials.user or 'anonymous'}: "
            f"{type(exc).__name__}; start the exchange (`exchange up`) or pass --nats URL"
        ) from exc
    try:
        yield ExchangeClient(nc, request_timeout_s=request_timeout_s, attempts_max=attempts_max)
    finally:
        await nc.close()
