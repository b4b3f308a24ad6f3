"""The Python request client of the exchange: the CLI, the integrations, the demo, the workers
and the tests all send their commands and queries through it.

Owns:
- ``connect``: a NATS connection made from ``Credentials``, closed when the block exits;
- ``ExchangeClient``: a command or query as one NATS request, its one reply decoded as the
  result envelope, then as the caller's result type (``command``, ``query``, ``request``) or left
  as the envelope for callers that show it as it came (``*_envelope``);
- the retry rule. A request is encoded once; after a timeout, while no exchange is subscribed
  (it is starting or restarting), while the connection is being re-established, or when the
  exchange answers ``overloaded``, the *same bytes* are sent again, at most ``attempts_max``
  times, waiting longer each time (except after a timeout, which already waited). So a command
  keeps its ``request_id`` across retries and the exchange applies it at most once (protocol
  guide, "Retry safely");
- ``new_request_id``: made once per logical request, by the caller or here, never per attempt.

Must not: decide what a refusal means (callers do), keep any state beyond the connection, or
import ``exchange`` or ``agents``. The one module of ``protocols`` that does I/O: it needs nats-py,
anyio and structlog, where the message modules need only the standard library and msgspec.

Requests raise (``protocols.client_errors``): ``RefusedError`` (typed calls only; the envelope
calls return the refusal), ``ExchangeUnavailableError``, ``ReplyDecodeError``.
"""

import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import anyio
import msgspec
import nats
import nats.errors
import structlog
from nats.aio.client import Client

from protocols import subjects
from protocols.client_errors import ExchangeUnavailableError, RefusedError, ReplyDecodeError
from protocols.credentials import Credentials, server_urls
from protocols.errors import ErrorCode
from protocols.nesting import depth_beyond
from protocols.results import Envelope, ErrorBody

__all__ = [
    "ATTEMPTS_MAX_DEFAULT",
    "REQUEST_TIMEOUT_S_DEFAULT",
    "Body",
    "ExchangeClient",
    "connect",
    "connect_options",
    "flush_commands",
    "new_request_id",
]

T = TypeVar("T")
# A body is a Struct of ``protocols`` (sent as it is) or a JSON object (a command gets a
# ``request_id`` unless it has one).
Body = Mapping[str, Any] | msgspec.Struct
Logger = structlog.typing.FilteringBoundLogger

REQUEST_TIMEOUT_S_DEFAULT: Final = 5.0
ATTEMPTS_MAX_DEFAULT: Final = 4
CONNECT_TIMEOUT_S_DEFAULT: Final = 5.0
# Waits between attempts when the exchange cannot take the request yet: 0.05 s, 0.1 s, 0.2 s...
RETRY_BACKOFF_S_FIRST: Final = 0.05
RETRY_BACKOFF_S_MAX: Final = 2.0
# With reconnect, nats-py tries the server this often, this many times (a minute), before it
# gives the connection up; an exchange restart is then only a slower reply.
RECONNECT_WAIT_S: Final = 0.2
RECONNECT_ATTEMPTS_MAX: Final = 300
REQUEST_ID_CHARS_MAX: Final = 64

_encoder: Final = msgspec.json.Encoder()


class _Reply(msgspec.Struct, frozen=True, kw_only=True):
    """The result envelope with the result left undecoded until its type is known."""

    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"{}")
    error: ErrorBody | None = None


_reply_decoder: Final = msgspec.json.Decoder(_Reply)
_envelope_decoder: Final = msgspec.json.Decoder(Envelope)
# Either decoder answers the retry loop's question (ok? overloaded?); the caller picks by use.
ReplyT = TypeVar("ReplyT", _Reply, Envelope)

_log: Final = structlog.get_logger()


def new_request_id(prefix: str | None = None) -> str:
    """A fresh request id: a random UUID, or ``<prefix>:<32 hex digits>`` (a worker names the
    kind of work, e.g. ``announce``). Make it once per piece of work and keep it for every
    retry of it."""
    request_id = str(uuid.uuid4()) if prefix is None else f"{prefix}:{uuid.uuid4().hex}"
    assert len(request_id) <= REQUEST_ID_CHARS_MAX, request_id
    return request_id


class ExchangeClient:
    """Requests to the exchange over one NATS connection (``connect`` makes one; a worker passes
    the connection it already has)."""

    def __init__(
        self,
        nc: Client,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S_DEFAULT,
        attempts_max: int = ATTEMPTS_MAX_DEFAULT,
        log: Logger | None = None,
    ) -> None:
        assert request_timeout_s > 0, request_timeout_s
        assert attempts_max >= 1, attempts_max
        self._nc = nc
        self._request_timeout_s = request_timeout_s
        self._attempts_max = attempts_max
        self._log: Logger = log if log is not None else _log
        # One Decoder per result type, built on first use (a handful of types per caller).
        self._result_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}

    @property
    def nc(self) -> Client:
        """The NATS connection, for subscriptions and publishes beside the requests."""
        return self._nc

    # ------------------------------------------------------------------ typed: result or raise

    async def command(
        self,
        sender: str,
        verb: str,
        body: Body,
        result_type: type[T],
        *,
        request_id: str | None = None,
    ) -> T:
        """Sends command ``verb`` on ``exchange.cmd.<sender>.<verb>``; returns its result as a
        ``result_type`` (``protocols.results.Result`` when its fields do not matter).

        A mapping body without ``request_id`` gets ``request_id`` (else a new one); a Struct body
        carries its own. Raises RefusedError, ExchangeUnavailableError, ReplyDecodeError.
        """
        payload = _command_payload(body, request_id)
        reply = await self._send(subjects.command(sender, verb), payload, _reply_decoder)
        return self._result(verb, reply, result_type)

    async def query(self, verb: str, body: Body | None, result_type: type[T]) -> T:
        """Asks ``exchange.query.<verb>`` (queries change nothing: retries are always safe).

        Raises RefusedError, ExchangeUnavailableError, ReplyDecodeError.
        """
        payload = _encoder.encode({} if body is None else body)
        reply = await self._send(subjects.query(verb), payload, _reply_decoder)
        return self._result(verb, reply, result_type)

    async def request(self, subject: str, body: Body, result_type: type[T]) -> T:
        """Sends ``body`` on any subject that answers with the envelope: the ``swarm.*`` bids,
        refusals, reports and ballots, whose request id the exchange takes from the subject.

        Raises RefusedError, ExchangeUnavailableError, ReplyDecodeError.
        """
        reply = await self._send(subject, _encoder.encode(body), _reply_decoder)
        return self._result(subject, reply, result_type)

    # ------------------------------------------------------------------ the envelope as it came

    async def command_envelope(
        self, sender: str, verb: str, body: Body, *, request_id: str | None = None
    ) -> Envelope:
        """``command``, but a refusal is returned in the envelope rather than raised, and the
        result is left as plain JSON values (the CLI prints it as the exchange sent it).

        Raises ExchangeUnavailableError, ReplyDecodeError.
        """
        payload = _command_payload(body, request_id)
        return await self._send(subjects.command(sender, verb), payload, _envelope_decoder)

    async def query_envelope(self, verb: str, body: Body | None = None) -> Envelope:
        """``query``, with the reply returned as its envelope (see ``command_envelope``).

        Raises ExchangeUnavailableError, ReplyDecodeError.
        """
        payload = _encoder.encode({} if body is None else body)
        return await self._send(subjects.query(verb), payload, _envelope_decoder)

    async def request_envelope(self, subject: str, payload: bytes) -> Envelope:
        """``payload`` sent as it is on ``subject``, retried as any request; its envelope.

        Raises ExchangeUnavailableError, ReplyDecodeError.
        """
        return await self._send(subject, payload, _envelope_decoder)

    # ------------------------------------------------------------------ internals

    async def _send(
        self, subject: str, payload: bytes, decoder: msgspec.json.Decoder[ReplyT]
    ) -> ReplyT:
        """The retry loop: the same ``payload`` each attempt, so the same request id."""
        backoff_s = RETRY_BACKOFF_S_FIRST
        problem = "no attempt made"
        for attempt in range(1, self._attempts_max + 1):
            try:
                msg = await self._nc.request(subject, payload, timeout=self._request_timeout_s)
            except nats.errors.TimeoutError:
                # The request or its reply may have been lost with a connection; resending the
                # same request id is safe, and the timeout already waited.
                problem = f"no reply within {self._request_timeout_s} s"
                self._log.info("request_retried", subject=subject, attempt=attempt, problem=problem)
                continue
            except nats.errors.NoRespondersError:
                # Nobody subscribes: the exchange is starting or restarting.
                problem = "no exchange is subscribed to the subject"
            except (nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError):
                problem = "the NATS connection is down"
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
                # Closed for good: another attempt on this connection cannot succeed.
                raise ExchangeUnavailableError(
                    f"{subject}: the NATS connection is closed; connect again to retry (with the "
                    "same request id)",
                    subject=subject,
                    attempts=attempt,
                ) from exc
            else:
                reply = _decode_reply(decoder, msg.data, subject)
                if not _is_overloaded(reply.error):
                    return reply
                # The exchange's queue was full and nothing was applied; it asks for a retry
                # after a short wait with the same request id.
                problem = "the exchange answered overloaded"
            self._log.info("request_retried", subject=subject, attempt=attempt, problem=problem)
            if attempt < self._attempts_max:
                await anyio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_S_MAX)
        raise ExchangeUnavailableError(
            f"no reply on {subject} after {self._attempts_max} attempts (last: {problem}); check "
            "that the exchange runs (`exchange status`) and that the NATS URL points at it",
            subject=subject,
            attempts=self._attempts_max,
        )

    def _result(self, what: str, reply: _Reply, result_type: type[T]) -> T:
        if not reply.ok:
            assert reply.error is not None, "_decode_reply refuses ok=false without an error"
            raise RefusedError(what, reply.error)
        decoder = self._result_decoders.get(result_type)
        if decoder is None:
            decoder = msgspec.json.Decoder(result_type)
            self._result_decoders[result_type] = decoder
        try:
            result: T = decoder.decode(reply.result)
        except msgspec.DecodeError as exc:
            name = getattr(result_type, "__name__", repr(result_type))
            raise ReplyDecodeError(f"the result of {what} is not a {name}: {exc}") from exc
        return result


def _command_payload(body: Body, request_id: str | None) -> bytes:
    if isinstance(body, msgspec.Struct):
        assert request_id is None, "a Struct body carries its own request_id"
        return _encoder.encode(body)
    fields = dict(body)
    fields.setdefault("request_id", request_id or new_request_id())
    return _encoder.encode(fields)


def _is_overloaded(error: ErrorBody | None) -> bool:
    return error is not None and error.code == ErrorCode.overloaded.value


def _decode_reply(decoder: msgspec.json.Decoder[ReplyT], data: bytes, subject: str) -> ReplyT:
    """Raises ReplyDecodeError for anything but a documented envelope."""
    if (depth := depth_beyond(data)) is not None:
        # Before decoding: so deep a body raises RecursionError in msgspec, not DecodeError.
        raise ReplyDecodeError(f"the reply to {subject} nests {depth} levels deep")
    try:
        reply = decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ReplyDecodeError(
            f"the reply to {subject} is not a result envelope ({exc}); is something other than "
            "the exchange answering on this subject?"
        ) from exc
    if not reply.ok and reply.error is None:
        raise ReplyDecodeError(f"the reply to {subject} has ok=false and no error")
    return reply


def connect_options(credentials: Credentials) -> dict[str, Any]:
    """nats-py's ``connect`` options that say who connects: the nkey seed that signs the server's
    nonce (``nkeys_seed_str``), or user and password; the inbox prefix; and, with a CA file, the
    ``tls`` context that trusts that CA (a ``tls://`` URL without one uses the system's).

    Raises OSError (or ssl.SSLError) when the CA file cannot be read.
    """
    options: dict[str, Any] = {"inbox_prefix": credentials.inbox_prefix}
    if credentials.tls_ca_file:
        options["tls"] = ssl.create_default_context(cafile=credentials.tls_ca_file)
    if credentials.nkey_seed:
        # The server knows an nkey user by its public key; a user name would be ignored.
        options["nkeys_seed_str"] = credentials.nkey_seed
    elif credentials.user is not None:
        options["user"] = credentials.user
        options["password"] = credentials.password or ""
    return options


async def flush_commands(nc: Client) -> None:
    """Returns once the server has every command ``nc`` sent before the call (SUB, PUB...): what
    a "ready" after subscribing must mean, or a publisher may send before the subscription exists.

    One ``flush()`` is not enough with nats-py 2.16: its PING is written straight to the socket,
    ahead of commands still waiting in the client's send buffer, so it can return before a new
    subscription reaches the server (one run in eight of a worker test on a loaded machine). The
    first round trip lets the client's flusher write the buffer out; the second PING follows it.
    """
    await nc.flush()
    await nc.flush()


async def _log_nats_error(error: Exception) -> None:
    # Permission violations and slow-consumer notices arrive here; the request then times out.
    _log.debug("nats_error_reported", error=str(error), error_type=type(error).__name__)


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
    for up to a minute. ``reconnect=False`` fails at once: right for one short call (the CLI).
    Raises ExchangeUnavailableError if the first connection fails.
    """
    try:
        options = connect_options(credentials)
        nc = await nats.connect(
            # The nodes of a cluster, any of which will do.
            server_urls(credentials.url),
            name=name,
            connect_timeout=connect_timeout_s,
            allow_reconnect=reconnect,
            reconnect_time_wait=RECONNECT_WAIT_S,
            # nats-py also applies this bound to the first connection; 0 would mean "forever".
            max_reconnect_attempts=RECONNECT_ATTEMPTS_MAX if reconnect else 1,
            error_cb=_log_nats_error,
            **options,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise ExchangeUnavailableError(
            f"cannot connect to NATS at {credentials.url} as {credentials.user or 'anonymous'}: "
            f"{type(exc).__name__}; start the exchange (`exchange up`) or pass --nats URL"
        ) from exc
    try:
        yield ExchangeClient(nc, request_timeout_s=request_timeout_s, attempts_max=attempts_max)
    finally:
        await nc.close()
