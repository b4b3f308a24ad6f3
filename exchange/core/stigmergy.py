"""Signals and the pheromone map (seed 2), on the exchange clock.

Every valid signal is kept in a bounded recent history per channel (its signal type) and deposits
its confidence at ``asset:direction:scanner``. Strengths cap at ``strength_max``, evaporate by
``evaporation`` once per ``cycle_s`` cycle (cycles counted from the epoch, so every reader agrees),
and an entry under ``drop_below`` is gone. Evaporation is applied lazily when an entry is read or
deposited, so a deposit costs O(1) however large the map.

Pheromone strengths are floats: they are not money, and IEEE arithmetic is deterministic.
"""

from dataclasses import dataclass, field
from typing import Final

import msgspec

from exchange.core.config import StigmergyConfig
from exchange.core.ledger import Ledger
from exchange.core.refusals import Refusal, refuse
from protocols import results as r
from protocols import swarm as s
from protocols.errors import ErrorCode
from protocols.swarm import ObserveSignal
from protocols.units import NS_PER_S

signals_per_channel_max: Final = 1000
pheromone_keys_max: Final = 10_000


@dataclass(slots=True)
class SignalRecord:
    seq: int
    at_ns: int
    sender: str
    signal_type: str
    asset: str
    confidence: float
    direction: str
    scanner: str


@dataclass(slots=True)
class Pheromone:
    strength: float
    cycle: int


@dataclass(slots=True)
class Stigmergy:
    signals: dict[str, list[SignalRecord]] = field(default_factory=dict)
    pheromones: dict[str, Pheromone] = field(default_factory=dict)
    signals_seen: int = 0


class SignalsRules:
    """Installs the signal handler into a ledger and answers the signal/pheromone queries."""

    def __init__(self, ledger: Ledger, config: StigmergyConfig) -> None:
        self.ledger = ledger
        self.state = Stigmergy()
        self.cycle_ns = config.cycle_s * NS_PER_S
        self.evaporation = float(config.evaporation)
        self.strength_max = float(config.strength_max)
        self.drop_below = float(config.drop_below)

    def snapshot(self) -> Stigmergy:
        return self.state

    def restore(self, state: Stigmergy) -> None:
        self.state = state

    def observe(self, sender: str, cmd: ObserveSignal) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        if sender != "exchange":
            return refuse(ErrorCode.not_authorized, "signals are published on swarm.signal.*")
        if cmd.sender not in ledger.agents:
            return refuse(ErrorCode.unknown_agent, f"signal from unregistered agent {cmd.sender!r}")
        now_ns = ledger.book.now_ns
        record = SignalRecord(
            seq=ledger.book.seq,
            at_ns=now_ns,
            sender=cmd.sender,
            signal_type=cmd.signal_type,
            asset=cmd.asset,
            confidence=cmd.confidence,
            direction=cmd.direction,
            scanner=cmd.scanner or cmd.sender,
        )
        channel = self.state.signals.setdefault(cmd.signal_type, [])
        channel.append(record)
        if len(channel) > signals_per_channel_max:
            del channel[: len(channel) - signals_per_channel_max]
        self.state.signals_seen += 1
        self.deposit(f"{record.asset}:{record.direction}:{record.scanner}", cmd.confidence)
        return r.Result()

    # ---------------------------------------------------------------------- pheromones

    def _cycle(self) -> int:
        return self.ledger.book.now_ns // self.cycle_ns

    def _current(self, entry: Pheromone, cycle: int) -> float:
        return entry.strength * self.evaporation ** (cycle - entry.cycle)

    def deposit(self, key: str, strength: float) -> None:
        cycle = self._cycle()
        entry = self.state.pheromones.get(key)
        current = 0.0 if entry is None else self._current(entry, cycle)
        if current < self.drop_below:
            current = 0.0
        self.state.pheromones[key] = Pheromone(min(self.strength_max, current + strength), cycle)
        if len(self.state.pheromones) > pheromone_keys_max:
            self._prune(cycle)

    def _prune(self, cycle: int) -> None:
        """Drops evaporated entries, then the weakest, to keep the map bounded."""
        live = {
            k: e
            for k, e in self.state.pheromones.items()
            if self._current(e, cycle) >= self.drop_below
        }
        if len(live) > pheromone_keys_max:
            keep = sorted(live, key=lambda k: (-self._current(live[k], cycle), k))
            live = {k: live[k] for k in keep[:pheromone_keys_max]}
        self.state.pheromones = live

    def read(self, key: str) -> float:
        entry = self.state.pheromones.get(key)
        if entry is None:
            return 0.0
        value = self._current(entry, self._cycle())
        return value if value >= self.drop_below else 0.0

    def top(self, n: int) -> list[tuple[str, float]]:
        cycle = self._cycle()
        values = [(k, self._current(e, cycle)) for k, e in self.state.pheromones.items()]
        live = [(k, v) for k, v in values if v >= self.drop_below]
        live.sort(key=lambda kv: (-kv[1], kv[0]))
        return live[:n]

    def pheromones_result(self, limit: int) -> s.PheromonesResult:
        return s.PheromonesResult(
            pheromones=[s.PheromoneOut(key=k, strength=round(v, 6)) for k, v in self.top(limit)]
        )

    def signals_result(self, signal_type: str | None, limit: int) -> s.SignalsResult:
        if signal_type is None:
            merged = [s for channel in self.state.signals.values() for s in channel]
            merged.sort(key=lambda s: s.seq)
        else:
            merged = list(self.state.signals.get(signal_type, ()))
        recent = merged[-limit:][::-1]
        return s.SignalsResult(
            signals=[_out(s) for s in recent],
            signals_seen=self.state.signals_seen,
        )


def _out(record: SignalRecord) -> s.SignalRecordOut:
    return s.SignalRecordOut(
        seq=record.seq,
        at_ns=record.at_ns,
        sender=record.sender,
        signal_type=record.signal_type,
        asset=record.asset,
        confidence=record.confidence,
        direction=record.direction,
        scanner=record.scanner,
    )
