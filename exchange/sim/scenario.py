"""Scenario files: who the agents are, how they behave hour by hour, and the economy they live in.

This module owns the TOML scenario format (docs/simulation.md) and its validation into frozen
Structs. Parsing is pure (``parse_scenario``); ``load_scenario`` and ``default_scenario`` read
files. It holds no economic rule: the ``[economy]`` table is an ``EconomyConfig`` with exactly the
semantics of ``exchange.core.config.parse_config``, and the ledger applies it.

Behaviour numbers (rates, weights) are floats: they drive a random process, never money. Amounts
of money (limits) stay ``Decimal`` tokens, as on the wire.
"""

import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from exchange.core.config import ConfigError, EconomyConfig, parse_config
from exchange.errors import ExchangeError
from protocols.amounts import to_micro
from protocols.commands import InferenceTokens, LimitsSpec
from protocols.ids import Token
from protocols.swarm import DURATION_MS_MAX
from protocols.units import HOURS_PER_DAY, MS_PER_HOUR, S_PER_HOUR

__all__ = [
    "AgentProfile",
    "Scenario",
    "ScenarioError",
    "SimulationSettings",
    "Task",
    "TaskPlan",
    "default_scenario",
    "default_scenario_text",
    "hour_band",
    "load_scenario",
    "parse_scenario",
    "rates_by_hour",
    "scenario_from_argument",
    "shipped_scenario",
    "shipped_scenarios",
]

# A month of simulated time: far more than any question the simulator answers, and it bounds the
# event plan (agents × hours × rate) so a typo cannot make it run for hours.
hours_max: Final = 31 * HOURS_PER_DAY
# One event a second on average: a rate above this is a typo, not an agent.
events_per_hour_max: Final = float(S_PER_HOUR)
agents_max: Final = 1000
tasks_per_agent_max: Final = 100
messages_per_kind_max: Final = 1000
DEFAULT_SCENARIO_RESOURCE: Final = "default_scenario.toml"
SHIPPED_SCENARIOS_FOLDER: Final = "scenarios"
# 2025-01-01T00:00:00Z: midnight, so the hour index of the day is the hour of the clock.
DEFAULT_START_UNIX_S: Final = 1_735_689_600

Rate = Annotated[float, msgspec.Meta(ge=0, le=events_per_hour_max)]
Weight = Annotated[float, msgspec.Meta(ge=0)]
Regularity = Annotated[float, msgspec.Meta(ge=0.1, le=100)]
HourBands = dict[str, Rate]


class ScenarioError(ExchangeError, ValueError):
    """The scenario is not valid; the message names the bad field (``$.agents[0].tasks``...)."""


def hour_band(key: str) -> range:
    """``"0-4"`` -> hours 0..4 inclusive; ``"7"`` -> hour 7. Raises ``ValueError`` if malformed."""
    first, sep, last = key.partition("-")
    try:
        start = int(first)
        end = int(last) if sep else start
    except ValueError:
        raise ValueError(
            f"hour band {key!r}: expected 'H' or 'H-H' with hours 0-23, e.g. '0-4'"
        ) from None
    if not 0 <= start <= end < HOURS_PER_DAY:
        raise ValueError(f"hour band {key!r}: expected 0 <= first <= last <= 23")
    return range(start, end + 1)


def rates_by_hour(bands: Mapping[str, float]) -> tuple[float, ...]:
    """The 24 hourly rates of a band table; hours no band names get 0.

    Raises ``ValueError`` when a band is malformed or two bands share an hour.
    """
    rates = [0.0] * HOURS_PER_DAY
    owner: dict[int, str] = {}
    for key, rate in bands.items():
        for hour in hour_band(key):
            if hour in owner:
                raise ValueError(f"hour {hour} is in both bands {owner[hour]!r} and {key!r}")
            owner[hour] = key
            rates[hour] = rate
    return tuple(rates)


def _check_bands(name: str, bands: Mapping[str, float]) -> None:
    try:
        rates_by_hour(bands)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _check_weights(name: str, weights: Mapping[str, float]) -> None:
    if not weights or sum(weights.values()) <= 0:
        raise ValueError(f"{name}: expected at least one positive weight")


class Task(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One kind of LLM request: its task type, how often (weight), its size, and optionally a
    model (which overrides the agent's preference, as ``LlmRequest.model`` does)."""

    task_type: Token
    weight: Weight = 1.0
    tokens_min: InferenceTokens
    tokens_max: InferenceTokens
    model: Token | None = None

    def __post_init__(self) -> None:
        if self.tokens_min > self.tokens_max:
            raise ValueError(
                f"expected tokens_min <= tokens_max, got {self.tokens_min} > {self.tokens_max}"
            )


class AgentProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one agent of the economy's roster behaves. Rates are expected events per hour, by
    hour-of-day band; each event's attributes are drawn from the weighted tables."""

    id: str
    strategy: str = ""
    commits_per_hour: HourBands = {}
    projects: dict[str, Weight] = {}
    commit_mix: dict[str, Weight] = {}
    requests_per_hour: HourBands = {}
    tasks: list[Task] = []
    # How steady the agent's cadence is: 1 is a Poisson process (as bursty as chance makes
    # it), larger is steadier (gaps vary less), smaller is burstier. See docs/simulation.md.
    commit_regularity: Regularity = 1.0
    request_regularity: Regularity = 1.0
    issues_per_day: Rate = 0.0
    issue_priorities: dict[str, Weight] = {}
    issue_types: dict[str, Weight] = {}
    limits: LimitsSpec | None = None
    # After a burst refusal, ask again a second later for what fits under the burst limit
    # (the seed's log shows exactly this pair: a burst refusal, then a smaller request).
    retry_on_burst: bool = True
    # After an hourly or daily refusal, wait the ``retry_after_s`` the refusal gives and retry;
    # false drops the request, as seed 1's agents do.
    wait_on_window_limit: bool = False

    def __post_init__(self) -> None:
        _check_bands("commits_per_hour", self.commits_per_hour)
        _check_bands("requests_per_hour", self.requests_per_hour)
        if any(self.commits_per_hour.values()):
            _check_weights("projects", self.projects)
            _check_weights("commit_mix", self.commit_mix)
        if any(self.requests_per_hour.values()):
            if not self.tasks:
                raise ValueError("requests_per_hour: the agent makes requests but has no tasks")
            _check_weights("tasks", {t.task_type: t.weight for t in self.tasks})
        if len(self.tasks) > tasks_per_agent_max:
            raise ValueError(f"tasks: expected at most {tasks_per_agent_max}")
        if self.issues_per_day > 0:
            _check_weights("issue_priorities", self.issue_priorities)
            _check_weights("issue_types", self.issue_types)

    @property
    def commit_rates(self) -> tuple[float, ...]:
        return rates_by_hour(self.commits_per_hour)

    @property
    def request_rates(self) -> tuple[float, ...]:
        return rates_by_hour(self.requests_per_hour)


class SimulationSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    hours: Annotated[int, msgspec.Meta(ge=1, le=hours_max)] = HOURS_PER_DAY
    seed: int = 1
    start_unix_s: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_START_UNIX_S
    # Bands of the hour-of-day table in reports.
    report_bands: list[str] = msgspec.field(
        default_factory=lambda: ["0-4", "5-12", "13-18", "19-23"]
    )
    # Commit authors are ``<agent>@<author_domain>``; the ledger takes the local part.
    author_domain: str = "aygp-dr.ai"

    def __post_init__(self) -> None:
        for band in self.report_bands:
            hour_band(band)


HourOfRun = Annotated[int, msgspec.Meta(ge=0, le=hours_max)]
Hours = Annotated[int, msgspec.Meta(ge=1, le=10 * hours_max)]
credit_plans_max: Final = 1000


class StakePlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An agent stakes ``amount`` tokens at ``at_hour`` for ``lock_hours``; it unstakes as soon
    as the lock is over (``unstake``), and the cooling returns the stake."""

    agent: str
    amount: Decimal
    at_hour: HourOfRun = 0
    lock_hours: Hours = 24
    unstake: bool = True


class LoanPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``lender`` offers ``borrower`` a loan at ``at_hour`` and the borrower accepts it at once.
    Repayment is the exchange's: collected at the due time, recovered from later earnings after
    a default; ``repay_at_hour`` makes the borrower repay all it owes then, if it can."""

    lender: str
    borrower: str
    principal: Decimal
    rate_per_day: Decimal
    term_hours: Hours
    collateral: Decimal = Decimal(0)
    at_hour: HourOfRun = 0
    repay_at_hour: HourOfRun | None = None


class FuturePlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An agent buys a compute future from the exchange at ``at_hour`` (``future.buy``: the
    writer is ``@llm.<model>``, at the model's price then), expiring ``expires_hours`` later."""

    agent: str
    model: str
    tokens: InferenceTokens
    expires_hours: Hours
    at_hour: HourOfRun = 0


# A task's deadline is the market's (``AnnounceTask.deadline_ms``, at most a week), in hours.
TaskDeadlineHours = Annotated[int, msgspec.Meta(ge=1, le=DURATION_MS_MAX // MS_PER_HOUR)]


class TaskPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``manager`` hires ``executor`` through the task market at ``at_hour`` for ``price`` tokens
    (held in escrow), to be done within ``deadline_hours``. ``delivered``: the executor reports
    success at the deadline and the manager accepts it, which releases the escrow (the exchange
    keeps its fee). ``missed``: no result comes, and the exchange's own deadline refunds the
    manager and slashes the executor's stakes (docs/economy.md, Staking)."""

    manager: str
    executor: str
    price: Decimal
    deadline_hours: TaskDeadlineHours
    task_type: Token = "coding"
    at_hour: HourOfRun = 0
    outcome: Literal["delivered", "missed"] = "delivered"

    @property
    def price_micro(self) -> int:
        micro = to_micro(self.price)
        assert isinstance(micro, int), "a scenario's task prices are checked when it is parsed"
        return micro


class CreditSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Staking, lending, futures and hired tasks in the day (docs/simulation.md, Credit). Off by
    default, so the seed's table reproduces unchanged; ``enabled = true`` applies the plans below
    and ticks the exchange every hour, so that its timers (due dates, yields, expiries, task
    deadlines) fire on time."""

    enabled: bool = False
    stakes: Annotated[list[StakePlan], msgspec.Meta(max_length=credit_plans_max)] = []
    loans: Annotated[list[LoanPlan], msgspec.Meta(max_length=credit_plans_max)] = []
    futures: Annotated[list[FuturePlan], msgspec.Meta(max_length=credit_plans_max)] = []
    tasks: Annotated[list[TaskPlan], msgspec.Meta(max_length=credit_plans_max)] = []


class _ScenarioFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The file as written: the economy is still raw TOML data, to be merged and converted."""

    # Another scenario whose keys this one takes where it has none (tables merge key by key):
    # "default" is the shipped seed-1 day, anything else a file relative to this one.
    base: str | None = None
    name: str = "custom"
    description: str = ""
    simulation: SimulationSettings = msgspec.field(default_factory=SimulationSettings)
    economy_file: str | None = None
    economy: dict[str, Any] = {}
    commit_messages: dict[str, list[str]] = {}
    agents: list[AgentProfile] = []
    credit: CreditSettings = msgspec.field(default_factory=CreditSettings)


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    """A validated scenario: every agent is in the economy's roster, every commit kind has
    messages, every named model, priority and issue type is priced by the economy."""

    name: str
    description: str
    simulation: SimulationSettings
    economy: EconomyConfig
    commit_messages: dict[str, list[str]]
    agents: list[AgentProfile]
    credit: CreditSettings = msgspec.field(default_factory=CreditSettings)


def parse_scenario(text: str, *, read_economy_file: Callable[[str], str] | None = None) -> Scenario:
    """Parses scenario TOML. ``read_economy_file`` returns the text of ``economy_file`` (the
    caller decides where relative paths point); without it, ``economy_file`` is an error.

    Raises ``ScenarioError`` naming the bad field.
    """
    try:
        # Decimal, as parse_config does, so prices and limits in [economy] stay exact.
        raw = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario is not valid TOML: {exc}") from exc
    raw = _with_base(raw, read_economy_file)
    try:
        file = msgspec.convert(raw, _ScenarioFile)
    except msgspec.ValidationError as exc:
        raise ScenarioError(str(exc)) from exc
    economy = _economy(file, read_economy_file)
    scenario = Scenario(
        name=file.name,
        description=file.description,
        simulation=file.simulation,
        economy=economy,
        commit_messages=file.commit_messages,
        agents=file.agents,
        credit=file.credit,
    )
    _cross_check(scenario)
    return scenario


def _with_base(raw: dict[str, Any], read: Callable[[str], str] | None) -> dict[str, Any]:
    """``raw`` over its ``base`` scenario's raw data (one level: a base names no base)."""
    name = raw.pop("base", None)
    if name is None:
        return raw
    if not isinstance(name, str):
        raise ScenarioError('base: expected the name of a scenario file, or "default"')
    if name == "default":
        text = default_scenario_text()
    elif read is None:
        raise ScenarioError(
            f'base {name!r}: this scenario was not loaded from a file; use base = "default"'
        )
    else:
        try:
            text = read(name)
        except OSError as exc:
            raise ScenarioError(f"base {name!r}: {exc}") from exc
    try:
        base = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"base {name!r} is not valid TOML: {exc}") from exc
    if "base" in base:
        raise ScenarioError(f"base {name!r} names a base of its own; one level only")
    return _merge(base, raw)


def _economy(file: _ScenarioFile, read: Callable[[str], str] | None) -> EconomyConfig:
    """The economy: ``economy_file`` read exactly as the daemon reads its configuration
    (``parse_config``), or the defaults; then the inline ``[economy]`` table merged over it."""
    base = EconomyConfig()
    if file.economy_file is not None:
        if read is None:
            raise ScenarioError(
                f"economy_file {file.economy_file!r}: this scenario was not loaded from a file, "
                "so a relative path has nothing to be relative to; inline an [economy] table"
            )
        try:
            base = parse_config(read(file.economy_file))
        except OSError as exc:
            raise ScenarioError(f"economy_file {file.economy_file!r}: {exc}") from exc
        except ConfigError as exc:
            raise ScenarioError(f"economy_file {file.economy_file!r}: {exc}") from exc
    if not file.economy:
        return base
    # Merging over the base's plain data lets a scenario change one price or one limit
    # (``[economy.models] claude-opus = 5``) and keep the rest.
    merged = _merge(msgspec.to_builtins(base), file.economy)
    try:
        return msgspec.convert(merged, EconomyConfig)
    except msgspec.ValidationError as exc:
        # msgspec's path starts at the economy table: "$.limits.burst" -> "$.economy.limits...".
        raise ScenarioError(str(exc).replace("`$", "`$.economy", 1)) from exc


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key, maps such as ``models`` included; any other value replaces
    (arrays of tables too: ``[[economy.agents]]`` gives the whole roster)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _cross_check(scenario: Scenario) -> None:
    """What one Struct cannot see alone: references between the behaviour and the economy."""
    economy = scenario.economy
    roster = {spec.id for spec in economy.agents}
    if len(scenario.agents) > agents_max:
        raise ScenarioError(f"agents: expected at most {agents_max}")
    seen: set[str] = set()
    for index, agent in enumerate(scenario.agents):
        where = f"at `$.agents[{index}]`"
        if agent.id not in roster:
            raise ScenarioError(
                f"agent {agent.id!r} is not in the economy's roster ({', '.join(sorted(roster))})"
                f" {where}; add it to [[economy.agents]]"
            )
        if agent.id in seen:
            raise ScenarioError(f"agent {agent.id!r} has two profiles {where}")
        seen.add(agent.id)
        for kind in agent.commit_mix:
            if not scenario.commit_messages.get(kind):
                raise ScenarioError(
                    f"commit_mix kind {kind!r} has no messages in [commit_messages] {where}"
                )
        for task in agent.tasks:
            if task.model is not None and task.model not in economy.models:
                raise ScenarioError(
                    f"task {task.task_type!r} names model {task.model!r}, which the economy does "
                    f"not price ({', '.join(sorted(economy.models))}) {where}"
                )
        for priority in agent.issue_priorities:
            if priority.upper() not in {p.upper() for p in economy.issue_priorities}:
                raise ScenarioError(f"issue priority {priority!r} is not priced {where}")
        for issue_type in agent.issue_types:
            if issue_type.lower() not in economy.issue_types:
                raise ScenarioError(f"issue type {issue_type!r} is not priced {where}")
    _check_credit(scenario, roster)
    for kind, messages in scenario.commit_messages.items():
        if len(messages) > messages_per_kind_max:
            raise ScenarioError(f"commit_messages.{kind}: expected at most {messages_per_kind_max}")


def _check_credit(scenario: Scenario, roster: set[str]) -> None:
    """Names in the credit plans are in the roster and the models priced; amounts and terms are
    the ledger's to refuse (a refused plan shows in the refusals, as any other command). A task
    whose manager is its executor, or whose price is not above 0, is refused here: it is a slip
    in the plan, not an agent's request to show the market refusing, and no price of it could
    pay a fee."""
    credit = scenario.credit
    named = [(f"stakes[{i}]", [p.agent]) for i, p in enumerate(credit.stakes)]
    named += [(f"loans[{i}]", [p.lender, p.borrower]) for i, p in enumerate(credit.loans)]
    named += [(f"futures[{i}]", [p.agent]) for i, p in enumerate(credit.futures)]
    named += [(f"tasks[{i}]", [p.manager, p.executor]) for i, p in enumerate(credit.tasks)]
    for where, agents in named:
        for agent in agents:
            if agent not in roster:
                raise ScenarioError(
                    f"agent {agent!r} is not in the economy's roster at `$.credit.{where}`"
                )
    for index, future in enumerate(credit.futures):
        if future.model not in scenario.economy.models:
            raise ScenarioError(
                f"model {future.model!r} is not priced at `$.credit.futures[{index}]`"
            )
    for index, task in enumerate(credit.tasks):
        where = f"at `$.credit.tasks[{index}]`"
        if task.manager == task.executor:
            raise ScenarioError(f"{task.manager!r} cannot hire itself {where}")
        micro = to_micro(task.price)
        if not isinstance(micro, int) or micro <= 0:
            raise ScenarioError(
                f"price: expected more than 0 tokens, to the micro-token, got {task.price} {where}"
            )


def load_scenario(path: Path) -> Scenario:
    """Reads and parses a scenario file; ``economy_file`` is relative to the scenario's folder.

    Raises ``ScenarioError`` (bad content) or ``OSError`` (unreadable file).
    """
    text = path.read_text(encoding="utf-8")
    folder = path.parent

    def read_economy_file(name: str) -> str:
        return (folder / name).read_text(encoding="utf-8")

    return parse_scenario(text, read_economy_file=read_economy_file)


def default_scenario_text() -> str:
    """The shipped scenario (seed 1's day), for users to copy and change."""
    return (
        resources.files("exchange.sim")
        .joinpath(DEFAULT_SCENARIO_RESOURCE)
        .read_text(encoding="utf-8")
    )


def default_scenario() -> Scenario:
    return parse_scenario(default_scenario_text())


def _shipped_folder() -> Traversable:
    return resources.files("exchange.sim").joinpath(SHIPPED_SCENARIOS_FOLDER)


def shipped_scenarios() -> list[str]:
    """The names of the scenarios shipped in ``exchange/sim/scenarios/`` (``credit``...)."""
    return sorted(
        p.name.removesuffix(".toml")
        for p in _shipped_folder().iterdir()
        if p.name.endswith(".toml")
    )


def shipped_scenario(name: str) -> Scenario:
    """A shipped scenario by name. Raises ``ScenarioError`` for an unknown name."""
    names = shipped_scenarios()
    if name not in names:
        raise ScenarioError(f"no shipped scenario {name!r}; there are {names}")
    text = _shipped_folder().joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return parse_scenario(text)


def scenario_from_argument(value: Path) -> Scenario:
    """``--scenario``: a file, or the name of a shipped scenario when no such file exists."""
    if not value.exists() and str(value) in shipped_scenarios():
        return shipped_scenario(str(value))
    return load_scenario(value)
