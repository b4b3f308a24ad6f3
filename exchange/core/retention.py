"""Keeping only the newest closed records: the one rule behind every ``*_kept`` setting.

Each kind of record that piles up with use (finished tasks, settled escrows, closed LLM
authorizations, vote proposals, pools, ended coalitions) is kept in the order it closed, and past
its configured number the oldest is forgotten. What forgetting one means (dropping its hold,
counting it for the swarm metrics) is the caller's ``forget``.
"""

from collections import deque
from collections.abc import Callable


def keep_newest(
    order: deque[str], closed_id: str, kept: int, forget: Callable[[str], object]
) -> None:
    """Appends ``closed_id`` to ``order`` (oldest first); while more than ``kept`` remain, hands
    the oldest to ``forget``."""
    order.append(closed_id)
    while len(order) > kept:
        forget(order.popleft())


def kept_note(kept: int, what: str) -> str:
    """The part of an ``unknown_*`` refusal that says an id may have been forgotten."""
    return f"(the last {kept} {what} are kept; the journal has all: `exchange export`)"
