"""NATS credentials for the users of the embedded server: exchange, admin and every agent.

Owns: making a user's password once, keeping it in ``DATA/creds/<user>.json`` (mode 0600, directory
0700, written atomically), and turning the stored users into ``NatsUser`` values for
``natsserver.render_config``. A file holds exactly what any NATS client needs to connect as that
user: ``{"url", "user", "password", "inbox_prefix"}``, the protocol's ``Credentials`` (agents and
the CLI read these files too).
Must not: talk to NATS, log or print a password, or decide who is registered (the caller passes the
agents the ledger knows).
"""

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import msgspec

from exchange.daemon.errors import DaemonError
from exchange.daemon.natsserver import NatsUser, agent_inbox_prefix
from protocols.credentials import DEFAULT_INBOX_PREFIX, Credentials
from protocols.ids import ADMIN, EXCHANGE

PASSWORD_BYTES: Final = 32
_decoder: Final = msgspec.json.Decoder(Credentials)
_encoder: Final = msgspec.json.Encoder()


class CredentialsFileError(DaemonError):
    """A credentials file exists but cannot be read as credentials; the message names the file."""


def inbox_prefix_of(user: str) -> str:
    """The reply-inbox prefix ``user`` must connect with (agents may only read their own)."""
    if user in (EXCHANGE, ADMIN):
        return DEFAULT_INBOX_PREFIX
    return agent_inbox_prefix(user)


def read_credentials(path: Path) -> Credentials | None:
    """The credentials stored at ``path``; None if there is no such file.

    Raises CredentialsFileError for a file that is not credentials.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CredentialsFileError(
            f"{path} is not a credentials file ({exc}); delete it and restart the exchange to "
            "make new credentials for that user"
        ) from exc


class CredentialStore:
    """The credentials under one ``creds`` directory."""

    def __init__(self, creds_dir: Path) -> None:
        self._dir = creds_dir

    def path(self, user: str) -> Path:
        return self._dir / f"{user}.json"

    def ensure(self, users: Iterable[str], *, url: str) -> dict[str, Credentials]:
        """Credentials for each of ``users``: a stored password is kept, a missing one made.

        Every file is rewritten with ``url`` when it changed. Raises CredentialsFileError, OSError.
        """
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        made: dict[str, Credentials] = {}
        for user in users:
            stored = read_credentials(self.path(user))
            password = (
                stored.password
                if stored is not None and stored.password
                else secrets.token_urlsafe(PASSWORD_BYTES)
            )
            wanted = Credentials(
                url=url, user=user, password=password, inbox_prefix=inbox_prefix_of(user)
            )
            if stored != wanted:
                _write_private(self.path(user), _encoder.encode(wanted))
            made[user] = wanted
        return made


def nats_users(
    credentials: Iterable[Credentials], roles: Mapping[str, str | None]
) -> tuple[NatsUser, ...]:
    """The server-side users for ``credentials`` (with each agent's registered role, which can
    widen its permissions), sorted by name so the config is stable."""
    users = []
    for creds in credentials:
        assert creds.user is not None and creds.password is not None, "open-mode credentials"
        users.append(NatsUser(name=creds.user, password=creds.password, role=roles.get(creds.user)))
    return tuple(sorted(users, key=lambda user: user.name))


def _write_private(path: Path, data: bytes) -> None:
    """Replaces ``path`` atomically with a file only its owner can read."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
