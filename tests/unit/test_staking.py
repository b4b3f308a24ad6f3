"""Staking (docs/economy.md, Staking): every rule and number of the page, through the Harness."""

import json
from decimal import Decimal
from fractions import Fraction

from core_support import Harness
from core_support import restored as restore
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.bid_tally import BidTally
from exchange.core.staking import stake_account
from protocols import commands as c
from protocols import credit as cr
from protocols import queries as q
from protocols import swarm as s
from protocols.ids import ADMIN

D = Decimal
DAY = 86_400


def balance(h: Harness, account: str) -> Decimal:
    return D(h.ex.ledger.book.balance(account)) / 1_000_000


def stake(h: Harness, agent: str, amount: int, lock_s: int = DAY) -> str:
    view = h.ok(agent, cr.Stake, amount=D(amount), lock_s=lock_s)
    assert view["state"] == "locked"
    stake_id: str = view["stake_id"]
    return stake_id


def test_a_stake_leaves_the_balance_for_its_own_account_and_comes_back_after_cooling() -> None:
    h = Harness()
    stake_id = stake(h, "zero", 1000, lock_s=2 * DAY)
    assert balance(h, "zero") == 9000
    assert balance(h, stake_account("zero")) == 1000
    result = h.ex.query(q.BalanceQuery(agent="zero"))
    assert b'"staked":"1000"' in result
    h.advance(DAY)
    error = h.refused("zero", cr.Unstake, "stake_locked", stake_id=stake_id)
    assert error["retry_after_s"] == DAY
    h.advance(DAY)
    assert h.ok("zero", cr.Unstake, stake_id=stake_id)["state"] == "cooling"
    h.refused("zero", cr.Unstake, "stake_closed", stake_id=stake_id)
    h.advance(DAY - 1)
    h.tick()
    assert balance(h, "zero") == 9000
    h.advance(1)
    h.tick()
    assert balance(h, "zero") == 10_000
    assert balance(h, stake_account("zero")) == 0
    h.ex.check_invariants()


def test_staked_tokens_cannot_be_spent_or_transferred() -> None:
    h = Harness()
    stake(h, "zero", 9000)
    # 1,000 left, reserve 500: a transfer of 600 breaches the reserve, though 10,000 are owned.
    h.refused("zero", c.Transfer, "reserve_would_be_breached", to="claude", amount=D(600))
    h.refused("zero", cr.Stake, "reserve_would_be_breached", amount=D(600), lock_s=DAY)


def test_bad_stakes_are_refused_with_their_codes() -> None:
    h = Harness()
    h.refused("zero", cr.Stake, "parameter_out_of_bounds", amount=D(99), lock_s=DAY)
    h.refused("zero", cr.Stake, "parameter_out_of_bounds", amount=D(100), lock_s=DAY - 1)
    h.refused("zero", cr.Stake, "parameter_out_of_bounds", amount=D(100), lock_s=0)
    h.refused("zero", cr.Stake, "amount_must_be_positive", amount=D(0), lock_s=DAY)
    h.refused(ADMIN, cr.Stake, "not_authorized", amount=D(100), lock_s=DAY)
    other = stake(h, "claude", 100)
    h.refused("zero", cr.Unstake, "unknown_stake", stake_id=other)
    h.refused("zero", cr.Unstake, "unknown_stake", stake_id="stake-99")


def test_stake_weighs_ballots_capped_at_double() -> None:
    h = Harness()
    stake(h, "zero", 1000)
    h.ok(ADMIN, c.Award, agent="claude", amount=D(10_000), source="t")
    stake(h, "claude", 15_000)  # above stake_full: the weight doubles, no more
    assert h.ex.query(cr.StakesQuery(agent="zero")).count(b'"vote_weight":"1.1"') == 1
    proposal = h.ok("claude", s.ProposeVote, title="t", eligible=["claude", "zero", "lambda"])
    for voter in ("claude", "zero", "lambda"):
        h.ok(voter, s.CastVote, proposal_id=proposal["proposal_id"], ballot=s.Ballot(choice="yes"))
    weights = {b.voter: D(b.weight) for b in h.ex.votes.proposals[proposal["proposal_id"]].ballots}
    assert weights == {"claude": D(2), "zero": D("1.1"), "lambda": D(1)}


def _auction(h: Harness, bids: dict[str, tuple[int, float]]) -> dict[str, object]:
    task = h.ok(
        "claude", s.AnnounceTask, task_type="t", asset="a", deadline_ms=1000, max_cost=D(100)
    )
    for bidder, (cost, confidence) in bids.items():
        bid = s.Bid(cost=D(cost), time_ms=500, confidence=confidence)
        h.ok(bidder, s.SubmitBid, task_id=task["task_id"], bid=bid)
    h.advance(3)
    h.tick()
    done = h.ex.market.tasks[task["task_id"]]
    return {
        "winner": done.winner,
        "task_id": done.id,
        "scores": {b.bidder: D(b.score) for b in done.bids},
    }


def test_stake_adds_at_most_its_capped_bonus_to_a_bid() -> None:
    h = Harness()
    stake(h, "zero", 9000)  # 0.045 of bonus
    got = _auction(h, {"zero": (50, 0.5), "lambda": (50, 0.5)})
    assert got["scores"] == {"zero": D("0.545"), "lambda": D("0.5")}  # type: ignore[index]
    assert got["winner"] == "zero"
    # A clearly better offer (15% cheaper) still wins against the largest bonus.
    h2 = Harness()
    h2.ok(ADMIN, c.Award, agent="zero", amount=D(20_000), source="t")
    stake(h2, "zero", 20_000)
    got = _auction(h2, {"zero": (50, 0.5), "lambda": (35, 0.5)})
    assert got["winner"] == "lambda"
    assert got["scores"]["zero"] == D("0.55")  # type: ignore[index]


def test_a_failed_executor_loses_a_tenth_of_each_stake_to_the_manager() -> None:
    h = Harness()
    stake(h, "zero", 1000)
    stake(h, "zero", 333)
    got = _auction(h, {"zero": (50, 0.9)})
    manager_before = balance(h, "claude")
    h.advance(61 + 1)  # deadline 1 s + result grace 60 s
    h.tick()
    assert h.ex.market.tasks[got["task_id"]].state == "expired"  # type: ignore[index]
    # 10% of 1,000 and of 333 (33.3), each rounded half-even to the micro-token.
    assert balance(h, stake_account("zero")) == D(900) + D("299.7")
    assert balance(h, "claude") - manager_before == D("133.3") + 50  # the refunded escrow too
    h.ex.check_invariants()


def test_losing_a_dispute_slashes_too() -> None:
    h = Harness()
    stake(h, "zero", 1000)
    got = _auction(h, {"zero": (50, 0.9)})
    task_id = got["task_id"]
    h.ok("zero", s.SubmitResult, task_id=task_id, success=True, output={})
    h.ok("claude", s.VerifyTask, task_id=task_id, score=0.1)
    escrow_id = h.ex.market.tasks[task_id].escrow_id  # type: ignore[index]
    h.ok(ADMIN, s.ResolveEscrow, escrow_id=escrow_id, outcome="refund")
    assert balance(h, stake_account("zero")) == 900


def test_yield_is_half_the_days_fees_pro_rata_to_stake_times_time() -> None:
    h = Harness()
    stake(h, "zero", 1000)
    h.advance(DAY / 2)
    stake(h, "lambda", 2000)  # half a day at twice the stake: the same weight as zero's
    fees_before = balance(h, "@fees")
    # 10 tokens of fee income: one escrow of 1,000 released (1%).
    escrow = h.ok("claude", s.LockEscrow, payee="builder", amount=D(1000))
    h.ok("claude", s.ReleaseEscrow, escrow_id=escrow["escrow_id"])
    assert balance(h, "@fees") - fees_before == 10
    zero, lam = balance(h, "zero"), balance(h, "lambda")
    h.advance(DAY / 2)
    h.tick()
    assert balance(h, "zero") - zero == D("2.5")
    assert balance(h, "lambda") - lam == D("2.5")
    assert balance(h, "@fees") == 5
    # A day with no fee income pays nothing.
    h.advance(DAY)
    h.tick()
    assert balance(h, "zero") - zero == D("2.5")
    h.ex.check_invariants()


def test_the_yield_timer_stops_with_the_last_stake_and_a_restore_keeps_the_state() -> None:
    h = Harness()
    stake_id = stake(h, "zero", 500)
    h.advance(DAY)
    h.ok("zero", cr.Unstake, stake_id=stake_id)
    again = restore(h.ex)
    assert again.snapshot() == h.ex.snapshot()
    assert again.digest() == h.ex.digest()
    h.advance(DAY)
    h.tick()
    h.advance(DAY)
    h.tick()
    assert not h.ex.staking.stakes
    assert not h.ex.staking.yield_armed
    assert not [t for t in h.ex.ledger.timers if t[2].startswith("stake")]


def test_a_balance_that_never_staked_or_lent_reads_as_before() -> None:
    """The new balance fields are left out at 0, so an old client's reply is byte for byte the
    same; they appear once there is something to show, and go again when it is gone."""
    h = Harness()
    plain = json.loads(h.ex.query(q.BalanceQuery(agent="zero")))["result"]
    assert set(plain) == {"agent", "balance", "earned", "spent", "held"}
    stake_id = stake(h, "zero", 100)
    assert json.loads(h.ex.query(q.BalanceQuery(agent="zero")))["result"]["staked"] == "100"
    h.advance(DAY)
    h.ok("zero", cr.Unstake, stake_id=stake_id)
    h.advance(DAY)
    h.tick()
    again = json.loads(h.ex.query(q.BalanceQuery(agent="zero")))["result"]
    assert set(again) == set(plain)


@settings(max_examples=200, deadline=None)
@given(
    costs=st.tuples(st.integers(1, 100), st.integers(1, 100)),
    times=st.tuples(st.integers(1, 1000), st.integers(1, 1000)),
    confidences=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    stake_micro=st.integers(0, 10**18),
)
def test_stake_never_buys_an_auction_from_a_bid_better_by_more_than_the_cap(
    costs: tuple[int, int],
    times: tuple[int, int],
    confidences: tuple[float, float],
    stake_micro: int,
) -> None:
    """The stake term is at most ``bid_bonus`` (0.05): a staked bid beats an unstaked one only if
    its own score is within 0.05 of it, whatever the stake."""
    staking = Harness().ex.staking
    bonus = staking.bid_bonus(stake_micro)
    assert 0 <= bonus <= Fraction(1, 20)
    tally = BidTally.start(["0.4", "0.3", "0.3"], [], 100 * 1_000_000, 1000)
    staked = tally.score(costs[0] * 1_000_000, times[0], confidences[0], bonus)
    plain = tally.score(costs[1] * 1_000_000, times[1], confidences[1])
    base = tally.score(costs[0] * 1_000_000, times[0], confidences[0])
    assert staked == base + bonus
    if plain > base + Fraction(1, 20):
        assert plain > staked
