"""The batcher and committer without NATS or disk: replies wait for their own commit, batch k+1 is
applied while k is being written, queries answer at their place in the order, refusals and ticks
are journaled, snapshots follow their commit. A fake journal records batches in memory and can
hold a commit open (a threading.Event) to observe the pipeline mid-write.
"""

import threading
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import pytest

from exchange.core.config import EconomyConfig
from exchange.core.machine import Exchange
from exchange.daemon.batcher import AppliedBatch, Inbound, Pipeline, TimerSchedule
from exchange.daemon.clock import ExchangeClock
from exchange.daemon.recovery import apply_genesis
from exchange.daemon.routes import CommandWork, QueryWork, resolve_command, resolve_query
from exchange.journal import Entry, EntryInput

pytestmark = pytest.mark.anyio

WAIT_S = 5.0
START_NS = 1_700_000_000_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeJournal:
    """Numbers entries like the journal; ``hold`` makes append_batch wait until released."""

    def __init__(self) -> None:
        self.batches: list[list[EntryInput]] = []
        self.snapshots: list[tuple[int, str]] = []
        self.last_seq = 0
        self.hold: threading.Event | None = None
        self.entered = threading.Event()

    def append_batch(self, batch: Sequence[EntryInput]) -> tuple[Entry, ...]:
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(WAIT_S)
        entries = []
        for item in batch:
            self.last_seq += 1
            entries.append(
                Entry(seq=self.last_seq, hash_hex="0" * 64, **msgspec.structs.asdict(item))
            )
        self.batches.append(list(batch))
        return tuple(entries)

    def write_snapshot(self, seq: int, state: bytes, digest: str) -> None:
        self.snapshots.append((seq, digest))


class Harness:
    def __init__(self, *, snapshot_every_commands: int = 1000) -> None:
        self.exchange = Exchange(EconomyConfig())
        self.journal = FakeJournal()
        self.journal.append_batch(apply_genesis(self.exchange, now_ns=START_NS))
        self.published: list[tuple[str, bytes]] = []
        self.registered: list[str] = []
        self.wall_ns = START_NS
        self.clock = ExchangeClock(floor_ns=START_NS, wall_ns=lambda: self.wall_ns)
        self.pipeline = Pipeline(
            exchange=self.exchange,
            journal=self.journal,  # type: ignore[arg-type]
            clock=self.clock,
            timers=TimerSchedule(),
            publish=self.publish,
            agents_registered=self.agents_registered,
            batch_size_max=64,
            batch_wait_us=0,
            snapshot_every_commands=snapshot_every_commands,
            snapshot_seq=0,
        )

    async def publish(self, subject: str, payload: bytes) -> None:
        self.published.append((subject, payload))

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


async def test_the_next_batch_is_applied_while_one_is_being_written() -> None:
    h = Harness()
    h.journal.hold = threading.Event()
    inbound_send, inbound_receive = anyio.create_memory_object_stream[Inbound](16)
    applied_send, applied_receive = anyio.create_memory_object_stream[AppliedBatch](0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.pipeline.run_batcher, inbound_receive, applied_send)
        tg.start_soon(h.pipeline.run_committer, applied_receive)
        async with inbound_send:
            await inbound_send.send(transfer(1))
            with anyio.fail_after(WAIT_S):
                await anyio.to_thread.run_sync(h.journal.entered.wait)
            # Batch 1 is inside append_batch; batch 2 is applied meanwhile.
            inbound_send.send_nowait(transfer(2))
            inbound_send.send_nowait(transfer(3))
            with anyio.fail_after(WAIT_S):
                while h.exchange.seq < 9:
                    await anyio.wait_all_tasks_blocked()
            # And no further: batch 3 waits until batch 2 is handed to the committer.
            inbound_send.send_nowait(transfer(4))
            await anyio.wait_all_tasks_blocked()
            assert h.exchange.seq == 9
            assert h.published == []
            assert h.pipeline.durable_seq == 6
            h.journal.hold.set()
        with anyio.fail_after(WAIT_S):
            await h.pipeline.finished.wait()
    assert [len(b) for b in h.journal.batches[1:]] == [1, 2, 1]
    assert set(h.replies()) == {"reply.t1", "reply.t2", "reply.t3", "reply.t4"}
    assert h.pipeline.durable_seq == 10


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
    send, receive = anyio.create_memory_object_stream[Inbound](4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.pipeline.timers.run, h.clock, send)
        with anyio.fail_after(WAIT_S):
            tick = await receive.receive()
        tg.cancel_scope.cancel()
    receive.close()
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
