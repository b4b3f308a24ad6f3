"""The cluster deployment as one value, and everything made from it.

Owns: the ``Topology`` (three nats-server nodes with JetStream, the exchange's leader and standby
on the replicated journal, the workers of the demo's roster and the node each joins) and, as pure
functions of it: each node's nats-server config (through ``natsserver.render_config``, so users
and permissions are exactly the embedded server's, docs/trust-boundary.md), where each service's
credentials file lives and which URL it holds, the command line of every service, the roster's
registrations, and the compose.yaml document. ``compose_topology()`` is what compose.yaml runs;
``loopback_topology()`` is the same swarm on 127.0.0.1 with other ports, what
tests/integration/test_compose_topology.py runs as processes: only addresses differ, so the two
cannot drift apart.

Must not: read or write files, make secrets (``bootstrap.py`` makes them and passes them in), or
talk to NATS.
"""

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Final, Literal

import msgspec

from agents.demo import AUCTION_DEMO, DemoAgent
from exchange.daemon.natsserver import ClusterConfig, NatsServerConfig, NatsUser
from exchange.deploy import yaml_text
from protocols.ids import ADMIN, EXCHANGE

# Inside every container: where a service finds its own credentials file, a node its config,
# the bootstrap step the whole secrets volume, and the exchange and the nodes their data.
CREDS_MOUNT: Final = "/creds"
NODE_CONFIG_MOUNT: Final = "/etc/nats"
SECRETS_MOUNT: Final = "/secrets"
DATA_MOUNT: Final = "/data"
# In the secrets directory (``exchange cluster init --out DIR``).
CREDS_DIR: Final = "creds"
NODES_DIR: Final = "nats"
NODE_CONFIG_FILE: Final = "nats-server.conf"
ROUTE_SECRET_FILE: Final = "routes.json"
# The nodes know each other by this user and a password made at init (never an agent's).
ROUTE_USER: Final = "route"
NATS_CLUSTER_NAME: Final = "agent-exchange"
REPLICAS: Final = 3
IMAGE: Final = "agent-exchange:latest"
METRICS_PORT: Final = 9464
LOOPBACK: Final = "127.0.0.1"

Kind = Literal["compose", "loopback"]


class Node(msgspec.Struct, frozen=True, kw_only=True):
    """One nats-server: its name and the address the others and the clients reach it at."""

    name: str
    host: str
    client_port: int
    route_port: int
    monitoring_port: int
    # Where JetStream keeps its files (nats-server adds "/jetstream").
    store_dir: str

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"


class Worker(msgspec.Struct, frozen=True, kw_only=True):
    """An agent of the roster and the node it connects to."""

    agent: DemoAgent
    node: str


class Topology(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    nodes: tuple[Node, ...]
    # The address every node listens on for clients and routes (its monitor: loopback only).
    listen_host: str
    workers: tuple[Worker, ...]
    # The exchange's Prometheus port (inside the network), or None.
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        names = [node.name for node in self.nodes]
        assert len(set(names)) == len(names) == REPLICAS, names
        agents = [worker.agent.agent for worker in self.workers]
        assert len(set(agents)) == len(agents), agents
        assert all(worker.node in names for worker in self.workers), self.workers
        assert not {EXCHANGE, ADMIN} & set(agents), agents

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    @property
    def url(self) -> str:
        """Every node, comma-separated: what the exchange and the operator connect with."""
        return ",".join(node.url for node in self.nodes)


def _placed(roster: tuple[DemoAgent, ...], node_names: tuple[str, ...]) -> tuple[Worker, ...]:
    """The roster spread over the nodes in turn, starting with the second: the first node is the
    one the operator reaches from the host, so the workers' traffic crosses the routes."""
    count = len(node_names)
    return tuple(
        Worker(agent=agent, node=node_names[(index + 1) % count])
        for index, agent in enumerate(roster)
    )


def compose_topology(roster: tuple[DemoAgent, ...] = AUCTION_DEMO) -> Topology:
    """What compose.yaml runs: nodes nats-1..3 on the compose network's names."""
    nodes = tuple(
        Node(
            name=f"nats-{index}",
            host=f"nats-{index}",
            client_port=4222,
            route_port=6222,
            monitoring_port=8222,
            store_dir=DATA_MOUNT,
        )
        for index in (1, 2, 3)
    )
    return Topology(
        kind="compose",
        nodes=nodes,
        listen_host="0.0.0.0",
        workers=_placed(roster, tuple(node.name for node in nodes)),
        metrics_port=METRICS_PORT,
    )


def loopback_topology(
    out_dir: str,
    *,
    client_ports: tuple[int, int, int] = (4222, 4223, 4224),
    route_ports: tuple[int, int, int] = (6222, 6223, 6224),
    monitoring_ports: tuple[int, int, int] = (8222, 8223, 8224),
    roster: tuple[DemoAgent, ...] = AUCTION_DEMO,
) -> Topology:
    """The same swarm on this machine's loopback; JetStream's files under ``out_dir`` (absolute)."""
    assert out_dir.startswith("/"), out_dir
    nodes = tuple(
        Node(
            name=f"nats-{index + 1}",
            host=LOOPBACK,
            client_port=client_ports[index],
            route_port=route_ports[index],
            monitoring_port=monitoring_ports[index],
            store_dir=f"{out_dir}/{NODES_DIR}/nats-{index + 1}/store",
        )
        for index in range(3)
    )
    return Topology(
        kind="loopback",
        nodes=nodes,
        listen_host=LOOPBACK,
        workers=_placed(roster, tuple(node.name for node in nodes)),
    )


def users(topology: Topology) -> tuple[str, ...]:
    """Everyone who signs in: the exchange, the operator (admin) and each worker. No one else:
    the server has no anonymous user."""
    return (EXCHANGE, ADMIN, *(worker.agent.agent for worker in topology.workers))


def roles(topology: Topology) -> dict[str, str | None]:
    """Each worker's registered role (an oracle's permissions include publishing prices)."""
    return {worker.agent.agent: worker.agent.exchange_role for worker in topology.workers}


def url_for(topology: Topology, user: str) -> str:
    """The URLs in ``user``'s credentials file: every node; a worker's own node first (a worker
    takes the first that answers, so it joins its node and moves on only when that one is down).
    """
    for worker in topology.workers:
        if worker.agent.agent == user:
            own = topology.node(worker.node)
            others = [node.url for node in topology.nodes if node is not own]
            return ",".join([own.url, *others])
    assert user in (EXCHANGE, ADMIN), user
    return topology.url


def creds_dir(user: str) -> PurePosixPath:
    """``user``'s directory in the secrets directory: a service mounts its own and no other."""
    return PurePosixPath(CREDS_DIR) / user


def creds_file(user: str) -> PurePosixPath:
    return creds_dir(user) / f"{user}.json"


def node_dir(node: str) -> PurePosixPath:
    return PurePosixPath(NODES_DIR) / node


def node_config(
    topology: Topology, node: Node, nats_users: tuple[NatsUser, ...], route_password: str
) -> NatsServerConfig:
    """``node``'s server: secure mode with exactly ``nats_users`` (no anonymous user), JetStream,
    routes to the other nodes that must present the route password, and a monitor on loopback
    (for the health check inside its container; not reachable by the other services)."""
    assert {user.name for user in nats_users} == set(users(topology)), nats_users
    return NatsServerConfig(
        host=topology.listen_host,
        port=node.client_port,
        monitoring_port=node.monitoring_port,
        monitoring_host=LOOPBACK,
        server_name=node.name,
        jetstream_store_dir=node.store_dir,
        cluster=ClusterConfig(
            name=NATS_CLUSTER_NAME,
            port=node.route_port,
            routes=tuple(
                f"nats-route://{ROUTE_USER}:{route_password}@{other.host}:{other.route_port}"
                for other in topology.nodes
                if other.name != node.name
            ),
            route_user=ROUTE_USER,
            route_password=route_password,
        ),
        users=nats_users,
    )


def exchange_argv(topology: Topology, *, creds: str, data_dir: str, standby: bool) -> list[str]:
    """``exchange`` arguments of the leader (``standby=False``) or the standby."""
    argv = [
        "up",
        "--data",
        data_dir,
        "--nats",
        topology.url,
        "--journal",
        "jetstream",
        "--replicas",
        str(REPLICAS),
        "--nats-creds",
        creds,
        "--log-json",
    ]
    if standby:
        argv.append("--standby")
    if topology.metrics_port is not None:
        # Inside the compose network only: Prometheus scrapes it there.
        argv += ["--metrics-port", str(topology.metrics_port), "--metrics-host", "0.0.0.0"]
    return argv


def exchange_health_argv(topology: Topology, *, creds: str) -> list[str]:
    """``exchange`` arguments of the health check: a cheap query (``status`` computes the whole
    digest) answered by whichever node leads, asked with the exchange's own credentials."""
    return ["agents", "--nats", topology.url, "--creds", creds]


def worker_argv(worker: Worker, *, creds: str) -> list[str]:
    """``python -m agents`` arguments of ``worker``, connecting with its own credentials."""
    return worker.agent.argv("--creds", creds)


def register_argv(topology: Topology, *, creds: str) -> list[str]:
    """``exchange`` arguments of the registration step (as admin)."""
    return ["cluster", "register", "--nats", topology.url, "--creds", creds]


def register_request_id(agent: str) -> str:
    """The same for every run, so a re-run gets the first reply instead of registering twice."""
    return f"cluster-register-{agent}"


def registrations(topology: Topology) -> list[tuple[str, dict[str, object]]]:
    """``(request_id, body)`` of ``exchange.cmd.admin.agent.register`` for each worker."""
    return [
        (register_request_id(worker.agent.agent), worker.agent.registration())
        for worker in topology.workers
    ]


# ------------------------------------------------------------------------------ compose.yaml

COMPOSE_HEADER: Final = """\
Agent Exchange on a three-node NATS cluster with JetStream: the exchange (a leader and a standby
on the replicated journal) and the demo's swarm, each worker on one of the nodes, every service
with its own NATS identity. `docker compose up --build` runs it; docs/deploy.md explains it.

GENERATED by `exchange cluster compose` from exchange/deploy/cluster.py; edit that, not this file
(a test fails when they differ). tests/integration/test_compose_topology.py runs the same
topology as processes on loopback, from the same code.

Secure by construction: `bootstrap` makes an nkey per service, a route password and each node's
config into the `cluster-secrets` volume (kept across runs); each service mounts only its own
credentials. No anonymous user; workers get the protocol's agent permissions, not admin's.
Published on this host's loopback only: NATS (127.0.0.1:4222, for the CLI with the admin
credentials), Prometheus (127.0.0.1:9090) and Grafana (127.0.0.1:3000)."""


def _secret_mount(subpath: PurePosixPath, target: str) -> dict[str, object]:
    return {
        "type": "volume",
        "source": "cluster-secrets",
        "target": target,
        "read_only": True,
        "volume": {"subpath": str(subpath)},
    }


def _project_image() -> dict[str, object]:
    return {"build": ".", "image": IMAGE}


def _completed(service: str) -> dict[str, object]:
    return {service: {"condition": "service_completed_successfully"}}


def _healthy(*services: str) -> dict[str, object]:
    return {service: {"condition": "service_healthy"} for service in services}


def compose_document(topology: Topology) -> dict[str, object]:
    """compose.yaml as a tree (``compose_text`` writes it)."""
    assert topology.kind == "compose", topology.kind
    services: dict[str, object] = {
        "bootstrap": {
            **_project_image(),
            "command": ["cluster", "init", "--out", SECRETS_MOUNT, "--hosts", "compose"],
            "volumes": [{"type": "volume", "source": "cluster-secrets", "target": SECRETS_MOUNT}],
        }
    }
    for node in topology.nodes:
        service: dict[str, object] = {
            **_project_image(),
            "entrypoint": ["nats-server"],
            "command": ["-c", f"{NODE_CONFIG_MOUNT}/{NODE_CONFIG_FILE}"],
            "volumes": [
                _secret_mount(node_dir(node.name), NODE_CONFIG_MOUNT),
                {"type": "volume", "source": f"{node.name}-data", "target": DATA_MOUNT},
            ],
            "depends_on": _completed("bootstrap"),
            "restart": "unless-stopped",
            "healthcheck": {
                "test": [
                    "CMD",
                    "python",
                    "-c",
                    "import urllib.request; urllib.request.urlopen("
                    f"'http://{LOOPBACK}:{node.monitoring_port}/healthz?js-enabled-only=true', "
                    "timeout=2)",
                ],
                "interval": "5s",
                "timeout": "3s",
                "retries": 10,
            },
        }
        if node is topology.nodes[0]:
            service["ports"] = [f"{LOOPBACK}:{node.client_port}:{node.client_port}"]
        services[node.name] = service
    exchange_creds = f"{CREDS_MOUNT}/{EXCHANGE}.json"
    for name, standby in (("exchange", False), ("exchange-standby", True)):
        exchange: dict[str, object] = {
            **_project_image(),
            "command": exchange_argv(
                topology, creds=exchange_creds, data_dir=DATA_MOUNT, standby=standby
            ),
            "volumes": [
                _secret_mount(creds_dir(EXCHANGE), CREDS_MOUNT),
                {"type": "volume", "source": f"{name}-data", "target": DATA_MOUNT},
            ],
            "depends_on": (
                _healthy("exchange") if standby else _healthy(*(n.name for n in topology.nodes))
            ),
            "restart": "unless-stopped",
        }
        if not standby:
            # What the standby, the registration and Prometheus wait for.
            exchange["healthcheck"] = {
                "test": ["CMD", "exchange", *exchange_health_argv(topology, creds=exchange_creds)],
                "interval": "5s",
                "timeout": "5s",
                "retries": 12,
            }
        services[name] = exchange
    services["register"] = {
        **_project_image(),
        "command": register_argv(topology, creds=f"{CREDS_MOUNT}/{ADMIN}.json"),
        "volumes": [_secret_mount(creds_dir(ADMIN), CREDS_MOUNT)],
        "depends_on": _healthy("exchange"),
    }
    for worker in topology.workers:
        agent = worker.agent.agent
        services[agent] = {
            **_project_image(),
            "entrypoint": ["python", "-m", "agents"],
            "command": worker_argv(worker, creds=f"{CREDS_MOUNT}/{agent}.json"),
            "volumes": [_secret_mount(creds_dir(agent), CREDS_MOUNT)],
            "depends_on": _completed("register"),
            "restart": "unless-stopped",
        }
    services["prometheus"] = {
        "image": "prom/prometheus:v3.5.0",
        "volumes": [
            "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
            "prometheus-data:/prometheus",
        ],
        "ports": [f"{LOOPBACK}:9090:9090"],
        "depends_on": _healthy("exchange"),
    }
    services["grafana"] = {
        "image": "grafana/grafana:12.1.1",
        "environment": {
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": "/etc/grafana/dashboards/exchange.json",
        },
        "volumes": [
            "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
            "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro",
            "grafana-data:/var/lib/grafana",
        ],
        "ports": [f"{LOOPBACK}:3000:3000"],
        "depends_on": ["prometheus"],
    }
    volume_names = [
        "cluster-secrets",
        *(f"{node.name}-data" for node in topology.nodes),
        "exchange-data",
        "exchange-standby-data",
        "prometheus-data",
        "grafana-data",
    ]
    return {"services": services, "volumes": {name: {} for name in volume_names}}


def _compose_comments(topology: Topology) -> Mapping[tuple[str, ...], str]:
    first = topology.nodes[0].name
    workers = [worker.agent.agent for worker in topology.workers]
    return {
        ("services", "bootstrap"): (
            "Makes the secrets once (a re-run keeps them): an nkey per user, the route password,\n"
            "each node's config. Whoever can read this volume can act as anyone."
        ),
        ("services", first): (
            "The nodes: clients need an nkey, routes the route password; JetStream on /data.\n"
            f"Only {first}'s client port is published, on the host's loopback."
        ),
        ("services", "exchange"): (
            "The leader on the replicated journal, and a standby that takes over if it dies."
        ),
        ("services", "register"): (
            "Registers the roster as admin, idempotently (request ids derived from the agent ids)."
        ),
        ("services", workers[0]): (
            "The workers: each with its own credentials and the protocol's agent permissions."
        ),
        ("volumes",): (
            "cluster-secrets holds every secret of the cluster: back it up privately, share it\n"
            "with no one."
        ),
        ("services", "prometheus"): (
            "Monitoring: Prometheus scrapes the leading exchange (deploy/prometheus.yml), Grafana\n"
            "shows the dashboard (deploy/grafana/); admin/admin on Grafana's first login."
        ),
    }


def compose_text(topology: Topology | None = None) -> str:
    """compose.yaml, exactly as committed."""
    topology = compose_topology() if topology is None else topology
    return yaml_text.render(
        compose_document(topology),
        header=COMPOSE_HEADER,
        comments=_compose_comments(topology),
    )
