"""The roles a worker can play, one module each, and the registry the CLI reads.

Each module keeps its decisions in pure classes and functions (tested without NATS) and a small
worker class whose ``setup`` subscribes and starts loops through ``runtime.WorkerContext``.
"""

from typing import Final

from agents.roles import analyst, executor, oracle, risk, scout, treasury
from agents.roles.base import BuiltRole, RoleSpec

ROLES: Final[dict[str, RoleSpec]] = {
    spec.name: spec
    for spec in (
        oracle.ROLE,
        scout.ROLE,
        treasury.ROLE,
        treasury.ARBITER_ROLE,
        executor.ROLE,
        risk.ROLE,
        analyst.ROLE,
    )
}

__all__ = ["ROLES", "BuiltRole", "RoleSpec"]
