"""Small bounded containers for the roles' state: the oldest entry goes when a new one comes.

Pure data structures (no I/O, no clock). Iteration order is insertion order, so what a role does
with them is deterministic.
"""

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedDict(Generic[K, V]):
    """A mapping that keeps at most ``size_max`` entries, evicting the least recently set."""

    def __init__(self, size_max: int) -> None:
        assert size_max > 0, size_max
        self._size_max = size_max
        self._items: OrderedDict[K, V] = OrderedDict()

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size_max:
            self._items.popitem(last=False)

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        return list(self._items.items())

    def values(self) -> list[V]:
        return list(self._items.values())


class BoundedSet(Generic[K]):
    """A set that remembers at most ``size_max`` members (the oldest are forgotten first)."""

    def __init__(self, size_max: int) -> None:
        self._members: BoundedDict[K, None] = BoundedDict(size_max)

    def add(self, member: K) -> None:
        self._members[member] = None

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)
