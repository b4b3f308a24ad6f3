"""The exchange clock: wall-clock nanoseconds that never go backwards.

Owns: stamping commands. ``now_ns()`` is ``max(wall clock, last stamp)``, seeded with the journal's
last stamp, so a wall clock stepped back (NTP, a VM restored) never stamps a command before the
one journaled last. Must not: be read anywhere but the composition root and the batcher (the core
receives time as an argument), or sleep.
"""

import time
from collections.abc import Callable


class ExchangeClock:
    """Monotonic nanosecond stamps from a wall clock (``time.time_ns`` unless a test passes one)."""

    def __init__(self, *, floor_ns: int, wall_ns: Callable[[], int] = time.time_ns) -> None:
        assert floor_ns >= 0, floor_ns
        self._last_ns = floor_ns
        self._wall_ns = wall_ns

    def now_ns(self) -> int:
        """The next stamp: never before the previous one."""
        now_ns = self._wall_ns()
        if now_ns < self._last_ns:
            now_ns = self._last_ns
        self._last_ns = now_ns
        return now_ns

    @property
    def last_ns(self) -> int:
        return self._last_ns

    def wall_ns(self) -> int:
        """The wall clock itself, for deciding how long to wait (never for stamping)."""
        return self._wall_ns()
