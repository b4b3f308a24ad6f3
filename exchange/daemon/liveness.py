"""When the exchange last heard each agent's heartbeat (``exchange.cmd.<agent>.heartbeat``).

Owns: the last heartbeat per agent, in memory, bounded. Must not: journal anything or touch the
core: liveness is an observation of the bus, not ledger state, so it starts empty at every start
and a heartbeat never changes the digest.

Read by the Prometheus endpoint (``exchange_agent_heartbeat_age_seconds``).
"""

from dataclasses import dataclass

from protocols.swarm import Heartbeat


@dataclass(frozen=True, slots=True)
class LastHeartbeat:
    agent: str
    role: str
    capabilities: tuple[str, ...]
    # The worker's own clock, as it sent it, and the exchange's wall clock when it arrived.
    sent_at_ms: int
    received_wall_ns: int


class Liveness:
    """The last heartbeat of at most ``agents_max`` agents; the longest silent is dropped first.

    Bounded because in open mode anyone may send heartbeats under any name.
    """

    def __init__(self, agents_max: int) -> None:
        assert agents_max > 0, agents_max
        self._agents_max = agents_max
        self._last: dict[str, LastHeartbeat] = {}

    def record(self, agent: str, heartbeat: Heartbeat, *, received_wall_ns: int) -> None:
        # Re-inserted, so the dict's order is from the longest silent to the latest heard.
        self._last.pop(agent, None)
        self._last[agent] = LastHeartbeat(
            agent=agent,
            role=heartbeat.role,
            capabilities=tuple(heartbeat.capabilities),
            sent_at_ms=heartbeat.at_ms,
            received_wall_ns=received_wall_ns,
        )
        if len(self._last) > self._agents_max:
            del self._last[next(iter(self._last))]

    def last(self) -> list[LastHeartbeat]:
        """Every agent heard, in agent order."""
        return sorted(self._last.values(), key=lambda beat: beat.agent)
