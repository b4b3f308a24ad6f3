"""The simulator: a day (or more) of agent activity run through the real ledger on a virtual clock.

It owns behaviour models (when agents commit, what they ask of which model) and the reports on
what the ledger decided. It must not re-implement any economic rule: every reward, cost and
refusal comes from ``exchange.core.machine.Exchange``, the same code the daemon runs.

Modules:
- ``scenario``: the TOML scenario format, parsed into frozen Structs (pure; ``load_scenario``
  reads files).
- ``plan``: when each agent acts and what it asks (pure; ``random.Random`` instances seeded from
  the run's seed, never the global generator).
- ``engine``: ``simulate(scenario, seed=..., hours=...) -> SimulationResult``: submits the plan
  to the ledger in time order and tallies its decisions (pure, deterministic for a seed).
- ``result``: the result Structs.
- ``report``: the JSON shape, CSV files and rich tables of a result.
- ``plots``: PNG charts (matplotlib, imported lazily).
- ``cli``: ``main(argv)`` for ``exchange simulate``.
"""

from exchange.sim.engine import simulate
from exchange.sim.result import SimulationResult
from exchange.sim.scenario import Scenario, ScenarioError, default_scenario, load_scenario

__all__ = [
    "Scenario",
    "ScenarioError",
    "SimulationResult",
    "default_scenario",
    "load_scenario",
    "simulate",
]
