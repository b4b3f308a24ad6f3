"""One agent's view of the bus: its requests through the protocol's client, its publishes.

Owns what is particular to a worker: the agent id in every subject it sends on (commands as
itself, bids, refusals, reports, ballots), and fire-and-forget publishes of prices, signals and
heartbeats, which are dropped, not buffered, while the connection is down (a stale price is worse
than none). Requests, their retries with the same bytes (so the same request_id) and their errors
are ``protocols.client``'s, as for every other client of the exchange.

Every subject comes from ``protocols.subjects``. Must not: choose request ids (the caller does,
once per piece of work), decide what a refusal means (the roles do), or import ``exchange``.

Raises from requests (``protocols.client_errors``): ``RefusedError`` (the exchange said no;
``code``/``message``), ``ExchangeUnavailableError`` (no reply after every attempt),
``ReplyDecodeError``.
"""

from typing import Final, TypeVar

import msgspec
import nats.errors
import structlog

from protocols import subjects
from protocols.client import ExchangeClient
from protocols.commands import Command
from protocols.queries import Query
from protocols.results import Result
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

_encoder: Final = msgspec.json.Encoder()


class Bus:
    """One agent's view of the bus. The agent id is in every subject it sends on."""

    def __init__(
        self,
        client: ExchangeClient,
        agent_id: str,
        *,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._client = client
        self._agent_id = agent_id
        self._log = log

    @property
    def agent_id(self) -> str:
        return self._agent_id

    @property
    def is_connected(self) -> bool:
        return bool(self._client.nc.is_connected)

    # ------------------------------------------------------------------ exchange commands

    async def command(self, verb: str, command: Command, result_type: type[T]) -> T:
        """Sends ``command`` on ``exchange.cmd.<agent>.<verb>`` and returns its decoded result
        (pass ``protocols.results.Result`` when the result does not matter).

        Raises RefusedError, ExchangeUnavailableError, ReplyDecodeError.
        """
        return await self._client.command(self._agent_id, verb, command, result_type)

    async def query(self, verb: str, query: Query, result_type: type[T]) -> T:
        """Asks ``exchange.query.<verb>``. Raises as ``command``."""
        return await self._client.query(verb, query, result_type)

    # ------------------------------------------------------------------ Contract Net and votes

    async def propose(self, task_id: str, bid: Bid) -> None:
        """Bids on ``task_id``. The exchange derives the request id from the subject, so a retry
        of the same bid is answered with the first reply.

        Raises RefusedError (``bid_window_closed``, ``duplicate_bid``...), ExchangeUnavailableError,
        ReplyDecodeError.
        """
        subject = subjects.task_message(task_id, "propose", self._agent_id)
        await self._client.request(subject, bid, Result)

    async def refuse(self, task_id: str, refusal: RefuseTask) -> None:
        """Declines ``task_id``, which lets its auction close early. Raises as ``propose``."""
        subject = subjects.task_message(task_id, "refuse", self._agent_id)
        await self._client.request(subject, refusal, Result)

    async def inform(self, task_id: str, report: TaskReport) -> None:
        """Reports an awarded task done, with its output. Raises as ``propose``."""
        subject = subjects.task_message(task_id, "inform", self._agent_id)
        await self._client.request(subject, report, Result)

    async def report_failure(self, task_id: str, report: TaskReport) -> None:
        """Reports an awarded task failed (the escrow is refunded). Raises as ``propose``."""
        subject = subjects.task_message(task_id, "failure", self._agent_id)
        await self._client.request(subject, report, Result)

    async def cast(self, proposal_id: str, ballot: Ballot) -> None:
        """Votes on ``proposal_id``. Raises as ``propose`` (``already_voted``, ``not_eligible``)."""
        subject = subjects.vote_cast(proposal_id, self._agent_id)
        await self._client.request(subject, ballot, Result)

    # ------------------------------------------------------------------ fire and forget

    async def publish_signal(self, signal_type: str, asset: str, signal: AgentSignal) -> bool:
        """Publishes on ``swarm.signal.<agent>.<signal_type>.<asset>``; False if dropped."""
        subject = subjects.signal(self._agent_id, signal_type, asset)
        return await self._publish(subject, _encoder.encode(signal))

    async def publish_price(self, update: PriceUpdate) -> bool:
        """Publishes on ``swarm.price.<asset>``; False if dropped while disconnected."""
        return await self._publish(subjects.price(update.asset), _encoder.encode(update))

    async def publish_heartbeat(self, heartbeat: Heartbeat) -> bool:
        """Publishes on ``exchange.cmd.<agent>.heartbeat`` with no reply inbox: nobody answers."""
        subject = subjects.command(self._agent_id, HEARTBEAT_VERB)
        return await self._publish(subject, _encoder.encode(heartbeat))

    async def _publish(self, subject: str, payload: bytes) -> bool:
        nc = self._client.nc
        if not nc.is_connected:
            self._log.debug("publish_dropped", subject=subject, reason="disconnected")
            return False
        try:
            await nc.publish(subject, payload)
        except nats.errors.OutboundBufferLimitError:
            # The connection dropped between the check and the publish.
            self._log.debug("publish_dropped", subject=subject, reason="buffer_full")
            return False
        return True
