"""One bidder process for ``bench/auction.py``: several bidders, one bare nats-py connection each.

Run by the bench, not by hand:
``python bench/auction_bidder.py URL TASK_TYPE NAME[,NAME...] [asyncio|uvloop]``.

Each bidder subscribes to ``swarm.task.cfp.<TASK_TYPE>`` and, for every call for proposals that
lists it as eligible, publishes at once a bid (raw JSON, as a stranger's client would) on
``swarm.task.<id>.propose.<bidder>`` with a reply subject under its own inbox; the replies are
counted by a callback, never awaited one by one. Prints ``ready`` once every subscription is
confirmed by the server (two flushes per connection: nats-py's flush can return early once), and
on SIGTERM prints one JSON line of counters (bids sent, ok replies, error codes) and exits.
Uses no project code. The event loop is uvloop's by default (the bench's ``--bidder-loop``): the
bidders stand in for agents on other machines but share this one's two cores with the exchange, so
the less CPU they take per message, the more the round's latency is the exchange's own.
"""

import asyncio
import json
import random
import signal
import sys
from typing import Any

import nats


async def run(url: str, task_type: str, names: list[str]) -> dict[str, Any]:
    stats: dict[str, Any] = {"bidders": len(names), "bids": 0, "ok": 0, "errors": {}}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    rng = random.Random(hash(tuple(names)))
    connections: list[nats.NATS] = []

    async def on_reply(msg: Any) -> None:
        envelope = json.loads(msg.data)
        if envelope.get("ok"):
            stats["ok"] += 1
        else:
            code = (envelope.get("error") or {}).get("code", "?")
            stats["errors"][code] = stats["errors"].get(code, 0) + 1

    for name in names:
        nc = await nats.connect(url, name=f"bench-bidder-{name}", allow_reconnect=False)
        connections.append(nc)
        inbox = f"_INBOX.benchbid.{name}"
        await nc.subscribe(f"{inbox}.*", cb=on_reply)

        async def on_cfp(
            msg: Any, nc: nats.NATS = nc, name: str = name, inbox: str = inbox
        ) -> None:
            cfp = json.loads(msg.data)
            if name not in cfp["eligible"]:
                return
            task_id = cfp["task_id"]
            bid = {
                "cost": f"{rng.randint(1, 1000) / 1_000_000:.6f}",
                "time_ms": rng.randint(1, int(cfp["deadline_ms"])),
                "confidence": round(rng.random(), 2),
            }
            await nc.publish(
                f"swarm.task.{task_id}.propose.{name}",
                json.dumps(bid).encode(),
                reply=f"{inbox}.{task_id}",
            )
            stats["bids"] += 1

        await nc.subscribe(f"swarm.task.cfp.{task_type}", cb=on_cfp)
    for nc in connections:
        await nc.flush()
        await nc.flush()
    print("ready", flush=True)
    await stop.wait()
    for nc in connections:
        await nc.flush()  # the last replies in flight
    for nc in connections:
        await nc.close()
    return stats


def main() -> None:
    url, task_type, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    loop = sys.argv[4] if len(sys.argv) > 4 else "asyncio"
    if loop == "uvloop":
        import uvloop

        stats = uvloop.run(run(url, task_type, names))
    else:
        stats = asyncio.run(run(url, task_type, names))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
