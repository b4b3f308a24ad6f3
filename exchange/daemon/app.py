"""The composition root of the daemon: ``run_exchange`` builds every part and owns every task.

Owns the order of startup: the NATS port is free (embedded server) → lock the data directory →
the economy config → open the journal → recover the state (latest snapshot + checked replay) or,
for a new journal, journal the genesis → the clock → credentials → the embedded nats-server
(unless ``--nats URL``; supervised: restarted on its port if it dies) → the NATS connection →
the subscriptions of the routing table and ``$SRV.*`` → the loops → ``exchange_ready``. And the
order of a clean stop (``ExchangeHandle.stop()``, which ``exchange up`` calls on SIGINT/SIGTERM):
stop the timer → drain the subscriptions (no new messages; those already received are queued) →
the batcher and committer finish, so every queued command is journaled and answered → a snapshot
→ close NATS → stop the server → close the journal.
Must not: contain business logic or message handling (batcher.py, service.py), read the
environment or the command line (the CLI builds ``Settings``), or leave a task, a thread or a
process behind when it returns, fails or is cancelled.
"""

import fcntl
import functools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from exchange.core.config import EconomyConfig
from exchange.core.machine import Exchange
from exchange.daemon import limits
from exchange.daemon.batcher import Pipeline, TimerSchedule
from exchange.daemon.clock import ExchangeClock
from exchange.daemon.creds import CredentialStore, nats_users, read_credentials
from exchange.daemon.datadir import data_dir_unusable, make_data_dir
from exchange.daemon.discovery import EndpointCounters, ServiceIdentity, control_subjects
from exchange.daemon.endpoint import EndpointFile, remove_endpoint, write_endpoint
from exchange.daemon.errors import DaemonError, DataDirInUseError
from exchange.daemon.inbound import InboundQueue
from exchange.daemon.liveness import Liveness
from exchange.daemon.natsserver import (
    NatsServerConfig,
    NatsServerReloadError,
    TlsFiles,
    check_port_free,
)
from exchange.daemon.natssupervisor import SupervisedNatsServer, run_supervised_nats_server
from exchange.daemon.prometheus import ExchangeMetrics, ScrapeSources, serve_metrics
from exchange.daemon.query_pool import QueryPool
from exchange.daemon.recovery import apply_genesis, load_economy_config, recover
from exchange.daemon.routes import Route, default_routes
from exchange.daemon.service import Publisher, Receiver
from exchange.daemon.settings import DataPaths, Settings
from exchange.daemon.store import JournalStore, SqliteStore
from exchange.daemon.tls import check_tls_files, ensure_generated_tls
from exchange.journal import Journal, JournalClosedError
from protocols.client import connect_options, flush_commands
from protocols.credentials import Credentials, server_urls
from protocols.ids import ADMIN, EXCHANGE, GATEWAY
from protocols.units import NS_PER_MS

log = structlog.get_logger()


@dataclass(slots=True)
class ExchangeHandle:
    """A running exchange, as ``run_exchange`` reports it once ready."""

    url: str
    data_dir: Path
    secure: bool
    service_id: str
    _stop_requested: anyio.Event = field(default_factory=anyio.Event)
    # The Prometheus endpoint's port, once it listens (``Settings.metrics_port``).
    metrics_port: int | None = None
    # The journal's seq and the state digest when it became ready (what ``exchange_ready`` logs).
    seq_at_ready: int = 0
    digest_at_ready: str = ""

    def stop(self) -> None:
        """Asks for a clean stop: drain, finish and journal what is in flight, snapshot, exit."""
        self._stop_requested.set()

    async def wait_stop_requested(self) -> None:
        await self._stop_requested.wait()

    def credentials(self, user: str) -> Credentials:
        """What a client needs to connect as ``user`` (just the URL in open mode).

        Raises LookupError when secure mode has no credentials for ``user``.
        """
        if not self.secure:
            return Credentials(url=self.url)
        found = read_credentials(DataPaths(self.data_dir).creds(user))
        if found is None:
            raise LookupError(f"no credentials for {user!r} under {self.data_dir}/creds")
        return found


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """The state a term serves from: the exchange, its clock, and the latest snapshot's seq."""

    exchange: Exchange
    clock: ExchangeClock
    snapshot_seq: int


@dataclass(slots=True)
class NatsSide:
    """The exchange's NATS connection, and its embedded server with the credentials it made
    (``server`` None when it joined ``--nats``)."""

    url: str
    nc: Client
    server: SupervisedNatsServer | None
    store: CredentialStore
    credentials: dict[str, Credentials]
    exchange: Exchange
    # New agents get passwords instead of nkeys (``exchange up --passwords``).
    passwords: bool = False
    # The CA file written into every credentials file when the server requires TLS.
    tls_ca_file: str | None = None

    async def agents_registered(self, agents: list[str]) -> None:
        """Makes credentials for newly registered agents and reloads the embedded server."""
        if self.server is None or not self.credentials:
            log.info("agents_registered", agents=agents, credentials=False)
            return
        self.credentials.update(
            self.store.ensure(
                agents, url=self.url, passwords=self.passwords, tls_ca_file=self.tls_ca_file
            )
        )
        users = nats_users(self.credentials.values(), _roles(self.exchange))
        try:
            await self.server.reload(msgspec.structs.replace(self.server.config, users=users))
        except NatsServerReloadError as exc:
            # The registration is durable either way; the next start configures these users.
            log.error("nats_server_reload_failed", agents=agents, error=str(exc))
            return
        log.info("agents_registered", agents=agents, credentials=True)


@contextmanager
def data_dir_lock(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive lock on the data directory; the kernel drops it if the process dies.

    Raises DataDirInUseError when another live process holds it, DataDirUnusableError when the
    lock file cannot be made (a read-only filesystem, no permission).
    """
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise data_dir_unusable(lock_path.parent, exc) from exc
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DataDirInUseError(
                f"another exchange runs on {lock_path.parent} (it holds {lock_path}); stop it "
                "first, or pass another --data directory"
            ) from exc
        yield
    finally:
        os.close(descriptor)


def _recover_or_create(
    journal: Journal, config: EconomyConfig, wall_ns: Callable[[], int]
) -> RecoveredState:
    """The state of the journal (a new journal gets its genesis batch). Runs in a worker thread."""
    started_ns = time.perf_counter_ns()
    recovered = recover(journal, config)
    exchange = recovered.exchange
    clock = ExchangeClock(floor_ns=max(journal.last_at_ns, exchange.now_ns), wall_ns=wall_ns)
    if journal.last_seq == 0:
        journal.append_batch(apply_genesis(exchange, now_ns=clock.now_ns()))
        log.info("journal_created", path=str(journal.path), genesis_commands=exchange.seq)
    log.info(
        "journal_recovered",
        seq=exchange.seq,
        snapshot_seq=recovered.snapshot_seq,
        replayed=recovered.replayed_count,
        recover_ms=(time.perf_counter_ns() - started_ns) // NS_PER_MS,
    )
    return RecoveredState(exchange, clock, recovered.snapshot_seq)


async def _log_nats_error(error: Exception) -> None:
    log.warning("nats_error_reported", error=str(error), error_type=type(error).__name__)


async def _log_disconnected() -> None:
    log.info("nats_disconnected")


async def _log_reconnected() -> None:
    log.info("nats_reconnected")


async def connect_nats(url: str, credentials: Credentials | None, settings: Settings) -> Client:
    options: dict[str, Any] = {
        "name": EXCHANGE,
        "connect_timeout": settings.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": _log_nats_error,
        "disconnected_cb": _log_disconnected,
        "reconnected_cb": _log_reconnected,
    }
    if credentials is not None:
        options.update(connect_options(credentials))
    with anyio.fail_after(2 * settings.connect_timeout_s):
        return await nats.connect(server_urls(url), **options)


async def close_nats(nc: Client, timeout_s: float) -> None:
    with anyio.move_on_after(timeout_s, shield=True):
        await nc.close()


def _tls_files(settings: Settings) -> TlsFiles | None:
    """The embedded server's TLS files: made (or reused) in DATA/tls/, or the ones given, made
    absolute (the server and the clients may run elsewhere). Raises TlsError."""
    if settings.tls_generate:
        return ensure_generated_tls(
            settings.paths.tls_dir.resolve(), settings.nats_host, now=datetime.now(UTC)
        )
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    files = TlsFiles(
        cert_file=str(settings.tls_cert_file.resolve()),
        key_file=str(settings.tls_key_file.resolve()),
        ca_file=None if settings.tls_ca_file is None else str(settings.tls_ca_file.resolve()),
    )
    check_tls_files(files)
    return files


class NatsCredentialsError(DaemonError):
    """``--nats-creds`` names no credentials file."""


def joining_credentials(settings: Settings) -> Credentials | None:
    """Who the exchange joins ``--nats`` as: ``--nats-creds``'s user, or anonymous without it.

    Raises NatsCredentialsError, CredentialsFileError.
    """
    if settings.nats_creds_file is None:
        return None
    credentials = read_credentials(settings.nats_creds_file)
    if credentials is None:
        raise NatsCredentialsError(
            f"no credentials in {settings.nats_creds_file}; give the file the server's operator "
            "(or `exchange cluster init`) made for the exchange"
        )
    return credentials


@asynccontextmanager
async def _nats_side(settings: Settings, exchange: Exchange) -> AsyncIterator[NatsSide]:
    """The NATS connection, on the embedded server (started and stopped here) or at ``--nats``."""
    store = CredentialStore(settings.paths.creds_dir)
    if settings.nats_url is not None:
        if settings.open_mode:
            log.warning(
                "open_mode_ignored", reason="--nats joins a server the exchange does not run"
            )
        nc = await connect_nats(settings.nats_url, joining_credentials(settings), settings)
        try:
            yield NatsSide(settings.nats_url, nc, None, store, {}, exchange)
        finally:
            await close_nats(nc, settings.drain_timeout_s)
        return
    users = [EXCHANGE, ADMIN, GATEWAY, *sorted(exchange.ledger.agents)]
    credentials: dict[str, Credentials] = {}
    tls = _tls_files(settings)
    tls_ca_file = None if tls is None else tls.ca_file
    server_config = NatsServerConfig(host=settings.nats_host, port=settings.nats_port, tls=tls)
    if settings.secure:
        scheme = "nats" if tls is None else "tls"
        planned_url = f"{scheme}://{settings.nats_host}:{settings.nats_port}"
        credentials = store.ensure(
            users, url=planned_url, passwords=settings.passwords, tls_ca_file=tls_ca_file
        )
        server_config = msgspec.structs.replace(
            server_config, users=nats_users(credentials.values(), _roles(exchange))
        )
    else:
        log.warning(
            "open_mode_enabled",
            authentication=False,
            host=settings.nats_host,
            warning="ANY local process can act as ANY agent; for development on loopback only",
        )
    # Supervised: if the server dies, another starts on its port with its users (the registered
    # agents' included), and the connection below reconnects by itself.
    supervised = run_supervised_nats_server(server_config, data_dir=settings.paths.nats_dir)
    async with supervised as server:
        if credentials:
            credentials = store.ensure(
                users, url=server.url, passwords=settings.passwords, tls_ca_file=tls_ca_file
            )
        nc = await connect_nats(server.url, credentials.get(EXCHANGE), settings)
        try:
            yield NatsSide(
                server.url,
                nc,
                server,
                store,
                credentials,
                exchange,
                settings.passwords,
                tls_ca_file,
            )
        finally:
            await close_nats(nc, settings.drain_timeout_s)


async def _serve_metrics_until_cancelled(
    scope: anyio.CancelScope,
    settings: Settings,
    metrics: ExchangeMetrics,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    assert settings.metrics_port is not None
    with scope:
        await serve_metrics(
            settings.metrics_host, settings.metrics_port, metrics.registry, task_status=task_status
        )


def _watched(
    identity: ServiceIdentity,
    exchange: Exchange,
    pipeline: Pipeline,
    nc: Client,
    liveness: Liveness,
    clock: ExchangeClock,
) -> ExchangeMetrics:
    """The registry of ``--metrics-port``, recording the endpoints' replies and the spend."""
    metrics = ExchangeMetrics(version=identity.version, service_id=identity.service_id)
    sources = ScrapeSources(
        durable_seq=lambda: pipeline.durable_seq,
        batches_committed=lambda: pipeline.batches_committed,
        bus=lambda: {k: int(v) for k, v in nc.stats.items()},
        heartbeats=liveness.last,
        wall_ns=clock.wall_ns,
    )
    metrics.watch(exchange, identity.endpoints, sources)
    pipeline.on_committed = functools.partial(metrics.count_spend, exchange)
    return metrics


def _roles(exchange: Exchange) -> dict[str, str | None]:
    return {agent.id: agent.role for agent in exchange.ledger.agents.values()}


async def _run_timers(
    scope: anyio.CancelScope, timers: TimerSchedule, clock: ExchangeClock, inbound: InboundQueue
) -> None:
    with scope:
        await timers.run(clock, inbound)


async def _run_guard(
    scope: anyio.CancelScope, guard: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    with scope:
        await guard()


async def _record_high_water(journal: Journal) -> None:
    """Brings journal.hwm up to the committed head, in a worker thread (it fsyncs twice)."""
    try:
        seq = await anyio.to_thread.run_sync(journal.record_high_water)
    except JournalClosedError:
        # A failed commit closed the journal; that failure stops the daemon and is reported.
        return
    except OSError as exc:
        # The journal is unaffected; only the losses the mark can reveal shrink until a write
        # succeeds, so this is said loudly and retried at the next interval.
        log.error("high_water_write_failed", path=str(journal.high_water_path), error=str(exc))
        return
    if seq is not None:
        log.debug("high_water_recorded", seq=seq)


async def _record_high_water_every(
    scope: anyio.CancelScope, journal: Journal, interval_s: float
) -> None:
    with scope:
        while True:
            await _record_high_water(journal)
            await anyio.sleep(interval_s)


async def run_exchange(
    settings: Settings,
    *,
    wall_ns: Callable[[], int] = time.time_ns,
    task_status: TaskStatus[ExchangeHandle] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Runs one exchange until ``ExchangeHandle.stop()`` (a clean stop) or cancellation.

    Use ``handle = await task_group.start(run_exchange, settings)``. Raises DaemonError subclasses
    (data directory in use, a journal that does not replay), ConfigError, JournalError,
    NatsServerError, and a task group's ExceptionGroup if a loop fails while serving.
    """
    assert settings.journal_backend == "sqlite", "the jetstream backend runs in replicated.py"
    paths = settings.paths
    if settings.embedded and not paths.root.exists():
        # A taken port refused before a new data directory is made (nats-server's own failure
        # later says the same, but after the journal and the credentials were created).
        check_port_free(settings.nats_host, settings.nats_port)
    make_data_dir(paths.root)
    with data_dir_lock(paths.lock):
        if settings.embedded:
            # Again after the lock (a second exchange here is named as such, not by its port) and
            # before the replay, which may take seconds, and the credentials.
            check_port_free(settings.nats_host, settings.nats_port)
        config = load_economy_config(paths.economy_config, settings.config_text)
        journal = await anyio.to_thread.run_sync(Journal.open, paths.journal)
        try:
            recovered = await anyio.to_thread.run_sync(_recover_or_create, journal, config, wall_ns)
            async with _nats_side(settings, recovered.exchange) as side:
                handle = ExchangeHandle(
                    side.url, settings.data_dir, settings.secure, uuid.uuid4().hex
                )
                await serve_term(
                    settings,
                    SqliteStore(journal),
                    recovered,
                    side,
                    handle,
                    task_status,
                    sqlite=journal,
                )
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(journal.close)


@dataclass(slots=True)
class _Service:
    """Everything ``serve_term`` runs, built and subscribed before any loop starts."""

    handle: ExchangeHandle
    pipeline: Pipeline
    inbound: InboundQueue
    liveness: Liveness
    identity: ServiceIdentity
    routes: tuple[Route, ...]
    subscriptions: list[Subscription]
    control: list[Subscription]
    query_pool: QueryPool
    metrics: ExchangeMetrics | None


async def _build(
    settings: Settings,
    store: JournalStore,
    recovered: RecoveredState,
    side: NatsSide,
    handle: ExchangeHandle,
) -> _Service:
    routes = default_routes()
    publish = Publisher(side.nc)
    pipeline = Pipeline(
        exchange=recovered.exchange,
        journal=store,
        clock=recovered.clock,
        timers=TimerSchedule(),
        publish=publish,
        agents_registered=side.agents_registered,
        batch_size_max=settings.batch_size_max,
        snapshot_every_commands=settings.snapshot_every_commands,
        snapshot_seq=recovered.snapshot_seq,
    )
    identity = ServiceIdentity(
        service_id=handle.service_id,
        started_at=datetime.now(UTC),
        endpoints=[EndpointCounters(route.name, route.subscription) for route in routes],
    )
    # Subscribed before the batcher runs: what arrives meanwhile waits in the inbound queue.
    inbound = InboundQueue(settings.inbound_queue_size_max)
    liveness = Liveness(settings.liveness_agents_max)
    # Starts no process until a stateless query comes; ``serve_term`` runs it, ``_drain`` closes it.
    query_pool = QueryPool(
        publish=publish,
        processes_max=settings.query_processes_max,
        queue_size_max=settings.query_queue_size_max,
        time_s_max=settings.query_time_s_max,
        niceness=settings.query_process_niceness,
    )
    receiver = Receiver(
        publish=publish,
        message_bytes_max=settings.message_bytes_max,
        message_depth_max=settings.message_depth_max,
        liveness=liveness,
        wall_ns=recovered.clock.wall_ns,
        query_pool=query_pool,
    )
    metrics = None
    if settings.metrics_port is not None:
        metrics = _watched(
            identity, recovered.exchange, pipeline, side.nc, liveness, recovered.clock
        )
    subscriptions = [
        await side.nc.subscribe(
            route.subscription,
            cb=receiver.callback(route, counters, inbound),
            pending_msgs_limit=settings.subscription_pending_msgs_max,
            pending_bytes_limit=settings.subscription_pending_bytes_max,
        )
        for route, counters in zip(routes, identity.endpoints, strict=True)
    ]
    control = [
        await side.nc.subscribe(
            subject,
            cb=receiver.discovery_callback(identity),
            pending_msgs_limit=limits.control_pending_msgs_max,
            pending_bytes_limit=limits.control_pending_bytes_max,
        )
        for subject in control_subjects(handle.service_id)
    ]
    await flush_commands(side.nc)
    return _Service(
        handle,
        pipeline,
        inbound,
        liveness,
        identity,
        routes,
        subscriptions,
        control,
        query_pool,
        metrics,
    )


async def serve_term(
    settings: Settings,
    store: JournalStore,
    recovered: RecoveredState,
    side: NatsSide,
    handle: ExchangeHandle,
    task_status: TaskStatus[ExchangeHandle],
    *,
    sqlite: Journal | None = None,
    guard: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Serves until ``handle.stop()`` (a clean stop: drain, snapshot) or until ``guard`` raises
    (the replicated backend's lease lost), or a loop fails (a fenced append): then nothing more
    is answered and the error propagates. ``sqlite`` keeps its high-water mark up to date."""
    service = await _build(settings, store, recovered, side, handle)
    pipeline = service.pipeline
    timer_scope = anyio.CancelScope()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.run_batcher, service.inbound)
            tg.start_soon(pipeline.run_committer)
            tg.start_soon(service.query_pool.run)
            tg.start_soon(
                _run_timers, timer_scope, pipeline.timers, recovered.clock, service.inbound
            )
            # The guard (the lease's renewal) has no end of its own: a stop cancels it last.
            guard_scope = anyio.CancelScope()
            if guard is not None:
                tg.start_soon(_run_guard, guard_scope, guard)
            high_water_scope = anyio.CancelScope()
            if sqlite is not None:
                tg.start_soon(
                    _record_high_water_every,
                    high_water_scope,
                    sqlite,
                    limits.high_water_interval_s,
                )
            # The metrics endpoint has no end of its own: a stop cancels it first.
            metrics_scope = anyio.CancelScope()
            if service.metrics is not None:
                handle.metrics_port = await tg.start(
                    _serve_metrics_until_cancelled, metrics_scope, settings, service.metrics
                )
            _announce_ready(settings, side, recovered, handle)
            task_status.started(handle)
            await handle.wait_stop_requested()
            log.info("exchange_stop_requested", seq=recovered.exchange.seq)
            metrics_scope.cancel()
            high_water_scope.cancel()
            if not await _drain(settings, service, timer_scope):
                tg.cancel_scope.cancel()
            guard_scope.cancel()
        with anyio.CancelScope(shield=True):
            await pipeline.snapshot_if_behind()
            if sqlite is not None:
                await _record_high_water(sqlite)
        log.info(
            "exchange_stopped",
            seq=recovered.exchange.seq,
            durable_seq=pipeline.durable_seq,
            digest=recovered.exchange.digest(),
        )
    finally:
        remove_endpoint(settings.paths.endpoint, pid=os.getpid())
        with anyio.CancelScope(shield=True):
            await _unsubscribe(service)


def _announce_ready(
    settings: Settings, side: NatsSide, recovered: RecoveredState, handle: ExchangeHandle
) -> None:
    write_endpoint(
        settings.paths.endpoint,
        EndpointFile(
            url=side.url, pid=os.getpid(), secure=settings.secure, service_id=handle.service_id
        ),
    )
    handle.seq_at_ready = recovered.exchange.seq
    handle.digest_at_ready = recovered.exchange.digest()
    log.info(
        "exchange_ready",
        url=side.url,
        data_dir=str(settings.data_dir),
        secure=settings.secure,
        seq=handle.seq_at_ready,
        digest=handle.digest_at_ready,
        service_id=handle.service_id,
    )


async def _unsubscribe(service: _Service) -> None:
    """Drops what ``_drain`` has not (a term that ended by an error: nothing more is taken)."""
    for subscription in (*service.subscriptions, *service.control):
        with suppress(nats.errors.Error):  # Drained already, or the connection is closed.
            await subscription.unsubscribe()


async def _drain(settings: Settings, service: _Service, timer_scope: anyio.CancelScope) -> bool:
    """Stops taking messages and lets every one already received be journaled and answered.

    Returns False if that took longer than ``drain_timeout_s`` (the caller then cancels).
    """
    with anyio.move_on_after(settings.drain_timeout_s, shield=True) as drain:
        timer_scope.cancel()
        for subscription in (*service.subscriptions, *service.control):
            # nats-py leaves drain() unannotated. It unsubscribes, then waits until the
            # callback has handled every message already delivered.
            await subscription.drain()  # type: ignore[no-untyped-call]
        service.inbound.close()
        # The queries already taken are answered; the pool's processes then exit.
        service.query_pool.close()
        await service.pipeline.finished.wait()
        await service.query_pool.finished.wait()
    if drain.cancelled_caught:
        log.warning("drain_timed_out", drain_timeout_s=settings.drain_timeout_s)
        return False
    return True
