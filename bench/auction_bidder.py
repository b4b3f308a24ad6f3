"""One bidder process for ``bench/auction.py``: several bidders, one NATS connection each.

Run by the bench, not by hand:
``python bench/auction_bidder.py URL TASK_TYPE NAME[,NAME...] [nats-py|raw] [asyncio|uvloop]``.

Each bidder subscribes to ``swarm.task.cfp.<TASK_TYPE>`` and, for every call for proposals that
lists it as eligible, publishes at once a bid (raw JSON, as a stranger's client would) on
``swarm.task.<id>.propose.<bidder>`` with a reply subject under its own inbox; the replies are
counted as they come, never awaited one by one. Prints ``ready`` once every subscription is
confirmed by the server, and on SIGTERM prints one JSON line of counters (bids sent, ok replies,
error codes) and exits. Uses no project code (only nats-py and msgspec).

Two clients, the same messages on the wire:

- ``nats-py``: a nats-py connection per bidder, callbacks on two subscriptions.
- ``raw``: a bare client of the NATS text protocol per bidder (an ``asyncio.Protocol``: CONNECT,
  SUB, PUB, and MSG parsed as it arrives), as an agent written in any language may be (the
  protocol guide's "bare TCP client"). Per message it costs a fraction of nats-py, which runs a
  reading task, a flushing task and a task per subscription for each connection.

The bidders stand in for agents on other machines but share this one's two cores with the
exchange and nats-server, so the less CPU they take per message, the more the round's latency is
the exchange's own. The event loop is asyncio's or uvloop's.
"""

import asyncio
import json
import random
import signal
import sys
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec
import nats

Stats = dict[str, Any]
_CRLF = b"\r\n"
# The raw client's subscription ids: calls for proposals, and replies to its bids.
_CFP_SID = b"1"
_REPLY_SID = b"2"
# msgspec's JSON, not the json module: a call for proposals lists every eligible bidder (~1.8 KB
# for 100), and a hundred bidders parse each one.
_decode = msgspec.json.decode
_encode = msgspec.json.encode


def _bid(rng: random.Random, cfp: dict[str, Any]) -> bytes:
    return _encode(
        {
            "cost": f"{rng.randint(1, 1000) / 1_000_000:.6f}",
            "time_ms": rng.randint(1, int(cfp["deadline_ms"])),
            "confidence": round(rng.random(), 2),
        }
    )


def _count_reply(stats: Stats, payload: bytes) -> None:
    envelope = _decode(payload)
    if envelope.get("ok"):
        stats["ok"] += 1
    else:
        code = (envelope.get("error") or {}).get("code", "?")
        stats["errors"][code] = stats["errors"].get(code, 0) + 1


async def run_nats_py(
    url: str, task_type: str, names: list[str], stats: Stats, stop: asyncio.Event
) -> None:
    rng = random.Random(hash(tuple(names)))
    connections: list[nats.NATS] = []

    async def on_reply(msg: Any) -> None:
        _count_reply(stats, msg.data)

    for name in names:
        nc = await nats.connect(url, name=f"bench-bidder-{name}", allow_reconnect=False)
        connections.append(nc)
        inbox = f"_INBOX.benchbid.{name}"
        await nc.subscribe(f"{inbox}.*", cb=on_reply)

        async def on_cfp(
            msg: Any, nc: nats.NATS = nc, name: str = name, inbox: str = inbox
        ) -> None:
            cfp = _decode(msg.data)
            if name not in cfp["eligible"]:
                return
            task_id = cfp["task_id"]
            await nc.publish(
                f"swarm.task.{task_id}.propose.{name}", _bid(rng, cfp), reply=f"{inbox}.{task_id}"
            )
            stats["bids"] += 1

        await nc.subscribe(f"swarm.task.cfp.{task_type}", cb=on_cfp)
    for nc in connections:
        # Twice: nats-py's flush can return early once, before the server confirmed the SUBs.
        await nc.flush()
        await nc.flush()
    print("ready", flush=True)
    await stop.wait()
    for nc in connections:
        await nc.flush()  # the last replies in flight
    for nc in connections:
        await nc.close()


class RawBidder(asyncio.Protocol):
    """One bidder on one connection, speaking the NATS text protocol directly."""

    def __init__(
        self, name: str, task_type: str, stats: Stats, rng: random.Random, ready: Callable[[], None]
    ) -> None:
        self.name = name
        self.task_type = task_type
        self.stats = stats
        self.rng = rng
        self.ready = ready
        self.inbox = f"_INBOX.benchbid.{name}"
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.greeted = False
        self.subscribed = False
        self.pongs: list[asyncio.Future[None]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        while True:
            end = buffer.find(_CRLF, start)
            if end < 0:
                break
            line = bytes(buffer[start:end])
            if line.startswith(b"MSG "):
                # MSG <subject> <sid> [reply] <size>: the payload and a CRLF follow.
                parts = line.split(b" ")
                size = int(parts[-1])
                payload_end = end + 2 + size
                if len(buffer) < payload_end + 2:
                    break  # The rest of the payload is still on its way.
                self._message(parts[2], bytes(buffer[end + 2 : payload_end]))
                start = payload_end + 2
                continue
            start = end + 2
            self._control(line)
        del buffer[:start]

    def _control(self, line: bytes) -> None:
        assert self.transport is not None
        if line.startswith(b"INFO "):
            if self.greeted:
                return  # The server sends INFO again when its cluster or config changes.
            self.greeted = True
            connect = {"verbose": False, "pedantic": False, "protocol": 1, "name": self.name}
            self.transport.write(
                f"CONNECT {json.dumps(connect)}\r\n"
                f"SUB swarm.task.cfp.{self.task_type} {_CFP_SID.decode()}\r\n"
                f"SUB {self.inbox}.* {_REPLY_SID.decode()}\r\nPING\r\n".encode()
            )
        elif line == b"PING":
            self.transport.write(b"PONG\r\n")
        elif line == b"PONG":
            if not self.subscribed:
                self.subscribed = True  # The server has processed the SUBs sent before the PING.
                self.ready()
            elif self.pongs:
                self.pongs.pop(0).set_result(None)
        elif line.startswith(b"-ERR"):
            raise RuntimeError(f"{self.name}: the server said {line.decode()}")

    def ping(self) -> "asyncio.Future[None]":
        """Resolved by the server's PONG: what it sent this connection before has arrived."""
        assert self.transport is not None
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pongs.append(pong)
        self.transport.write(b"PING\r\n")
        return pong

    def _message(self, sid: bytes, payload: bytes) -> None:
        if sid == _REPLY_SID:
            _count_reply(self.stats, payload)
            return
        cfp = _decode(payload)
        if self.name not in cfp["eligible"] or self.transport is None:
            return
        task_id = cfp["task_id"]
        bid = _bid(self.rng, cfp)
        self.transport.write(
            f"PUB swarm.task.{task_id}.propose.{self.name} {self.inbox}.{task_id} "
            f"{len(bid)}\r\n".encode()
            + bid
            + _CRLF
        )
        self.stats["bids"] += 1


async def run_raw(
    url: str, task_type: str, names: list[str], stats: Stats, stop: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    address = urlsplit(url)
    rng = random.Random(hash(tuple(names)))
    waiting = len(names)
    all_ready = asyncio.Event()

    def one_ready() -> None:
        nonlocal waiting
        waiting -= 1
        if waiting == 0:
            all_ready.set()

    bidders: list[RawBidder] = []
    for name in names:
        _, bidder = await loop.create_connection(
            lambda name=name: RawBidder(name, task_type, stats, rng, one_ready),  # type: ignore[misc]
            address.hostname,
            address.port,
        )
        bidders.append(bidder)
    await all_ready.wait()
    print("ready", flush=True)
    await stop.wait()
    # The last replies in flight (bounded: a bidder whose connection is gone never hears a PONG).
    await asyncio.wait_for(asyncio.gather(*(bidder.ping() for bidder in bidders)), 5.0)
    for bidder in bidders:
        if bidder.transport is not None:
            bidder.transport.close()


async def run(url: str, task_type: str, names: list[str], client: str) -> Stats:
    stats: Stats = {"bidders": len(names), "bids": 0, "ok": 0, "errors": {}}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    runner = run_raw if client == "raw" else run_nats_py
    await runner(url, task_type, names, stats, stop)
    return stats


def main() -> None:
    url, task_type, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    client = sys.argv[4] if len(sys.argv) > 4 else "nats-py"
    loop = sys.argv[5] if len(sys.argv) > 5 else "asyncio"
    if loop == "uvloop":
        import uvloop

        stats = uvloop.run(run(url, task_type, names, client))
    else:
        stats = asyncio.run(run(url, task_type, names, client))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
