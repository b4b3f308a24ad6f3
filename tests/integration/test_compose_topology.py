"""compose.yaml's topology without Docker: what its services run, run here as processes.

The loopback variant comes from the same generator as compose.yaml (exchange/deploy/cluster.py;
only addresses differ): ``exchange cluster init`` writes the secrets and node configs, three
``nats-server -c <generated file>`` processes form the cluster, ``exchange up`` runs the leader and
the standby on the replicated journal with the exchange's own credentials, ``exchange cluster
register`` registers the roster as admin (twice: the second run mints nothing), and the workers run
as ``python -m agents`` with their own credentials. Checked: an auction completes and its escrow is
released; an anonymous client is refused; a worker cannot send an admin command, read the journal
or forge it, and the supply does not move while it tries.
"""

import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import anyio
import nats
import pytest
from anyio.abc import ByteReceiveStream, Process
from daemon_support import DaemonProcess
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from exchange.daemon.natsserver import find_nats_server
from exchange.deploy import cluster
from exchange.deploy.cluster import Node, Topology
from protocols.client import ExchangeClient, connect, connect_options, flush_commands
from protocols.credentials import Credentials

pytestmark = pytest.mark.anyio

NODE_READY_TIMEOUT_S = 20.0
AUCTION_TIMEOUT_S = 60.0
TAKEOVER_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
VIOLATION_TIMEOUT_S = 10.0


def _free_ports(count: int) -> tuple[int, ...]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((cluster.LOOPBACK, 0))
        return tuple(sock.getsockname()[1] for sock in sockets)


def _topology(out: Path) -> tuple[Topology, list[str]]:
    """The loopback topology on free ports, and the `cluster init` options that make it."""
    ports = _free_ports(9)
    client, route, monitoring = ports[0:3], ports[3:6], ports[6:9]
    topology = cluster.loopback_topology(
        str(out),
        client_ports=(client[0], client[1], client[2]),
        route_ports=(route[0], route[1], route[2]),
        monitoring_ports=(monitoring[0], monitoring[1], monitoring[2]),
    )
    options = [
        "--hosts",
        "loopback",
        "--client-ports",
        ",".join(map(str, client)),
        "--route-ports",
        ",".join(map(str, route)),
        "--monitoring-ports",
        ",".join(map(str, monitoring)),
    ]
    return topology, options


async def _run(*argv: str) -> tuple[int, str, str]:
    """``python -m exchange.cli.main ARGV`` as a process: its status, stdout and stderr."""
    with anyio.fail_after(CLI_TIMEOUT_S):
        done = await anyio.run_process(
            [sys.executable, "-m", "exchange.cli.main", *argv], check=False
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@dataclass
class NodeProcess:
    """``nats-server -c FILE``; its log read as it comes, to see readiness and routes."""

    node: Node
    process: Process
    ready: bool = False
    routes: int = 0
    tail: list[str] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def follow(self, stream: ByteReceiveStream) -> None:
        partial = b""
        async for chunk in stream:
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:
                text = line.decode(errors="replace")
                self.tail = [*self.tail[-30:], text]
                self.ready = self.ready or "Server is ready" in text
                self.routes += "Registering remote route" in text
            self.changed.set()
            self.changed = anyio.Event()
        self.changed.set()

    async def wait_routed(self, others: int) -> None:
        while not (self.ready and self.routes >= others):
            assert self.process.returncode is None, self.tail
            await self.changed.wait()


@asynccontextmanager
async def _nodes(out: Path, topology: Topology) -> AsyncIterator[list[NodeProcess]]:
    """The three nodes, from the generated configs, yielded once each routes to the others."""
    binary = str(find_nats_server())
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        nodes = []
        for node in topology.nodes:
            config = out / cluster.node_dir(node.name) / cluster.NODE_CONFIG_FILE
            process = await stack.enter_async_context(
                await anyio.open_process([binary, "-c", str(config)])
            )
            stack.push_async_callback(_stop, process)
            running = NodeProcess(node, process)
            assert process.stderr is not None
            tg.start_soon(running.follow, process.stderr)
            nodes.append(running)
        with anyio.fail_after(NODE_READY_TIMEOUT_S):
            for running in nodes:
                await running.wait_routed(len(nodes) - 1)
        try:
            yield nodes
        finally:
            tg.cancel_scope.cancel()


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
    with anyio.fail_after(STOP_TIMEOUT_S):
        await process.wait()


@asynccontextmanager
async def _workers(out: Path, topology: Topology, logs: Path) -> AsyncIterator[list[Process]]:
    await anyio.Path(logs).mkdir()
    async with AsyncExitStack() as stack:
        processes = []
        for worker in topology.workers:
            agent = worker.agent.agent
            argv = cluster.worker_argv(worker, creds=str(out / cluster.creds_file(agent)))
            with (logs / f"{agent}.log").open("wb") as log_file:
                process = await anyio.open_process(
                    [sys.executable, "-m", "agents", *argv], stdout=log_file, stderr=log_file
                )
            stack.push_async_callback(_stop, process)
            processes.append(process)
        yield processes


def _credentials(out: Path, user: str) -> Credentials:
    return Credentials(**json.loads((out / cluster.creds_file(user)).read_text()))


async def _supply(client: ExchangeClient) -> Decimal:
    reply = await client.query_envelope("status")
    assert reply.ok, reply
    return Decimal(reply.result["supply"])


class Violations:
    """The asynchronous errors a connection reports (permission violations among them)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = anyio.Event()

    async def callback(self, error: Exception) -> None:
        self.seen.append(str(error).lower())
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, subject: str) -> str:
        with anyio.fail_after(VIOLATION_TIMEOUT_S):
            while True:
                for text in self.seen:
                    if "permissions violation" in text and subject.lower() in text:
                        return text
                await self._changed.wait()


async def _kept_market_subjects(admin: ExchangeClient) -> set[str]:
    """The subjects of every market message in the events stream, read from its first."""
    js = admin.nc.jetstream()
    subscription = await js.subscribe(
        "swarm.task.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    subjects: set[str] = set()
    with anyio.fail_after(30):
        async for msg in subscription.messages:
            subjects.add(msg.subject)
            if msg.metadata.num_pending == 0:
                break
    await subscription.unsubscribe()
    return subjects


async def _check_a_worker_is_no_admin(out: Path, admin: ExchangeClient) -> None:
    """exec-fast's own credentials: no admin command, no journal read or write, nothing minted."""
    supply = await _supply(admin)
    worker = _credentials(out, "exec-fast")
    violations = Violations()
    nc = await nats.connect(
        worker.url.split(","),
        allow_reconnect=False,
        error_cb=violations.callback,
        **connect_options(worker),
    )
    try:
        award = {"request_id": "forged-1", "agent": "exec-fast", "amount": "1000000", "source": "x"}
        for subject in (
            "exchange.cmd.admin.award",
            "exchange.journal.exchange",
            "$JS.API.STREAM.INFO.EXCHANGE_JOURNAL",
        ):
            await nc.publish(subject, json.dumps(award).encode(), reply=f"_INBOX_exec-fast.{1}")
            await flush_commands(nc)
            await violations.wait_for(subject)
        # Its own subject reaches the exchange, whose rules refuse a mint from anyone but admin.
        reply = await nc.request(
            "exchange.cmd.exec-fast.award", json.dumps(award).encode(), timeout=10
        )
        envelope = json.loads(reply.data)
        assert not envelope["ok"], envelope
        # Reading the journal is no better than writing it.
        await nc.subscribe("exchange.journal.>")
        await flush_commands(nc)
        await violations.wait_for("exchange.journal.>")
    finally:
        await nc.close()
    assert await _supply(admin) == supply


async def test_the_compose_topology_runs_an_auction_and_keeps_strangers_out(
    tmp_path: Path,
) -> None:
    out = (tmp_path / "secrets").resolve()
    topology, options = _topology(out)
    status, stdout, stderr = await _run("cluster", "init", "--out", str(out), *options)
    assert status == 0, stderr
    report = json.loads(stdout)
    assert set(report["made"]) == set(cluster.users(topology))
    # A re-run keeps every secret.
    seeds = {user: _credentials(out, user).nkey_seed for user in cluster.users(topology)}
    status, stdout, stderr = await _run("cluster", "init", "--out", str(out), *options)
    assert (status, json.loads(stdout)["made"]) == (0, []), stderr
    assert seeds == {user: _credentials(out, user).nkey_seed for user in cluster.users(topology)}

    exchange_creds = str(out / cluster.creds_file("exchange"))
    admin_creds = str(out / cluster.creds_file("admin"))
    leader = DaemonProcess(
        tmp_path / "exchange-data",
        None,
        argv=cluster.exchange_argv(
            topology, creds=exchange_creds, data_dir=str(tmp_path / "exchange-data"), standby=False
        ),
    )
    standby = DaemonProcess(
        tmp_path / "exchange-standby-data",
        None,
        ready_event="standby_following",
        argv=cluster.exchange_argv(
            topology,
            creds=exchange_creds,
            data_dir=str(tmp_path / "exchange-standby-data"),
            standby=True,
        ),
    )
    async with (
        _nodes(out, topology),
        leader.running(),
        standby.running(),
        connect(_credentials(out, "admin"), reconnect=False, request_timeout_s=10) as admin,
    ):
        # Anonymous: refused at the door.
        anonymous = Client()
        try:
            with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
                await anonymous.connect(topology.nodes[0].url, allow_reconnect=False)
        finally:
            await anonymous.close()

        # The health check that compose waits for before it starts the registration.
        status, _, stderr = await _run(
            *cluster.exchange_health_argv(topology, creds=exchange_creds)
        )
        assert status == 0, stderr
        status, stdout, stderr = await _run(*cluster.register_argv(topology, creds=admin_creds))
        assert status == 0, stderr
        assert sorted(json.loads(stdout)["registered"]) == sorted(
            worker.agent.agent for worker in topology.workers
        )
        supply = await _supply(admin)
        status, stdout, stderr = await _run(*cluster.register_argv(topology, creds=admin_creds))
        assert status == 0, stderr
        assert await _supply(admin) == supply

        await _check_a_worker_is_no_admin(out, admin)

        closed = await admin.nc.subscribe("swarm.task.*.closed")
        await flush_commands(admin.nc)

        async def completed_auction() -> str:
            with anyio.fail_after(AUCTION_TIMEOUT_S):
                while True:
                    message = json.loads((await closed.next_msg(timeout=AUCTION_TIMEOUT_S)).data)
                    if message["state"] == "completed":
                        return str(message["task_id"])

        async with _workers(out, topology, tmp_path / "logs") as workers:
            first = await completed_auction()
            # The leader dies; the standby takes over and the swarm carries on.
            leader.kill()
            with anyio.fail_after(TAKEOVER_TIMEOUT_S):
                await standby.wait_event("exchange_ready")
            second = await completed_auction()
            assert [w.returncode for w in workers] == [None] * len(workers)
        # Every worker stopped cleanly on SIGTERM: none died on a permission it lacked.
        assert [w.returncode for w in workers] == [0] * len(workers)
        # The market's messages are kept for whoever was away: both awards are in the stream.
        kept = await _kept_market_subjects(admin)
        assert {f"swarm.task.{first}.award", f"swarm.task.{second}.closed"} <= kept
        for task_id in (first, second):
            task = await admin.query_envelope("task", {"task_id": task_id})
            assert task.ok and task.result["escrow_state"] == "released", task
            assert task.result["winner"] in ("exec-fast", "exec-cheap", "exec-sloppy")
