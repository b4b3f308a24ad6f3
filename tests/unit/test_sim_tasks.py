"""Hired tasks in the simulated day (docs/simulation.md, Credit): ``[[credit.tasks]]`` plans go
through the real task market, so the shipped ``credit`` scenario collects escrow fees, pays the
stakers their yield from them and slashes the executor of a missed task, all by the ledger's own
rules. Expectations are computed from the plans and the economy's settings, not copied from a
run's output."""

import json
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from exchange.core.accounts import FEES
from exchange.core.config import EconomyConfig
from exchange.sim.credit import credit_events, task_bid_window_ms
from exchange.sim.engine import Simulator
from exchange.sim.report import TASKS_CSV_FILE, encode_json, to_report, write_files
from exchange.sim.result import SimulationResult
from exchange.sim.scenario import (
    CreditSettings,
    Scenario,
    ScenarioError,
    StakePlan,
    TaskPlan,
    default_scenario,
    default_scenario_text,
    parse_scenario,
    shipped_scenario,
)
from protocols import commands as c
from protocols import swarm as s
from protocols.ids import EXCHANGE
from protocols.units import NS_PER_HOUR, NS_PER_MS, S_PER_HOUR

START_NS = 1_735_689_600 * 1_000_000_000


@pytest.fixture(scope="module")
def credit_day() -> tuple[Simulator, SimulationResult]:
    """The shipped credit scenario's day: the simulator (its exchange stays readable) and its
    result."""
    sim = Simulator(shipped_scenario("credit"))
    return sim, sim.run()


def micro(tokens: Decimal) -> int:
    return int(tokens * 1_000_000)


def scale(micro: int, share: Decimal) -> int:
    """micro × share, rounded half-even to the micro-token (docs/economy.md, Money)."""
    return int((Decimal(micro) * share).to_integral_value(rounding=ROUND_HALF_EVEN))


def delivered(scenario: Scenario) -> list[TaskPlan]:
    return [t for t in scenario.credit.tasks if t.outcome == "delivered"]


def missed(scenario: Scenario) -> list[TaskPlan]:
    return [t for t in scenario.credit.tasks if t.outcome == "missed"]


def stakes_in_force(scenario: Scenario, agent: str, hour: int) -> list[StakePlan]:
    """The agent's planned stakes made by ``hour`` and not yet given back (locked or cooling)."""
    cooling_hours = scenario.economy.staking.cooling_s / S_PER_HOUR
    return [
        p
        for p in scenario.credit.stakes
        if p.agent == agent
        and p.at_hour <= hour
        and (not p.unstake or hour < p.at_hour + p.lock_hours + cooling_hours)
    ]


# --- the shipped credit scenario ----------------------------------------------------------------


def test_the_credit_scenario_plans_delivered_tasks_and_a_missed_one_by_a_staker() -> None:
    scenario = shipped_scenario("credit")
    assert len(delivered(scenario)) >= 3
    [late] = missed(scenario)
    assert stakes_in_force(scenario, late.executor, late.at_hour), "a staker misses the task"
    # The first payout falls inside the day only because the scenario shortens the period.
    first_stake_hour = min(p.at_hour for p in scenario.credit.stakes)
    period_hours = scenario.economy.staking.yield_period_s / S_PER_HOUR
    assert first_stake_hour + period_hours < scenario.simulation.hours
    default_period_hours = EconomyConfig().staking.yield_period_s / S_PER_HOUR
    assert first_stake_hour + default_period_hours >= scenario.simulation.hours


def test_delivered_tasks_pay_the_executor_99_percent_and_fees_1_percent(
    credit_day: tuple[Simulator, SimulationResult],
) -> None:
    credit_sim, credit_run = credit_day
    scenario = credit_sim.scenario
    fee_rate = scenario.economy.escrow.fee_rate
    rows = [t for t in credit_run.tasks if t.planned == "delivered"]
    assert [(t.manager, t.executor) for t in rows] == [
        (p.manager, p.executor) for p in delivered(scenario)
    ]
    for row, plan in zip(rows, delivered(scenario), strict=True):
        assert row.state == "completed"
        assert row.price_micro == plan.price_micro
        assert row.fee_micro == scale(plan.price_micro, fee_rate) > 0
        assert row.paid_micro == plan.price_micro - row.fee_micro
        assert row.refunded_micro == row.slashed_micro == 0
    fees_micro = sum(scale(p.price_micro, fee_rate) for p in delivered(scenario))
    assert sum(t.fee_micro for t in credit_run.tasks) == fees_micro
    # The ledger agrees: what @fees took in is what it holds plus what it paid out as yield.
    ledger = credit_sim.exchange
    assert ledger.ledger.book.balance(FEES) + ledger.staking.yield_paid_micro == fees_micro


def test_stakers_are_paid_a_yield_from_the_fees_of_each_period(
    credit_day: tuple[Simulator, SimulationResult],
) -> None:
    """Every period from the first stake, the stakers share floor(yield_share × the period's fee
    income), each share rounded down: the total is the pools' sum less under a micro-token per
    staker and payout."""
    credit_sim, credit_run = credit_day
    scenario = credit_sim.scenario
    staking = scenario.economy.staking
    fee_rate = scenario.economy.escrow.fee_rate
    first_ns = min(p.at_hour for p in scenario.credit.stakes) * NS_PER_HOUR
    period_ns = staking.yield_period_s * 1_000_000_000
    run_ns = scenario.simulation.hours * NS_PER_HOUR
    payouts_ns = range(first_ns + period_ns, run_ns, period_ns)
    assert len(payouts_ns) >= 2
    pool_micro = 0
    for end_ns in payouts_ns:
        # A delivered task's fee is taken when the manager verifies, a millisecond after the
        # executor's result at the deadline.
        income = sum(
            scale(p.price_micro, fee_rate)
            for p in delivered(scenario)
            if end_ns - period_ns
            <= (p.at_hour + p.deadline_hours) * NS_PER_HOUR + NS_PER_MS
            < end_ns
        )
        pool_micro += int(Fraction(income) * Fraction(staking.yield_share))
    stakers = {p.agent for p in scenario.credit.stakes}
    credit = {row.agent: row for row in credit_run.credit}
    paid = sum(credit[agent].yield_micro for agent in stakers)
    assert pool_micro > 0
    assert pool_micro - len(stakers) * len(payouts_ns) < paid <= pool_micro
    assert paid == credit_sim.exchange.staking.yield_paid_micro
    assert all(credit[agent].yield_micro > 0 for agent in stakers)
    assert all(row.yield_micro == 0 for row in credit_run.credit if row.agent not in stakers)


def test_a_missed_task_slashes_a_tenth_of_each_executor_stake_to_the_manager(
    credit_day: tuple[Simulator, SimulationResult],
) -> None:
    credit_sim, credit_run = credit_day
    scenario = credit_sim.scenario
    share = scenario.economy.staking.slash_share
    [plan] = missed(scenario)
    stakes = stakes_in_force(scenario, plan.executor, plan.at_hour + plan.deadline_hours)
    expected = sum(scale(micro(p.amount), share) for p in stakes)
    assert expected > 0
    [row] = [t for t in credit_run.tasks if t.planned == "missed"]
    assert (row.manager, row.executor, row.state) == (plan.manager, plan.executor, "expired")
    assert row.slashed_micro == expected
    assert row.refunded_micro == plan.price_micro and row.paid_micro == row.fee_micro == 0
    credit = {r.agent: r for r in credit_run.credit}
    assert credit[plan.executor].slashed_micro == expected
    assert credit[plan.manager].slash_received_micro == expected
    planned_micro = sum(micro(p.amount) for p in stakes)
    assert credit[plan.executor].staked_micro == planned_micro - expected
    assert sum(r.slashed_micro for r in credit_run.credit) == expected  # nobody else
    assert credit_sim.exchange.staking.slashed_micro == expected


def test_the_credit_run_keeps_the_ledgers_invariants(
    credit_day: tuple[Simulator, SimulationResult],
) -> None:
    exchange = credit_day[0].exchange
    exchange.check_invariants()  # conservation, no negative balance, holds, stakes, loans
    # Every task ended by the market's rules, and no escrow of theirs still holds tokens.
    assert {t.state for t in exchange.market.tasks.values()} == {"completed", "expired"}
    assert all(e.state in ("released", "refunded") for e in exchange.escrows.by_id.values())


def test_tasks_go_to_json_and_tasks_csv(
    credit_day: tuple[Simulator, SimulationResult], tmp_path: Path
) -> None:
    credit_run = credit_day[1]
    data = json.loads(encode_json(to_report(credit_run)))
    assert [t["state"] for t in data["tasks"]] == [t.state for t in credit_run.tasks]
    assert data["credit"]["zero"]["slashed"] == data["tasks"][-1]["slashed"] != "0"
    write_files(credit_run, tmp_path)
    lines = (tmp_path / TASKS_CSV_FILE).read_text().splitlines()
    assert lines[0] == (
        "task_id,manager,executor,task_type,planned,state,price,paid,fee,refunded,slashed"
    )
    assert len(lines) == 1 + len(credit_run.tasks)


# --- the commands a task plan sends -------------------------------------------------------------


def _events(task: TaskPlan) -> list[tuple[int, str, str, object]]:
    credit = CreditSettings(enabled=True, tasks=[task])
    return [
        (at_ns - START_NS, action.sender, action.verb, action.command)
        for at_ns, action in credit_events(credit, start_ns=START_NS, hours=24)
        if action.verb != "tick" or not action.command.request_id.startswith("tick-")
    ]


def test_a_delivered_task_is_announced_bid_awarded_reported_and_verified() -> None:
    plan = TaskPlan(
        manager="spark", executor="builder", price=Decimal(6000), at_hour=2, deadline_hours=3
    )
    events = _events(plan)
    at, done = 2 * NS_PER_HOUR, 5 * NS_PER_HOUR
    assert [(t, who, verb) for t, who, verb, _ in events] == [
        (at, "spark", "task.announce"),
        (at + NS_PER_MS, "builder", "task.propose"),
        (at + task_bid_window_ms * NS_PER_MS, EXCHANGE, "tick"),
        (done, "builder", "task.report"),
        (done + NS_PER_MS, "spark", "task.verify"),
    ]
    announce, bid, _, report, verify = (command for *_, command in events)
    assert isinstance(announce, s.AnnounceTask)
    assert announce.max_cost == 6000 and announce.deadline_ms == 3 * 3_600_000
    assert isinstance(bid, s.SubmitBid) and bid.task_id == "?task-0" and bid.bid.cost == 6000
    assert isinstance(report, s.SubmitResult) and report.success
    assert isinstance(verify, s.VerifyTask) and verify.score >= 0.7


def test_a_missed_task_sends_no_result_and_leaves_the_deadline_to_the_exchange() -> None:
    plan = TaskPlan(
        manager="lambda",
        executor="zero",
        price=Decimal(3000),
        at_hour=13,
        deadline_hours=2,
        outcome="missed",
    )
    verbs = [verb for _, _, verb, _ in _events(plan)]
    assert verbs == ["task.announce", "task.propose", "tick"]
    ticks = [
        action.command
        for _, action in credit_events(
            CreditSettings(enabled=True, tasks=[plan]), start_ns=START_NS, hours=24
        )
        if isinstance(action.command, c.Tick)
    ]
    assert len(ticks) == 24 + 1  # the hourly ticks fire the result deadline; one awards


def test_credit_off_runs_the_same_with_or_without_task_plans() -> None:
    """The default day does not depend on its (switched-off) credit plans."""
    scenario = default_scenario()
    assert scenario.credit.tasks and not scenario.credit.enabled
    bare = Scenario(
        name=scenario.name,
        description=scenario.description,
        simulation=scenario.simulation,
        economy=scenario.economy,
        commit_messages=scenario.commit_messages,
        agents=scenario.agents,
    )
    with_plans, without = Simulator(scenario).run(), Simulator(bare).run()
    assert with_plans.tasks == [] and with_plans.credit == []
    assert encode_json(to_report(with_plans)) == encode_json(to_report(without))


# --- validation ---------------------------------------------------------------------------------

FIRST_TASK = 'manager = "spark"\nexecutor = "builder"\ntask_type = "coding"\nprice = 6000\n'


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        (FIRST_TASK.replace('"spark"', '"nobody"'), r"nobody.*\$\.credit\.tasks\[0\]"),
        (FIRST_TASK.replace('"builder"', '"nobody"'), r"nobody.*\$\.credit\.tasks\[0\]"),
        (FIRST_TASK.replace('"builder"', '"spark"'), r"hire itself.*\$\.credit\.tasks\[0\]"),
        (FIRST_TASK.replace("6000", "0"), r"price.*\$\.credit\.tasks\[0\]"),
        (FIRST_TASK.replace("6000", "-5"), r"price.*\$\.credit\.tasks\[0\]"),
        (FIRST_TASK.replace("6000", "0.0000001"), r"price.*\$\.credit\.tasks\[0\]"),
        (FIRST_TASK + 'outcome = "late"\n', r"\$\.credit\.tasks\[0\]\.outcome"),
        (FIRST_TASK + "colour = 1\n", r"colour.*\$\.credit\.tasks\[0\]"),
    ],
)
def test_bad_task_plans_are_refused_naming_the_field(replacement: str, message: str) -> None:
    text = default_scenario_text()
    assert FIRST_TASK in text
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text.replace(FIRST_TASK, replacement, 1))


@pytest.mark.parametrize("hours", [0, 7 * 24 + 1])
def test_a_task_deadline_is_within_the_markets_bounds(hours: int) -> None:
    text = default_scenario_text().replace(
        FIRST_TASK + "at_hour = 2\ndeadline_hours = 3\n",
        FIRST_TASK + f"at_hour = 2\ndeadline_hours = {hours}\n",
    )
    with pytest.raises(ScenarioError, match=r"\$\.credit\.tasks\[0\]\.deadline_hours"):
        parse_scenario(text)


def test_a_task_the_manager_cannot_pay_for_is_refused_by_the_ledger_and_goes_no_further() -> None:
    """The plan is a request like any other: the market refuses an announcement whose price the
    manager's balance cannot hold, and the engine sends no bid, report or verify after it."""
    text = default_scenario_text().replace("[credit]\nenabled = false", "[credit]\nenabled = true")
    text = text.replace(FIRST_TASK, FIRST_TASK.replace("6000", "60000"), 1)
    result = Simulator(parse_scenario(text), hours=6).run()
    first = result.tasks[0]
    assert (first.task_id, first.state, first.paid_micro, first.fee_micro) == ("", "", 0, 0)
    refused = [(r.agent, r.verb) for r in result.refusals if r.verb.startswith("task.")]
    assert refused == [("spark", "task.announce")]
