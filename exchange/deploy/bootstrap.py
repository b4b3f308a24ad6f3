"""The cluster's bootstrap: its secrets and configs written once, and its roster registered.

Owns: ``init_cluster`` (in the secrets directory: each user's credentials file with a fresh nkey
seed, the route password, and each node's nats-server config; a secret that exists is kept, so a
re-run changes nothing but what the topology changed) and ``register_roster`` (every worker of the
topology registered as admin, with request ids derived from the agent ids, so a re-run is
answered with the first replies and mints nothing twice). The layout is ``cluster.py``'s.

Must not: decide what the topology is (``cluster.py`` does), or print (the CLI reports).
"""

import os
import secrets
from pathlib import Path
from typing import Final

import anyio
import msgspec
import structlog

from exchange.daemon.creds import CredentialStore, nats_users
from exchange.daemon.natsserver import render_config
from exchange.daemon.private_files import write_private
from exchange.deploy import cluster
from exchange.deploy.cluster import Topology
from exchange.errors import ExchangeError
from protocols.client import connect
from protocols.client_errors import ExchangeUnavailableError
from protocols.credentials import Credentials
from protocols.errors import ErrorCode

log = structlog.get_logger()

ROUTE_PASSWORD_BYTES: Final = 32
# How long the registration step waits for an exchange that is still starting (compose starts it
# once the leader answers queries, so this bounds a leader that dies meanwhile).
REGISTER_TIMEOUT_S: Final = 120.0
REQUEST_TIMEOUT_S: Final = 5.0


class RouteSecret(msgspec.Struct, frozen=True, kw_only=True):
    user: str
    password: str


class ClusterInitError(ExchangeError):
    """The secrets directory holds something that is not what init wrote; the message says what."""


class RegistrationError(ExchangeError):
    """No exchange answered the registrations in time."""


class RegistrationRefusedError(RegistrationError):
    """The exchange refused a registration; the message names the agent and the refusal."""


class InitReport(msgspec.Struct, frozen=True, kw_only=True):
    out_dir: str
    users: tuple[str, ...]
    nodes: tuple[str, ...]
    # Users whose credentials this run made (the others were kept).
    made: tuple[str, ...]


def _route_secret(path: Path) -> RouteSecret:
    """The stored route password, or a new one written (mode 0600)."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=RouteSecret)
    except FileNotFoundError:
        pass
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ClusterInitError(
            f"{path} is not a route secret ({exc}); delete it and re-run init, then restart "
            "every node (they all get the new password)"
        ) from exc
    secret = RouteSecret(
        user=cluster.ROUTE_USER, password=secrets.token_urlsafe(ROUTE_PASSWORD_BYTES)
    )
    write_private(path, msgspec.json.encode(secret))
    return secret


def init_cluster(out_dir: Path, topology: Topology) -> InitReport:
    """Writes (or keeps) everything the cluster's services need into ``out_dir``.

    Raises ClusterInitError, CredentialsFileError, NatsConfigError, OSError.
    """
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)
    route = _route_secret(out_dir / cluster.ROUTE_SECRET_FILE)
    credentials: dict[str, Credentials] = {}
    made = []
    for user in cluster.users(topology):
        store = CredentialStore(out_dir / cluster.creds_dir(user))
        existed = store.path(user).exists()
        credentials[user] = store.ensure([user], url=cluster.url_for(topology, user))[user]
        if not existed:
            made.append(user)
    server_users = nats_users(credentials.values(), cluster.roles(topology))
    for node in topology.nodes:
        directory = out_dir / cluster.node_dir(node.name)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = render_config(cluster.node_config(topology, node, server_users, route.password))
        write_private(directory / cluster.NODE_CONFIG_FILE, text.encode())
    report = InitReport(
        out_dir=str(out_dir),
        users=cluster.users(topology),
        nodes=tuple(node.name for node in topology.nodes),
        made=tuple(made),
    )
    log.info("cluster_initialised", out_dir=str(out_dir), made=report.made, kind=topology.kind)
    return report


class RegisterReport(msgspec.Struct, frozen=True, kw_only=True):
    registered: tuple[str, ...]
    # Registered before this run by other means (the exchange answered ``agent_exists``).
    already: tuple[str, ...]


async def register_roster(topology: Topology, admin: Credentials) -> RegisterReport:
    """Registers every worker of ``topology`` as ``admin``; retries, with the same request ids,
    while no exchange answers, up to REGISTER_TIMEOUT_S.

    Raises RegistrationRefusedError, RegistrationError.
    """
    registered, already = [], []
    try:
        with anyio.fail_after(REGISTER_TIMEOUT_S):
            async with connect(admin, request_timeout_s=REQUEST_TIMEOUT_S) as client:
                for request_id, body in cluster.registrations(topology):
                    agent = str(body["agent"])
                    while True:
                        try:
                            reply = await client.command_envelope(
                                admin.user or "admin",
                                "agent.register",
                                body,
                                request_id=request_id,
                            )
                        except ExchangeUnavailableError as exc:
                            log.warning("registration_unanswered", agent=agent, error=str(exc))
                            continue  # The same request id: applied at most once.
                        break
                    if reply.ok:
                        registered.append(agent)
                    elif reply.error is not None and reply.error.code == ErrorCode.agent_exists:
                        already.append(agent)
                    else:
                        why = "no reason" if reply.error is None else reply.error.code
                        raise RegistrationRefusedError(
                            f"the exchange refused to register {agent!r} ({why}): {reply.error}"
                        )
    except TimeoutError as exc:
        raise RegistrationError(
            f"no exchange answered within {REGISTER_TIMEOUT_S} s (registered so far: "
            f"{registered + already}); check that the exchange runs and that the admin "
            "credentials are the cluster's"
        ) from exc
    except ExchangeUnavailableError as exc:
        raise RegistrationError(str(exc)) from exc
    log.info("roster_registered", registered=registered, already=already)
    return RegisterReport(registered=tuple(registered), already=tuple(already))
