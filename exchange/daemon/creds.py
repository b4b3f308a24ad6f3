"""NATS credentials for the users of the embedded server: exchange, admin and every agent.

Owns: making a user's secret once (an nkey pair by default, a plaintext password when the operator
asks for passwords), keeping it in ``DATA/creds/<user>.json`` (mode 0600, directory 0700, written
atomically), and turning the stored users into ``NatsUser`` values for
``natsserver.render_config`` (an nkey user by its public key). A file holds exactly what any NATS
client needs to connect as that user, the protocol's ``Credentials`` (agents and the CLI read these
files too): ``{"url", "user", "nkey_seed", "inbox_prefix"}``, or ``"password"`` instead of
``"nkey_seed"``. A stored secret is kept whatever kind it is, so a data directory made before nkeys
keeps its passwords until its files are deleted (docs/daemon.md, "Identity and credentials").
Must not: talk to NATS, log or print a secret, or decide who is registered (the caller passes the
agents the ledger knows).
"""

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import msgspec
import nkeys

from exchange.daemon.errors import DaemonError
from exchange.daemon.natsserver import NatsUser, agent_inbox_prefix
from exchange.daemon.private_files import write_private
from protocols.credentials import DEFAULT_INBOX_PREFIX, Credentials, credentials_fields
from protocols.ids import ADMIN, EXCHANGE

PASSWORD_BYTES: Final = 32
# An Ed25519 seed is 32 bytes.
NKEY_SEED_BYTES: Final = 32
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
        credentials = _decoder.decode(data)
        if credentials.nkey_seed is not None:
            nkey_public_key(credentials.nkey_seed)
    except (msgspec.DecodeError, ValueError) as exc:
        raise CredentialsFileError(
            f"{path} is not a credentials file ({exc}); delete it and restart the exchange to "
            "make new credentials for that user"
        ) from exc
    return credentials


def new_nkey_seed() -> str:
    """A fresh user nkey seed (``SU...``), from the operating system's random source."""
    seed: bytes = nkeys.encode_seed(secrets.token_bytes(NKEY_SEED_BYTES), nkeys.PREFIX_BYTE_USER)
    return seed.decode("ascii")


def nkey_public_key(seed: str) -> str:
    """The public key (``U...``) of the user nkey ``seed``.

    Raises ValueError for a seed that is not a user nkey seed.
    """
    try:
        key_pair = nkeys.from_seed(bytearray(seed.encode("ascii")))
        public_key: bytes = key_pair.public_key
    except (nkeys.NkeysError, UnicodeEncodeError) as exc:
        raise ValueError(f"not an nkey seed: {type(exc).__name__}") from None
    if not public_key.startswith(b"U"):
        raise ValueError("not a user nkey seed (expected SU...)")
    return public_key.decode("ascii")


class CredentialStore:
    """The credentials under one ``creds`` directory."""

    def __init__(self, creds_dir: Path) -> None:
        self._dir = creds_dir

    def path(self, user: str) -> Path:
        return self._dir / f"{user}.json"

    def ensure(
        self,
        users: Iterable[str],
        *,
        url: str,
        passwords: bool = False,
        tls_ca_file: str | None = None,
    ) -> dict[str, Credentials]:
        """Credentials for each of ``users``: a stored secret (nkey seed or password) is kept, a
        missing one made: an nkey pair, or a password if ``passwords``.

        Every file is rewritten with ``url`` and ``tls_ca_file`` (the CA that verifies a TLS
        server) when they changed. Raises CredentialsFileError, OSError.
        """
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        made: dict[str, Credentials] = {}
        for user in users:
            stored = read_credentials(self.path(user))
            wanted = Credentials(
                url=url, user=user, inbox_prefix=inbox_prefix_of(user), tls_ca_file=tls_ca_file
            )
            if stored is not None and stored.nkey_seed:
                wanted = msgspec.structs.replace(wanted, nkey_seed=stored.nkey_seed)
            elif stored is not None and stored.password:
                wanted = msgspec.structs.replace(wanted, password=stored.password)
            elif passwords:
                wanted = msgspec.structs.replace(
                    wanted, password=secrets.token_urlsafe(PASSWORD_BYTES)
                )
            else:
                wanted = msgspec.structs.replace(wanted, nkey_seed=new_nkey_seed())
            if stored != wanted:
                write_private(self.path(user), _encoder.encode(credentials_fields(wanted)))
            made[user] = wanted
        return made


def nats_users(
    credentials: Iterable[Credentials], roles: Mapping[str, str | None]
) -> tuple[NatsUser, ...]:
    """The server-side users for ``credentials`` (with each agent's registered role, which can
    widen its permissions), sorted by name so the config is stable."""
    users = []
    for creds in credentials:
        assert creds.user is not None, "open-mode credentials"
        role = roles.get(creds.user)
        if creds.nkey_seed:
            # ensure and read_credentials have checked the seed.
            nkey = nkey_public_key(creds.nkey_seed)
            users.append(NatsUser(name=creds.user, nkey=nkey, role=role))
        else:
            assert creds.password, "credentials without a secret"
            users.append(NatsUser(name=creds.user, password=creds.password, role=role))
    return tuple(sorted(users, key=lambda user: user.name))
