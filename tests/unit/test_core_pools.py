"""Team pools (seed 1): create, join, contribute, spend with pro-rata credit, close with pro-rata
refunds and the rounding remainder in ``@rounding``; one example for every pool refusal."""

import json
from decimal import Decimal
from typing import Any

import pytest
from core_support import D, Harness, tokens_for_cost

from exchange.core.config import EconomyConfig
from protocols import commands as c
from protocols import queries as q
from protocols.errors import ErrorCode
from protocols.ids import ADMIN

# gemini-pro costs 2 per 1,000 tokens: 50,000 tokens cost exactly 100.
GEMINI_100 = tokens_for_cost(D(2), D(100))
HUNDRED = D(100)


def new_pool(
    h: Harness, creator: str = "claude", minimum: Decimal = HUNDRED, **fields: object
) -> str:
    result = h.ok(creator, c.PoolCreate, name="team", min_contribution=minimum, **fields)
    pool_id: str = result["pool_id"]
    return pool_id


def pool(h: Harness, pool_id: str) -> dict[str, Any]:
    return h.query(q.PoolQuery(pool_id=pool_id))


def test_create_a_pool() -> None:
    h = Harness()
    result = h.ok("claude", c.PoolCreate, name="team", min_contribution=D(100), target=D(1000))
    # Seed 2 adds fields to this result; seed 1's must be exactly these.
    expected = {
        "pool_id": "pool-1",
        "name": "team",
        "creator": "claude",
        "min_contribution": "100",
        "target": "1000",
        "funded": False,
        "closed": False,
        "balance": "0",
        "contributed": "0",
        "spent": "0",
        "members": ["claude"],
        "contributions": {},
        "credits": {},
        "refunds": {},
    }
    assert {key: result[key] for key in expected} == expected


def test_a_600_400_pool_spending_100_credits_60_and_40() -> None:
    assert GEMINI_100 == 50_000
    h = Harness()
    pool_id = new_pool(h, "claude", target=D(1000))
    h.ok("lambda", c.PoolJoin, pool_id=pool_id)
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(600))
    funded = h.ok("lambda", c.PoolContribute, pool_id=pool_id, amount=D(400))
    assert (funded["funded"], funded["balance"]) == (True, "1000")
    assert (h.balance("claude"), h.balance("lambda")) == (D(9400), D(9600))
    outcome = h.send("lambda", c.PoolSpend, pool_id=pool_id, model="gemini-pro", tokens=GEMINI_100)
    assert outcome.ok
    assert [(p.debit, p.credit, p.amount_micro) for p in outcome.postings] == [
        ("@pool.pool-1", "@llm.gemini-pro", 100_000_000)
    ]
    state = pool(h, pool_id)
    assert state["credits"] == {"claude": "60", "lambda": "40"}
    assert (state["balance"], state["spent"], state["contributed"]) == ("900", "100", "1000")
    # Pool spends come from the pool, not from the members.
    assert (h.balance("claude"), h.balance("lambda")) == (D(9400), D(9600))
    assert h.limits("lambda")["hourly_used"] == "0"


def test_credit_follows_contributions_at_the_moment_of_each_spend() -> None:
    h = Harness()
    pool_id = new_pool(h, "claude")
    h.ok("lambda", c.PoolJoin, pool_id=pool_id)
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(600))
    h.ok("claude", c.PoolSpend, pool_id=pool_id, model="gemini-pro", tokens=GEMINI_100)
    h.ok("lambda", c.PoolContribute, pool_id=pool_id, amount=D(400))
    h.ok("claude", c.PoolSpend, pool_id=pool_id, model="gemini-pro", tokens=GEMINI_100)
    assert pool(h, pool_id)["credits"] == {"claude": "160", "lambda": "40"}


def test_credit_splits_exactly_and_a_rounding_remainder_goes_to_the_largest() -> None:
    h = Harness()
    pool_id = new_pool(h, "claude", minimum=D(1))
    for agent, amount in (("claude", 1), ("lambda", 1), ("spark", 2)):
        if agent != "claude":
            h.ok(agent, c.PoolJoin, pool_id=pool_id)
        h.ok(agent, c.PoolContribute, pool_id=pool_id, amount=D(amount))
    # One llama3.2 token costs 100 µ: 1:1:2 splits it exactly into 25, 25 and 50.
    h.ok("claude", c.PoolSpend, pool_id=pool_id, model="llama3.2", tokens=1)
    credits = pool(h, pool_id)["credits"]
    assert credits == {"claude": "0.000025", "lambda": "0.000025", "spark": "0.00005"}

    h = three_equal_contributors(Harness(), order=("lambda", "spark", "claude"))
    # 100 µ over three equal contributors is 33 each and 1 left over, which goes to the first
    # of the equal largest (lambda contributed first). Credit is a tally: nothing is posted.
    outcome = h.send("claude", c.PoolSpend, pool_id="pool-1", model="llama3.2", tokens=1)
    assert [p.kind for p in outcome.postings] == ["pool.spend"]
    credits = pool(h, "pool-1")["credits"]
    assert credits == {"lambda": "0.000034", "spark": "0.000033", "claude": "0.000033"}


def test_close_refunds_pro_rata() -> None:
    h = Harness()
    pool_id = new_pool(h, "claude")
    h.ok("lambda", c.PoolJoin, pool_id=pool_id)
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(600))
    h.ok("lambda", c.PoolContribute, pool_id=pool_id, amount=D(400))
    h.ok("lambda", c.PoolSpend, pool_id=pool_id, model="gemini-pro", tokens=GEMINI_100)
    closed = h.ok("claude", c.PoolClose, pool_id=pool_id)
    assert closed["refunds"] == {"claude": "540", "lambda": "360"}
    assert (closed["closed"], closed["balance"]) == (True, "0")
    assert (h.balance("claude"), h.balance("lambda")) == (D(9940), D(9960))
    assert h.account("@rounding") == 0
    h.ex.check_invariants()


def test_close_puts_a_positive_rounding_remainder_in_rounding() -> None:
    h = three_equal_contributors(Harness())
    pool_id = "pool-1"
    # 3 tokens in, 200 µ spent: 2,999,800 µ over three is 999,933.33 each; 1 µ is left over.
    h.ok("claude", c.PoolSpend, pool_id=pool_id, model="llama3.2", tokens=2)
    outcome = h.send("claude", c.PoolClose, pool_id=pool_id)
    assert outcome.ok
    rounding = [p for p in outcome.postings if p.kind == "rounding"]
    assert [(p.debit, p.credit, p.amount_micro) for p in rounding] == [
        ("@pool.pool-1", "@rounding", 1)
    ]
    refunds = [p.amount_micro for p in outcome.postings if p.kind == "pool.refund"]
    assert refunds == [999_933] * 3
    assert h.account("@rounding") == D("0.000001")
    assert h.account("@pool.pool-1") == 0
    h.ex.check_invariants()


def test_close_takes_a_negative_rounding_remainder_from_rounding() -> None:
    h = three_equal_contributors(Harness())
    pool_id = "pool-1"
    # 2,999,900 µ over three is 999,966.67: half-even rounds each up, 1 µ short.
    h.ok("claude", c.PoolSpend, pool_id=pool_id, model="llama3.2", tokens=1)
    outcome = h.send("claude", c.PoolClose, pool_id=pool_id)
    rounding = [p for p in outcome.postings if p.kind == "rounding"]
    assert [(p.debit, p.credit, p.amount_micro) for p in rounding] == [
        ("@rounding", "@pool.pool-1", 1)
    ]
    assert [p.amount_micro for p in outcome.postings if p.kind == "pool.refund"] == [999_967] * 3
    assert h.account("@rounding") == D("-0.000001")
    h.ex.check_invariants()


def three_equal_contributors(
    h: Harness, order: tuple[str, ...] = ("claude", "lambda", "spark")
) -> Harness:
    """pool-1, created by claude, with 1 token from each of three agents in ``order``."""
    pool_id = new_pool(h, "claude", minimum=D(1))
    assert pool_id == "pool-1"
    for agent in ("lambda", "spark"):
        h.ok(agent, c.PoolJoin, pool_id=pool_id)
    for agent in order:
        h.ok(agent, c.PoolContribute, pool_id=pool_id, amount=D(1))
    return h


def test_close_an_empty_pool() -> None:
    h = Harness()
    pool_id = new_pool(h)
    outcome = h.send("claude", c.PoolClose, pool_id=pool_id)
    assert outcome.ok
    assert outcome.postings == ()


def test_the_operator_may_close_and_spend_from_any_pool() -> None:
    h = Harness()
    pool_id = new_pool(h)
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(100))
    h.ok(ADMIN, c.PoolSpend, pool_id=pool_id, model="gemini-pro", tokens=1000)
    assert h.ok(ADMIN, c.PoolClose, pool_id=pool_id)["refunds"] == {"claude": "98"}


def test_below_min_contribution() -> None:
    h = Harness()
    pool_id = new_pool(h, minimum=D(100))
    error = h.refused(
        "claude",
        c.PoolContribute,
        ErrorCode.below_min_contribution,
        pool_id=pool_id,
        amount=D("99.999999"),
    )
    assert (error["limit"], error["requested"]) == ("100", "99.999999")
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(100))


def test_contributions_keep_the_reserve() -> None:
    h = Harness()
    pool_id = new_pool(h)
    h.refused(
        "claude",
        c.PoolContribute,
        ErrorCode.reserve_would_be_breached,
        pool_id=pool_id,
        amount=D("9500.000001"),
    )
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(9500))


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (D(0), ErrorCode.amount_must_be_positive),
        (D("0.0000001"), ErrorCode.too_many_decimals),
        (D("NaN"), ErrorCode.amount_not_finite),
        (D("1E+13"), ErrorCode.amount_too_large),
    ],
)
def test_pool_amount_refusals(amount: Decimal, code: ErrorCode) -> None:
    h = Harness()
    error = h.refused("claude", c.PoolCreate, code, name="team", min_contribution=amount)
    assert error["path"] == "$.min_contribution"
    error = h.refused("claude", c.PoolCreate, code, name="t", min_contribution=D(1), target=amount)
    assert error["path"] == "$.target"
    pool_id = new_pool(h)
    error = h.refused("claude", c.PoolContribute, code, pool_id=pool_id, amount=amount)
    assert error["path"] == "$.amount"


def test_not_pool_member() -> None:
    h = Harness()
    pool_id = new_pool(h)
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(100))
    h.refused("zero", c.PoolContribute, ErrorCode.not_pool_member, pool_id=pool_id, amount=D(100))
    h.refused(
        "zero",
        c.PoolSpend,
        ErrorCode.not_pool_member,
        pool_id=pool_id,
        model="gemini-pro",
        tokens=1,
    )
    h.ok("zero", c.PoolJoin, pool_id=pool_id)
    h.ok("zero", c.PoolContribute, pool_id=pool_id, amount=D(100))


def test_already_pool_member() -> None:
    h = Harness()
    pool_id = new_pool(h)
    h.refused("claude", c.PoolJoin, ErrorCode.already_pool_member, pool_id=pool_id)
    h.ok("zero", c.PoolJoin, pool_id=pool_id)
    h.refused("zero", c.PoolJoin, ErrorCode.already_pool_member, pool_id=pool_id)


def test_unknown_pool() -> None:
    h = Harness()
    new_pool(h)
    h.refused("zero", c.PoolJoin, ErrorCode.unknown_pool, pool_id="pool-9")
    h.refused("zero", c.PoolContribute, ErrorCode.unknown_pool, pool_id="pool-9", amount=D(1))
    h.refused(
        "zero", c.PoolSpend, ErrorCode.unknown_pool, pool_id="pool-9", model="gemini-pro", tokens=1
    )
    h.refused("zero", c.PoolClose, ErrorCode.unknown_pool, pool_id="pool-9")


def test_pool_closed() -> None:
    h = Harness()
    pool_id = new_pool(h)
    h.ok("claude", c.PoolClose, pool_id=pool_id)
    h.refused("zero", c.PoolJoin, ErrorCode.pool_closed, pool_id=pool_id)
    h.refused("claude", c.PoolContribute, ErrorCode.pool_closed, pool_id=pool_id, amount=D(100))
    h.refused(
        "claude", c.PoolSpend, ErrorCode.pool_closed, pool_id=pool_id, model="gemini-pro", tokens=1
    )
    h.refused("claude", c.PoolClose, ErrorCode.pool_closed, pool_id=pool_id)
    # A closed pool still answers queries.
    assert pool(h, pool_id)["closed"] is True


def test_only_the_creator_or_the_operator_closes_a_pool() -> None:
    h = Harness()
    pool_id = new_pool(h)
    h.ok("zero", c.PoolJoin, pool_id=pool_id)
    h.refused("zero", c.PoolClose, ErrorCode.not_authorized, pool_id=pool_id)


def test_a_pool_spend_beyond_the_pool_balance_is_refused() -> None:
    h = Harness()
    pool_id = new_pool(h)
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(100))
    error = h.refused(
        "claude",
        c.PoolSpend,
        ErrorCode.insufficient_funds,
        pool_id=pool_id,
        model="gemini-pro",
        tokens=GEMINI_100 + 1,
    )
    assert (error["available"], error["requested"]) == ("100", "100.002")
    h.ok("claude", c.PoolSpend, pool_id=pool_id, model="gemini-pro", tokens=GEMINI_100)
    assert pool(h, pool_id)["balance"] == "0"


def test_pool_spend_with_an_unknown_model() -> None:
    h = Harness()
    pool_id = new_pool(h)
    h.refused(
        "claude", c.PoolSpend, ErrorCode.unknown_model, pool_id=pool_id, model="gpt-9", tokens=1
    )


@pytest.mark.parametrize(
    ("sender", "code"), [("nobody", ErrorCode.unknown_agent), (ADMIN, ErrorCode.not_authorized)]
)
def test_pools_are_created_joined_and_funded_by_agents(sender: str, code: ErrorCode) -> None:
    h = Harness()
    h.refused(sender, c.PoolCreate, code, name="team", min_contribution=D(1))
    pool_id = new_pool(h)
    h.refused(sender, c.PoolJoin, code, pool_id=pool_id)
    h.refused(sender, c.PoolContribute, code, pool_id=pool_id, amount=D(100))


def test_only_the_configured_number_of_closed_pools_is_kept() -> None:
    h = Harness(EconomyConfig(closed_pools_kept=1))
    ids = [
        h.ok("claude", c.PoolCreate, name="team", min_contribution=D(1))["pool_id"] for _ in "ab"
    ]
    for pool_id in ids:
        h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(10))
        h.ok("claude", c.PoolClose, pool_id=pool_id)
    assert list(h.ex.pools.pools) == [ids[1]] and list(h.ex.pools.closed) == [ids[1]]
    error = json.loads(h.ex.query(q.PoolQuery(pool_id=ids[0])))["error"]
    assert error["code"] == "unknown_pool" and "the last 1 closed pools" in error["message"]
    h.refused("claude", c.PoolClose, "unknown_pool", pool_id=ids[0])
    assert h.balance("claude") == D(10_000)  # both refunded in full
    h.ex.check_invariants()


def test_a_shapley_distribution_checks_its_players_before_computing_anything() -> None:
    from protocols import cooperation as coop

    h = Harness()
    pool_id = new_pool(h, "claude", target=D(1000))
    h.ok("lambda", c.PoolJoin, pool_id=pool_id)
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(600))
    h.ok("lambda", c.PoolContribute, pool_id=pool_id, amount=D(400))
    h.ok("admin", coop.PoolDeposit, pool_id=pool_id, amount=D(100))
    # 1,800 sampled players would hold the single writer for most of a second: refused first.
    crowd = coop.Game(values={f"p{i}": 1.0 for i in range(1800)})
    h.refused(
        "claude",
        coop.PoolDistribute,
        "invalid_message",
        pool_id=pool_id,
        method="shapley",
        game=crowd,
    )
    pair = coop.Game(values={"claude": 3.0, "lambda": 1.0})
    paid = h.ok("claude", coop.PoolDistribute, pool_id=pool_id, method="shapley", game=pair)
    assert [p["amount"] for p in paid["payouts"]] == ["75", "25"]
