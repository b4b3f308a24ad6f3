"""The compose.yaml topology without Docker: three clustered nats-servers on loopback, the exchange
joined to node 1, workers as real processes on nodes 2 and 3. An auction started by a scout's
signal must complete across the routes, with its escrow released, checked in the ledger."""

import json
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from daemon_support import running_exchange

from agents.demo import AUCTION_DEMO
from exchange.daemon.natsserver import NatsServer
from protocols.client import connect
from protocols.credentials import Credentials

pytestmark = pytest.mark.anyio
AUCTION_TIMEOUT_S = 60
STOP_TIMEOUT_S = 10


async def test_an_auction_completes_across_a_three_node_cluster(
    tmp_path: Path, nats_cluster: tuple[NatsServer, ...]
) -> None:
    node1, node2, node3 = nats_cluster
    roster = {a.agent: a for a in AUCTION_DEMO}
    placement = {
        "oracle": node2,
        "scout-1": node2,
        "exec-fast": node2,
        "treasury": node3,
        "exec-cheap": node3,
    }
    async with (
        running_exchange(tmp_path / "x", nats_url=node1.url) as handle,
        connect(Credentials(url=node1.url), reconnect=False) as admin,
    ):
        assert not handle.secure
        for name in placement:
            body = roster[name].registration()
            reply = await admin.command_envelope(
                "admin", "agent.register", body, request_id=f"r-{name}"
            )
            assert reply.ok, reply
        closed = await admin.nc.subscribe("swarm.task.*.closed")
        await admin.nc.flush()
        processes: list[Process] = []
        logs = tmp_path / "logs"
        logs.mkdir()
        try:
            for name, node in placement.items():
                argv = roster[name].argv("--nats", node.url)
                log_file = (logs / f"{name}.log").open("wb")
                processes.append(
                    await anyio.open_process(
                        [sys.executable, "-m", "agents", *argv], stdout=log_file, stderr=log_file
                    )
                )
                log_file.close()
            with anyio.fail_after(AUCTION_TIMEOUT_S):
                while True:
                    message = json.loads((await closed.next_msg(timeout=AUCTION_TIMEOUT_S)).data)
                    if message["state"] == "completed":
                        break
        finally:
            for process in processes:
                process.terminate()
            with anyio.fail_after(STOP_TIMEOUT_S):
                for process in processes:
                    await process.wait()
            await closed.unsubscribe()
        assert all(p.returncode == 0 for p in processes), [p.returncode for p in processes]
        task = await admin.query_envelope("task", {"task_id": message["task_id"]})
        assert task.ok and task.result["escrow_state"] == "released"
        assert task.result["winner"] in ("exec-fast", "exec-cheap")
        winner = await admin.query_envelope("balance", {"agent": task.result["winner"]})
        assert float(winner.result["balance"]) > 10_000
