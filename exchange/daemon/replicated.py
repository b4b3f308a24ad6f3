"""One node of an exchange whose journal is a replicated JetStream stream (``--journal jetstream``).

Every node runs the same loop, whether started as the first or with ``--standby``:

1. **load**: the newest snapshot from the cluster's object store (``stream_journal.py``), restored
   and checked against its digest (``recovery.recover``), as on a restart. A node needs nothing on
   its own disk.
2. **follow**: read the journal stream from the snapshot's position on, live, and apply every
   entry as it arrives, each one checked: it must chain from the one before (hash) and replay to
   the reply and postings the leader journaled. The core is deterministic, so a standby holds the
   leader's state, digest for digest, a few milliseconds behind. Meanwhile, try to take the
   leader lease (``lease.py``) whenever it is free.
3. **take over**: with the lease, append a fence to the stream (from then on a former leader's
   appends are refused), read up to the fence, then serve exactly as a single-node exchange does
   (``app.serve_term``), with the stream as its journal: every batch is appended, acknowledged by a
   quorum of replicas, before any of its replies is sent.
4. **step down**: if the lease is lost or an append is refused (another node fenced this one),
   stop answering at once (the batch in flight is never replied), drop the state and go back to
   1. Clients retry with the same ``request_id`` on the new leader and get the original reply
   if their command was journaled, or a fresh application if it was not; never both.

Must not: contain business logic, or be the only thing standing between two writers: the stream's
expected-sequence check is (see ``lease.py``).
"""

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import nats.errors
import structlog
from anyio.abc import TaskStatus
from nats.aio.client import Client

from exchange.core.config import default_toml, parse_config
from exchange.core.machine import Exchange
from exchange.daemon import limits
from exchange.daemon.app import (
    ExchangeHandle,
    NatsSide,
    RecoveredState,
    close_nats,
    connect_nats,
    data_dir_lock,
    joining_credentials,
    serve_term,
)
from exchange.daemon.clock import ExchangeClock
from exchange.daemon.creds import CredentialStore
from exchange.daemon.datadir import make_data_dir
from exchange.daemon.lease import Lease, LeaseLostError, lease_bucket
from exchange.daemon.recovery import (
    ConfigMismatchError,
    apply_genesis,
    recover,
    replay_entry,
)
from exchange.daemon.settings import Settings
from exchange.daemon.stream_journal import (
    ClusterNames,
    JournalAppendUncertainError,
    JournalFencedError,
    StreamJournal,
    StreamSettings,
    decode_batch,
    ensure_storage,
    shared_config_text,
    stream_seq_of,
)
from exchange.journal import Entry
from protocols.units import NS_PER_MS

log = structlog.get_logger()


@dataclass(slots=True)
class _Node:
    """What one term of this node works on: the journal as read so far and the state it gives."""

    journal: StreamJournal
    exchange: Exchange
    # Compacting a follower's tail: the seq its last in-memory snapshot was taken at.
    compacted_seq: int


def _compact(node: _Node, every_commands: int) -> None:
    """Keeps a follower's memory bounded: a snapshot in memory every ``every_commands`` entries
    drops the entries it covers (the leader stores its own snapshots in the cluster)."""
    exchange = node.exchange
    if exchange.seq - node.compacted_seq < every_commands:
        return
    state, digest = exchange.snapshot_and_digest()
    tail = node.journal.tail
    bundle = tail.bundle(
        seq=exchange.seq,
        state=state,
        digest=digest,
        stream_seq=node.journal.stream_seq,
        remembered=exchange.ledger.remembered(),
    )
    tail.snapshot_taken(bundle)
    node.compacted_seq = exchange.seq


def _apply_message(node: _Node, stream_seq: int, entries: tuple[Entry, ...] | None) -> None:
    """Applies one journal message (a batch, or a fence: nothing) read from the stream."""
    if entries:
        # Chain first (a message of another history stops here), then replay each entry, which
        # checks its reply and postings against the leader's.
        node.journal.tail.extend(entries)
        for entry in entries:
            replay_entry(node.exchange, entry)
    node.journal.record_read(stream_seq, entries or ())


async def _load(
    nc: Client, names: ClusterNames, stream_settings: StreamSettings, settings: Settings
) -> _Node:
    js = nc.jetstream(timeout=stream_settings.append_timeout_s)
    store = await ensure_storage(js, names, stream_settings)
    text = await shared_config_text(store, settings.config_text or default_toml())
    if settings.config_text is not None and settings.config_text != text:
        raise ConfigMismatchError(
            f"the cluster's journal {names.journal_stream} was begun with another economy config "
            "than --config; the rules of an existing journal cannot change. Drop --config, or use "
            "another --cluster-name"
        )
    config = parse_config(text)
    journal = await StreamJournal.load(
        js, store, names, stream_settings, message_bytes_max=_message_bytes_max(nc)
    )
    started_ns = time.perf_counter_ns()
    recovered = await anyio.to_thread.run_sync(recover, journal, config)
    log.info(
        "replica_loaded",
        seq=recovered.exchange.seq,
        stream_seq=journal.stream_seq,
        snapshot_seq=recovered.snapshot_seq,
        load_ms=(time.perf_counter_ns() - started_ns) // NS_PER_MS,
    )
    return _Node(journal, recovered.exchange, recovered.exchange.seq)


def _message_bytes_max(nc: Client) -> int:
    # The server's max_payload (1 MiB by default), less room for headers.
    return max(64 * 1024, int(nc.max_payload) - 4096)


async def _follow_until_leader(
    node: _Node, lease: Lease, handle: ExchangeHandle, settings: Settings
) -> bool:
    """Applies the stream as it comes until this node holds the lease and has read up to its own
    fence (True), or a stop is asked (False)."""
    reached_fence = anyio.Event()
    fence_seq: int | None = None

    async def apply_stream() -> None:
        async with node.journal.messages() as messages:
            async for msg in messages:
                stream_seq = stream_seq_of(msg)
                if stream_seq <= node.journal.stream_seq:
                    continue  # Redelivered by the ordered consumer after a reset.
                _apply_message(node, stream_seq, decode_batch(msg))
                _compact(node, settings.snapshot_every_commands)
                log.debug("replica_applied", seq=node.exchange.seq, stream_seq=stream_seq)
                if fence_seq is not None and stream_seq >= fence_seq:
                    reached_fence.set()
                    return

    async def campaign() -> None:
        nonlocal fence_seq
        while True:  # A poll of the cluster's KV, not a wait for this process's own state.
            if await lease.try_take():
                log.info("takeover_started", node=lease.node_id, seq=node.exchange.seq)
                try:
                    fence_seq = await node.journal.fence(lease.node_id)
                    break
                except nats.errors.Error as exc:
                    # Not fenced, or fenced without knowing it: either way nothing was served.
                    # Let another node try (or this one again); a later fence supersedes this.
                    log.warning("takeover_failed", node=lease.node_id, error=type(exc).__name__)
                    await lease.give_back()
            await anyio.sleep(limits.lease_poll_s)
        if node.journal.stream_seq >= fence_seq:
            reached_fence.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(apply_stream)
        tg.start_soon(campaign)

        async def stop_watch() -> None:
            await handle.wait_stop_requested()
            tg.cancel_scope.cancel()

        tg.start_soon(stop_watch)
        await reached_fence.wait()
        tg.cancel_scope.cancel()
    return reached_fence.is_set()


async def _lead(
    node: _Node,
    lease: Lease,
    handle: ExchangeHandle,
    settings: Settings,
    nc: Client,
    wall_ns: Callable[[], int],
) -> None:
    """Serves as the leader until a clean stop; raises LeaseLostError or JournalFencedError
    (inside an ExceptionGroup) when deposed."""
    exchange, journal = node.exchange, node.journal
    clock = ExchangeClock(floor_ns=max(journal.last_at_ns, exchange.now_ns), wall_ns=wall_ns)
    if exchange.seq == 0:
        # The first leader of a new cluster journal begins it, as a new SQLite journal is.
        await journal.append(apply_genesis(exchange, now_ns=clock.now_ns()))
        log.info("journal_created", stream=journal.names.journal_stream, genesis=exchange.seq)
    # No embedded server: registrations need no credentials here (the cluster's operator made
    # them, see docs/deploy.md), so the store stays unused.
    assert settings.nats_url is not None
    side = NatsSide(
        settings.nats_url, nc, None, CredentialStore(settings.paths.creds_dir), {}, exchange
    )
    recovered = RecoveredState(exchange, clock, journal.tail.base_seq)
    await serve_term(
        settings,
        journal,
        recovered,
        side,
        handle,
        anyio.TASK_STATUS_IGNORED,
        guard=lease.hold,
    )


def _deposed(group: BaseExceptionGroup[BaseException]) -> bool:
    return all(
        isinstance(leaf, (LeaseLostError, JournalFencedError, JournalAppendUncertainError))
        for leaf in _leaves(group)
    )


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def run_replicated_exchange(
    settings: Settings,
    *,
    wall_ns: Callable[[], int] = time.time_ns,
    task_status: TaskStatus[ExchangeHandle] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Runs one node (see the module doc) until ``ExchangeHandle.stop()`` or cancellation.

    Reports its handle once it follows the stream (a standby is ready when it has loaded).
    Raises ClusterStorageError, ConfigMismatchError, RecoveryError (a stream that does not replay),
    NatsCredentialsError, CredentialsFileError.
    """
    assert settings.nats_url is not None
    paths = settings.paths
    make_data_dir(paths.root)
    names = ClusterNames(settings.cluster_name)
    stream_settings = StreamSettings(replicas=settings.replicas)
    credentials = joining_credentials(settings)
    node_id = f"{settings.cluster_name}-{uuid.uuid4().hex[:12]}"
    with data_dir_lock(paths.lock):
        nc = await connect_nats(settings.nats_url, credentials, settings)
        try:
            js = nc.jetstream(timeout=stream_settings.append_timeout_s)
            await ensure_storage(js, names, stream_settings)
            kv = await lease_bucket(
                js, names.lease_bucket, ttl_s=settings.lease_ttl_s, replicas=settings.replicas
            )
            lease = Lease(kv, node_id, settings.lease_ttl_s)
            handle = ExchangeHandle(settings.nats_url, settings.data_dir, False, node_id)
            reported = False
            while True:
                node = await _load(nc, names, stream_settings, settings)
                log.info(
                    "standby_following",
                    node=node_id,
                    seq=node.exchange.seq,
                    digest=node.exchange.digest(),
                    standby=settings.standby,
                )
                if not reported:
                    handle.seq_at_ready = node.exchange.seq
                    handle.digest_at_ready = node.exchange.digest()
                    task_status.started(handle)
                    reported = True
                if not await _follow_until_leader(node, lease, handle, settings):
                    log.info(
                        "exchange_stopped",
                        role="standby",
                        seq=node.exchange.seq,
                        digest=node.exchange.digest(),
                    )
                    return
                try:
                    await _lead(node, lease, handle, settings, nc, wall_ns)
                except BaseExceptionGroup as group:
                    if not _deposed(group):
                        raise
                    log.warning(
                        "leader_deposed",
                        node=node_id,
                        seq=node.exchange.seq,
                        reason=str(_leaves(group)[0]),
                    )
                    await lease.give_back()
                    continue
                await lease.give_back()
                return
        finally:
            await close_nats(nc, settings.drain_timeout_s)
