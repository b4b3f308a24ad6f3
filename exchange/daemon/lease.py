"""Who tries to lead: a lease in a JetStream KV bucket, a key with a TTL renewed by its holder.

The bucket's TTL (its messages' max age) is the lease's length: the leader renews the key with a
compare-and-set on the revision it holds every ``ttl_s / 4``; when it stops (killed, cut off), the
key expires and a standby's create (which succeeds only when the key is absent) takes it. The
lease only decides who *tries* to lead. Safety never rests on it or on clocks: the journal
stream refuses an append that does not follow the sequence its writer expects, and a new leader
appends a fence first (``stream_journal.py``). So two nodes that both believe they lead (a paused
leader waking up after its lease lapsed) cannot both write; the stale one is refused and steps
down.

The holder also gives the lease up by itself once it has not managed to renew it for
``ttl_s * 3 / 4`` (its own monotonic clock): by then a standby may have it, and serving on would
only answer queries from a state that may be behind.

Must not: touch the journal, or sleep to synchronise anything but its own renewal period.
"""

import time
from typing import Final

import anyio
import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from exchange.daemon.errors import DaemonError

log = structlog.get_logger()

LEASE_KEY: Final = "leader"


class LeaseLostError(DaemonError):
    """This node held the lease and no longer does (another took it, or renewal kept failing)."""


async def lease_bucket(
    js: JetStreamContext, bucket: str, *, ttl_s: float, replicas: int
) -> KeyValue:
    """The lease's KV bucket, created if missing (its TTL is the lease's length)."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(
            api.KeyValueConfig(
                bucket=bucket,
                description="the exchange's leader lease",
                history=1,
                ttl=ttl_s,
                replicas=replicas,
                storage=api.StorageType.FILE,
            )
        )
    except nats.js.errors.BadRequestError:
        return await js.key_value(bucket)  # another node made it first


class Lease:
    """One node's view of the lease: try to take it, hold it, give it back."""

    def __init__(self, kv: KeyValue, node_id: str, ttl_s: float) -> None:
        self._kv = kv
        self.node_id = node_id
        self.ttl_s = ttl_s
        self._revision: int | None = None
        self._renewed_at = 0.0

    @property
    def held(self) -> bool:
        return self._revision is not None

    async def holder(self) -> str | None:
        """The node holding the lease now, if any."""
        try:
            entry = await self._kv.get(LEASE_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        return None if entry.value is None else entry.value.decode()

    async def try_take(self) -> bool:
        """Takes the lease if nobody holds it; False when it is held, or in flux, or the bucket
        did not answer (the caller tries again). Raises nothing from NATS: a standby's campaign
        must outlive anything the cluster says."""
        try:
            self._revision = await self._kv.create(LEASE_KEY, self.node_id.encode())
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            # Held. (Not found comes from the lease expiring mid-create: nats-py's create reads
            # the key back after its conditional write fails, and a replica that has already
            # expired the key answers that read. Expired means free: the next poll takes it.)
            return False
        except nats.errors.Error as exc:  # JetStream's errors are among these
            log.warning("lease_take_failed", error=type(exc).__name__, detail=str(exc))
            return False
        self._renewed_at = time.monotonic()
        log.info("lease_taken", node=self.node_id, revision=self._revision)
        return True

    async def hold(self) -> None:
        """Renews the lease until it is lost; then raises LeaseLostError. Cancel to stop."""
        assert self._revision is not None, "take the lease first"
        period_s = self.ttl_s / 4
        while True:
            await anyio.sleep(period_s)
            try:
                with anyio.fail_after(period_s * 2):
                    self._revision = await self._kv.update(
                        LEASE_KEY, self.node_id.encode(), last=self._revision
                    )
                self._renewed_at = time.monotonic()
            except nats.js.errors.KeyWrongLastSequenceError as exc:
                self._revision = None
                raise LeaseLostError(
                    f"node {self.node_id} lost the lease: another holds it"
                ) from exc
            except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
                silent_s = time.monotonic() - self._renewed_at
                log.warning("lease_renew_failed", error=type(exc).__name__, silent_s=silent_s)
                if silent_s > self.ttl_s * 3 / 4:
                    self._revision = None
                    raise LeaseLostError(
                        f"node {self.node_id} could not renew the lease for {silent_s:.1f} s"
                    ) from exc

    async def give_back(self) -> None:
        """Deletes the key if this node still holds it (a clean stop: a standby takes over at
        once instead of after the TTL)."""
        revision, self._revision = self._revision, None
        if revision is None:
            return
        try:
            with anyio.fail_after(self.ttl_s):
                await self._kv.delete(LEASE_KEY, last=revision)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            log.warning("lease_give_back_failed", error=type(exc).__name__)
