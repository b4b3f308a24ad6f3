"""What one run of the daemon is told: the data directory, how to reach NATS, and its bounds.

Owns: ``Settings`` (built once by the composition root from the command line) and ``DataPaths``,
the one place that names the files of a data directory. The CLI reads the same paths to find a
local exchange. Must not: read the environment or the command line, or do any I/O.

A data directory (``./.exchange/`` by default) holds::

    journal.sqlite      the hash-chained journal (and its -wal/-shm files)
    journal.hwm         its high-water mark: a seq known committed (exchange/journal/highwater.py)
    economy.toml        the economy's config, fixed when the journal is created
    exchange.json       where the running exchange listens (url, pid); removed at a clean exit
    exchange.lock       held (flock) by the running daemon: one daemon per data directory
    creds/<user>.json   NATS credentials (mode 0600) for exchange, admin and every agent
    nats/               the embedded nats-server's config, pid file and lock
    tls/                with --tls-generate: ca.pem, ca-key.pem, server.pem, server-key.pem (0600)
"""

from dataclasses import dataclass
from pathlib import Path

from exchange.daemon import limits


@dataclass(frozen=True, slots=True)
class DataPaths:
    """The files of one data directory."""

    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "journal.sqlite"

    @property
    def economy_config(self) -> Path:
        return self.root / "economy.toml"

    @property
    def endpoint(self) -> Path:
        return self.root / "exchange.json"

    @property
    def lock(self) -> Path:
        return self.root / "exchange.lock"

    @property
    def creds_dir(self) -> Path:
        return self.root / "creds"

    def creds(self, user: str) -> Path:
        return self.creds_dir / f"{user}.json"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"


@dataclass(frozen=True, slots=True)
class Settings:
    """One run of the daemon. ``nats_url=None`` starts an embedded nats-server on ``nats_port``.

    ``open_mode`` turns authentication off (embedded server only, loopback only).
    ``tls_*`` require TLS of the embedded server's clients (secure mode only).
    ``passwords`` makes plaintext passwords, not nkeys, for users who have no credentials yet
    (for clients without nkey support); stored credentials keep their kind either way.
    ``config_text`` is the economy's TOML given with ``--config`` (None: the stored one, or the
    defaults for a new data directory).
    """

    data_dir: Path
    nats_url: str | None = None
    nats_host: str = "127.0.0.1"
    nats_port: int = limits.nats_port_default
    open_mode: bool = False
    passwords: bool = False
    # TLS for the embedded server's clients: files the operator names (a CA file only if clients
    # should trust a CA other than their system's), or a CA and certificate made in DATA/tls/.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_generate: bool = False
    config_text: str | None = None
    message_bytes_max: int = limits.message_bytes_max
    message_depth_max: int = limits.message_depth_max
    inbound_queue_size_max: int = limits.inbound_queue_size_max
    batch_size_max: int = limits.batch_size_max
    snapshot_every_commands: int = limits.snapshot_every_commands
    liveness_agents_max: int = limits.liveness_agents_max
    query_processes_max: int = limits.query_processes_max
    query_queue_size_max: int = limits.query_queue_size_max
    query_time_s_max: float = limits.query_time_s_max
    query_process_niceness: int = limits.query_process_niceness
    subscription_pending_msgs_max: int = limits.subscription_pending_msgs_max
    subscription_pending_bytes_max: int = limits.subscription_pending_bytes_max
    drain_timeout_s: float = limits.drain_timeout_s
    connect_timeout_s: float = limits.connect_timeout_s
    # Prometheus text endpoint: None serves none; 0 picks a free port.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # Where batches are made durable: "sqlite" (a file in the data directory, the default) or
    # "jetstream" (a stream with ``replicas`` replicas on the ``nats_url`` cluster; see
    # replicated.py). ``standby`` starts a jetstream node as a follower even if no leader runs.
    journal_backend: str = "sqlite"
    replicas: int = 3
    standby: bool = False
    # Tells exchanges on one cluster apart: the stream, bucket and subject names derive from it.
    cluster_name: str = "exchange"
    lease_ttl_s: float = limits.lease_ttl_s_default
    # The credentials file the exchange joins ``nats_url`` with (None: no authentication).
    nats_creds_file: Path | None = None

    def __post_init__(self) -> None:
        assert self.message_bytes_max > 0, self.message_bytes_max
        assert self.message_depth_max > 0, self.message_depth_max
        assert self.query_processes_max > 0, "stateless queries need a process to run in"
        assert self.query_queue_size_max >= 0, self.query_queue_size_max
        assert self.journal_backend in ("sqlite", "jetstream"), self.journal_backend
        assert self.journal_backend == "sqlite" or self.nats_url is not None, (
            "the jetstream journal lives on a cluster: give its nats_url"
        )
        assert self.replicas >= 1 and self.lease_ttl_s > 0, (self.replicas, self.lease_ttl_s)
        assert self.query_time_s_max > 0, self.query_time_s_max
        assert 0 <= self.query_process_niceness <= 19, self.query_process_niceness
        assert self.inbound_queue_size_max > 0, "a zero inbound queue would refuse every command"
        assert 0 < self.batch_size_max <= 8192, "the journal takes at most 8192 entries a batch"
        assert self.snapshot_every_commands > 0, self.snapshot_every_commands
        assert self.drain_timeout_s > 0, self.drain_timeout_s
        assert (self.tls_cert_file is None) == (self.tls_key_file is None), (
            "cert and key go together"
        )
        assert self.tls_ca_file is None or self.tls_cert_file is not None, "a CA needs a cert"
        assert not (self.tls_generate and self.tls_cert_file), "generated or given, not both"
        assert not self.tls or self.secure, "TLS is for the embedded server in secure mode"

    @property
    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)

    @property
    def embedded(self) -> bool:
        """Whether this run starts its own nats-server (no ``--nats URL``)."""
        return self.nats_url is None

    @property
    def tls(self) -> bool:
        """Whether the embedded server requires TLS of its clients."""
        return self.tls_generate or self.tls_cert_file is not None

    @property
    def secure(self) -> bool:
        """Whether the exchange makes credentials and permissions (embedded, not open mode)."""
        return self.embedded and not self.open_mode
