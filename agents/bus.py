"""Typed access to the exchange and the swarm subjects for one agent: requests, queries, publishes.

Owns the request loop: encode once, send, wait for the envelope under a per-attempt timeout, and
on a timeout, while nobody answers, or when the exchange says ``overloaded``, send the *same
bytes* again (waiting longer between attempts, except after a timeout, which already waited). So
a command keeps its ``request_id`` across retries and the exchange applies it at most once
(PROTOCOL.md, "Idempotency").
Publishes of prices, signals and heartbeats are dropped, not buffered, while the connection is down:
a stale price is worse than none.

Every subject comes from ``protocols.subjects``. Must not: choose request ids (the caller does, once
per piece of work), decide what a refusal means (the roles do), or import ``exchange``.

Raises from requests: ``RefusedError`` (the exchange said no; ``code``/``message``),
``ExchangeUnavailableError`` (no reply after every attempt), ``ReplyDecodeError``.
"""

import uuid
from typing import Any, Final, TypeVar

import anyio
import msgspec
import nats.errors
import structlog
from nats.aio.client import Client

from agents import limits
from agents.errors import ExchangeUnavailableError, RefusedError, ReplyDecodeError
from agents.messages import Empty
from protocols import subjects
from protocols.commands import Command
from protocols.errors import ErrorCode
from protocols.ids import RequestId
from protocols.queries import Query
from protocols.results import ErrorBody
from protocols.swarm import (
    HEARTBEAT_VERB,
    AgentSignal,
    Ballot,
    Bid,
    Heartbeat,
    PriceUpdate,
    RefuseTask,
    TaskReport,
)

T = TypeVar("T")

_REQUEST_ID_CHARS_MAX: Final = 64


class _Reply(msgspec.Struct, frozen=True, kw_only=True):
    """The result envelope, with the result left undecoded until its type is known."""

    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"{}")
    error: ErrorBody | None = None


def new_request_id(prefix: str) -> RequestId:
    """A fresh request id, ``<prefix>:<32 hex digits>``: made once per piece of work and kept
    for every retry of it."""
    request_id = f"{prefix}:{uuid.uuid4().hex}"
    assert len(request_id) <= _REQUEST_ID_CHARS_MAX, request_id
    return request_id


class Bus:
    """One agent's view of the bus. The agent id is in every subject it publishes on."""

    def __init__(
        self,
        client: Client,
        agent_id: str,
        *,
        request_timeout_ms: int,
        request_attempts: int,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        assert request_attempts >= 1, request_attempts
        self._client = client
        self._agent_id = agent_id
        self._request_timeout_s = request_timeout_ms / 1000
        self._request_attempts = request_attempts
        self._log = log
        self._encoder = msgspec.json.Encoder()
        self._reply_decoder = msgspec.json.Decoder(_Reply)
        # One Decoder per result type, built on first use (a handful of types per role).
        self._result_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}

    @property
    def agent_id(self) -> str:
        return self._agent_id

    @property
    def is_connected(self) -> bool:
        return bool(self._client.is_connected)

    # ------------------------------------------------------------------ exchange commands

    async def request(self, verb: str, command: Command, result_type: type[T]) -> T:
        """Sends ``command`` on ``exchange.cmd.<agent>.<verb>`` and returns its decoded result
        (pass ``messages.Empty`` when the result does not matter).

        Raises RefusedError, ExchangeUnavailableError, ReplyDecodeError.
        """
        subject = subjects.command(self._agent_id, verb)
        return await self._call(subject, verb, self._encoder.encode(command), result_type)

    async def query(self, verb: str, query: Query, result_type: type[T]) -> T:
        """Asks ``exchange.query.<verb>``. Queries change nothing, so retries are always safe.

        Raises RefusedError, ExchangeUnavailableError, ReplyDecodeError.
        """
        subject = subjects.query(verb)
        return await self._call(subject, verb, self._encoder.encode(query), result_type)

    # ------------------------------------------------------------------ Contract Net and votes

    async def propose(self, task_id: str, bid: Bid) -> None:
        """Bids on ``task_id``. The exchange derives the request id from the subject, so a retry
        of the same bid is answered with the first reply.

        Raises RefusedError (``bid_window_closed``, ``duplicate_bid``...), ExchangeUnavailableError,
        ReplyDecodeError.
        """
        subject = subjects.task_message(task_id, "propose", self._agent_id)
        await self._call(subject, "task.propose", self._encoder.encode(bid), Empty)

    async def refuse(self, task_id: str, refusal: RefuseTask) -> None:
        """Declines ``task_id``, which lets its auction close early. Raises as ``propose``."""
        subject = subjects.task_message(task_id, "refuse", self._agent_id)
        await self._call(subject, "task.refuse", self._encoder.encode(refusal), Empty)

    async def inform(self, task_id: str, report: TaskReport) -> None:
        """Reports an awarded task done, with its output. Raises as ``propose``."""
        subject = subjects.task_message(task_id, "inform", self._agent_id)
        await self._call(subject, "task.inform", self._encoder.encode(report), Empty)

    async def report_failure(self, task_id: str, report: TaskReport) -> None:
        """Reports an awarded task failed (the escrow is refunded). Raises as ``propose``."""
        subject = subjects.task_message(task_id, "failure", self._agent_id)
        await self._call(subject, "task.failure", self._encoder.encode(report), Empty)

    async def cast(self, proposal_id: str, ballot: Ballot) -> None:
        """Votes on ``proposal_id``. Raises as ``propose`` (``already_voted``, ``not_eligible``)."""
        subject = subjects.vote_cast(proposal_id, self._agent_id)
        await self._call(subject, "vote.cast", self._encoder.encode(ballot), Empty)

    # ------------------------------------------------------------------ fire and forget

    async def publish_signal(self, signal_type: str, asset: str, signal: AgentSignal) -> bool:
        """Publishes on ``swarm.signal.<agent>.<signal_type>.<asset>``; False if dropped."""
        subject = subjects.signal(self._agent_id, signal_type, asset)
        return await self._publish(subject, self._encoder.encode(signal))

    async def publish_price(self, update: PriceUpdate) -> bool:
        """Publishes on ``swarm.price.<asset>``; False if dropped while disconnected."""
        return await self._publish(subjects.price(update.asset), self._encoder.encode(update))

    async def publish_heartbeat(self, heartbeat: Heartbeat) -> bool:
        """Publishes on ``exchange.cmd.<agent>.heartbeat`` with no reply inbox: nobody answers."""
        subject = subjects.command(self._agent_id, HEARTBEAT_VERB)
        return await self._publish(subject, self._encoder.encode(heartbeat))

    # ------------------------------------------------------------------ internals

    async def _publish(self, subject: str, payload: bytes) -> bool:
        if not self._client.is_connected:
            self._log.debug("publish_dropped", subject=subject, reason="disconnected")
            return False
        try:
            await self._client.publish(subject, payload)
        except nats.errors.OutboundBufferLimitError:
            # The connection dropped between the check and the publish.
            self._log.debug("publish_dropped", subject=subject, reason="buffer_full")
            return False
        return True

    async def _call(self, subject: str, verb: str, payload: bytes, result_type: type[T]) -> T:
        backoff_s = limits.request_backoff_ms_min / 1000
        for attempt in range(1, self._request_attempts + 1):
            try:
                msg = await self._client.request(subject, payload, timeout=self._request_timeout_s)
            except nats.errors.NoRespondersError:
                # Nobody subscribes yet: the exchange is starting or restarting. Wait a little
                # rather than spinning; the next attempt resends the same bytes.
                self._log.info("request_unanswered", subject=subject, attempt=attempt)
            except nats.errors.TimeoutError:
                # The request or its reply may have been lost with a connection; resending the
                # same request_id is safe (the exchange answers a repeat with the first reply).
                self._log.warning("request_timed_out", subject=subject, attempt=attempt)
                continue
            except nats.errors.OutboundBufferLimitError:
                self._log.info("request_deferred", subject=subject, attempt=attempt)
            else:
                try:
                    return self._decode(verb, msg.data, result_type)
                except RefusedError as exc:
                    if exc.code != ErrorCode.overloaded:
                        raise
                    # The exchange's queue was full and nothing was applied; it asks for a retry
                    # after a short wait with the same request_id.
                    self._log.info("request_deferred", subject=subject, attempt=attempt)
            await anyio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, limits.request_backoff_ms_max / 1000)
        raise ExchangeUnavailableError(subject, self._request_attempts)

    def _decode(self, verb: str, data: bytes, result_type: type[T]) -> T:
        try:
            reply = self._reply_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ReplyDecodeError(f"reply to {verb} is not a result envelope: {exc}") from exc
        if not reply.ok:
            if reply.error is None:
                raise ReplyDecodeError(f"reply to {verb} has ok=false and no error")
            raise RefusedError(verb, reply.error)
        decoder = self._result_decoders.get(result_type)
        if decoder is None:
            decoder = msgspec.json.Decoder(result_type)
            self._result_decoders[result_type] = decoder
        try:
            result: T = decoder.decode(reply.result)
        except msgspec.DecodeError as exc:
            raise ReplyDecodeError(
                f"result of {verb} is not a {result_type.__name__}: {exc}"
            ) from exc
        return result
