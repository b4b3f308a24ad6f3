"""The journal on a three-node JetStream cluster (``--journal jetstream``), as real processes.

Three clustered nats-servers on loopback; the exchange nodes are ``exchange up`` processes. The
load is nats-py clients that retry every command with its request id until it is answered, as
the protocol tells clients to. Checked: every acknowledged command is applied exactly once after
a leader is killed with SIGKILL (the balance moved by exactly the commands acknowledged), a new
leader serves within 5 s, the replicas' digests agree, a node of the cluster can die, and a
leader that was paused past its lease comes back fenced, as a standby.
"""

import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemon_support import DaemonProcess, run_cli
from nats.js.api import ConsumerConfig, DeliverPolicy

from exchange.daemon.natsserver import NatsServer, NatsServerConfig, run_nats_server
from exchange.daemon.stream_journal import (
    ClusterNames,
    JournalFencedError,
    StreamJournal,
    StreamSettings,
    ensure_storage,
    read_cluster_journal,
)
from exchange.journal import EntryInput
from protocols.client import ExchangeClient, connect
from protocols.client_errors import ExchangeUnavailableError
from protocols.credentials import Credentials

# A bound on waiting for a node's next event, wide for a loaded CI machine: a healthy run takes
# well under a second.
EVENT_WAIT_S = 30
pytestmark = pytest.mark.anyio

LEASE_TTL_S = 1.5
TAKEOVER_S_MAX = 5.0
OPENING = Decimal(10_000)


def _node_argv(url: str, *extra: str) -> tuple[str, ...]:
    return (
        "--nats",
        url,
        "--journal",
        "jetstream",
        "--lease-ttl",
        str(LEASE_TTL_S),
        "--log-level",
        "debug",
        *extra,
    )


@asynccontextmanager
async def _nodes(tmp_path: Path, url: str, count: int) -> AsyncIterator[list[DaemonProcess]]:
    """``count`` exchange nodes: the first leads (it starts first), the rest follow."""
    async with AsyncExitStack() as stack:
        leader = DaemonProcess(tmp_path / "node-0", None, *_node_argv(url))
        nodes = [await stack.enter_async_context(leader.running())]
        for index in range(1, count):
            standby = DaemonProcess(
                tmp_path / f"node-{index}",
                None,
                *_node_argv(url, "--standby"),
                ready_event="standby_following",
            )
            nodes.append(await stack.enter_async_context(standby.running()))
        yield nodes


@dataclass
class Load:
    """Workers sending transfers, each retried with its request id until answered."""

    client: ExchangeClient
    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)
    # perf_counter of every reply, for the gap a failover leaves.
    reply_times: list[float] = field(default_factory=list)
    stop: anyio.Event = field(default_factory=anyio.Event)
    _acked: anyio.Event = field(default_factory=anyio.Event)

    async def worker(self, name: str) -> None:
        index = 0
        while not self.stop.is_set():
            request_id = f"{name}-{index}"
            while True:
                try:
                    reply = await self.client.command_envelope(
                        "claude", "transfer", {"to": "zero", "amount": "1"}, request_id=request_id
                    )
                except ExchangeUnavailableError:
                    continue  # No leader right now: the same request id again.
                break
            assert reply.ok, reply
            self.acknowledged[request_id] = reply.result
            self.reply_times.append(time.perf_counter())
            self._acked.set()
            self._acked = anyio.Event()
            index += 1

    async def wait_acks(self, count: int) -> None:
        target = len(self.acknowledged) + count
        while len(self.acknowledged) < target:
            await self._acked.wait()


async def _status(client: ExchangeClient) -> dict[str, Any]:
    reply = await client.query_envelope("status")
    assert reply.ok, reply
    assert isinstance(reply.result, dict)
    return reply.result


async def _balance(client: ExchangeClient, agent: str) -> Decimal:
    reply = await client.query_envelope("balance", {"agent": agent})
    assert reply.ok, reply
    assert isinstance(reply.result, dict)
    return Decimal(reply.result["balance"])


async def _digest_when_caught_up(node: DaemonProcess, seq: int) -> str:
    """Stops a standby once it has applied up to ``seq``; the digest it stopped with."""
    with anyio.fail_after(EVENT_WAIT_S):
        while not any(e.get("event") == "replica_applied" and e["seq"] >= seq for e in node.events):
            await node.wait_event("replica_applied", after=len(node.events))
    mark = len(node.events)
    assert await node.terminate_and_wait() == 0
    stopped = await node.wait_event("exchange_stopped", after=mark)
    assert stopped["seq"] == seq, stopped
    return str(stopped["digest"])


async def test_killing_the_leader_under_load_loses_and_repeats_nothing(
    tmp_path: Path, nats_cluster: tuple[NatsServer, ...]
) -> None:
    url = ",".join(node.url for node in nats_cluster)
    async with (
        _nodes(tmp_path, url, 3) as (leader, first, second),
        connect(Credentials(url=url), request_timeout_s=1.0) as client,
    ):
        load = Load(client)
        async with anyio.create_task_group() as tg:
            for worker in range(8):
                tg.start_soon(load.worker, f"w{worker}")
            with anyio.fail_after(30):
                await load.wait_acks(200)
            leader.kill()
            killed_at = time.perf_counter()
            replies_before = len(load.reply_times)
            with anyio.fail_after(TAKEOVER_S_MAX + 10):
                await load.wait_acks(200)
            load.stop.set()
        served_after = [t for t in load.reply_times[replies_before:] if t > killed_at]
        takeover_s = served_after[0] - killed_at
        assert takeover_s < TAKEOVER_S_MAX, takeover_s
        new_leader, standby = (
            (first, second)
            if any(e.get("event") == "exchange_ready" for e in first.events)
            else (second, first)
        )
        assert any(e.get("event") == "exchange_ready" for e in new_leader.events)
        # Every transfer was retried until acknowledged: each applied exactly once.
        moved = OPENING - await _balance(client, "claude")
        assert moved == len(load.acknowledged), (moved, len(load.acknowledged))
        assert await _balance(client, "zero") == OPENING + moved
        status = await _status(client)
        assert await _digest_when_caught_up(standby, status["commands_applied"]) == status["digest"]
        # The whole stream, from its first message, checks out: chain, replay, snapshot digest.
        doctor = await run_cli("doctor", "--journal", "jetstream", "--nats", url, "--json")
        report = doctor.json()
        assert report["ok"], report["problems"]
        assert report["entries_replayed"] == status["commands_applied"]
        assert report["digest"] == status["digest"]


async def test_a_paused_leader_comes_back_fenced_and_follows(
    tmp_path: Path, nats_cluster: tuple[NatsServer, ...]
) -> None:
    url = ",".join(node.url for node in nats_cluster)
    async with (
        _nodes(tmp_path, url, 2) as (old, new),
        connect(Credentials(url=url), request_timeout_s=1.0) as client,
    ):
        for index in range(5):
            reply = await client.command_envelope(
                "claude", "transfer", {"to": "zero", "amount": "1"}, request_id=f"a{index}"
            )
            assert reply.ok, reply
        old.signal(signal.SIGSTOP)
        try:
            with anyio.fail_after(TAKEOVER_S_MAX + 5):
                await new.wait_event("exchange_ready")
        finally:
            old.signal(signal.SIGCONT)
        # Both may be subscribed for a moment: the old one can only fail to append.
        for index in range(20):
            reply = await client.command_envelope(
                "claude", "transfer", {"to": "zero", "amount": "1"}, request_id=f"b{index}"
            )
            assert reply.ok, reply
        with anyio.fail_after(EVENT_WAIT_S):
            deposed = await old.wait_event("leader_deposed")
            await old.wait_event("standby_following", after=old.events.index(deposed))
        assert await _balance(client, "claude") == OPENING - 25
        status = await _status(client)
        assert await _digest_when_caught_up(old, status["commands_applied"]) == status["digest"]


async def test_the_exchange_serves_on_when_a_nats_node_dies(
    tmp_path: Path, nats_cluster: tuple[NatsServer, ...]
) -> None:
    url = ",".join(node.url for node in nats_cluster)
    async with (
        _nodes(tmp_path, url, 1),
        connect(Credentials(url=url), request_timeout_s=1.0) as client,
    ):
        for index in range(5):
            assert (
                await client.command_envelope(
                    "claude", "transfer", {"to": "zero", "amount": "1"}, request_id=f"a{index}"
                )
            ).ok
        await nats_cluster[2].crash()
        # When the killed node led the stream, the leader's append waits out its 5 s timeout,
        # steps down, reloads and leads again (measured 4-15 s; it failed once at 20 s with three
        # other suites sharing the two cores), so the bound is wide: this test is about serving
        # on, the failover time is the other test's.
        with anyio.fail_after(45):
            for index in range(5):
                while True:
                    try:
                        reply = await client.command_envelope(
                            "claude",
                            "transfer",
                            {"to": "zero", "amount": "1"},
                            request_id=f"b{index}",
                        )
                    except ExchangeUnavailableError:
                        continue
                    break
                assert reply.ok, reply
        assert await _balance(client, "claude") == OPENING - 10


async def test_a_listener_that_was_away_catches_up_on_events_from_a_sequence(
    tmp_path: Path, nats_cluster: tuple[NatsServer, ...]
) -> None:
    url = ",".join(node.url for node in nats_cluster)
    async with (
        _nodes(tmp_path, url, 1),
        connect(Credentials(url=url), request_timeout_s=1.0) as client,
    ):
        js = client.nc.jetstream()

        async def transfers(prefix: str) -> None:
            for index in range(3):
                reply = await client.command_envelope(
                    "claude",
                    "transfer",
                    {"to": "zero", "amount": "1", "memo": f"{prefix}{index}"},
                    request_id=f"{prefix}{index}",
                )
                assert reply.ok, reply

        async def memos_from(start_seq: int) -> tuple[list[str], int]:
            """The memos of claude's next three transfer postings from ``start_seq`` on, and
            the stream sequence of the last one."""
            memos: list[str] = []
            subscription = await js.subscribe(
                "exchange.event.claude.>",
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                config=ConsumerConfig(opt_start_seq=start_seq),
            )
            last = 0
            with anyio.fail_after(EVENT_WAIT_S):
                async for msg in subscription.messages:
                    event = json.loads(msg.data)
                    if event.get("kind") == "transfer":
                        memos.append(event["memo"])
                        last = msg.metadata.sequence.stream
                    if len(memos) == 3:
                        break
            await subscription.unsubscribe()
            return memos, last

        await transfers("first-")
        seen, last = await memos_from(1)
        assert seen == ["first-0", "first-1", "first-2"]
        # Away meanwhile: the events are kept, and resuming after the last one read gives
        # exactly the new ones.
        await transfers("then-")
        resumed, _ = await memos_from(last + 1)
        assert resumed == ["then-0", "then-1", "then-2"]


async def test_a_batch_too_big_for_one_message_is_appended_whole_or_not_at_all(
    nats_cluster: tuple[NatsServer, ...],
) -> None:
    names, settings = ClusterNames("big"), StreamSettings(replicas=3)
    async with connect(Credentials(url=nats_cluster[0].url)) as client:
        js = client.nc.jetstream()
        store = await ensure_storage(js, names, settings)
        writer = await StreamJournal.load(js, store, names, settings, message_bytes_max=600)
        entries = await writer.append(
            [
                EntryInput(
                    at_ns=index, sender="claude", verb="transfer", body=b"{}" * 40, reply=b"{}"
                )
                for index in range(1, 21)
            ]
        )
        assert [entry.seq for entry in entries] == list(range(1, 21))
        copy = await read_cluster_journal(js, names)
        sizes = [len(batch or ()) for _, batch in copy.messages]
        assert len(sizes) > 1 and sum(sizes) == 20, sizes  # several messages, one batch
        # A second writer that has not read them expects the stream at 0: refused, whole.
        stale = await StreamJournal.load(js, store, names, settings, message_bytes_max=600)
        with pytest.raises(JournalFencedError):
            await stale.append(
                [
                    EntryInput(
                        at_ns=99, sender="zero", verb="transfer", body=b"{}" * 40, reply=b"{}"
                    )
                    for _ in range(10)
                ]
            )
        after = await read_cluster_journal(js, names)
        assert [len(batch or ()) for _, batch in after.messages] == sizes


async def test_a_stream_made_with_other_settings_is_brought_up_to_date(tmp_path: Path) -> None:
    """A restart with a new events retention updates the stream made before (one JetStream
    node, R1); a change the server refuses (3 replicas on 1 node) leaves the stream working."""
    config = NatsServerConfig(jetstream_store_dir=str(tmp_path / "js"))
    names = ClusterNames("upd")
    async with (
        run_nats_server(config, data_dir=tmp_path / "nats") as server,
        connect(Credentials(url=server.url)) as client,
    ):
        js = client.nc.jetstream()
        await ensure_storage(js, names, StreamSettings(replicas=1))
        assert (await js.stream_info(names.events_stream)).config.max_age == 24 * 3600
        longer = StreamSettings(replicas=1, events_max_age_s=48 * 3600.0, events_max_bytes=1 << 20)
        await ensure_storage(js, names, longer)
        events = (await js.stream_info(names.events_stream)).config
        assert (events.max_age, events.max_bytes) == (48 * 3600, 1 << 20)
        await ensure_storage(js, names, StreamSettings(replicas=3, ready_timeout_s=1.0))
        journal = (await js.stream_info(names.journal_stream)).config
        assert journal.num_replicas == 1
