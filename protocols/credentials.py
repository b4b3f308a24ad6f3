"""The credentials file: what a NATS client needs to connect as one user.

The exchange writes one per user, ``DATA/creds/<user>.json`` (``exchange creds USER --json``
prints it). A user signs in with an nkey (the default) or, where the operator asked for it
(``exchange up --passwords``), a plaintext password:

- nkey: ``{"url", "user", "nkey_seed", "inbox_prefix"}``; the seed (``SU...``) signs the server's
  nonce, and the server knows only its public key (``U...``);
- password: ``{"url", "user", "password", "inbox_prefix"}``, the format before nkeys.

With TLS (a ``tls://`` URL) the file may name ``tls_ca_file``, the CA certificate the client
verifies the server with (a path on the client's machine; the exchange writes its own
``DATA/tls/ca.pem`` there when it generated the CA). ``user`` names the user in both (the server
knows an nkey user by its public key alone). The daemon writes and reads the file, the CLI and
the workers read it, so its shape is a protocol fact and lives here. Decoding skips unknown
fields, so a newer exchange may add some.

Pure: a Struct and its defaults; no file or network access (readers bound and wrap the errors).
"""

from typing import Final

import msgspec

# nats-py's own default: what ``exchange`` and ``admin`` use, and anyone in open mode. An agent
# uses ``subjects.inbox_prefix(agent)`` in secure mode.
DEFAULT_INBOX_PREFIX: Final = "_INBOX"


def server_urls(url: str) -> list[str]:
    """The servers a URL names: one, or the nodes of a cluster, comma-separated
    (``nats://a:4222,nats://b:4222``), as nats-py takes them."""
    return [part.strip() for part in url.split(",") if part.strip()]


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """Where and as whom to connect. ``user=None`` is open mode (no authentication).

    A user has an ``nkey_seed`` or a ``password``; when a file has both, the seed is used.
    """

    url: str
    user: str | None = None
    password: str | None = None
    inbox_prefix: str = DEFAULT_INBOX_PREFIX
    nkey_seed: str | None = None
    # The CA file (PEM) that verifies a ``tls://`` server; None: the system's trust store.
    tls_ca_file: str | None = None

    def __repr__(self) -> str:
        # Neither the seed nor the password may reach logs or tracebacks.
        secret = "nkey_seed" if self.nkey_seed else "password"
        return f"Credentials(url={self.url!r}, user={self.user!r}, {secret}='***')"


def credentials_fields(credentials: Credentials) -> dict[str, object]:
    """The JSON object of a credentials file: the one secret the user has, not the other as null
    (a reader of a password file written before nkeys sees the fields it always did)."""
    fields: dict[str, object] = msgspec.structs.asdict(credentials)
    for optional in ("password", "nkey_seed", "tls_ca_file"):
        if fields[optional] is None:
            del fields[optional]
    return fields
