"""The NATS side of the daemon: one message handler per route, the service API, publishing.

Owns: the subscription callbacks; per message, the size and nesting checks, the route's resolver,
and either an immediate refusal (``message_too_large``, ``invalid_message``, ``unknown_verb``,
``invalid_agent_id``, ``query_too_large``, ``overloaded``), a ``put`` into the bounded inbound
queue, or, for a query that reads no ledger state, a ``submit_nowait`` to the query pool (which
answers it in another process); answering ``$SRV.*``; and ``Publisher``, the one place replies
and events leave (a refusal with the service API's error headers: ``replies.publish_refusal``).

Why callbacks, not ``async for msg in sub.messages``: nats-py (2.16) runs a callback subscription
as one task that hands every buffered message to the callback without yielding in between, so a
burst read from the socket reaches the inbound queue whole and is applied as one batch. Its
iterator instead makes a task and a wait per message (nats-py #541): about 20 us more a message,
and bursts trickle into the batcher one message per loop turn (measured: batches of 1).
Must not: apply a command or answer a query (the batcher does, in order; the query pool answers
the stateless ones), wait on a full queue, or put an exception's text in a reply.

A handler is: check size and nesting → resolve (decode) → refuse or queue → one log line for a
refusal.
A message that needs an answer but has no reply subject is dropped, with a log line.
"""

import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from exchange.daemon import limits
from exchange.daemon.discovery import EndpointCounters, ServiceIdentity, service_error, verb_of
from exchange.daemon.inbound import Inbound, InboundQueue
from exchange.daemon.liveness import Liveness
from exchange.daemon.query_pool import QueryJob, QueryPool
from exchange.daemon.routes import (
    CommandWork,
    HeartbeatWork,
    Route,
    StatelessQueryWork,
    nesting_refusal,
    refusal,
)
from protocols.errors import ErrorCode
from protocols.results import Envelope, ErrorBody

log = structlog.get_logger()

_encoder: Final = msgspec.json.Encoder()
_empty_ok: Final = b'{"ok":true,"result":{}}'


class Publisher:
    """Publishes replies and events on the daemon's connection."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    async def __call__(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None, /
    ) -> None:
        try:
            if headers is None:  # Every success reply and event: the call as it was, no header.
                await self._nc.publish(subject, payload)
            else:
                await self._nc.publish(subject, payload, headers=headers)
        except nats.errors.OutboundBufferLimitError:
            # Only while NATS is unreachable and the client's buffer is full. The command is
            # durable; a client that retries with the same request_id gets this reply again.
            log.warning("publish_dropped", subject=subject[: limits.subject_log_chars_max])


class Receiver:
    """Turns messages on the routes' subscriptions into queued work or immediate refusals."""

    def __init__(
        self,
        *,
        publish: Publisher,
        message_bytes_max: int,
        message_depth_max: int,
        liveness: Liveness,
        wall_ns: Callable[[], int],
        query_pool: QueryPool,
    ) -> None:
        self._publish = publish
        self._message_bytes_max = message_bytes_max
        self._message_depth_max = message_depth_max
        self._liveness = liveness
        self._wall_ns = wall_ns
        self._query_pool = query_pool

    def callback(
        self, route: Route, counters: EndpointCounters, inbound: InboundQueue
    ) -> Callable[[Msg], Awaitable[None]]:
        """The subscription callback of ``route``: each message handled, never raising."""

        async def handle(msg: Msg) -> None:
            await self.handle(route, msg, counters, inbound)

        return handle

    async def handle(
        self, route: Route, msg: Msg, counters: EndpointCounters, inbound: InboundQueue
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
        too_deep = nesting_refusal(msg.data, self._message_depth_max)
        if too_deep is not None:
            await self._refuse(msg.subject, reply_to, counters, received_ns, too_deep)
            return
        resolved = route.resolve(msg.subject, msg.data)
        if isinstance(resolved, ErrorBody):
            await self._refuse(msg.subject, reply_to, counters, received_ns, resolved)
            return
        if isinstance(resolved, HeartbeatWork):
            self._liveness.record(
                resolved.sender, resolved.heartbeat, received_wall_ns=self._wall_ns()
            )
            counters.record(elapsed_ns=time.perf_counter_ns() - received_ns)
            if reply_to is not None:
                await self._publish(reply_to, _empty_ok)
            return
        # Every query needs a reply; a command may not (a fire-and-forget swarm signal).
        needs_reply = not isinstance(resolved, CommandWork) or resolved.reply_expected
        if reply_to is None and needs_reply:
            log.info(
                "message_dropped",
                subject=msg.subject[: limits.subject_log_chars_max],
                reason="no_reply_subject",
            )
            return
        if isinstance(resolved, StatelessQueryWork):
            assert reply_to is not None
            job = QueryJob(resolved.verb, resolved.body, reply_to, counters, received_ns)
            if not self._query_pool.submit_nowait(job):
                await self._refuse(
                    msg.subject, reply_to, counters, received_ns, self._pool_full(job)
                )
            return
        if not inbound.put(Inbound(resolved, reply_to, counters, received_ns)):
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

    def _pool_full(self, job: QueryJob) -> ErrorBody:
        return refusal(
            ErrorCode.overloaded,
            f"the exchange's processes for {job.verb} queries are busy (at most "
            f"{self._query_pool.capacity} running or waiting); nothing was computed. Retry after "
            "a short wait",
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
            subject=subject[: limits.subject_log_chars_max],
            code=body.code,
            path=body.path,
            replied=reply_to is not None,
        )
        error = service_error(body)
        counters.record(elapsed_ns=time.perf_counter_ns() - received_ns, error=error)
        if reply_to is not None:
            await self._publish(
                reply_to, _encoder.encode(Envelope(ok=False, error=body)), error.headers
            )

    def discovery_callback(self, identity: ServiceIdentity) -> Callable[[Msg], Awaitable[None]]:
        """The subscription callback answering ``$SRV.PING|INFO|STATS`` requests."""

        async def handle(msg: Msg) -> None:
            verb = verb_of(msg.subject)
            if verb is None or not msg.reply:
                subject = msg.subject[: limits.subject_log_chars_max]
                log.debug("service_request_ignored", subject=subject)
                return
            await self._publish(msg.reply, identity.respond(verb))

        return handle
