"""The batcher and committer without NATS or disk: replies wait for their own commit, what arrives
while batch k is committed and answered becomes batch k+1 (bounded), queries answer at their
place in the order, refusals and ticks are journaled, snapshots follow their commit. A fake
journal records batches in memory; holding the first reply open observes the pipeline mid-commit.
"""

from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import pytest

from exchange.core.config import EconomyConfig
from exchange.core.machine import Exchange
from exchange.daemon.batcher import Pipeline, TimerSchedule
from exchange.daemon.clock import ExchangeClock
from exchange.daemon.discovery import EndpointCounters
from exchange.daemon.inbound import Inbound, InboundQueue
from exchange.daemon.recovery import apply_genesis
from exchange.daemon.routes import CommandWork, QueryWork, resolve_command, resolve_query
from exchange.daemon.store import SnapshotTaken
from exchange.journal import Entry, EntryInput

pytestmark = pytest.mark.anyio

WAIT_S = 5.0
START_NS = 1_700_000_000_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeJournal:
    """Numbers entries like the journal and keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[list[EntryInput]] = []
        self.snapshots: list[tuple[int, str]] = []
        self.last_seq = 0

    def append_batch(self, batch: Sequence[EntryInput]) -> tuple[Entry, ...]:
        entries = []
        for item in batch:
            self.last_seq += 1
            entries.append(
                Entry(seq=self.last_seq, hash_hex="0" * 64, **msgspec.structs.asdict(item))
            )
        self.batches.append(list(batch))
        return tuple(entries)

    # The pipeline's side (``JournalStore``).

    @property
    def reader(self) -> "FakeJournal":
        return self

    async def append(self, batch: Sequence[EntryInput]) -> tuple[Entry, ...]:
        return self.append_batch(batch)

    async def store_snapshot(self, snapshot: SnapshotTaken) -> None:
        self.snapshots.append((snapshot.seq, snapshot.digest))


class Harness:
    def __init__(self, *, snapshot_every_commands: int = 1000, batch_size_max: int = 64) -> None:
        self.exchange = Exchange(EconomyConfig())
        self.journal = FakeJournal()
        self.journal.append_batch(apply_genesis(self.exchange, now_ns=START_NS))
        self.published: list[tuple[str, bytes]] = []
        self.headers: dict[str, dict[str, str] | None] = {}
        self.registered: list[str] = []
        # When set: the first reply waits for ``hold_replies``, with ``replying`` set meanwhile.
        self.hold_replies: anyio.Event | None = None
        self.replying = anyio.Event()
        self.wall_ns = START_NS
        self.clock = ExchangeClock(floor_ns=START_NS, wall_ns=lambda: self.wall_ns)
        self.pipeline = Pipeline(
            exchange=self.exchange,
            journal=self.journal,  # type: ignore[arg-type]
            clock=self.clock,
            timers=TimerSchedule(),
            publish=self.publish,
            agents_registered=self.agents_registered,
            batch_size_max=batch_size_max,
            snapshot_every_commands=snapshot_every_commands,
            snapshot_seq=0,
        )

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None, /
    ) -> None:
        if self.hold_replies is not None and subject.startswith("reply."):
            self.replying.set()
            await self.hold_replies.wait()
        self.published.append((subject, payload))
        self.headers[subject] = headers

    async def agents_registered(self, agents: list[str]) -> None:
        self.registered.extend(agents)

    def replies(self) -> dict[str, Any]:
        return {s: msgspec.json.decode(p) for s, p in self.published if s.startswith("reply.")}


def command(sender: str, verb: str, body: dict[str, Any], reply_to: str) -> Inbound:
    work = resolve_command(f"exchange.cmd.{sender}.{verb}", msgspec.json.encode(body))
    assert isinstance(work, CommandWork), work
    return Inbound(work, reply_to, None, 0)


def query(verb: str, body: dict[str, Any], reply_to: str) -> Inbound:
    work = resolve_query(f"exchange.query.{verb}", msgspec.json.encode(body))
    assert isinstance(work, QueryWork), work
    return Inbound(work, reply_to, None, 0)


def transfer(index: int, amount: str = "1") -> Inbound:
    body = {"request_id": f"t{index}", "to": "zero", "amount": amount}
    return command("claude", "transfer", body, f"reply.t{index}")


async def test_a_batch_is_applied_in_order_and_answered_after_its_commit() -> None:
    h = Harness()
    batch = h.pipeline.apply_batch(
        [
            transfer(1),
            query("balance", {"agent": "zero"}, "reply.q1"),
            transfer(2, "99999"),
            transfer(3),
        ]
    )
    assert h.published == []  # Applied, not durable: nothing has left.
    assert [e.verb for e in batch.entries] == ["transfer"] * 3
    await h.pipeline.commit(batch)
    replies = h.replies()
    assert replies["reply.q1"]["result"]["balance"] == "10001"  # Sees t1, not t3.
    assert replies["reply.t2"]["error"]["code"] == "reserve_would_be_breached"
    assert replies["reply.t3"]["result"]["balance"] == "9998"
    # The refusal is journaled with the others, in order.
    assert [msgspec.json.decode(e.body)["request_id"] for e in h.journal.batches[-1]] == [
        "t1",
        "t2",
        "t3",
    ]
    events = [s for s, _ in h.published if s.startswith("exchange.event.")]
    assert events == ["exchange.event.claude.posting", "exchange.event.zero.posting"] * 2
    assert h.pipeline.durable_seq == 9


async def test_only_a_refusal_carries_the_service_error_headers_and_is_counted() -> None:
    h = Harness()
    counters = EndpointCounters("commands", "exchange.cmd.>")
    items = [
        msgspec.structs.replace(item, counters=counters)
        for item in (
            transfer(1),
            transfer(2, "99999"),
            query("balance", {"agent": "no"}, "reply.q"),
        )
    ]
    await h.pipeline.commit(h.pipeline.apply_batch(items))
    refused = h.replies()["reply.t2"]["error"]
    assert h.headers["reply.t2"] == {
        "Nats-Service-Error": refused["message"],
        "Nats-Service-Error-Code": "400",
    }
    assert h.replies()["reply.q"]["ok"] is False
    assert h.headers["reply.q"] is not None
    assert h.headers["reply.t1"] is None
    assert all(h.headers[s] is None for s, _ in h.published if not s.startswith("reply."))
    assert (counters.requests, counters.errors) == (3, 2)
    assert counters.last_error.startswith("unknown_agent: ")


async def test_what_arrives_while_a_batch_is_committed_is_the_next_batch() -> None:
    h = Harness(batch_size_max=2)
    h.hold_replies = anyio.Event()
    inbound = InboundQueue(16)
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.pipeline.run_batcher, inbound)
        tg.start_soon(h.pipeline.run_committer)
        assert inbound.put(transfer(1))
        with anyio.fail_after(WAIT_S):
            await h.replying.wait()
        # Batch 1 is durable and its reply is going out; t2..t4 arrive meanwhile.
        assert h.pipeline.durable_seq == 7
        for index in (2, 3, 4):
            assert inbound.put(transfer(index))
        await anyio.wait_all_tasks_blocked()
        # t2 and t3 are applied into the open batch, and no further (batch_size_max 2): t4 waits.
        assert h.exchange.seq == 9
        assert len(inbound) == 1
        assert h.pipeline.durable_seq == 7
        assert set(h.replies()) == set()
        h.hold_replies.set()
        inbound.close()
        with anyio.fail_after(WAIT_S):
            await h.pipeline.finished.wait()
    assert [len(b) for b in h.journal.batches[1:]] == [1, 2, 1]
    assert set(h.replies()) == {"reply.t1", "reply.t2", "reply.t3", "reply.t4"}
    assert h.pipeline.durable_seq == 10


async def test_the_inbound_queue_refuses_beyond_its_bound_and_after_close() -> None:
    inbound = InboundQueue(2)
    assert inbound.put(transfer(1)) and inbound.put(transfer(2))
    assert not inbound.put(transfer(3))
    assert inbound.put(transfer(4), beyond_bound=True)  # The timer loop's one Tick.
    assert [i.reply_to for i in await inbound.take(2)] == ["reply.t1", "reply.t2"]
    inbound.close()
    assert not inbound.put(transfer(5))
    assert [i.reply_to for i in await inbound.take(8)] == ["reply.t4"]
    assert await inbound.take(8) == []


async def test_snapshots_are_written_after_their_batch() -> None:
    h = Harness(snapshot_every_commands=2)
    await h.pipeline.commit(h.pipeline.apply_batch([transfer(1), transfer(2)]))
    await h.pipeline.commit(h.pipeline.apply_batch([transfer(3)]))
    await h.pipeline.commit(h.pipeline.apply_batch([transfer(4)]))
    assert [seq for seq, _ in h.journal.snapshots] == [8, 10]
    await h.pipeline.snapshot_if_behind()
    assert [seq for seq, _ in h.journal.snapshots] == [8, 10]
    await h.pipeline.commit(h.pipeline.apply_batch([transfer(5)]))
    await h.pipeline.snapshot_if_behind()
    assert h.journal.snapshots[-1] == (11, h.exchange.digest())


async def test_a_registration_is_announced_before_its_reply() -> None:
    h = Harness()
    body = {"request_id": "reg", "agent": "newbie", "base_rate": "1", "primary_llm": "llama3.2"}
    batch = h.pipeline.apply_batch([command("admin", "agent.register", body, "reply.reg")])
    assert batch.registered == ["newbie"]
    await h.pipeline.commit(batch)
    assert h.registered == ["newbie"]
    again = h.pipeline.apply_batch([command("admin", "agent.register", body, "reply.again")])
    assert again.registered == []  # A retry (same request id) registers nothing new.


async def test_a_due_timer_is_fed_as_a_journaled_tick() -> None:
    h = Harness()
    body = {"request_id": "auth", "task_type": "code", "tokens": 1000, "timeout_s": 60}
    await h.pipeline.commit(
        h.pipeline.apply_batch([command("claude", "llm.authorize", body, "reply.auth")])
    )
    due_ns = h.exchange.next_timer_ns()
    assert due_ns is not None
    h.wall_ns = due_ns + 1  # The wall clock reaches the deadline.
    inbound = InboundQueue(4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.pipeline.timers.run, h.clock, inbound)
        with anyio.fail_after(WAIT_S):
            [tick] = await inbound.take(4)
        tg.cancel_scope.cancel()
    assert (tick.work.sender, tick.work.verb, tick.reply_to) == ("exchange", "tick", None)
    await h.pipeline.commit(h.pipeline.apply_batch([tick]))
    entry = h.journal.batches[-1][0]
    assert (entry.sender, entry.verb) == ("exchange", "tick")
    assert [p.kind for p in entry.postings] == ["void.llm"]
    assert h.exchange.next_timer_ns() is None


def test_the_clock_never_goes_backwards() -> None:
    readings = iter([100, 90, 95, 120])
    clock = ExchangeClock(floor_ns=50, wall_ns=lambda: next(readings))
    assert [clock.now_ns() for _ in range(4)] == [100, 100, 100, 120]
    assert ExchangeClock(floor_ns=500, wall_ns=lambda: 1).now_ns() == 500
