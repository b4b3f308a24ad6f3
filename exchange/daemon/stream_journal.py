"""The journal on a JetStream cluster: a replicated stream of batches, snapshots in an object store.

Owns: the cluster's storage of one exchange, named by ``ClusterNames``:

- the journal stream (``<NAME>_JOURNAL``, subject ``exchange.journal.<name>``, R replicas): one
  message per committed batch, the batch's entries with their seqs and chain hashes (msgpack).
  Every append states the stream sequence it expects to follow
  (``Nats-Expected-Last-Sequence``): a node that is no longer the leader has its append refused by
  the stream (``JournalFencedError``) instead of forking the history. A batch too large for one
  message goes as a JetStream atomic batch (all of its messages or none). A takeover first
  appends a fence message (no entries), so a deposed leader's next append fails even if the new
  leader has nothing to write yet.
- the snapshot object store (``<NAME>_SNAPSHOTS``): the newest snapshot, bundled with the rows of
  the commands it remembers (``tail.BundledSnapshot``), and ``economy.toml``, the config the
  journal was begun with. So a node with an empty disk can join.
- which stream sequence the node has read (``stream_seq``), and the ``JournalTail`` in memory:
  what ``recover`` and ``rebuild`` read, as from the SQLite journal.

Must not: apply commands (``replicated.py`` does, through ``recovery``), or decide leadership
(``lease.py``).
"""

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Final

import anyio
import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.object_store import ObjectStore

from exchange.daemon.errors import DaemonError
from exchange.daemon.store import SnapshotTaken
from exchange.journal import Entry, EntryInput, JournalError, Snapshot
from exchange.journal.tail import BundledSnapshot, JournalTail, RememberedRow
from protocols.units import NS_PER_MS

log = structlog.get_logger()

# JetStream's "wrong last sequence" error (JSStreamWrongLastSequenceErrF): the stream moved.
_WRONG_LAST_SEQUENCE: Final = 10071
FENCE_HEADER: Final = "Exchange-Fence"
# What the events stream keeps (docs/replication.md, Events you can replay).
EVENT_SUBJECTS: Final = "exchange.event.>"
MARKET_SUBJECTS: Final = "swarm.task.>"
_SNAPSHOT_OBJECT: Final = "snapshot"
_CONFIG_OBJECT: Final = "economy.toml"
# Room left in a message for headers and framing, under the server's max_payload.
_MESSAGE_OVERHEAD_BYTES: Final = 4096
_encoder: Final = msgspec.msgpack.Encoder()
_entries_decoder: Final = msgspec.msgpack.Decoder(tuple[Entry, ...])
_snapshot_decoder: Final = msgspec.msgpack.Decoder(BundledSnapshot)


class JournalFencedError(JournalError):
    """The stream holds an append this node did not make: another node leads now. Nothing of
    the refused batch was written; the node must stop serving and follow the stream."""


class JournalAppendUncertainError(JournalError):
    """The stream did not acknowledge an append in time (a node or the network failed): the
    batch may or may not be in the stream. The node steps down and reads the stream, which tells;
    nothing of the batch was replied."""


class ClusterStorageError(DaemonError):
    """The cluster's JetStream cannot hold the journal (not enabled, no quorum, a config clash)."""


@dataclass(frozen=True, slots=True)
class ClusterNames:
    """The JetStream names of one exchange; ``name`` tells exchanges on one cluster apart."""

    name: str = "exchange"

    @property
    def journal_stream(self) -> str:
        return f"{self.name.upper()}_JOURNAL"

    @property
    def journal_subject(self) -> str:
        return f"exchange.journal.{self.name}"

    @property
    def snapshot_bucket(self) -> str:
        return f"{self.name.upper()}_SNAPSHOTS"

    @property
    def lease_bucket(self) -> str:
        return f"{self.name.upper()}_LEASE"

    @property
    def events_stream(self) -> str:
        return f"{self.name.upper()}_EVENTS"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    replicas: int = 3
    # How long an append may wait for the stream's acknowledgement (a quorum of replicas).
    append_timeout_s: float = 5.0
    # The events stream's retention: whichever bound is reached first drops the oldest events.
    events_max_age_s: float = 24 * 3600.0
    events_max_bytes: int = 1 << 30
    # How long to wait for a cluster that is still forming before giving up.
    ready_timeout_s: float = 30.0


# The settings of a stream the exchange brings up to date when it finds the stream made with
# others (a new --replicas, a new events retention); the rest cannot change after creation.
_UPDATABLE: Final = ("description", "subjects", "num_replicas", "max_age", "max_bytes", "no_ack")


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        pass
    else:
        await _update_stream(js, info.config, config)
        return
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        # Another node made it meanwhile with the same config (the same request succeeds), or
        # the name is taken by a stream of another shape, or the cluster is still forming.
        try:
            await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            raise ClusterStorageError(
                f"JetStream refused to create stream {config.name}: {exc.description}"
            ) from exc


async def _update_stream(
    js: JetStreamContext, found: api.StreamConfig, wanted: api.StreamConfig
) -> None:
    """Brings ``found`` to ``wanted`` where they differ in an updatable setting. A change the
    server refuses (too few nodes for more replicas...) is logged and the stream kept as it is:
    the exchange still works on it, and the operator sees why the setting did not take."""
    changed = [
        name
        for name in _UPDATABLE
        if getattr(wanted, name) is not None  # None: the server's default, whatever it is
        and _setting(getattr(found, name)) != _setting(getattr(wanted, name))
    ]
    if not changed:
        return
    try:
        update = dataclasses.replace(found, **{name: getattr(wanted, name) for name in changed})
        await js.update_stream(update)
    except nats.js.errors.APIError as exc:
        log.warning(
            "stream_config_kept",
            stream=wanted.name,
            settings=changed,
            error=exc.description,
            code=exc.err_code,
        )
    else:
        log.info("stream_config_updated", stream=wanted.name, settings=changed)


def _setting(value: object) -> object:
    # The server reports durations back as floats of seconds, and lists may come back reordered.
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return sorted(value)
    return value


# JetStream answers these while a cluster is still forming (no meta leader yet, peers not yet
# known): worth retrying for ``StreamSettings.ready_timeout_s``.
_NOT_READY_CODES: Final = frozenset({10005, 10008, 10074})  # no peers, unavailable, no leader


async def ensure_storage(
    js: JetStreamContext, names: ClusterNames, settings: StreamSettings
) -> ObjectStore:
    """Creates (or finds) the journal and events streams and the snapshot store, waiting up to
    ``ready_timeout_s`` for a cluster that is still forming.

    Raises ClusterStorageError when JetStream is missing or refuses (too few nodes for R)."""
    delay_s, deadline = 0.1, time.monotonic() + settings.ready_timeout_s
    while True:
        try:
            return await _ensure_storage_once(js, names, settings)
        except ClusterStorageError as exc:
            cause = exc.__cause__
            retryable = isinstance(
                cause, (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError)
            ) or (isinstance(cause, nats.js.errors.APIError) and cause.err_code in _NOT_READY_CODES)
            if not retryable or time.monotonic() + delay_s > deadline:
                raise
            log.info("jetstream_not_ready", error=str(exc), retry_in_s=delay_s)
            await anyio.sleep(delay_s)
            delay_s = min(delay_s * 2, 1.0)


async def _ensure_storage_once(
    js: JetStreamContext, names: ClusterNames, settings: StreamSettings
) -> ObjectStore:
    try:
        await _ensure_stream(
            js,
            api.StreamConfig(
                name=names.journal_stream,
                description="the exchange's journal: one message per committed batch",
                subjects=[names.journal_subject],
                num_replicas=settings.replicas,
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.NEW,
                duplicate_window=120.0,
                deny_delete=True,
                allow_atomic=True,
                allow_direct=True,
            ),
        )
        await _ensure_stream(
            js,
            api.StreamConfig(
                name=names.events_stream,
                description="the exchange's posting events and the market's messages, bounded",
                subjects=[EVENT_SUBJECTS, MARKET_SUBJECTS],
                # Stored without a reply: a request on a market subject gets its answer from
                # the peer it asked, never a JetStream acknowledgement in its place.
                no_ack=True,
                num_replicas=settings.replicas,
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=settings.events_max_age_s,
                max_bytes=settings.events_max_bytes,
            ),
        )
        try:
            return await js.object_store(names.snapshot_bucket)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_object_store(
                names.snapshot_bucket,
                api.ObjectStoreConfig(
                    description="the exchange's newest snapshot and its economy config",
                    replicas=settings.replicas,
                    storage=api.StorageType.FILE,
                ),
            )
    except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError) as exc:
        raise ClusterStorageError(
            f"JetStream did not answer ({type(exc).__name__}); is it enabled on the cluster, "
            f"with at least {settings.replicas} nodes up?"
        ) from exc
    except nats.js.errors.APIError as exc:
        raise ClusterStorageError(
            f"JetStream refused the exchange's storage: {exc.description} (code {exc.err_code}); "
            f"--replicas {settings.replicas} needs that many JetStream nodes"
        ) from exc


async def shared_config_text(store: ObjectStore, given_text: str) -> str:
    """The economy config the cluster's journal was begun with; stores ``given_text`` if none.
    The caller refuses a ``--config`` that differs from what is returned."""
    try:
        return (await store.get(_CONFIG_OBJECT)).data.decode()  # type: ignore[union-attr]
    except nats.js.errors.ObjectNotFoundError:
        pass
    await store.put(_CONFIG_OBJECT, given_text.encode())
    # Two nodes may start together: whichever stored last, both use what is stored now.
    return (await store.get(_CONFIG_OBJECT)).data.decode()  # type: ignore[union-attr]


class StreamJournal:
    """One node's handle on the replicated journal (see the module doc)."""

    def __init__(
        self,
        js: JetStreamContext,
        store: ObjectStore,
        names: ClusterNames,
        settings: StreamSettings,
        *,
        tail: JournalTail,
        stream_seq: int,
        message_bytes_max: int,
    ) -> None:
        self._js = js
        self._store = store
        self._names = names
        self._settings = settings
        self.tail = tail
        self._stream_seq = stream_seq
        self._message_bytes_max = message_bytes_max
        # The stream sequence of the message holding each recent batch's last entry, for
        # pinning a snapshot to where reading resumes. Pruned at each snapshot.
        self._stream_seq_of: dict[int, int] = {tail.last_seq: stream_seq}

    @classmethod
    async def load(
        cls,
        js: JetStreamContext,
        store: ObjectStore,
        names: ClusterNames,
        settings: StreamSettings,
        message_bytes_max: int,
    ) -> "StreamJournal":
        """The newest snapshot of the cluster, and nothing after it yet (``follow`` reads on)."""
        snapshot = None
        try:
            found = await store.get(_SNAPSHOT_OBJECT)
        except nats.js.errors.ObjectNotFoundError:
            found = None
        if found is not None and found.data:
            snapshot = _snapshot_decoder.decode(found.data)
        tail = JournalTail(snapshot)
        stream_seq = 0 if snapshot is None else snapshot.stream_seq
        return cls(
            js,
            store,
            names,
            settings,
            tail=tail,
            stream_seq=stream_seq,
            message_bytes_max=message_bytes_max,
        )

    @property
    def names(self) -> ClusterNames:
        return self._names

    @property
    def reader(self) -> "StreamJournal":
        return self

    # The reads of ``recover``: from memory.

    @property
    def last_seq(self) -> int:
        return self.tail.last_seq

    @property
    def last_at_ns(self) -> int:
        return self.tail.last_at_ns

    @property
    def stream_seq(self) -> int:
        """The last stream sequence this node has read or written."""
        return self._stream_seq

    def latest_snapshot(self) -> Snapshot | None:
        return self.tail.latest_snapshot()

    def iter_entries(self, after_seq: int = 0) -> Iterator[Entry]:
        return self.tail.iter_entries(after_seq)

    def entries_at(self, seqs: Sequence[int]) -> Iterator[RememberedRow]:
        return self.tail.entries_at(seqs)

    # Writing.

    async def last_stream_seq(self) -> int:
        info = await self._js.stream_info(self._names.journal_stream)
        return int(info.state.last_seq)

    async def fence(self, node_id: str) -> int:
        """Appends a fence (no entries) wherever the stream is; returns its stream sequence.
        Every append a former leader makes after it is refused."""
        ack = await self._js.publish(
            self._names.journal_subject,
            b"",
            timeout=self._settings.append_timeout_s,
            headers={FENCE_HEADER: node_id},
        )
        return int(ack.seq)

    async def append(self, batch: Sequence[EntryInput]) -> tuple[Entry, ...]:
        """Appends ``batch`` after the last stream sequence this node knows; returns its entries.

        When this returns, a quorum of the stream's replicas holds the batch. Raises
        JournalFencedError (another node appended meanwhile: nothing was written),
        JournalInputError (a bad entry), nats errors (outcome unknown: the caller steps down
        and reads the stream again, which tells).
        """
        entries = self.tail.prepare(batch)
        if not entries:
            return ()
        chunks = self._chunks(entries)
        msg_id = f"{entries[0].seq}-{entries[-1].hash_hex[:32]}"
        expected = str(self._stream_seq)
        if len(chunks) == 1:
            headers = {
                api.Header.EXPECTED_LAST_SEQUENCE.value: expected,
                api.Header.MSG_ID.value: msg_id,
            }
            ack_seq = await self._publish(chunks[0], headers)
        else:
            ack_seq = await self._publish_atomic(chunks, expected, msg_id)
        self.tail.extend(entries)
        self._stream_seq = ack_seq
        self._stream_seq_of[entries[-1].seq] = ack_seq
        return entries

    def _chunks(self, entries: tuple[Entry, ...]) -> list[bytes]:
        """The batch as messages of at most ``message_bytes_max`` bytes each (usually one)."""
        whole = _encoder.encode(entries)
        if len(whole) <= self._message_bytes_max or len(entries) == 1:
            return [whole]
        middle = len(entries) // 2
        return self._chunks(entries[:middle]) + self._chunks(entries[middle:])

    async def _publish(self, payload: bytes, headers: dict[str, str]) -> int:
        try:
            ack = await self._js.publish(
                self._names.journal_subject,
                payload,
                timeout=self._settings.append_timeout_s,
                headers=headers,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise JournalFencedError(
                    f"the journal stream moved past sequence {self._stream_seq}: another node "
                    "appended (it leads now)"
                ) from exc
            raise JournalAppendUncertainError(
                f"the journal stream refused an append: {exc.description} (code {exc.err_code})"
            ) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise JournalAppendUncertainError(
                f"the journal stream did not acknowledge an append: {type(exc).__name__}"
            ) from exc
        return int(ack.seq)

    async def _publish_atomic(self, chunks: list[bytes], expected: str, msg_id: str) -> int:
        """One batch in several messages, committed all or none (JetStream atomic batch)."""
        batch_id = uuid.uuid4().hex
        nc = self._js._nc
        for index, payload in enumerate(chunks[:-1], start=1):
            headers = {
                api.Header.BATCH_ID.value: batch_id,
                api.Header.BATCH_SEQUENCE.value: str(index),
            }
            if index == 1:
                headers[api.Header.EXPECTED_LAST_SEQUENCE.value] = expected
            await nc.publish(self._names.journal_subject, payload, headers=headers)
        headers = {
            api.Header.BATCH_ID.value: batch_id,
            api.Header.BATCH_SEQUENCE.value: str(len(chunks)),
            api.Header.BATCH_COMMIT.value: "1",
            api.Header.MSG_ID.value: msg_id,
        }
        return await self._publish(chunks[-1], headers)

    async def store_snapshot(self, taken: SnapshotTaken) -> None:
        """Stores the state after entry ``seq`` (committed by this node) as the newest snapshot."""
        seq, state, digest, remembered = taken.seq, taken.state, taken.digest, taken.remembered
        stream_seq = self._stream_seq_of.get(seq)
        assert stream_seq is not None, f"snapshot at {seq}, which is not a batch end of this node"
        snapshot = self.tail.bundle(
            seq=seq, state=state, digest=digest, stream_seq=stream_seq, remembered=remembered
        )
        started_ns = time.perf_counter_ns()
        await self._store.put(_SNAPSHOT_OBJECT, _encoder.encode(snapshot))
        self.tail.snapshot_taken(snapshot)
        self._stream_seq_of = {k: v for k, v in self._stream_seq_of.items() if k >= seq}
        log.info(
            "snapshot_stored",
            seq=seq,
            stream_seq=stream_seq,
            state_bytes=len(state),
            remembered=len(remembered),
            store_ms=(time.perf_counter_ns() - started_ns) // NS_PER_MS,
        )

    # Reading what others wrote.

    def record_read(self, stream_seq: int, entries: Sequence[Entry]) -> None:
        """Records a message read from the stream (its ``entries`` already in the tail)."""
        self._stream_seq = stream_seq
        if entries:
            self._stream_seq_of[entries[-1].seq] = stream_seq

    @asynccontextmanager
    async def messages(self) -> AsyncIterator["anyio.abc.ObjectReceiveStream[Msg]"]:
        """Every message after ``stream_seq``, in order, live (an ordered consumer)."""
        send, receive = anyio.create_memory_object_stream[Msg](1024)

        async def deliver(msg: Msg) -> None:
            await send.send(msg)

        subscription = await self._js.subscribe(
            self._names.journal_subject,
            cb=deliver,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=self._stream_seq + 1),
            stream=self._names.journal_stream,
        )
        try:
            async with receive:
                yield receive
        finally:
            with anyio.CancelScope(shield=True), suppress(nats.errors.Error, nats.js.errors.Error):
                await subscription.unsubscribe()
            send.close()


def decode_batch(msg: Msg) -> tuple[Entry, ...] | None:
    """The entries of a journal message; None for a fence."""
    if msg.headers and FENCE_HEADER in msg.headers:
        return None
    return _entries_decoder.decode(msg.data)


def stream_seq_of(msg: Msg) -> int:
    return int(msg.metadata.sequence.stream)


@dataclass(frozen=True, slots=True)
class ClusterJournalCopy:
    """Everything the cluster holds of one exchange's journal, read from its start (for doctor)."""

    config_text: str | None
    snapshot: BundledSnapshot | None
    # Each journal message in stream order: its stream sequence and entries (None: a fence).
    messages: list[tuple[int, tuple[Entry, ...] | None]]


async def read_cluster_journal(
    js: JetStreamContext, names: ClusterNames, *, timeout_s: float = 30.0
) -> ClusterJournalCopy:
    """Reads the whole journal stream, the newest snapshot and the config. Raises
    ClusterStorageError when the cluster holds no such journal."""
    try:
        info = await js.stream_info(names.journal_stream)
        store = await js.object_store(names.snapshot_bucket)
    except nats.js.errors.NotFoundError as exc:
        raise ClusterStorageError(
            f"the cluster holds no journal {names.journal_stream}; check --nats and --cluster-name"
        ) from exc
    config_text = None
    snapshot = None
    with suppress(nats.js.errors.ObjectNotFoundError):
        config_text = (await store.get(_CONFIG_OBJECT)).data.decode()  # type: ignore[union-attr]
    with suppress(nats.js.errors.ObjectNotFoundError):
        found = (await store.get(_SNAPSHOT_OBJECT)).data
        snapshot = None if not found else _snapshot_decoder.decode(found)
    last = int(info.state.last_seq)
    messages: list[tuple[int, tuple[Entry, ...] | None]] = []
    if last == 0:
        return ClusterJournalCopy(config_text, snapshot, messages)
    subscription = await js.subscribe(
        names.journal_subject,
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
        stream=names.journal_stream,
    )
    try:
        with anyio.fail_after(timeout_s):
            async for msg in subscription.messages:
                messages.append((stream_seq_of(msg), decode_batch(msg)))
                if stream_seq_of(msg) >= last:
                    break
    finally:
        with suppress(nats.errors.Error, nats.js.errors.Error):
            await subscription.unsubscribe()
    return ClusterJournalCopy(config_text, snapshot, messages)
