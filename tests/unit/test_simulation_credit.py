"""The simulation with staking, lending, futures and hired tasks (docs/simulation.md, Credit): off
by default (the seed's run is untouched), on in the shipped ``credit`` scenario, where its effect
shows in the balances, the credit tables, the JSON, credit.csv, tasks.csv and credit.png. The
tasks' fees, yields and slashes: test_sim_tasks.py."""

import json
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from exchange.sim import cli
from exchange.sim.engine import Simulator, simulate
from exchange.sim.report import CREDIT_CSV_FILE, encode_json, to_report, write_files
from exchange.sim.result import SimulationResult
from exchange.sim.scenario import (
    ScenarioError,
    default_scenario,
    default_scenario_text,
    parse_scenario,
    shipped_scenario,
    shipped_scenarios,
)


@pytest.fixture(scope="module")
def credit_run() -> SimulationResult:
    return simulate(shipped_scenario("credit"))


def tokens(micro: int) -> Decimal:
    return Decimal(micro) / 1_000_000


def test_credit_is_off_by_default_and_the_days_json_has_no_credit() -> None:
    scenario = default_scenario()
    assert not scenario.credit.enabled and scenario.credit.loans  # plans ready, switched off
    result = simulate(scenario, hours=6)
    assert result.credit == []
    assert "credit" not in json.loads(encode_json(to_report(result)))


def test_the_credit_scenario_is_the_default_day_with_credit_on() -> None:
    """The default day, credit switched on, and stakers paid every 6 hours instead of every day
    (else the first payout would fall at the end of the 24-hour run, outside it)."""
    assert "credit" in shipped_scenarios()
    shipped = shipped_scenario("credit")
    default = default_scenario()
    assert shipped.economy.staking.yield_period_s == 6 * 3600
    assert default.economy.staking.yield_period_s == 86_400  # the default scenario is untouched
    switched = parse_scenario(
        default_scenario_text().replace("[credit]\nenabled = false", "[credit]\nenabled = true")
        + "\n[economy.staking]\nyield_period_s = 21600\n"
    )
    assert shipped.credit == switched.credit and shipped.credit.enabled
    assert shipped.agents == switched.agents and shipped.economy == switched.economy
    assert shipped.economy == msgspec.structs.replace(
        default.economy,
        staking=msgspec.structs.replace(default.economy.staking, yield_period_s=21600),
    )
    a, b = simulate(shipped, hours=8), simulate(switched, hours=8)
    assert (a.digest, a.agents, a.credit) == (b.digest, b.agents, b.credit)


def test_the_credit_scenario_shows_stakes_a_repaid_loan_and_a_default(
    credit_run: SimulationResult,
) -> None:
    credit = {row.agent: row for row in credit_run.credit}
    # builder lent claude 2,000 at 2% a day for 12 hours: 20 of interest, collected when due.
    assert tokens(credit["claude"].borrowed_micro) == 2000
    assert tokens(credit["claude"].repaid_micro) == 2020
    assert tokens(credit["builder"].received_micro) == 2020
    # zero borrowed 3,000 to stake 12,000, could not pay at the due time, and defaulted.
    zero = credit["zero"]
    assert zero.defaults == 1 and zero.owed_micro > 0
    assert tokens(zero.staked_micro + zero.slashed_micro) == 12_000  # less its missed task's slash
    assert credit["lambda"].lent_out_micro == zero.owed_micro
    assert zero.repaid_micro + zero.owed_micro == 3_037_500_000  # 3,000 + 5% a day for 6 h
    # Staked tokens are out of the balance: observer's stake is still locked at the end. Its
    # balance has the stake's yield, and lost the whole price of the task it hired (fee included).
    balances = {a.agent: a for a in credit_run.agents}
    assert tokens(credit["observer"].staked_micro) == 2000
    observer = balances["observer"]
    hired = [t for t in credit_run.tasks if t.manager == "observer"]
    assert [t.state for t in hired] == ["completed"]
    assert observer.final_micro == (
        observer.start_micro
        + observer.earned_micro
        - observer.spent_micro
        - 2_000_000_000
        + credit["observer"].yield_micro
        - hired[0].price_micro
    )


def test_the_credit_run_conserves_and_is_deterministic() -> None:
    sim = Simulator(shipped_scenario("credit"), hours=12)
    first = sim.run()
    sim.exchange.check_invariants()
    again = simulate(shipped_scenario("credit"), hours=12)
    assert encode_json(to_report(first)) == encode_json(to_report(again))


def test_credit_goes_to_json_csv_and_tables(
    credit_run: SimulationResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(encode_json(to_report(credit_run)))
    assert data["credit"]["zero"]["defaults"] == 1
    assert data["credit"]["claude"]["repaid"] == "2020"
    written = write_files(credit_run, tmp_path)
    assert tmp_path / CREDIT_CSV_FILE in written
    rows = (tmp_path / CREDIT_CSV_FILE).read_text().splitlines()
    assert rows[0].startswith("agent,staked,yield,slashed,borrowed")
    assert len(rows) == 1 + len(credit_run.agents)
    assert cli.main(["--scenario", "credit", "--hours", "12"]) == 0
    out = capsys.readouterr().out
    for title in ("Credit: staking", "Credit: lending and futures", "Credit: hired tasks"):
        assert title in out


def test_bad_credit_plans_are_refused_naming_the_field() -> None:
    text = default_scenario_text().replace('lender = "lambda"', 'lender = "nobody"')
    with pytest.raises(ScenarioError, match=r"nobody.*\$\.credit\.loans\[0\]"):
        parse_scenario(text)
    text = default_scenario_text().replace(
        'model = "claude-opus"\ntokens = 50000', 'model = "gpt-9"\ntokens = 50000'
    )
    with pytest.raises(ScenarioError, match=r"gpt-9.*\$\.credit\.futures\[0\]"):
        parse_scenario(text)
    with pytest.raises(ScenarioError, match="base"):
        parse_scenario('base = "elsewhere.toml"\n')
