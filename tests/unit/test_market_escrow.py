"""Escrow (docs/economy.md): release with fee and referral, disputes and arbitration, deadlines."""

from decimal import Decimal
from typing import Any

from core_support import Harness

from protocols import commands as c
from protocols import swarm as s
from protocols.ids import ADMIN
from protocols.units import NS_PER_S, S_PER_HOUR

MICRO = 1_000_000
START = 10_000 * MICRO


def register(h: Harness, agent: str, role: str = "executor", capability: str = "analyze") -> None:
    h.ok(
        ADMIN,
        c.RegisterAgent,
        agent=agent,
        base_rate=Decimal(100),
        primary_llm="llama3.2",
        role=role,
        capabilities=[capability],
    )


def bal(h: Harness, account: str) -> int:
    return h.ex.ledger.book.balance(account)


def published(outcome: Any, kind: type) -> list[Any]:
    return [p for p in outcome.publications if isinstance(p.payload, kind)]


def awarded_task(h: Harness, cost: Any = 100, referrer: str | None = None) -> str:
    """claude announces (max 100, deadline 1,000 ms); the only eligible agent "a" bids ``cost``."""
    register(h, "a")
    fields: dict[str, Any] = {"referrer": referrer} if referrer else {}
    task_id = h.ok(
        "claude",
        s.AnnounceTask,
        task_type="analyze",
        asset="btc",
        deadline_ms=1000,
        max_cost=Decimal(100),
        **fields,
    )["task_id"]
    outcome = h.send(
        "a",
        s.SubmitBid,
        task_id=task_id,
        bid=s.Bid(cost=Decimal(cost), time_ms=500, confidence=0.9),
    )
    assert published(outcome, s.TaskAward)[0].payload.winner == "a"
    return task_id


def informed_task(h: Harness, referrer: str | None = None) -> str:
    task_id = awarded_task(h, referrer=referrer)
    assert h.ok("a", s.SubmitResult, task_id=task_id, success=True, output={"x": 1}) == {}
    return task_id


def assert_fee_split(h: Harness) -> None:
    assert bal(h, "claude") == START - 100 * MICRO
    assert bal(h, "a") == START + 99 * MICRO
    assert bal(h, "@fees") == 850_000
    assert bal(h, "zero") == START + 150_000
    assert bal(h, "@escrow") == 0
    h.ex.check_invariants()


def test_verify_releases_with_fee_and_referral_to_the_micro_token() -> None:
    h = Harness()
    task_id = informed_task(h, referrer="zero")
    outcome = h.send("claude", s.VerifyTask, task_id=task_id, score=0.7)
    assert outcome.ok, outcome.reply
    (closed,) = published(outcome, s.TaskClosed)
    assert (closed.payload.state, closed.payload.paid, closed.payload.fee) == (
        "completed",
        "99",
        "1",
    )
    assert_fee_split(h)
    assert h.ex.ledger.agents["a"].performance == Decimal("1.05")


def test_lock_and_release_with_fee_and_referral() -> None:
    h = Harness()
    register(h, "a")
    view = h.ok("claude", s.LockEscrow, payee="a", amount=Decimal(100), referrer="zero")
    assert (view["state"], view["amount"]) == ("locked", "100")
    assert bal(h, "@escrow") == 100 * MICRO
    h.refused("a", s.ReleaseEscrow, "not_authorized", escrow_id=view["escrow_id"])
    released = h.ok("claude", s.ReleaseEscrow, escrow_id=view["escrow_id"], score=0.9)
    assert (released["state"], released["fee"]) == ("released", "1")
    assert_fee_split(h)
    h.refused("claude", s.ReleaseEscrow, "escrow_not_locked", escrow_id=view["escrow_id"])


def test_release_without_referrer_pays_whole_fee() -> None:
    h = Harness()
    register(h, "a")
    view = h.ok("claude", s.LockEscrow, payee="a", amount=Decimal("0.5"))
    h.ok("claude", s.ReleaseEscrow, escrow_id=view["escrow_id"])
    assert bal(h, "a") == START + 495_000
    assert bal(h, "@fees") == 5_000
    assert bal(h, "claude") == START - 500_000


def disputed_task(h: Harness) -> tuple[str, str]:
    task_id = informed_task(h)
    outcome = h.send("claude", s.VerifyTask, task_id=task_id, score=0.69)
    assert outcome.ok, outcome.reply
    (disputed,) = published(outcome, s.TaskDisputed)
    assert disputed.subject == f"swarm.task.{task_id}.disputed"
    payload = disputed.payload
    assert (payload.manager, payload.winner, payload.amount) == ("claude", "a", "100")
    assert payload.resolve_by_ns == h.now_ns + S_PER_HOUR * NS_PER_S
    assert h.ex.market.tasks[task_id].state == "disputed"
    assert h.ex.escrows.by_id[payload.escrow_id].state == "disputed"
    assert bal(h, "@escrow") == 100 * MICRO
    return task_id, payload.escrow_id


def test_dispute_resolved_release_by_admin() -> None:
    h = Harness()
    task_id, escrow_id = disputed_task(h)
    outcome = h.send(ADMIN, s.ResolveEscrow, escrow_id=escrow_id, outcome="release")
    assert outcome.ok, outcome.reply
    assert published(outcome, s.TaskClosed)[0].payload.state == "completed"
    assert bal(h, "a") == START + 99 * MICRO
    assert bal(h, "@fees") == MICRO
    assert bal(h, "claude") == START - 100 * MICRO
    assert h.ex.market.tasks[task_id].state == "completed"
    h.refused(ADMIN, s.ResolveEscrow, "escrow_not_disputed", escrow_id=escrow_id, outcome="refund")


def test_dispute_resolved_by_treasury_agent_and_parties_may_not_arbitrate() -> None:
    h = Harness()
    register(h, "vault", role="treasury", capability="audit")
    _, escrow_id = disputed_task(h)
    h.refused("a", s.ResolveEscrow, "not_authorized", escrow_id=escrow_id, outcome="release")
    h.refused("claude", s.ResolveEscrow, "not_authorized", escrow_id=escrow_id, outcome="refund")
    h.refused("zero", s.ResolveEscrow, "not_authorized", escrow_id=escrow_id, outcome="refund")
    view = h.ok("vault", s.ResolveEscrow, escrow_id=escrow_id, outcome="release")
    assert view["state"] == "released"
    assert bal(h, "a") == START + 99 * MICRO


def test_treasury_agent_that_is_a_party_may_not_arbitrate() -> None:
    h = Harness()
    register(h, "vault", role="treasury")
    register(h, "b")
    view = h.ok("vault", s.LockEscrow, payee="b", amount=Decimal(10))
    h.ok("vault", s.DisputeEscrow, escrow_id=view["escrow_id"])
    h.refused(
        "vault", s.ResolveEscrow, "not_authorized", escrow_id=view["escrow_id"], outcome="refund"
    )


def test_dispute_resolved_refund() -> None:
    h = Harness()
    _, escrow_id = disputed_task(h)
    outcome = h.send(ADMIN, s.ResolveEscrow, escrow_id=escrow_id, outcome="refund")
    assert outcome.ok, outcome.reply
    (closed,) = published(outcome, s.TaskClosed)
    assert (closed.payload.state, closed.payload.refunded) == ("refunded", "100")
    assert bal(h, "claude") == START
    assert bal(h, "a") == START
    assert bal(h, "@fees") == 0
    assert bal(h, "@escrow") == 0
    assert h.ex.ledger.agents["a"].performance == Decimal("0.95")


def test_unresolved_dispute_is_refunded_after_timeout() -> None:
    h = Harness()
    _, escrow_id = disputed_task(h)
    h.advance(3599.999)
    h.tick()
    assert h.ex.escrows.by_id[escrow_id].state == "disputed"
    h.advance(0.001)
    (closed,) = published(h.tick(), s.TaskClosed)
    assert closed.payload.state == "refunded"
    assert h.ex.escrows.by_id[escrow_id].state == "refunded"
    assert bal(h, "claude") == START
    assert bal(h, "@escrow") == 0
    h.ex.check_invariants()


def test_no_result_by_deadline_plus_grace_refunds_and_lowers_performance() -> None:
    h = Harness()
    task_id = awarded_task(h, cost=60)
    task = h.ex.market.tasks[task_id]
    assert task.result_due_at_ns == h.now_ns + NS_PER_S + 60 * NS_PER_S
    assert bal(h, "claude") == START - 60 * MICRO
    h.advance(60.999)
    h.tick()
    assert task.state == "awarded"
    h.advance(0.001)
    (closed,) = published(h.tick(), s.TaskClosed)
    assert (closed.payload.state, closed.payload.refunded) == ("expired", "60")
    assert task.state == "expired"
    assert h.ex.escrows.by_id[task.escrow_id].state == "refunded"
    assert bal(h, "claude") == START
    assert bal(h, "a") == START
    assert h.ex.ledger.agents["a"].performance == Decimal("0.95")
    h.refused("a", s.SubmitResult, "task_closed", task_id=task_id, success=True)


def test_failure_report_refunds() -> None:
    h = Harness()
    task_id = awarded_task(h, cost=75)
    h.refused("zero", s.SubmitResult, "not_task_executor", task_id=task_id, success=True)
    outcome = h.send("a", s.SubmitResult, task_id=task_id, success=False, reason="no data")
    assert outcome.ok, outcome.reply
    (closed,) = published(outcome, s.TaskClosed)
    assert (closed.payload.state, closed.payload.refunded, closed.payload.reason) == (
        "failed",
        "75",
        "no data",
    )
    assert bal(h, "claude") == START
    assert bal(h, "@escrow") == 0
    assert h.ex.ledger.agents["a"].performance == Decimal("0.95")


def test_unverified_informed_task_is_released_after_timeout() -> None:
    h = Harness()
    informed_task(h)
    h.advance(3600)
    (closed,) = published(h.tick(), s.TaskClosed)
    assert closed.payload.state == "completed"
    assert bal(h, "a") == START + 99 * MICRO


def test_lock_unreleased_is_refunded_at_timeout() -> None:
    h = Harness()
    register(h, "a")
    view = h.ok("claude", s.LockEscrow, payee="a", amount=Decimal(7), timeout_s=10)
    h.advance(10)
    h.tick()
    assert h.ex.escrows.by_id[view["escrow_id"]].state == "refunded"
    assert bal(h, "claude") == START


def test_the_escrow_of_a_task_is_settled_through_the_task_only() -> None:
    # Released directly, the task would stay awarded with its money paid out, and its result
    # deadline would then refund an escrow that no longer holds anything.
    h = Harness()
    task_id = awarded_task(h, cost=60)
    escrow_id = h.ex.market.tasks[task_id].escrow_id
    for sender in ("claude", ADMIN):
        h.refused(sender, s.ReleaseEscrow, "not_authorized", escrow_id=escrow_id, score=0.9)
    h.advance(61)
    (closed,) = published(h.tick(), s.TaskClosed)
    assert (closed.payload.state, closed.payload.refunded) == ("expired", "60")
    assert bal(h, "claude") == START
    h.ex.check_invariants()
