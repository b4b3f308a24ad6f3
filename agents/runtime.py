"""The worker runtime: one NATS connection, one task group, and the life of a worker process.

Owns, for every role:
- connecting with the agent's own credentials (or open mode), with nats-py's reconnects: a worker
  outlives restarts of the server, and nats-py re-subscribes its subscriptions after each one;
- the heartbeat (``exchange.cmd.<agent>.heartbeat``, no reply expected);
- the loops a role asks for (subscriptions consumed with ``async for msg in sub.messages``,
  periodic ticks, bounded background work), all tasks of the one task group;
- graceful shutdown on SIGTERM/SIGINT or ``request_stop()``: unsubscribe so no new work arrives,
  let in-flight handlers and background work finish within the grace period, then drain the
  connection. A second SIGINT during the grace period cancels what is left.

Must not: decide anything about markets (roles do), sleep to wait for a condition (it waits on
events), start a task outside its task group, or import ``exchange``.
"""

import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import anyio
import msgspec
import nats.errors
import structlog
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agents import limits
from agents.bus import Bus
from agents.config import RuntimeConfig
from agents.errors import ConnectionLostError
from protocols.client import ExchangeClient, connect_options, flush_commands
from protocols.client_errors import ClientError
from protocols.credentials import server_urls
from protocols.nesting import depth_beyond
from protocols.swarm import Heartbeat
from protocols.units import MS_PER_S, NS_PER_MS

T = TypeVar("T")
Logger = structlog.typing.FilteringBoundLogger
Handler = Callable[[Msg], Awaitable[None]]

# Signals that ask a worker to stop; supervisors send SIGTERM, a terminal sends SIGINT.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Worker(Protocol):
    """A role: ``setup`` subscribes and starts its loops through the context, then returns."""

    async def setup(self, ctx: "WorkerContext") -> None: ...


class _Lifecycle:
    """Stop requests, the count of running role tasks, and why the worker stopped."""

    def __init__(self) -> None:
        self.stop_requested = anyio.Event()
        self.idle = anyio.Event()
        self.running = 0
        self.failure: str | None = None

    @contextmanager
    def task(self) -> Iterator[None]:
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self.running == 0 and self.stop_requested.is_set():
                self.idle.set()

    def request_stop(self) -> None:
        self.stop_requested.set()
        if self.running == 0:
            self.idle.set()


class WorkerContext:
    """What a role gets: its identity, the bus, a bound logger, a clock, and ways to run loops.

    Every loop started here is a task of the runtime's single task group.
    """

    def __init__(
        self,
        *,
        config: RuntimeConfig,
        client: Client,
        bus: Bus,
        log: Logger,
        task_group: TaskGroup,
        lifecycle: _Lifecycle,
    ) -> None:
        self.config = config
        self.bus = bus
        self.log = log
        self._client = client
        self._task_group = task_group
        self._lifecycle = lifecycle
        self._subscriptions: list[Subscription] = []
        self._in_flight = anyio.Semaphore(limits.tasks_in_flight_max)

    @property
    def agent_id(self) -> str:
        return self.config.agent_id

    @property
    def stop_requested(self) -> bool:
        return self._lifecycle.stop_requested.is_set()

    @staticmethod
    def now_ns() -> int:
        """Wall-clock time, for timestamps other processes compare (price and fill times)."""
        return time.time_ns()

    @staticmethod
    def monotonic_ms() -> int:
        """Monotonic time, for this worker's own cooldowns and ages."""
        return time.monotonic_ns() // NS_PER_MS

    def request_stop(self) -> None:
        """Starts the graceful shutdown (idempotent)."""
        if not self._lifecycle.stop_requested.is_set():
            self.log.info("stop_requested")
        self._lifecycle.request_stop()

    async def wait_stop_requested(self, timeout_s: float) -> bool:
        """Waits up to ``timeout_s``; True as soon as a stop is requested, False on timeout."""
        with anyio.move_on_after(max(timeout_s, 0.0)):
            await self._lifecycle.stop_requested.wait()
        return self.stop_requested

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> None:
        """Subscribes now (so the worker is ready once ``setup`` returns) and handles each message
        in order, in a loop of the task group. ``queue`` shares the messages with other workers.
        """
        subscription = await self._client.subscribe(
            subject,
            queue=queue,
            pending_msgs_limit=limits.subscription_pending_msgs_max,
            pending_bytes_limit=limits.subscription_pending_bytes_max,
        )
        self._subscriptions.append(subscription)
        self._task_group.start_soon(self._consume, subscription, handler, name=f"sub:{subject}")

    def every(self, interval_ms: int, tick: Callable[[], Awaitable[None]], *, name: str) -> None:
        """Calls ``tick`` now and then every ``interval_ms`` until a stop is requested.

        A tick that overruns delays the next one rather than causing a burst of catch-up ticks.
        """
        assert interval_ms > 0, interval_ms
        self._task_group.start_soon(self._every, interval_ms / MS_PER_S, tick, name=name)

    def start_loop(self, loop: Callable[[], Awaitable[None]], *, name: str) -> None:
        """Runs ``loop`` as a task of the group; it must return once ``stop_requested`` is set
        (``wait_stop_requested`` is the way to pause in it)."""
        self._task_group.start_soon(self._run_counted, loop, name=name)

    async def spawn(self, work: Callable[[], Awaitable[None]], *, name: str) -> None:
        """Runs ``work`` beside the loops; waits first while ``tasks_in_flight_max`` are running,
        which slows the calling loop down instead of letting work pile up."""
        await self._in_flight.acquire()
        self._task_group.start_soon(self._run_spawned, work, name=name)

    def decode(self, decoder: msgspec.json.Decoder[T], msg: Msg) -> T | None:
        """The message's body, or None (logged) when another agent sent something invalid."""
        if (depth := depth_beyond(msg.data)) is not None:
            # Before decoding: so deep a body raises RecursionError in msgspec, not DecodeError.
            self.log.warning("message_rejected", subject=msg.subject, nesting_depth=depth)
            return None
        try:
            return decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            self.log.warning("message_rejected", subject=msg.subject, error=str(exc))
            return None

    # ------------------------------------------------------------------ internals

    async def _consume(self, subscription: Subscription, handler: Handler) -> None:
        with self._lifecycle.task():
            async for msg in subscription.messages:
                try:
                    await handler(msg)
                except ClientError as exc:
                    # One message's work is lost (the exchange refused or did not answer); the
                    # roles' periodic reconciliation picks up what matters from the exchange.
                    self.log.warning("message_dropped", subject=msg.subject, error=str(exc))
            if not self.stop_requested:
                # nats-py ends the iterator when the connection closes for good.
                self._fail(f"subscription to {subscription.subject} ended")

    async def _every(self, interval_s: float, tick: Callable[[], Awaitable[None]]) -> None:
        with self._lifecycle.task():
            next_at = anyio.current_time()
            while not self.stop_requested:
                try:
                    await tick()
                except ClientError as exc:
                    # As for a message: this round's work is lost (the exchange refused, or none
                    # answered, as during a failover); the next round tries again, which is what a
                    # periodic sweep is for. The worker must not die of it.
                    self.log.warning("tick_dropped", error=str(exc))
                next_at = max(next_at + interval_s, anyio.current_time())
                await self.wait_stop_requested(next_at - anyio.current_time())

    async def _run_counted(self, loop: Callable[[], Awaitable[None]]) -> None:
        with self._lifecycle.task():
            await loop()

    async def _run_spawned(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            with self._lifecycle.task():
                try:
                    await work()
                except ClientError as exc:
                    self.log.warning("work_dropped", error=str(exc))
        finally:
            self._in_flight.release()

    def _fail(self, reason: str) -> None:
        if self._lifecycle.failure is None:
            self._lifecycle.failure = reason
            self.log.error("worker_failed", reason=reason)
        self._lifecycle.request_stop()

    async def _unsubscribe_all(self) -> None:
        for subscription in self._subscriptions:
            try:
                await subscription.unsubscribe()
            except nats.errors.Error as exc:
                # Already closed with the connection: nothing left to stop.
                self.log.debug("unsubscribe_skipped", subject=subscription.subject, error=str(exc))
        self._subscriptions.clear()


async def run_worker(
    config: RuntimeConfig,
    worker: Worker,
    *,
    log: Logger | None = None,
    handle_signals: bool = False,
    task_status: TaskStatus[WorkerContext] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Connects, sets the worker up, serves until a stop is requested, and shuts down cleanly.

    ``task_status.started`` gets the ``WorkerContext`` once the worker's subscriptions are
    registered with the server, so a caller can publish to it at once (and call
    ``request_stop()``). ``handle_signals`` turns SIGTERM/SIGINT into a graceful stop; only a
    process's composition root should ask for it.

    Raises:
        ConnectionLostError: the connection closed for good while serving (reconnect attempts
            exhausted) or could not be made.
    """
    log = log or structlog.get_logger().bind(agent=config.agent_id, role=config.role)
    lifecycle = _Lifecycle()
    async with anyio.create_task_group() as task_group:
        if handle_signals:
            await task_group.start(_watch_signals, lifecycle, task_group, log, name="signals")
        log.info("nats_connecting", url=config.credentials.url, user=config.credentials.user)
        client = await _connect_until_stopped(config, lifecycle, log)
        if client is not None:
            try:
                await _serve(client, config, worker, lifecycle, task_group, log, task_status)
            finally:
                with anyio.move_on_after(limits.drain_timeout_s, shield=True):
                    await _close(client, log)
        # Every role task has returned (or is overdue): stop the rest, the signal watcher too.
        task_group.cancel_scope.cancel()
    if lifecycle.failure is not None:
        raise ConnectionLostError(lifecycle.failure)
    log.info("worker_stopped")


async def _serve(
    client: Client,
    config: RuntimeConfig,
    worker: Worker,
    lifecycle: _Lifecycle,
    task_group: TaskGroup,
    log: Logger,
    task_status: TaskStatus[WorkerContext],
) -> None:
    exchange = ExchangeClient(
        client,
        request_timeout_s=config.request_timeout_ms / MS_PER_S,
        attempts_max=config.request_attempts,
        log=log,
    )
    bus = Bus(exchange, config.agent_id, log=log)
    ctx = WorkerContext(
        config=config,
        client=client,
        bus=bus,
        log=log,
        task_group=task_group,
        lifecycle=lifecycle,
    )
    ctx.every(config.heartbeat_interval_ms, _heartbeat(ctx), name="heartbeat")
    await worker.setup(ctx)
    # The server has every subscription before anyone is told "ready".
    await flush_commands(client)
    log.info("worker_started")
    task_status.started(ctx)
    await lifecycle.stop_requested.wait()
    await ctx._unsubscribe_all()
    with anyio.move_on_after(config.shutdown_grace_ms / MS_PER_S) as grace:
        await lifecycle.idle.wait()
    if grace.cancelled_caught:
        log.warning("shutdown_grace_expired", tasks_running=lifecycle.running)


def _heartbeat(ctx: WorkerContext) -> Callable[[], Awaitable[None]]:
    heartbeat_capabilities = list(ctx.config.capabilities)

    async def beat() -> None:
        await ctx.bus.publish_heartbeat(
            Heartbeat(
                role=ctx.config.role,
                capabilities=heartbeat_capabilities,
                at_ms=ctx.now_ns() // NS_PER_MS,
            )
        )

    return beat


async def _watch_signals(
    lifecycle: _Lifecycle,
    task_group: TaskGroup,
    log: Logger,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not lifecycle.stop_requested.is_set():
                log.info("signal_received", signal=name, action="stop")
                lifecycle.request_stop()
            elif signum == signal.SIGINT:
                # A second Ctrl-C: the person at the terminal does not want to wait.
                log.warning("signal_received", signal=name, action="cancel")
                task_group.cancel_scope.cancel()
                return
            else:
                # Supervisors may deliver SIGTERM to the process and to its group; a repeat is
                # not a new request, and SIGKILL is their way to insist.
                log.info("signal_received", signal=name, action="ignore")


async def _connect_until_stopped(
    config: RuntimeConfig, lifecycle: _Lifecycle, log: Logger
) -> Client | None:
    """The connected client, or None when a stop was requested before the server answered or
    nats-py gave up (then ``lifecycle.failure`` says why)."""
    async with anyio.create_task_group() as connecting:

        async def cancel_on_stop() -> None:
            await lifecycle.stop_requested.wait()
            log.info("connect_abandoned")
            connecting.cancel_scope.cancel()

        connecting.start_soon(cancel_on_stop)
        try:
            client = await _connect(config, log)
        except ConnectionLostError as exc:
            # Reported after the task group has exited, so that it is not wrapped in a group.
            lifecycle.failure = str(exc)
            connecting.cancel_scope.cancel()
            return None
        connecting.cancel_scope.cancel()
        return client
    return None


async def _connect(config: RuntimeConfig, log: Logger) -> Client:
    credentials = config.credentials
    options: dict[str, Any] = {
        # nats-py annotates these as int but uses them as seconds for asyncio, where fractions
        # work; sub-second reconnects matter for a worker on loopback.
        "reconnect_time_wait": config.reconnect_wait_ms / MS_PER_S,
        "connect_timeout": config.connect_timeout_ms / MS_PER_S,
        **connect_options(credentials),
    }

    async def on_error(error: Exception) -> None:
        # Refused connections repeat every reconnect_wait_ms during an outage: keep them quiet.
        level = log.debug if isinstance(error, OSError) else log.warning
        level("nats_error_reported", error=str(error) or type(error).__name__)

    async def on_disconnected() -> None:
        # Draining at shutdown disconnects too; only an unexpected loss is worth a warning.
        if not (client.is_draining or client.is_closed):
            log.warning("nats_disconnected")

    async def on_reconnected() -> None:
        log.info("nats_reconnected")

    client = Client()
    try:
        await client.connect(
            # "nats://a:4222,nats://b:4222": the nodes of a cluster, the first preferred (its
            # placement) and the others taken when it is down, in the order given.
            servers=server_urls(credentials.url),
            dont_randomize=True,
            name=f"agent:{config.agent_id}",
            allow_reconnect=True,
            max_reconnect_attempts=config.reconnect_attempts,
            pending_size=limits.publish_pending_bytes_max,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            **options,
        )
    except (OSError, nats.errors.Error) as exc:
        with anyio.CancelScope(shield=True):
            await client.close()
        raise ConnectionLostError(
            f"cannot connect to {credentials.url} as {credentials.user or 'open mode'}: {exc}"
        ) from exc
    except BaseException:
        with anyio.CancelScope(shield=True):
            await client.close()
        raise
    return client


async def _close(client: Client, log: Logger) -> None:
    """Drains the connection (pending publishes flushed, subscriptions ended), or closes it when
    it cannot be drained (reconnecting or already closed)."""
    if client.is_closed:
        return
    try:
        await client.drain()
    except nats.errors.Error as exc:
        log.debug("drain_skipped", error=str(exc) or type(exc).__name__)
        await client.close()
