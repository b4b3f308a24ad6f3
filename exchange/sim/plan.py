"""Plans: when each agent acts and what it asks, drawn from its profile. Pure and deterministic.

This module owns the behaviour model (arrival processes, weighted choices); the time units are
``protocols.units``. It knows nothing of rewards, prices or limits: those are the ledger's, and
a plan is only a list of timed actions for the engine to submit.

Randomness: one ``random.Random`` per (seed, agent, activity), so the same seed gives the same
plan, and changing one agent's profile (or adding an agent) leaves every other plan as it was.
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from exchange.sim.scenario import AgentProfile, Scenario
from protocols.commands import Command
from protocols.units import HOURS_PER_DAY, MS_PER_S, NS_PER_HOUR, NS_PER_MS, S_PER_HOUR

__all__ = [
    "Action",
    "CommitAction",
    "CreditAction",
    "Event",
    "IssueAction",
    "RequestAction",
    "arrivals_ns",
    "pick",
    "plan_agent",
]

# Arrivals are capped at this many per simulated hour (four times the bound on a rate): a
# random draw could in principle run on, and every loop has a bound.
arrivals_per_hour_max: Final = 4 * S_PER_HOUR


@dataclass(frozen=True, slots=True)
class CommitAction:
    project: str
    message: str
    sha: str


@dataclass(frozen=True, slots=True)
class IssueAction:
    issue_id: str
    priority: str
    issue_type: str


@dataclass(frozen=True, slots=True)
class RequestAction:
    task_type: str
    tokens: int
    model: str | None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class CreditAction:
    """A command of the scenario's credit plans, or an hourly tick (exchange/sim/credit.py):
    sent as is by ``sender``, after the engine fills in the ids the ledger gave (``?stake-<n>``,
    ``?loan-<n>`` and ``?task-<n>`` name the stake, loan and task its plan number ``n`` made)."""

    sender: str
    verb: str
    command: Command


Action = CommitAction | IssueAction | RequestAction | CreditAction


@dataclass(order=True, frozen=True, slots=True)
class Event:
    # (at_ns, agent_index, seq) is unique, so ordering never compares the fields below.
    at_ns: int
    agent_index: int
    seq: int
    agent: str = field(compare=False)
    action: Action = field(compare=False)


def arrivals_ns(
    rng: random.Random, rates_per_hour: list[float], regularity: float, start_ns: int
) -> list[int]:
    """Arrival times, to the millisecond, of a renewal process whose rate changes hour by hour.

    Time is rescaled so the process runs at rate 1 in "operational time" u (u grows by the
    hour's rate over each hour); gaps in u are Gamma(k, 1/k) with k = ``regularity``: mean 1,
    variance 1/k. k = 1 is the Poisson process; a larger k is an agent with a steadier cadence
    (the day's count varies about 1/sqrt(k) as much). The first arrival is drawn from the
    equilibrium distribution (a length-biased gap times a uniform phase), so the process has no
    artificial "start of day" at hour 0.
    """
    total_u = sum(rates_per_hour)
    if total_u <= 0:
        return []
    bound = arrivals_per_hour_max * len(rates_per_hour)
    scale = 1 / regularity
    u = rng.gammavariate(regularity + 1, scale) * rng.random()
    times: list[int] = []
    last_hour = len(rates_per_hour) - 1
    hour, hour_u = 0, 0.0  # hour_u: operational time at the start of ``hour``
    while u < total_u and len(times) < bound:
        while hour < last_hour and u >= hour_u + rates_per_hour[hour]:
            hour_u += rates_per_hour[hour]
            hour += 1
        rate = rates_per_hour[hour]
        if rate <= 0 or u >= hour_u + rate:
            break  # float rounding put u past the last busy hour: the run has no more time
        offset_ms = int((hour + (u - hour_u) / rate) * S_PER_HOUR * MS_PER_S)
        times.append(start_ns + offset_ms * NS_PER_MS)
        u += rng.gammavariate(regularity, scale)
    return times


def pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _rng(seed: int, agent: str, activity: str) -> random.Random:
    # A string seed is hashed with SHA-512 by random.seed, independent of PYTHONHASHSEED.
    return random.Random(f"{seed}/{agent}/{activity}")


def plan_agent(
    scenario: Scenario,
    profile: AgentProfile,
    *,
    index: int,
    seed: int,
    hours: int,
    start_ns: int,
    sequence: Iterator[int],
) -> list[Event]:
    """Every commit, request and issue close of one agent over the run, in no particular order.

    ``index`` orders agents acting at the same instant; ``sequence`` numbers events uniquely
    across the run (it is shared with the engine, which numbers retries from it too).
    """
    first_hour_of_day = (start_ns // NS_PER_HOUR) % HOURS_PER_DAY
    hours_of_day = [(first_hour_of_day + h) % HOURS_PER_DAY for h in range(hours)]
    commit_rates = [profile.commit_rates[h] for h in hours_of_day]
    request_rates = [profile.request_rates[h] for h in hours_of_day]
    # Issues close at the same rate around the clock: triage is not tied to the hour.
    issue_rates = [profile.issues_per_day / HOURS_PER_DAY] * hours
    events: list[Event] = []

    def add(at_ns: int, action: Action) -> None:
        events.append(Event(at_ns, index, next(sequence), profile.id, action))

    rng = _rng(seed, profile.id, "commits")
    messages = scenario.commit_messages
    for at_ns in arrivals_ns(rng, commit_rates, profile.commit_regularity, start_ns):
        project = pick(rng, profile.projects)
        message = rng.choice(messages[pick(rng, profile.commit_mix)])
        add(at_ns, CommitAction(project, message, f"{rng.getrandbits(160):040x}"))
    rng = _rng(seed, profile.id, "requests")
    tasks = {str(i): task.weight for i, task in enumerate(profile.tasks)}
    for at_ns in arrivals_ns(rng, request_rates, profile.request_regularity, start_ns):
        task = profile.tasks[int(pick(rng, tasks))]
        tokens = rng.randint(task.tokens_min, task.tokens_max)
        add(at_ns, RequestAction(task.task_type, tokens, task.model))
    rng = _rng(seed, profile.id, "issues")
    for number, at_ns in enumerate(arrivals_ns(rng, issue_rates, 1.0, start_ns)):
        priority = pick(rng, profile.issue_priorities)
        issue_type = pick(rng, profile.issue_types)
        add(at_ns, IssueAction(f"sim-{profile.id}-{number}", priority, issue_type))
    return events
