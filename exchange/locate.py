"""Finding a local exchange: its URL and admin credentials.

Owns: how the command-line front ends (``exchange.cli``, and ``exchange.integrations`` for the
git hook and beads) decide where to connect (``--nats URL``, else ``EXCHANGE_NATS_URL``, else the
``exchange.json`` that ``exchange up`` wrote in the data directory) and as whom (admin, from
``DATA/creds/admin.json``, when that file exists). It sits beside them rather than in
``exchange.cli`` so that the integrations, which the CLI runs, do not import the CLI back.
Must not: connect to anything, or print.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from exchange.daemon.creds import CredentialsFileError, read_credentials
from exchange.daemon.endpoint import read_endpoint
from exchange.daemon.settings import DataPaths
from exchange.errors import ExchangeError
from protocols.credentials import Credentials
from protocols.ids import ADMIN

NATS_URL_ENV: Final = "EXCHANGE_NATS_URL"
DATA_DIR_DEFAULT: Final = Path(".exchange")


class LocateError(ExchangeError):
    """No exchange can be found from the arguments, the environment and the data directory."""


@dataclass(frozen=True, slots=True)
class Located:
    credentials: Credentials
    source: str


def locate(nats_url: str | None, data_dir: Path) -> Located:
    """Where and as whom to connect. Raises LocateError, CredentialsFileError, EndpointFileError."""
    paths = DataPaths(data_dir)
    admin = read_credentials(paths.creds(ADMIN))
    url = nats_url or os.environ.get(NATS_URL_ENV) or None
    source = "--nats" if nats_url else NATS_URL_ENV
    if url is None:
        endpoint = read_endpoint(paths.endpoint)
        if endpoint is None:
            raise LocateError(
                f"no running exchange found: {paths.endpoint} does not exist. Start one with "
                f"`exchange up --data {data_dir}`, or pass --nats URL (or set {NATS_URL_ENV})"
            )
        url, source = endpoint.url, str(paths.endpoint)
        if not endpoint.secure:
            return Located(Credentials(url=url), source)
    if admin is None:
        return Located(Credentials(url=url), source)
    return Located(msgspec.structs.replace(admin, url=url), source)


def acting_credentials(
    nats_url: str | None, data_dir: Path, creds_file: Path | None
) -> Credentials:
    """Admin's (``locate``), or ``--creds``'s, its URL replaced by ``--nats`` when given: who a
    client verb or the dashboard acts as.

    Raises LocateError, CredentialsFileError, EndpointFileError.
    """
    if creds_file is None:
        return locate(nats_url, data_dir).credentials
    found = read_credentials(creds_file)
    if found is None:
        raise CredentialsFileError(
            f"--creds {creds_file}: no such file (the exchange writes DATA/creds/<agent>.json "
            "when it registers an agent; `exchange creds AGENT` prints one)"
        )
    return found if nats_url is None else msgspec.structs.replace(found, url=nats_url)
