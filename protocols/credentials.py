"""The credentials file: what a NATS client needs to connect as one user.

The exchange writes one per user, ``DATA/creds/<user>.json`` (``exchange creds USER --json``
prints it): ``{"url", "user", "password", "inbox_prefix"}``. The daemon writes and reads it,
the CLI and the workers read it, so its shape is a protocol fact and lives here. Decoding skips
unknown fields, so a newer exchange may add some.

Pure: a Struct and its defaults; no file or network access (readers bound and wrap the errors).
"""

from typing import Final

import msgspec

# nats-py's own default: what ``exchange`` and ``admin`` use, and anyone in open mode. An agent
# uses ``subjects.inbox_prefix(agent)`` in secure mode.
DEFAULT_INBOX_PREFIX: Final = "_INBOX"


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """Where and as whom to connect. ``user=None`` is open mode (no authentication)."""

    url: str
    user: str | None = None
    password: str | None = None
    inbox_prefix: str = DEFAULT_INBOX_PREFIX

    def __repr__(self) -> str:
        # The password must not reach logs or tracebacks.
        return f"Credentials(url={self.url!r}, user={self.user!r}, password='***')"
