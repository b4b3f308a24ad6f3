"""How a worker reaches NATS and how its runtime behaves: values, and reading a credentials file.

Owns reading an agent's credentials file (the one the exchange writes for each agent,
``DATA/creds/<agent>.json``; its shape is ``protocols.credentials.Credentials``), ``RuntimeConfig``
and their checks. Must not connect to anything or read the environment; the CLI is the only
caller that reads files.
"""

from pathlib import Path

import msgspec

from agents import limits
from agents.errors import ConfigError
from protocols.credentials import Credentials
from protocols.ids import AGENT_ID_PATTERN, is_agent_id

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


_credentials_decoder = msgspec.json.Decoder(Credentials)


def load_credentials(path: Path) -> Credentials:
    """Reads an agent's credentials file.

    Raises:
        ConfigError: the file is missing, too large, or not ``{"url", "user", "nkey_seed" or
            "password", "inbox_prefix"}``.
    """
    try:
        with path.open("rb") as file:
            data = file.read(limits.credentials_bytes_max + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read credentials file {path}: {exc.strerror}; the exchange writes one per "
            "registered agent in DATA/creds/<agent>.json"
        ) from exc
    if len(data) > limits.credentials_bytes_max:
        raise ConfigError(f"{path} is larger than {limits.credentials_bytes_max} bytes")
    try:
        return _credentials_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigError(
            f"{path} is not a credentials file ({exc}); expected a JSON object with "
            '"url", "user", "nkey_seed" (or "password") and "inbox_prefix"'
        ) from exc


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the runtime needs besides the role. Times are in milliseconds."""

    agent_id: str
    role: str
    capabilities: tuple[str, ...] = ()
    credentials: Credentials = Credentials(url=DEFAULT_NATS_URL)
    heartbeat_interval_ms: int = 5_000
    # One request attempt; a timed-out attempt is repeated with the same request_id.
    request_timeout_ms: int = 2_000
    request_attempts: int = 5
    connect_timeout_ms: int = 2_000
    reconnect_wait_ms: int = 250
    # -1: keep trying for ever (a worker outlives restarts of the server).
    reconnect_attempts: int = -1
    shutdown_grace_ms: int = 5_000

    def __post_init__(self) -> None:
        """Raises ConfigError for an id or a time outside its bounds."""
        if not is_agent_id(self.agent_id):
            raise ConfigError(
                f"agent id must match {AGENT_ID_PATTERN} (it appears in NATS subjects), "
                f"got {self.agent_id!r}"
            )
        _check_range("heartbeat_interval_ms", self.heartbeat_interval_ms)
        _check_range("reconnect_wait_ms", self.reconnect_wait_ms)
        _check_range("connect_timeout_ms", self.connect_timeout_ms)
        if not 1 <= self.request_timeout_ms <= limits.request_timeout_ms_max:
            raise ConfigError(
                f"request_timeout_ms must be 1..{limits.request_timeout_ms_max}, "
                f"got {self.request_timeout_ms}"
            )
        if not 1 <= self.request_attempts <= limits.request_attempts_max:
            raise ConfigError(
                f"request_attempts must be 1..{limits.request_attempts_max}, "
                f"got {self.request_attempts}"
            )
        # nats-py reads 0 as "for ever" in some paths and "never" in others: not offered.
        if self.reconnect_attempts == 0 or self.reconnect_attempts < -1:
            raise ConfigError(
                "reconnect_attempts must be -1 (for ever) or at least 1, "
                f"got {self.reconnect_attempts}"
            )
        if not 0 <= self.shutdown_grace_ms <= limits.shutdown_grace_ms_max:
            raise ConfigError(
                f"shutdown_grace_ms must be 0..{limits.shutdown_grace_ms_max}, "
                f"got {self.shutdown_grace_ms}"
            )


def _check_range(name: str, value_ms: int) -> None:
    if not limits.interval_ms_min <= value_ms <= limits.interval_ms_max:
        raise ConfigError(
            f"{name} must be {limits.interval_ms_min}..{limits.interval_ms_max} ms, got {value_ms}"
        )


def check_interval_ms(name: str, value_ms: int) -> None:
    """Raises ConfigError when a role's interval option is outside the shared bounds."""
    _check_range(name, value_ms)
