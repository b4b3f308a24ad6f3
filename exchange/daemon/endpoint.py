"""``DATA/exchange.json``: where the exchange of a data directory listens, for local clients.

Owns: the file's shape (``EndpointFile``), writing it atomically once the daemon is ready and
removing it at a clean exit, and reading it (the CLI's ``--data``). Must not: hold a secret (the
admin password lives in ``creds/admin.json``, mode 0600) or decide whether the daemon is alive.
"""

import os
from pathlib import Path
from typing import Final

import msgspec

from exchange.errors import ExchangeError

_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


class EndpointFile(msgspec.Struct, frozen=True, kw_only=True):
    """``url`` to connect to; ``secure`` False means open mode (no credentials needed)."""

    url: str
    pid: int
    secure: bool
    service_id: str


class EndpointFileError(ExchangeError):
    """The file exists but is not an endpoint file; the message names it."""


def write_endpoint(path: Path, endpoint: EndpointFile) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(_encoder.encode(endpoint))
    os.replace(temporary, path)


def read_endpoint(path: Path) -> EndpointFile | None:
    """The endpoint at ``path``, None when no exchange has written one (or it exited cleanly).

    Raises EndpointFileError.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=EndpointFile)
    except msgspec.DecodeError as exc:
        raise EndpointFileError(f"{path} is not an exchange endpoint file: {exc}") from exc


def remove_endpoint(path: Path, *, pid: int) -> None:
    """Removes the file if this process wrote it."""
    try:
        current = read_endpoint(path)
    except EndpointFileError:
        return
    if current is not None and current.pid == pid:
        path.unlink(missing_ok=True)
