"""The ordered path every command and query takes: apply, journal, then reply and publish.

Owns: the single writer of the exchange's state. Two loops around one open batch:

- the batcher takes everything queued (``InboundQueue.take``), stamps each command with the
  clock, applies it to the core in order and answers each query at its place in the order, all
  into the open batch (entries, replies, events), as soon as it arrives;
- the committer, whenever the open batch is not empty, takes that batch, appends it to the
  journal (one transaction, one fsync), and only then replies, publishes the postings as events
  and the core's publications, and writes a snapshot (in a worker thread) when one was taken.

That is group commit: everything that arrives while batch k is being written and answered is
applied into batch k+1, which is committed as one transaction as soon as k is done, however many
commands it holds (up to ``batch_size_max``; beyond that the batcher waits). So at most one batch
is applied and not yet durable, and batches grow with the load by themselves, without a timed
wait. Replies of k+1 wait for its own commit. Queries take the same path, so a reply never shows
state that is not durable, and a client that got a success reply sees its effect in every later
query.

Why the commit blocks the loop (as Redis's ``appendfsync always`` does) instead of running in a
worker thread: the thread fights the loop for the GIL at every row SQLite steps, so a commit that
takes 0.8 ms alone took 2.6 ms beside a busy loop, and the loop had nothing better to do
meanwhile than to queue the next batch. Measured with bench/transfers.py at 64 in flight:
7.1k transfers/s with the thread, 9.7k/s on the loop. Incoming messages wait in the socket
meanwhile, and are the next batch. (A writer process fed by a pipe was slower still on two
cores, and a commit delay to grow batches lost throughput: docs/daemon.md, Performance.)

Timers: after applying, the batcher tells ``TimerSchedule`` when the core's next timer is due;
the timer loop then feeds a ``Tick`` from sender ``exchange`` through the same inbound queue, so
firings are stamped, journaled and replayed like any other command.

A command that raises while applied (a broken core invariant) does not stop the exchange: the
state is rebuilt from the journal and the command refused with ``internal_error`` (``survive``).

Must not: decode wire messages (routes.py), talk to NATS except through the ``publish`` callable,
read the clock anywhere but ``ExchangeClock.now_ns`` for stamps, or swallow a journal failure (a
failed commit crashes the daemon: the state in memory is then ahead of the disk, and only a
restart, which replays the journal, makes them agree again; no reply of that batch was sent).
"""

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import anyio
import msgspec
import structlog

from exchange.core.ledger import Outcome, Publication
from exchange.core.machine import Exchange
from exchange.daemon import limits
from exchange.daemon.clock import ExchangeClock
from exchange.daemon.discovery import EndpointCounters
from exchange.daemon.events import posting_events
from exchange.daemon.inbound import Inbound, InboundQueue, Wakeup
from exchange.daemon.recovery import failed_reply, journal_postings, rebuild
from exchange.daemon.replies import Publish, publish_refusal
from exchange.daemon.routes import CommandWork, QueryWork
from exchange.daemon.store import JournalStore, SnapshotTaken
from exchange.journal import Entry, EntryInput
from protocols.commands import DropTimer, RegisterAgent, Tick
from protocols.errors import ErrorCode
from protocols.ids import EXCHANGE
from protocols.units import NS_PER_MS, NS_PER_S, NS_PER_US

log = structlog.get_logger()

_encoder: Final = msgspec.json.Encoder()
_ok_prefix: Final = b'{"ok":true'

AgentsRegistered = Callable[[list[str]], Awaitable[None]]


class Reply(msgspec.Struct, frozen=True, gc=False):
    subject: str
    payload: bytes
    counters: EndpointCounters | None
    received_ns: int
    ok: bool


@dataclass(slots=True)
class AppliedBatch:
    """A batch applied in memory and not yet durable: nothing of it has left the process."""

    # Commands and queries applied into it (queries journal nothing but take their place).
    item_count: int = 0
    entries: list[EntryInput] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    publications: list[Publication] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    last_seq: int = 0
    snapshot: SnapshotTaken | None = None


class TimerSchedule:
    """When the core's next timer is due, and the loop that feeds a Tick when it is.

    One Tick is outstanding at a time: the loop sends the next only after the batcher applied
    the previous one, so a timer still due after a Tick (the core may fire a bounded number per
    command) gets another Tick at once, and a burst never floods the queue.
    """

    def __init__(self) -> None:
        self._due_ns: int | None = None
        self._changed = anyio.Event()
        self._tick_applied = anyio.Event()

    def set_due(self, due_ns: int | None) -> None:
        if due_ns != self._due_ns:
            self._due_ns = due_ns
            self._changed.set()
            self._changed = anyio.Event()

    def tick_applied(self) -> None:
        self._tick_applied.set()

    async def run(self, clock: ExchangeClock, inbound: InboundQueue) -> None:
        """Sends a Tick whenever the wall clock reaches the due time. Runs until cancelled."""
        repeats, last_due_ns = 0, None
        while True:
            due_ns, changed = self._due_ns, self._changed
            if due_ns is None or repeats >= limits.ticks_per_due_max:
                await changed.wait()
                repeats = 0
                continue
            delay_s = (due_ns - clock.wall_ns()) / NS_PER_S
            if delay_s > 0:
                with anyio.move_on_after(delay_s):
                    await changed.wait()
                continue
            repeats = repeats + 1 if due_ns == last_due_ns else 1
            last_due_ns = due_ns
            if repeats == limits.ticks_per_due_max:
                log.error("timer_stalled", due_ns=due_ns, ticks=repeats)
            self._tick_applied = anyio.Event()
            tick = Tick(request_id=f"tick-{due_ns}")
            work = CommandWork(EXCHANGE, "tick", tick, _encoder.encode(tick))
            queued = Inbound(work, None, None, time.perf_counter_ns())
            if not inbound.put(queued, beyond_bound=True):
                return  # Closed: the exchange is stopping.
            await self._tick_applied.wait()


class Pipeline:
    """The batcher and the committer around one exchange and its journal (see the module doc)."""

    def __init__(
        self,
        *,
        exchange: Exchange,
        journal: JournalStore,
        clock: ExchangeClock,
        timers: TimerSchedule,
        publish: Publish,
        agents_registered: AgentsRegistered,
        batch_size_max: int,
        snapshot_every_commands: int,
        snapshot_seq: int,
    ) -> None:
        assert exchange.seq == journal.reader.last_seq, "the exchange must be recovered from it"
        self.exchange = exchange
        self.journal = journal
        self.clock = clock
        self.timers = timers
        self._publish = publish
        self._agents_registered = agents_registered
        self._batch_size_max = batch_size_max
        self._snapshot_every_commands = snapshot_every_commands
        self._snapshot_seq = snapshot_seq
        self._durable_seq = journal.reader.last_seq
        self._open = AppliedBatch()
        self._batch_ready = Wakeup()
        self._batch_taken = Wakeup()
        self._batcher_done = False
        self.batches_committed = 0
        self.finished = anyio.Event()
        # Told of every committed batch's entries (the Prometheus spend counters), if set.
        self.on_committed: Callable[[Sequence[Entry]], None] | None = None

    @property
    def durable_seq(self) -> int:
        """The last journaled seq whose batch has been committed."""
        return self._durable_seq

    # ------------------------------------------------------------------------------- batcher

    async def run_batcher(self, inbound: InboundQueue) -> None:
        """Applies what arrives into the open batch until ``inbound`` is closed and empty."""
        self.timers.set_due(self.exchange.next_timer_ns())
        try:
            while True:
                room = self._batch_size_max - self._open.item_count
                if room <= 0:
                    await self._batch_taken.wait()  # Full: the committer takes it when free.
                    continue
                items = await inbound.take(room)
                if not items:
                    return
                self.apply_into(self._open, items)
                self._batch_ready.set()
        finally:
            self._batcher_done = True
            self._batch_ready.set()

    def apply_batch(self, items: list[Inbound]) -> AppliedBatch:
        """A new batch with ``items`` applied (see ``apply_into``)."""
        batch = AppliedBatch()
        self.apply_into(batch, items)
        return batch

    def apply_into(self, batch: AppliedBatch, items: list[Inbound]) -> None:
        """Applies the commands and answers the queries of ``items`` into ``batch``, in order.

        Synchronous: nothing else touches the state meanwhile.
        """
        exchange = self.exchange
        batch.item_count += len(items)
        for item in items:
            work = item.work
            if isinstance(work, QueryWork):
                try:
                    payload = exchange.query(work.query)
                except Exception as error:  # a query changes nothing: answer it and serve on
                    log.critical("query_failed", verb=work.verb, error=repr(error), exc_info=error)
                    payload = failed_reply(
                        f"the exchange failed answering this {work.verb} query (a bug, logged); "
                        "nothing changed. Report it if it happens again"
                    )
                if item.reply_to is not None:
                    batch.replies.append(
                        Reply(
                            item.reply_to,
                            payload,
                            item.counters,
                            item.received_ns,
                            payload.startswith(_ok_prefix),
                        )
                    )
                continue
            now_ns = self.clock.now_ns()
            try:
                outcome = exchange.apply(work.sender, work.command, now_ns=now_ns)
            except Exception as error:  # a broken invariant: see survive
                outcome = self.survive(batch, work, now_ns, error)
            batch.entries.append(
                EntryInput(
                    at_ns=now_ns,
                    sender=work.sender,
                    verb=work.verb,
                    body=work.body,
                    reply=outcome.reply,
                    postings=journal_postings(outcome.postings),
                )
            )
            if item.reply_to is not None:
                batch.replies.append(
                    Reply(item.reply_to, outcome.reply, item.counters, item.received_ns, outcome.ok)
                )
            if outcome.publications:
                batch.publications.extend(outcome.publications)
            if outcome.ok and not outcome.duplicate and isinstance(work.command, RegisterAgent):
                batch.registered.append(work.command.agent)
            elif isinstance(work.command, Tick):
                self.timers.tick_applied()
        batch.last_seq = exchange.seq
        self.timers.set_due(exchange.next_timer_ns())
        if exchange.seq - self._snapshot_seq >= self._snapshot_every_commands:
            # Written once the batch holding its last command is durable.
            batch.snapshot = self.take_snapshot()

    def survive(
        self, batch: AppliedBatch, work: CommandWork, now_ns: int, error: Exception
    ) -> Outcome:
        """The outcome of a command whose application raised (a core assertion: a bug, or an
        input no rule foresaw), with the state as it was before it, so the exchange serves on.

        The live state may hold half of that command, so it is rebuilt from the journal and the
        batch's entries before it (``rebuild``), as a restart would. Then: if a timer's rule
        failed while it fired (the command only happened to come when it was due), a journaled
        ``timer.drop`` removes that timer and the command is applied again; if the command's own
        rule failed, it is journaled as refused with ``internal_error``, and a replay skips it
        the same way (``recovery.failed``), so it cannot stop the exchange again at restart.
        """
        exchange = self.exchange
        for _ in range(limits.failures_per_command_max):
            firing = exchange.ledger.firing
            log.critical(
                "command_failed",
                sender=work.sender,
                verb=work.verb,
                seq=exchange.seq,
                timer=firing,
                error=repr(error),
                exc_info=error,
            )
            started_ns = time.perf_counter_ns()
            exchange.take_state_of(rebuild(self.journal.reader, exchange.config, batch.entries))
            log.warning(
                "state_rebuilt",
                seq=exchange.seq,
                rebuild_ms=(time.perf_counter_ns() - started_ns) // NS_PER_MS,
            )
            if firing is None:
                break
            deadline_ns, timer_seq, kind, ref = firing
            drop = DropTimer(
                request_id=f"drop-{timer_seq}",
                deadline_ns=deadline_ns,
                timer_seq=timer_seq,
                kind=kind,
                ref=ref,
            )
            dropped = exchange.apply(EXCHANGE, drop, now_ns=now_ns)
            assert dropped.ok, dropped.reply
            batch.entries.append(
                EntryInput(
                    at_ns=now_ns,
                    sender=EXCHANGE,
                    verb="timer.drop",
                    body=_encoder.encode(drop),
                    reply=dropped.reply,
                )
            )
            log.error("timer_dropped", kind=kind, ref=ref, deadline_ns=deadline_ns)
            try:
                return exchange.apply(work.sender, work.command, now_ns=now_ns)
            except Exception as again:
                error = again
        exchange.ledger.skip(now_ns=now_ns)
        reply = failed_reply(
            f"the exchange failed applying this {work.verb} (a bug, logged) and refused it; its "
            "state is as it was before. Retrying is safe; report it if it fails again"
        )
        return Outcome(ok=False, reply=reply, code=ErrorCode.internal_error.value)

    def take_snapshot(self) -> SnapshotTaken:
        """The state as of now (between batches), for writing once its last batch is durable."""
        # Serialising must happen here, on the loop, between batches: the state is live objects.
        # It is O(state), and so is the digest, computed from the same walk.
        state, digest = self.exchange.snapshot_and_digest()
        taken = SnapshotTaken(self.exchange.seq, state, digest, self.exchange.ledger.remembered())
        self._snapshot_seq = taken.seq
        return taken

    # ------------------------------------------------------------------------------- committer

    async def run_committer(self) -> None:
        """Commits, then answers, the open batch whenever it has something, until the batcher
        has ended and everything it applied is committed."""
        try:
            while True:
                if self._open.item_count == 0:
                    if self._batcher_done:
                        return
                    await self._batch_ready.wait()
                    continue
                batch, self._open = self._open, AppliedBatch()
                self._batch_taken.set()
                await self.commit(batch)
        finally:
            self.finished.set()

    async def commit(self, batch: AppliedBatch) -> None:
        """Journals ``batch`` (raising on failure: see the module doc), then replies, publishes."""
        committed: tuple[Entry, ...] = ()
        if batch.entries:
            started_ns = time.perf_counter_ns()
            committed = await self.journal.append(batch.entries)
            assert committed[-1].seq == batch.last_seq, (committed[-1].seq, batch.last_seq)
            self._durable_seq = batch.last_seq
            self.batches_committed += 1
            # One line per batch, not per command: on the hot path a log call costs as much as
            # the journal's work for one entry. The journal itself names every command.
            log.debug(
                "batch_committed",
                entries=len(committed),
                first_seq=committed[0].seq,
                last_seq=batch.last_seq,
                replies=len(batch.replies),
                commit_us=(time.perf_counter_ns() - started_ns) // NS_PER_US,
            )
        if committed and self.on_committed is not None:
            self.on_committed(committed)
        if batch.registered:
            await self._agents_registered(batch.registered)
        now_ns = time.perf_counter_ns()
        for reply in batch.replies:
            error = None
            if reply.ok:
                await self._publish(reply.subject, reply.payload)
            else:
                error = await publish_refusal(self._publish, reply.subject, reply.payload)
            if reply.counters is not None:
                reply.counters.record(elapsed_ns=now_ns - reply.received_ns, error=error)
        for entry in committed:
            for subject, body in posting_events(entry):
                await self._publish(subject, body)
        for publication in batch.publications:
            await self._publish(publication.subject, _encoder.encode(publication.payload))
        if batch.snapshot is not None:
            await self.write_snapshot(batch.snapshot)

    async def write_snapshot(self, snapshot: SnapshotTaken) -> None:
        """Stores a snapshot whose seq is durable, in a worker thread."""
        assert snapshot.seq <= self._durable_seq, "snapshot only what is journaled"
        started_ns = time.perf_counter_ns()
        await self.journal.store_snapshot(snapshot)
        log.info(
            "snapshot_written",
            seq=snapshot.seq,
            state_bytes=len(snapshot.state),
            write_ms=(time.perf_counter_ns() - started_ns) // NS_PER_MS,
        )

    async def snapshot_if_behind(self) -> None:
        """A snapshot of the current state unless the latest one is already at this seq.

        For a clean shutdown, once both loops have ended (so the state is all durable).
        """
        if self.exchange.seq > self._snapshot_seq and self.exchange.seq == self._durable_seq:
            await self.write_snapshot(self.take_snapshot())
