"""The bounded queue between the NATS callbacks (and the timer loop) and the batcher.

Owns: ``Inbound`` (one decoded message waiting to be applied), ``InboundQueue`` and ``Wakeup``.
Must not: decode, apply or answer anything.

Why not an anyio memory stream: ``put`` must never wait (a full queue is answered ``overloaded``
at once) and the batcher wants everything queued in one call, so it applies a whole burst as one
batch. A deque and a wakeup do both, for a fraction of a stream's per-item cost (measured with
bench/transfers.py: every microsecond here is paid once per command).
"""

import asyncio
from collections import deque

import msgspec

from exchange.daemon.discovery import EndpointCounters
from exchange.daemon.routes import CommandWork, QueryWork


class Inbound(msgspec.Struct, frozen=True, gc=False):
    """One decoded message waiting for the batcher. ``reply_to`` None: answer no one."""

    work: CommandWork | QueryWork
    reply_to: str | None
    counters: EndpointCounters | None
    received_ns: int


class Wakeup:
    """One waiter, any number of setters: ``wait`` returns once ``set`` was called since the
    previous ``wait`` returned (a set while nobody waits is kept, several count as one).

    An asyncio.Event, cleared and reused: the daemon runs on asyncio (nats-py needs it), and an
    anyio.Event costs 2.6 us to make, several times a batch.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()


class InboundQueue:
    """First in, first out, at most ``size_max`` items; ``put`` never waits."""

    def __init__(self, size_max: int) -> None:
        assert size_max > 0, size_max
        self._items: deque[Inbound] = deque()
        self._size_max = size_max
        self._ready = Wakeup()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Inbound, *, beyond_bound: bool = False) -> bool:
        """Queues ``item``; False (and nothing queued) if the queue is full or closed.

        ``beyond_bound``: queue it even when full. For the timer loop only, which has at most
        one Tick outstanding, so the bound is exceeded by at most one.
        """
        if self._closed or (len(self._items) >= self._size_max and not beyond_bound):
            return False
        self._items.append(item)
        self._ready.set()
        return True

    def close(self) -> None:
        """No more puts; ``take`` returns what is left, then []."""
        self._closed = True
        self._ready.set()

    async def take(self, count_max: int) -> list[Inbound]:
        """Waits until something is queued, then takes up to ``count_max`` items, oldest first.

        Returns [] only when the queue is closed and empty.
        """
        assert count_max > 0, count_max
        items = self._items
        while not items:
            if self._closed:
                return []
            await self._ready.wait()
        if len(items) <= count_max:
            taken = list(items)
            items.clear()
            return taken
        return [items.popleft() for _ in range(count_max)]
