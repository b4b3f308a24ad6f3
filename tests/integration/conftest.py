"""Integration fixtures: real nats-server processes on random ports, one per test, no sleeps.

Every async test here runs on anyio's pytest plugin, pinned to asyncio (nats-py is asyncio-only);
mark tests with ``@pytest.mark.anyio``. The fixtures:

- ``nats_server``: an open-mode server (no auth, loopback), yielded once ready::

      async def test_x(nats_server: NatsServer, nats_client: ClientOpener) -> None:
          async with nats_client(nats_server) as client: ...

- ``start_secure_nats_server``: a function from users to ``async with`` a secure server::

      users = nats_users("alice", "bob")  # exchange, admin, alice, bob: random passwords
      async with start_secure_nats_server(users.values()) as server:
          async with nats_client(server, users["alice"]) as alice: ...

- ``nats_cluster``: three clustered nodes with JetStream, every route up, as a tuple.

``nats_users``, ``nats_client`` and ``nats_flush`` are fixtures too (returning the helper
functions), so any module under tests/integration can use them without importing this file.
Subscribe, then ``await nats_flush(client)`` before anything else publishes to that subject: a
plain ``client.flush()`` does not guarantee the subscription has reached the server (see
``protocols.client.flush_commands``).
"""

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from exchange.daemon.natsserver import (
    NatsServer,
    NatsServerConfig,
    NatsUser,
    agent_inbox_prefix,
    run_nats_cluster,
    run_nats_server,
)
from protocols.client import flush_commands
from protocols.ids import ADMIN, EXCHANGE

SecureServerStarter = Callable[[Iterable[NatsUser]], AbstractAsyncContextManager[NatsServer]]
ErrorCallback = Callable[[Exception], Awaitable[None]]
ClientOpener = Callable[..., AbstractAsyncContextManager[Client]]

# Bounds for a client's first connection to a local server; a failure is then quick and clear.
CONNECT_TIMEOUT_S = 5.0


def make_nats_users(*agent_ids: str) -> dict[str, NatsUser]:
    """``exchange``, ``admin`` and the given agents, each with a fresh random password."""
    names = (EXCHANGE, ADMIN, *agent_ids)
    return {name: NatsUser(name=name, password=secrets.token_urlsafe(24)) for name in names}


async def _ignore_error(error: Exception) -> None:
    # nats-py's default callback logs each asynchronous error; tests that expect one pass their own.
    del error


@asynccontextmanager
async def open_nats_client(
    server: NatsServer,
    user: NatsUser | None = None,
    *,
    error_cb: ErrorCallback = _ignore_error,
    **options: Any,
) -> AsyncIterator[Client]:
    """A nats-py connection to ``server`` as ``user`` (None: open mode), closed on exit.

    An agent connects with its own inbox prefix, as it must: its permissions allow replies there
    only. No reconnects, so a test sees a dropped connection instead of waiting through retries.
    ``options`` go to ``nats.connect`` and win over these defaults.
    """
    credentials: dict[str, Any] = {}
    if user is not None:
        credentials = {"user": user.name, "password": user.password}
        if user.name not in (EXCHANGE, ADMIN):
            credentials["inbox_prefix"] = agent_inbox_prefix(user.name)
    client = await nats.connect(
        server.url,
        allow_reconnect=False,
        connect_timeout=CONNECT_TIMEOUT_S,
        error_cb=error_cb,
        **(credentials | options),
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def nats_users() -> Callable[..., dict[str, NatsUser]]:
    return make_nats_users


@pytest.fixture
def nats_client() -> ClientOpener:
    return open_nats_client


@pytest.fixture
def nats_flush() -> Callable[[Client], Awaitable[None]]:
    return flush_commands


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "nats") as server:
        yield server


@pytest.fixture
def start_secure_nats_server(tmp_path: Path) -> SecureServerStarter:
    started = 0

    def start(users: Iterable[NatsUser]) -> AbstractAsyncContextManager[NatsServer]:
        nonlocal started
        started += 1
        config = NatsServerConfig(users=tuple(users))
        return run_nats_server(config, data_dir=tmp_path / f"nats-secure-{started}")

    return start


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, ...]]:
    async with run_nats_cluster(data_dir=tmp_path / "nats-cluster") as servers:
        yield servers
