"""The share of CPU time the hypervisor gave to other guests ("steal") while a measurement ran.

On a shared VM a neighbour can take a third of the cores for minutes: on 2026-12-02 the same
10-bidder auction run gave p50 4-6 ms at ~1% steal and 12-15 ms at 34%. A figure measured under
heavy steal says more about the neighbours than about the code, so the benches print the steal
share of each measurement beside it. Linux only (``/proc/stat``); elsewhere the share is None.

    window = StealWindow.start()
    ...  # measure
    print(share_text(window.share()))  # "3%"

With ``--max-steal`` a bench measures again, a bounded number of times, a run during which the
hypervisor took more than that share (``quiet_enough``), and says how many it set aside.
"""

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_PROC_STAT = Path("/proc/stat")
# Fields of the "cpu" line of /proc/stat, in clock ticks: user nice system idle iowait irq
# softirq steal (guest and guest_nice are already counted in user and nice).
_STEAL_FIELD = 7
_FIELDS_COUNTED = 8
# Above this share a run is flagged: its figure is mostly the neighbours'.
STEAL_NOISY = 0.10


def cpu_ticks() -> tuple[int, ...] | None:
    """The machine's CPU time so far, per state, or None where /proc/stat is not there."""
    try:
        first_line = _PROC_STAT.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = first_line.split()
    if fields[0] != "cpu" or len(fields) <= _FIELDS_COUNTED:
        return None
    return tuple(int(value) for value in fields[1 : 1 + _FIELDS_COUNTED])


def steal_share(before: tuple[int, ...] | None, after: tuple[int, ...] | None) -> float | None:
    """Steal time between two ``cpu_ticks`` readings, as a share of all CPU time between them."""
    if before is None or after is None:
        return None
    deltas = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(deltas)
    return deltas[_STEAL_FIELD] / total if total > 0 else None


@dataclass(frozen=True)
class StealWindow:
    """A reading taken when a measurement starts; ``share`` reads again."""

    before: tuple[int, ...] | None

    @classmethod
    def start(cls) -> "StealWindow":
        return cls(cpu_ticks())

    def share(self) -> float | None:
        return steal_share(self.before, cpu_ticks())


def median_share(shares: Iterable[float | None]) -> float | None:
    """The median of the runs' steal shares that could be measured (None if none could)."""
    known = [share for share in shares if share is not None]
    return statistics.median(known) if known else None


def quiet_enough(share: float | None, max_share: float | None) -> bool:
    """Whether a run's steal share is within ``max_share`` (None: no bound, or not measurable)."""
    return max_share is None or share is None or share <= max_share


# How many times a bench runs one measurement before it keeps the least stolen of them.
ATTEMPTS_MAX = 4


def share_text(share: float | None) -> str:
    """'3%', '34% (noisy)', or 'n/a'."""
    if share is None:
        return "n/a"
    return f"{share:.0%}" + (" (noisy)" if share > STEAL_NOISY else "")
