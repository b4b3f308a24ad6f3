"""The live dashboard's eyes: one NATS connection that watches the exchange as any client would.

Owns: ``run_feed``. It connects with the given credentials (admin's for the whole picture),
subscribes to what the exchange publishes (``exchange.event.>``, ``swarm.>``), to the commands on
their way in (``exchange.cmd.>``) and to the reply inboxes of admin and every agent it knows, so
that a refusal shows up as it happens, with its sender, verb and code; and it polls the documented
queries (``status``, ``agents``, ``balance``, ``limits``, ``tasks``, ``pheromones``, ``pools``,
``metrics``) through ``protocols.client`` every ``poll_interval_s``. Everything goes into the
``Board``; each change bumps the ``Hub``.

Must not: send a command, or read the data directory beyond the credentials. With an agent's
credentials instead of admin's, the server refuses the subscriptions that agent may not make, and
the page shows what is left (that agent's own events, the swarm, the queries).
"""

import contextlib
import time
from typing import Final

import anyio
import nats.errors
import structlog
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.subscription import Subscription

from exchange.dashboard.hub import Hub
from exchange.dashboard.model import Board
from protocols import subjects
from protocols.client import ExchangeClient, connect, flush_commands
from protocols.client_errors import ClientError
from protocols.credentials import DEFAULT_INBOX_PREFIX, Credentials
from protocols.results import (
    AgentsResult,
    BalanceResult,
    LimitsResult,
    MetricsResult,
    PoolsResult,
    StatusResult,
)
from protocols.swarm import PheromonesResult, TasksResult

__all__ = ["POLL_INTERVAL_S_DEFAULT", "run_feed"]

log = structlog.get_logger()

POLL_INTERVAL_S_DEFAULT: Final = 1.0
# Queries time out fast: a slow exchange makes the page stale, not the feed stuck.
query_timeout_s: Final = 3.0
close_timeout_s: Final = 5.0
subscription_pending_msgs_max: Final = 20_000
subscription_pending_bytes_max: Final = 64 * 1024 * 1024
tasks_polled_max: Final = 100
pheromones_polled_max: Final = 500
_WATCHED: Final = (f"{subjects.CMD_PREFIX}.>", f"{subjects.EVENT_PREFIX}.>", "swarm.>")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def run_feed(
    credentials: Credentials,
    board: Board,
    hub: Hub,
    *,
    poll_interval_s: float = POLL_INTERVAL_S_DEFAULT,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Watches the exchange until cancelled; ready (``task_status.started``) once subscribed and
    polled once. Raises ExchangeUnavailableError when the first connection fails."""
    board.started_ms = board.started_ms or _now_ms()
    async with connect(credentials, name="dashboard", request_timeout_s=query_timeout_s) as client:
        try:
            async with anyio.create_task_group() as tg:
                watcher = _Watcher(client, board, hub, tg)
                for subject in _WATCHED:
                    await watcher.watch(subject)
                await watcher.watch(f"{DEFAULT_INBOX_PREFIX}.>")
                await flush_commands(client.nc)
                await watcher.poll()
                task_status.started()
                while True:
                    await anyio.sleep(poll_interval_s)
                    await watcher.poll()
        finally:
            # Cancelled is the usual way out: close the connection anyway, not half-way.
            with anyio.move_on_after(close_timeout_s, shield=True):
                await client.nc.close()


async def _unsubscribe(sub: Subscription) -> None:
    # A closed connection (the exchange stopped) took its subscriptions with it.
    with contextlib.suppress(nats.errors.ConnectionClosedError):
        await sub.unsubscribe()


class _Watcher:
    def __init__(self, client: ExchangeClient, board: Board, hub: Hub, tg: TaskGroup) -> None:
        self._client, self._board, self._hub, self._tg = client, board, hub, tg
        self._watched: set[str] = set()

    async def watch(self, subject: str) -> None:
        if subject in self._watched:
            return
        self._watched.add(subject)
        sub = await self._client.nc.subscribe(
            subject,
            pending_msgs_limit=subscription_pending_msgs_max,
            pending_bytes_limit=subscription_pending_bytes_max,
        )
        self._tg.start_soon(self._consume, sub)

    async def _consume(self, sub: Subscription) -> None:
        try:
            async for msg in sub.messages:
                self._board.observe(msg.subject, msg.reply or None, msg.data, now_ms=_now_ms())
                self._hub.changed()
        finally:
            with anyio.CancelScope(shield=True):
                await _unsubscribe(sub)

    async def poll(self) -> None:
        """One round of queries; a failed one marks the page disconnected until the next."""
        board, client = self._board, self._client
        try:
            board.on_status(await client.query("status", None, StatusResult))
            agents = await client.query("agents", None, AgentsResult)
            board.on_agents(agents, now_ms=_now_ms())
            for info in agents.agents:
                board.on_balance(
                    await client.query("balance", {"agent": info.agent}, BalanceResult)
                )
                board.on_limits(await client.query("limits", {"agent": info.agent}, LimitsResult))
            board.on_tasks(await client.query("tasks", {"limit": tasks_polled_max}, TasksResult))
            board.on_pheromones(
                await client.query("pheromones", {"limit": pheromones_polled_max}, PheromonesResult)
            )
            board.on_pools(await client.query("pools", None, PoolsResult))
            board.on_metrics(await client.query("metrics", None, MetricsResult))
            board.connected = True
        except ClientError as exc:
            log.info("dashboard_poll_failed", error=str(exc))
            board.connected = False
            self._hub.changed()
            return
        for info in agents.agents:
            await self.watch(f"{subjects.inbox_prefix(info.agent)}.>")
        self._hub.changed()
