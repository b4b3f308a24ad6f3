"""Publish a signal from any nats-py program: plain JSON on a documented subject, no project code.

    python examples/publish_signal.py --creds .exchange/creds/zero.json
    python examples/publish_signal.py --nats nats://127.0.0.1:4222 --agent zero   # open mode

``--creds`` takes the JSON that ``exchange creds AGENT --json`` prints.
"""

import argparse
import asyncio
import json
import ssl
from typing import Any

import nats


def connection_options(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """(url, agent, connect kwargs) from a creds file, or open mode."""
    if not args.creds:
        return args.nats, args.agent, {}
    with open(args.creds, encoding="utf-8") as file:
        creds = json.load(file)
    options: dict[str, Any]
    if creds.get("nkey_seed"):
        # The default: nats-py signs the nonce with the seed (it needs `pip install nkeys`).
        options = {"nkeys_seed_str": creds["nkey_seed"]}
    else:
        # An exchange started with --passwords, or credentials made before nkeys.
        options = {"user": creds["user"], "password": creds["password"]}
    if creds.get("tls_ca_file"):
        # An exchange with TLS: trust its CA (the host name is checked too).
        options["tls"] = ssl.create_default_context(cafile=creds["tls_ca_file"])
    if creds.get("inbox_prefix"):
        # In secure mode an agent may only receive replies on its own inbox prefix.
        options["inbox_prefix"] = creds["inbox_prefix"]
    return creds["url"], creds["user"], options


async def main(url: str, agent: str, options: dict[str, Any]) -> None:
    nc = await nats.connect(url, **options)
    signal = {"confidence": 0.82, "direction": "long", "metadata": {"scanner": "momentum_v2"}}
    # swarm.signal.<sender>.<signal_type>.<asset>: fire and forget, no reply.
    await nc.publish(f"swarm.signal.{agent}.opportunity.BTC", json.dumps(signal).encode())
    await nc.flush()
    # Read it back from the exchange: the recent signals and the pheromone map.
    reply = await nc.request("exchange.query.signals", b'{"limit": 1}', timeout=5)
    print(reply.data.decode())
    reply = await nc.request("exchange.query.pheromones", b"{}", timeout=5)
    print(reply.data.decode())
    await nc.drain()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--creds", help="JSON from `exchange creds AGENT --json`")
    parser.add_argument("--agent", default="zero")
    asyncio.run(main(*connection_options(parser.parse_args())))
