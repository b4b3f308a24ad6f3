"""Seed 2's exact Shapley algorithm, copied faithfully, for comparison in bench/shapley.py only.

Nothing in the exchange imports this. The only changes from the seed are type annotations and
``seed_shapley_values``, a loop that calls the seed's per-agent function for every agent.
"""

from collections.abc import Callable
from itertools import combinations

AgentId = str
Coalition = frozenset[AgentId]


def shapley_value(
    agent: AgentId,
    all_agents: list[AgentId],
    value_fn: Callable[[Coalition], float],
) -> float:
    """
    Compute Shapley value for an agent — its fair share of coalition value.
    This is the average marginal contribution across all possible orderings.
    O(2^n) complexity — use sampling approximation for n > 15.
    """
    n = len(all_agents)
    others = [a for a in all_agents if a != agent]
    total_marginal = 0.0
    for r in range(len(others) + 1):
        for subset in combinations(others, r):
            coalition_with = frozenset(subset) | {agent}
            coalition_without = frozenset(subset)
            marginal = value_fn(coalition_with) - value_fn(coalition_without)
            weight = _factorial(r) * _factorial(n - r - 1) / _factorial(n)
            total_marginal += weight * marginal
    return total_marginal


def _factorial(n: int) -> int:
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result


def seed_shapley_values(
    all_agents: list[AgentId], value_fn: Callable[[Coalition], float]
) -> list[float]:
    """Every agent's value, the way a caller of the seed would get them: one call per agent."""
    return [shapley_value(agent, all_agents, value_fn) for agent in all_agents]
