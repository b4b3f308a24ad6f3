"""The NATS side of the daemon: one receive loop per route, the service API loop, publishing.

Owns: reading each subscription with ``async for msg in sub.messages``; per message, the size check,
the route's resolver, and either an immediate refusal (``message_too_large``, ``invalid_message``,
``unknown_verb``, ``invalid_agent_id``, ``overloaded``) or a ``send_nowait`` into the bounded
inbound queue; answering ``$SRV.*``; and ``Publisher``, the one place replies and events leave.
Must not: apply a command or answer a query (the batcher does, in order), wait on a full queue,
or put an exception's text in a reply.

A handler is: check size → resolve (decode) → refuse or queue → one log line for a refusal.
A message that needs an answer but has no reply subject is dropped, with a log line.
"""

import time
from typing import Final

import anyio
import msgspec
import nats.errors
import structlog
from anyio.streams.memory import MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from exchange.daemon.batcher import Inbound
from exchange.daemon.discovery import EndpointCounters, ServiceIdentity, verb_of
from exchange.daemon.routes import QueryWork, Route, refusal
from protocols.errors import ErrorCode
from protocols.results import Envelope, ErrorBody

log = structlog.get_logger()

_encoder: Final = msgspec.json.Encoder()
# A subject is logged up to this many characters (subjects come from peers).
_subject_log_chars_max: Final = 200


class Publisher:
    """Publishes replies and events on the daemon's connection."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    async def __call__(self, subject: str, payload: bytes) -> None:
        try:
            await self._nc.publish(subject, payload)
        except nats.errors.OutboundBufferLimitError:
            # Only while NATS is unreachable and the client's buffer is full. The command is
            # durable; a client that retries with the same request_id gets this reply again.
            log.warning("publish_dropped", subject=subject[:_subject_log_chars_max])


class Receiver:
    """Turns messages on the routes' subscriptions into queued work or immediate refusals."""

    def __init__(self, *, publish: Publisher, message_bytes_max: int) -> None:
        self._publish = publish
        self._message_bytes_max = message_bytes_max

    async def serve(
        self,
        route: Route,
        subscription: Subscription,
        counters: EndpointCounters,
        inbound: MemoryObjectSendStream[Inbound],
    ) -> None:
        """Handles every message of ``subscription`` until it is drained or unsubscribed."""
        async with inbound:
            async for msg in subscription.messages:
                await self.handle(route, msg, counters, inbound)

    async def handle(
        self,
        route: Route,
        msg: Msg,
        counters: EndpointCounters,
        inbound: MemoryObjectSendStream[Inbound],
    ) -> None:
        received_ns = time.perf_counter_ns()
        reply_to = msg.reply or None
        if len(msg.data) > self._message_bytes_max:
            await self._refuse(
                msg.subject,
                reply_to,
                counters,
                received_ns,
                refusal(
                    ErrorCode.message_too_large,
                    f"the body is {len(msg.data)} bytes and the exchange takes at most "
                    f"{self._message_bytes_max}; send a smaller message",
                ),
            )
            return
        resolved = route.resolve(msg.subject, msg.data)
        if isinstance(resolved, ErrorBody):
            await self._refuse(msg.subject, reply_to, counters, received_ns, resolved)
            return
        if reply_to is None and (isinstance(resolved, QueryWork) or resolved.reply_expected):
            log.info(
                "message_dropped",
                subject=msg.subject[:_subject_log_chars_max],
                reason="no_reply_subject",
            )
            return
        try:
            inbound.send_nowait(Inbound(resolved, reply_to, counters, received_ns))
        except anyio.WouldBlock:
            await self._refuse(
                msg.subject,
                reply_to,
                counters,
                received_ns,
                refusal(
                    ErrorCode.overloaded,
                    "the exchange's queue is full; nothing was applied. Retry after a short "
                    "wait with the same request_id",
                ),
            )

    async def _refuse(
        self,
        subject: str,
        reply_to: str | None,
        counters: EndpointCounters,
        received_ns: int,
        body: ErrorBody,
    ) -> None:
        log.info(
            "message_refused",
            subject=subject[:_subject_log_chars_max],
            code=body.code,
            path=body.path,
            replied=reply_to is not None,
        )
        counters.record(
            ok=False, elapsed_ns=time.perf_counter_ns() - received_ns, error_code=body.code
        )
        if reply_to is not None:
            await self._publish(reply_to, _encoder.encode(Envelope(ok=False, error=body)))

    async def serve_discovery(self, identity: ServiceIdentity, subscription: Subscription) -> None:
        """Answers ``$SRV.PING|INFO|STATS`` requests until the subscription ends."""
        async for msg in subscription.messages:
            verb = verb_of(msg.subject)
            if verb is None or not msg.reply:
                log.debug("service_request_ignored", subject=msg.subject[:_subject_log_chars_max])
                continue
            await self._publish(msg.reply, identity.respond(verb))
