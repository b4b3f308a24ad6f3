"""The leader lease (exchange/daemon/lease.py) on a real JetStream KV bucket.

What a standby's campaign relies on: ``try_take`` answers True or False and never raises, even
when the lease expires in the middle of its create, which is how a standby once died in CI
(nats-py's create reads the key back after its conditional write fails; a replica that had
already expired the key answered that read with "not found").
"""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import nats.js.errors
import pytest
from nats.aio.client import Client

from exchange.daemon.lease import LEASE_KEY, Lease, lease_bucket
from exchange.daemon.natsserver import NatsServer, NatsServerConfig, run_nats_server

pytestmark = pytest.mark.anyio

BUCKET = "LEASE_TEST"
ClientOpener = Callable[..., AbstractAsyncContextManager[Client]]
TTL_S = 30.0  # never reached: every test gives the lease back or takes it over by hand


@pytest.fixture
async def jetstream_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    config = NatsServerConfig(jetstream_store_dir=str(tmp_path / "js"))
    async with run_nats_server(config, data_dir=tmp_path / "nats") as server:
        yield server


async def _lease(nc: Client, node_id: str) -> Lease:
    kv = await lease_bucket(nc.jetstream(timeout=5), BUCKET, ttl_s=TTL_S, replicas=1)
    return Lease(kv, node_id, TTL_S)


async def test_a_held_lease_is_refused_and_a_given_back_one_is_taken(
    jetstream_server: NatsServer, nats_client: ClientOpener
) -> None:
    async with nats_client(jetstream_server) as nc:
        first, second = await _lease(nc, "node-a"), await _lease(nc, "node-b")
        assert await first.try_take()
        assert not await second.try_take()
        assert await second.holder() == "node-a"
        await first.give_back()
        assert not first.held
        # The give-back leaves a tombstone; a create over it still succeeds.
        assert await second.try_take()
        assert await first.holder() == "node-b"


async def test_a_lease_expiring_mid_create_is_a_refusal_not_a_crash(
    jetstream_server: NatsServer, nats_client: ClientOpener, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with nats_client(jetstream_server) as nc:
        leader, standby = await _lease(nc, "node-a"), await _lease(nc, "node-b")
        assert await leader.try_take()
        reads: list[str] = []

        async def expired_replica_read(key: str, revision: int | None = None) -> object:
            # What a replica that has already expired the key answers the read-back.
            reads.append(key)
            raise nats.js.errors.KeyNotFoundError

        monkeypatch.setattr(standby._kv, "_get", expired_replica_read)
        assert not await standby.try_take()
        assert reads == [LEASE_KEY], "the injected read was not on the create's path"
        assert not standby.held
        monkeypatch.undo()
        await leader.give_back()
        assert await standby.try_take()


async def test_a_bucket_that_does_not_answer_is_a_refusal_not_a_crash(
    jetstream_server: NatsServer, nats_client: ClientOpener
) -> None:
    async with nats_client(jetstream_server) as nc:
        standby = await _lease(nc, "node-b")
        await nc.jetstream().delete_key_value(BUCKET)
        assert not await standby.try_take()
        assert not standby.held
