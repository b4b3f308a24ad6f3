"""The result of a simulated run: frozen Structs of plain integers (micro-tokens, counts).

Only data here; ``engine`` fills it from the ledger and ``report`` shows it.
"""

import msgspec

__all__ = [
    "AgentOutcome",
    "CreditOutcome",
    "HourStats",
    "Metric",
    "ModelUsage",
    "RefusalRecord",
    "SimulationResult",
    "TaskOutcome",
]


class AgentOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One agent's day. ``earned`` is what ``@mint`` paid it (commit and issue rewards) and, with
    credit on, what the tasks it was hired for paid it (as the ledger counts earnings); ``spent``
    what it paid for inference; the opening balance is in ``start``, not in ``earned``."""

    agent: str
    strategy: str
    start_micro: int
    earned_micro: int
    spent_micro: int
    final_micro: int
    commits: int
    issues: int
    requests: int
    refused: int

    @property
    def net_micro(self) -> int:
        return self.final_micro - self.start_micro


class ModelUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Paid inference of one agent on one model."""

    agent: str
    model: str
    requests: int
    tokens: int
    spent_micro: int


class HourStats(msgspec.Struct, frozen=True, kw_only=True):
    """One simulated hour. Commits, issues and requests count what agents submitted; refusals
    count what the ledger refused of it."""

    hour: int
    hour_of_day: int
    commits: int
    issues: int
    requests: int
    refusals: int
    refusals_by_code: dict[str, int]
    earned_micro: int
    spent_micro: int


class RefusalRecord(msgspec.Struct, frozen=True, kw_only=True):
    offset_ms: int
    agent: str
    verb: str
    code: str
    line: str


class Metric(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    value: float | None
    target: str | None = None
    warning: str | None = None
    status: str | None = None


class CreditOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One agent's credit over the run, in micro-tokens. ``staked``, ``owed`` and ``lent_out``
    are at the end; the others are totals of the run."""

    agent: str
    staked_micro: int
    yield_micro: int
    slashed_micro: int
    borrowed_micro: int
    repaid_micro: int
    lent_micro: int
    received_micro: int
    collateral_lost_micro: int
    owed_micro: int
    lent_out_micro: int
    defaults: int
    futures_net_micro: int
    # What it was paid from the stakes of executors that failed its tasks (as their manager).
    slash_received_micro: int = 0


class TaskOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One hired task of the credit plans, as the market ended it, in micro-tokens. ``state`` is
    the ledger's (``completed``, ``expired``, ... or ``awarded`` if the run ended first), empty
    with no ``task_id`` when the ledger refused the announcement. ``paid`` went to the executor,
    ``fee`` to ``@fees``, ``refunded`` back to the manager, ``slashed`` from the executor's stakes
    to the manager."""

    task_id: str
    manager: str
    executor: str
    task_type: str
    planned: str
    state: str
    price_micro: int
    paid_micro: int
    fee_micro: int
    refunded_micro: int
    slashed_micro: int


class SimulationResult(msgspec.Struct, frozen=True, kw_only=True):
    scenario: str
    seed: int
    hours: int
    start_unix_s: int
    report_bands: list[str]
    commands_applied: int
    digest: str
    agents: list[AgentOutcome]
    models: list[ModelUsage]
    hourly: list[HourStats]
    refusals: list[RefusalRecord]
    # Agent -> (offset_ms, balance_micro) after each change, starting with the opening balance.
    timeline: dict[str, list[tuple[int, int]]]
    metrics: list[Metric]
    # One row per roster agent when the scenario's credit is enabled; empty otherwise.
    credit: list[CreditOutcome] = []
    # One row per planned task when the scenario's credit is enabled; empty otherwise.
    tasks: list[TaskOutcome] = []
