"""The digest of a state is part of what a journal means: `exchange doctor`, `status` and every
snapshot check compare it. Restructuring the code must not change it, so this test drives one
command of (nearly) every rule through a fixed scenario and compares the digest with the one the
code gave before the core was restructured (snapshot Structs, the command table, state enums).

If a rule's *behaviour* changes on purpose, the digest changes with it: say so in the commit and
update DIGEST here, with the reason.
"""

from decimal import Decimal

from core_support import Harness
from core_support import restored as restore

from protocols import commands as c
from protocols import cooperation as coop
from protocols import swarm as s
from protocols.ids import ADMIN, EXCHANGE

D = Decimal
DIGEST = "986f43945a6bc9bd8fded80b92f9bf954f1a15b44638751e4d75756025684fbe"


def scenario() -> Harness:
    h = Harness()
    for agent in ("exec-a", "exec-b"):
        h.ok(
            ADMIN,
            c.RegisterAgent,
            agent=agent,
            base_rate=D(100),
            primary_llm="llama3.2",
            role="executor",
            capabilities=["analyze"],
        )
    h.ok("claude", c.Transfer, to="zero", amount=D("12.5"), memo="lunch")
    h.ok(ADMIN, c.Award, agent="zero", amount=D(7), source="test")
    h.ok(
        ADMIN,
        c.Commit,
        author="claude@x.y",
        project="nexushive-setup",
        message="fix: bug",
        sha="abcd1234",
    )
    h.ok(ADMIN, c.IssueClose, agent="builder", issue_id="i-1", priority="P2", issue_type="bug")
    h.ok("spark", c.LlmRequest, task_type="chat", tokens=5000)
    auth = h.ok("lambda", c.LlmAuthorize, task_type="coding", tokens=2000, timeout_s=60)
    h.ok("lambda", c.LlmSettle, authorization_id=auth["authorization_id"], tokens=1500)
    h.ok("zero", c.LlmAuthorize, task_type="chat", tokens=1000, timeout_s=5)  # expires below
    h.ok(ADMIN, c.SetLimits, agent="observer", limits=c.LimitsSpec(burst=D(400)))
    pool = h.ok("claude", c.PoolCreate, name="team", min_contribution=D(100), target=D(1000))
    pool_id = pool["pool_id"]
    h.ok("lambda", c.PoolJoin, pool_id=pool_id)
    h.ok("claude", c.PoolContribute, pool_id=pool_id, amount=D(600))
    h.ok("lambda", c.PoolContribute, pool_id=pool_id, amount=D(400))
    h.ok("lambda", c.PoolSpend, pool_id=pool_id, model="gemini-pro", tokens=1000)
    h.ok(ADMIN, coop.PoolDeposit, pool_id=pool_id, amount=D(100))
    game = coop.Game(values={"claude": 3.0, "lambda": 1.0})
    h.ok("claude", coop.PoolDistribute, pool_id=pool_id, method="shapley", game=game)
    h.ok("claude", c.PoolClose, pool_id=pool_id)
    task = h.ok(
        "claude",
        s.AnnounceTask,
        task_type="analyze",
        asset="btc",
        deadline_ms=1000,
        max_cost=D(100),
        referrer="zero",
    )
    task_id = task["task_id"]
    h.ok("exec-a", s.SubmitBid, task_id=task_id, bid=s.Bid(cost=D(50), time_ms=500, confidence=0.9))
    h.ok("exec-b", s.SubmitBid, task_id=task_id, bid=s.Bid(cost=D(30), time_ms=800, confidence=0.6))
    h.ok("exec-a", s.SubmitResult, task_id=task_id, success=True, output={"pnl": 1})
    h.ok("claude", s.VerifyTask, task_id=task_id, score=0.9)
    escrow = h.ok("claude", s.LockEscrow, payee="builder", amount=D(20), referrer="zero")
    h.ok("claude", s.DisputeEscrow, escrow_id=escrow["escrow_id"], reason="late")
    h.ok(ADMIN, s.ResolveEscrow, escrow_id=escrow["escrow_id"], outcome="refund")
    advice = h.ok("claude", s.ProposeVote, title="advice", eligible=["claude", "zero"])
    for voter in ("claude", "zero"):
        h.ok(voter, s.CastVote, proposal_id=advice["proposal_id"], ballot=s.Ballot(choice="yes"))
    budget = s.ContractAction(name="default", budget=D(20_000))
    governed = h.apply(
        ADMIN,
        s.ProposeVote(request_id=h.rid(), title="budget", kind="supermajority", action=budget),
    )
    assert governed.ok, governed.reply
    for voter in sorted(h.ex.ledger.agents):
        h.ok(voter, s.CastVote, proposal_id="proposal-2", ballot=s.Ballot(choice="yes"))
    signal = s.ObserveSignal(
        request_id=h.rid(),
        sender="spark",
        signal_type="opportunity",
        asset="btc",
        confidence=0.8,
        direction="long",
    )
    assert h.apply(EXCHANGE, signal).ok
    coalition = h.ok(
        "claude",
        coop.FormCoalition,
        candidates=["claude", "lambda", "spark"],
        game=coop.Game(values={"claude": 3.0, "lambda": 2.0, "spark": 1.0}),
    )
    h.ok("claude", coop.EndCoalition, coalition_id=coalition["coalition_id"], intact=True)
    h.advance(10)
    h.tick()  # the unsettled authorization expires
    return h


def test_the_scenario_leaves_something_in_every_part_of_the_state() -> None:
    state = scenario().ex.state()
    empty = [key for key, value in state.items() if isinstance(value, list | dict) and not value]
    assert empty == []


def test_the_digest_of_a_fixed_scenario_is_what_it_was() -> None:
    h = scenario()
    assert h.ex.digest() == DIGEST
    assert restore(h.ex).digest() == DIGEST
