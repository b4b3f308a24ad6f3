"""Per-agent spending limits: burst, reserve, and sliding hourly/daily windows.

The window sums are kept incrementally: each spend is appended once and evicted once, so a check
costs O(1) amortised whatever the length of the history. An open inference hold counts as a spend
at its authorization time; settling or voiding it adjusts that same entry in place.
"""

from collections import deque
from dataclasses import dataclass, field

from protocols.errors import ErrorCode
from protocols.units import NS_PER_S


@dataclass(slots=True)
class Limits:
    """An agent's limits in micro-tokens."""

    burst_micro: int
    reserve_micro: int
    hourly_micro: int
    daily_micro: int


@dataclass(slots=True)
class SpendEntry:
    at_ns: int
    amount_micro: int
    in_hour: bool = True
    in_day: bool = True


@dataclass(slots=True)
class Window:
    """Spends inside the last ``span_ns`` nanoseconds, with their running sum."""

    span_ns: int
    entries: deque[SpendEntry] = field(default_factory=deque)
    sum_micro: int = 0

    def fill(self, entries: list[SpendEntry]) -> None:
        """Takes ``entries`` (oldest first, all inside the window) as its own: a restore."""
        self.entries = deque(entries)
        self.sum_micro = sum(e.amount_micro for e in entries)


@dataclass(slots=True)
class SpendWindows:
    hour: Window
    day: Window

    @classmethod
    def new(cls, hourly_window_s: int, daily_window_s: int) -> "SpendWindows":
        return cls(Window(hourly_window_s * NS_PER_S), Window(daily_window_s * NS_PER_S))

    def advance(self, now_ns: int) -> None:
        """Evicts spends that have left each window (strictly older than the span)."""
        hour = self.hour
        cutoff = now_ns - hour.span_ns
        while hour.entries and hour.entries[0].at_ns <= cutoff:
            entry = hour.entries.popleft()
            entry.in_hour = False
            hour.sum_micro -= entry.amount_micro
        day = self.day
        cutoff = now_ns - day.span_ns
        while day.entries and day.entries[0].at_ns <= cutoff:
            entry = day.entries.popleft()
            entry.in_day = False
            day.sum_micro -= entry.amount_micro
        assert hour.sum_micro >= 0
        assert day.sum_micro >= 0

    def record(self, now_ns: int, amount_micro: int) -> SpendEntry:
        entry = SpendEntry(now_ns, amount_micro)
        self.hour.entries.append(entry)
        self.hour.sum_micro += amount_micro
        self.day.entries.append(entry)
        self.day.sum_micro += amount_micro
        return entry

    def adjust(self, entry: SpendEntry, amount_micro: int) -> None:
        """Changes a recorded spend (a hold settled for less, or voided to 0)."""
        delta = amount_micro - entry.amount_micro
        if entry.in_hour:
            self.hour.sum_micro += delta
        if entry.in_day:
            self.day.sum_micro += delta
        entry.amount_micro = amount_micro


@dataclass(frozen=True, slots=True)
class LimitBreach:
    code: ErrorCode
    limit_micro: int
    used_micro: int
    requested_micro: int
    retry_after_s: int | None = None


def check_spend(
    limits: Limits, windows: SpendWindows, balance_micro: int, amount_micro: int, now_ns: int
) -> LimitBreach | None:
    """Checks one inference spend: burst, reserve, hourly, daily, in that order.

    ``windows`` must already be advanced to ``now_ns``. Pure: changes nothing.
    """
    if amount_micro > limits.burst_micro:
        return LimitBreach(ErrorCode.burst_limit_exceeded, limits.burst_micro, 0, amount_micro)
    breach = check_reserve(limits, balance_micro, amount_micro)
    if breach is not None:
        return breach
    for window, limit_micro, code in (
        (windows.hour, limits.hourly_micro, ErrorCode.hourly_limit_exceeded),
        (windows.day, limits.daily_micro, ErrorCode.daily_limit_exceeded),
    ):
        if window.sum_micro + amount_micro > limit_micro:
            return LimitBreach(
                code,
                limit_micro,
                window.sum_micro,
                amount_micro,
                _retry_after_s(window, limit_micro, amount_micro, now_ns),
            )
    return None


def check_reserve(limits: Limits, balance_micro: int, amount_micro: int) -> LimitBreach | None:
    """The reserve applies to every debit an agent initiates; it also covers plain overdrafts."""
    if balance_micro - amount_micro < limits.reserve_micro:
        return LimitBreach(
            ErrorCode.reserve_would_be_breached,
            limits.reserve_micro,
            balance_micro,
            amount_micro,
        )
    if balance_micro < amount_micro:
        return LimitBreach(ErrorCode.insufficient_funds, 0, balance_micro, amount_micro)
    return None


def _retry_after_s(window: Window, limit_micro: int, amount_micro: int, now_ns: int) -> int | None:
    """Seconds until enough old spends leave the window for ``amount_micro`` to fit; None: never.

    Walks the window from its oldest entry, so it costs O(entries) — only on a refusal.
    """
    if amount_micro > limit_micro:
        return None
    excess = window.sum_micro + amount_micro - limit_micro
    for entry in window.entries:
        excess -= entry.amount_micro
        if excess <= 0:
            wait_ns = entry.at_ns + window.span_ns - now_ns
            return max(1, -(-wait_ns // NS_PER_S))
    return None
