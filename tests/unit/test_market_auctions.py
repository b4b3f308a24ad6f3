"""Contract Net auctions (docs/economy.md): scoring, award, early close, window close, refusals."""

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from core_support import Harness

from exchange.core.config import EconomyConfig
from protocols import commands as c
from protocols import queries as q
from protocols import swarm as s
from protocols.ids import ADMIN
from protocols.registry import COMMAND_DECODERS
from protocols.routes import route
from protocols.units import NS_PER_MS, NS_PER_S

MICRO = 1_000_000
START = 10_000 * MICRO


def register(h: Harness, *agents: str, capability: str = "analyze", role: str = "executor") -> None:
    for agent in agents:
        h.ok(
            ADMIN,
            c.RegisterAgent,
            agent=agent,
            base_rate=Decimal(100),
            primary_llm="llama3.2",
            role=role,
            capabilities=[capability],
        )


def announce(h: Harness, manager: str = "claude", **fields: Any) -> dict[str, Any]:
    fields.setdefault("task_type", "analyze")
    fields.setdefault("asset", "btc")
    fields.setdefault("deadline_ms", 1000)
    fields.setdefault("max_cost", Decimal(100))
    return h.ok(manager, s.AnnounceTask, **fields)


def bid(h: Harness, agent: str, task_id: str, cost: Any, time_ms: int, confidence: float):
    return h.send(
        agent,
        s.SubmitBid,
        task_id=task_id,
        bid=s.Bid(cost=Decimal(cost), time_ms=time_ms, confidence=confidence),
    )


def published(outcome: Any, kind: type) -> list[Any]:
    return [p for p in outcome.publications if isinstance(p.payload, kind)]


def bal(h: Harness, account: str) -> int:
    return h.ex.ledger.book.balance(account)


def test_economy_example_a_wins_and_hold_shrinks_to_winning_cost() -> None:
    h = Harness()
    register(h, "a", "b")
    announced = announce(h)
    task_id = announced["task_id"]
    assert announced["held"] == "100"
    assert announced["eligible"] == ["a", "b"]
    assert bal(h, "claude") == START - 100 * MICRO
    assert bal(h, "@escrow") == 100 * MICRO

    first = bid(h, "a", task_id, 50, 500, 0.9)
    assert first.ok and not published(first, s.TaskAward)
    last = bid(h, "b", task_id, 30, 800, 0.6)
    assert last.ok
    (award,) = published(last, s.TaskAward)
    assert award.subject == f"swarm.task.{task_id}.award"
    payload = award.payload
    assert payload.winner == "a" and payload.cost == "50" and payload.manager == "claude"
    assert [(b.bidder, b.score, b.accepted) for b in payload.bids] == [
        ("a", "0.62", True),
        ("b", "0.52", False),
    ]
    # The hold shrinks to 50: the manager gets 50 back, 50 stays locked as the task's escrow.
    assert bal(h, "claude") == START - 50 * MICRO
    assert bal(h, "@escrow") == 50 * MICRO
    escrow = h.ex.escrows.by_id[payload.escrow_id]
    assert (escrow.state, escrow.payer, escrow.payee, escrow.amount_micro) == (
        "locked",
        "claude",
        "a",
        50 * MICRO,
    )
    assert h.ex.market.tasks[task_id].state == "awarded"
    h.ex.check_invariants()


def test_early_close_when_every_eligible_agent_answered() -> None:
    h = Harness()
    register(h, "a", "b", "c")
    register(h, "other", capability="trade")  # not eligible: no "analyze" capability
    task_id = announce(h, bid_window_ms=60_000)["task_id"]
    assert h.ex.market.tasks[task_id].eligible == ["a", "b", "c"]
    assert h.ok("a", s.SubmitRefusal, task_id=task_id, reason="busy") == {}
    h.advance(1)
    assert not published(bid(h, "b", task_id, 80, 900, 0.5), s.TaskAward)
    h.advance(1)
    last = bid(h, "c", task_id, 90, 100, 1.0)  # the last answer, well before the window ends
    (award,) = published(last, s.TaskAward)
    # b: 0.4*0.2 + 0.3*0.1 + 0.3*0.5 = 0.26; c: 0.4*0.1 + 0.3*0.9 + 0.3 = 0.61
    assert award.payload.winner == "c"
    assert [(b.bidder, b.score) for b in award.payload.bids] == [("b", "0.26"), ("c", "0.61")]
    task = h.ex.market.tasks[task_id]
    assert task.state == "awarded" and h.now_ns < task.closes_at_ns
    assert bal(h, "claude") == START - 90 * MICRO
    h.refused(
        "other",
        s.SubmitBid,
        "bid_window_closed",
        task_id=task_id,
        bid=s.Bid(cost=Decimal(1), time_ms=1, confidence=0.1),
    )


def test_window_closes_at_its_end_by_tick_when_not_all_answered() -> None:
    h = Harness()
    register(h, "a", "b")
    task_id = announce(h, bid_window_ms=5000)["task_id"]
    assert bid(h, "a", task_id, "40.5", 600, 0.8).ok
    h.advance(4.999)
    assert not published(h.tick(), s.TaskAward)
    assert h.ex.market.tasks[task_id].state == "open"
    h.advance(0.001)
    (award,) = published(h.tick(), s.TaskAward)
    assert award.payload.winner == "a" and award.payload.cost == "40.5"
    assert bal(h, "claude") == START - 40_500_000
    assert bal(h, "@escrow") == 40_500_000
    h.ex.check_invariants()


def test_no_bids_voids_hold_and_leaves_task_unawarded() -> None:
    h = Harness()
    register(h, "a")
    task_id = announce(h, max_cost=Decimal("123.456789"))["task_id"]
    assert bal(h, "claude") == START - 123_456_789
    h.advance(2)  # the default window is 2,000 ms
    tick = h.tick()
    (award,) = published(tick, s.TaskAward)
    assert award.payload.winner is None and award.payload.bids == []
    (closed,) = published(tick, s.TaskClosed)
    assert closed.payload.state == "unawarded" and closed.payload.refunded == "123.456789"
    assert h.ex.market.tasks[task_id].state == "unawarded"
    assert bal(h, "claude") == START
    assert bal(h, "@escrow") == 0
    h.ex.check_invariants()


def test_all_refusals_close_unawarded_at_once() -> None:
    h = Harness()
    register(h, "a")
    task_id = announce(h)["task_id"]
    outcome = h.send("a", s.SubmitRefusal, task_id=task_id)
    assert published(outcome, s.TaskAward)[0].payload.winner is None
    assert h.ex.market.tasks[task_id].state == "unawarded"
    assert bal(h, "claude") == START


def test_tie_goes_to_the_earlier_bid() -> None:
    h = Harness()
    register(h, "a", "b")
    task_id = announce(h)["task_id"]
    assert bid(h, "b", task_id, 50, 500, 0.5).ok
    (award,) = published(bid(h, "a", task_id, 50, 500, 0.5), s.TaskAward)
    assert award.payload.winner == "b"


def _bid_fields(task_id: str, cost: Any = 50, time_ms: int = 500, confidence: float = 0.5):
    return {
        "task_id": task_id,
        "bid": s.Bid(cost=Decimal(cost), time_ms=time_ms, confidence=confidence),
    }


def test_bid_refusals_change_nothing() -> None:
    h = Harness()
    register(h, "a", "b", "c")
    task_id = announce(h, bid_window_ms=10_000)["task_id"]
    h.refused("a", s.SubmitBid, "bid_exceeds_max_cost", **_bid_fields(task_id, "100.000001"))
    h.refused("a", s.SubmitBid, "bid_exceeds_deadline", **_bid_fields(task_id, 10, 1001))
    h.refused("a", s.SubmitBid, "unknown_task", **_bid_fields("task-nope"))
    h.refused("claude", s.SubmitBid, "not_eligible", **_bid_fields(task_id))
    h.refused("claude", s.SubmitRefusal, "not_eligible", task_id=task_id)
    # Boundaries are accepted: exactly the max cost and exactly the deadline.
    assert bid(h, "a", task_id, 100, 1000, 0.0).ok
    h.refused("a", s.SubmitBid, "duplicate_bid", **_bid_fields(task_id))
    h.refused("a", s.SubmitRefusal, "duplicate_bid", task_id=task_id)
    assert h.ok("b", s.SubmitRefusal, task_id=task_id) == {}
    h.refused("b", s.SubmitBid, "duplicate_bid", **_bid_fields(task_id))
    h.advance(10)
    h.refused("c", s.SubmitBid, "bid_window_closed", **_bid_fields(task_id))
    # The window closed by that tick: a won with the only bid.
    assert h.ex.market.tasks[task_id].winner == "a"


@pytest.mark.parametrize("confidence", [-0.01, 1.01, 2])
def test_confidence_outside_unit_interval_is_a_wire_error(confidence: float) -> None:
    body = {
        "request_id": "r1",
        "task_id": "task-1",
        "bid": {"cost": "10", "time_ms": 100, "confidence": confidence},
    }
    with pytest.raises(msgspec.ValidationError, match="confidence"):
        COMMAND_DECODERS["task.propose"].decode(json.dumps(body).encode())
    swarm_body = json.dumps({"cost": "10", "time_ms": 100, "confidence": confidence}).encode()
    with pytest.raises(msgspec.ValidationError, match="confidence"):
        route("swarm.task.task-1.propose.a", swarm_body)
    for edge in (0, 1):
        ok = {"cost": "10", "time_ms": 100, "confidence": edge}
        assert route("swarm.task.task-1.propose.a", json.dumps(ok).encode()) is not None


def test_timeline_uses_exchange_clock_ns() -> None:
    h = Harness(now_s=7)
    register(h, "a")
    announced = announce(h, bid_window_ms=1500)
    assert announced["closes_at_ns"] == 7 * NS_PER_S + 1_500 * NS_PER_MS


def test_only_the_configured_number_of_finished_tasks_is_kept() -> None:
    config = EconomyConfig()
    config = msgspec.structs.replace(
        config, auction=msgspec.structs.replace(config.auction, finished_tasks_kept=2)
    )
    h = Harness(config)
    register(h, "a")
    ids = []
    for _ in range(3):
        task_id = announce(h)["task_id"]
        assert bid(h, "a", task_id, 10, 500, 0.9).ok  # the only eligible bid: awarded at once
        assert h.ok("a", s.SubmitResult, task_id=task_id, success=True, output={}) == {}
        assert h.ok("claude", s.VerifyTask, task_id=task_id, score=0.9)["state"] == "completed"
        ids.append(task_id)
    market = h.ex.market
    assert list(market.tasks) == ids[1:] and list(market.finished_tasks) == ids[1:]
    first_hold = ids[0].replace("task", "escrow")
    assert first_hold not in h.ex.ledger.holds and first_hold not in h.ex.escrows.by_id
    refusal = json.loads(h.ex.query(q.TaskQuery(task_id=ids[0])))["error"]
    assert refusal["code"] == "unknown_task" and "the last 2 finished tasks" in refusal["message"]
    listed = h.query(q.TasksQuery())["tasks"]
    assert [t["task_id"] for t in listed] == ids[1:]
    inputs = h.ex.metric_inputs()
    assert (inputs.tasks_total, inputs.tasks_successful, inputs.escrow_settlements) == (3, 3, 3)
    assert bal(h, "a") == START + 3 * 9_900_000  # 10 each, less the 1% fee


def test_a_second_bid_on_the_swarm_subject_is_a_duplicate_bid() -> None:
    """Bids arrive on swarm.task.<id>.propose.<sender>: a retry of the same bid gets the first
    reply again; a different bid or a refusal after it gets the documented duplicate_bid."""
    h = Harness()
    register(h, "a", "b")  # b has not answered: the auction stays open.
    task_id = announce(h, bid_window_ms=10_000)["task_id"]
    subject = f"swarm.task.{task_id}.propose.a"

    def routed(subject: str, body: bytes) -> Any:
        found = route(subject, body)
        assert found is not None
        return h.apply(found.apply_as, found.command)

    first = routed(subject, b'{"cost":"10","time_ms":100,"confidence":0.5}')
    assert first.ok, first.reply
    retry = routed(subject, b'{"confidence":0.5, "cost":10, "time_ms":100}')
    assert (retry.ok, retry.duplicate, retry.reply) == (True, True, first.reply)
    for again in (
        routed(subject, b'{"cost":"9","time_ms":100,"confidence":0.5}'),
        routed(f"swarm.task.{task_id}.refuse.a", b"{}"),
    ):
        assert again.code == "duplicate_bid", again.reply


def test_routed_request_ids_fit_whatever_the_task_id_length() -> None:
    """Task ids run to 128 characters, request ids to 64: the routed command must decode again
    from the journal."""
    task_id = "t" * 128
    for subject, body in (
        (f"swarm.task.{task_id}.propose.a", b'{"cost":"1","time_ms":1,"confidence":1}'),
        (f"swarm.task.{task_id}.refuse.a", b"{}"),
        (f"swarm.task.{task_id}.inform.a", b'{"output":{}}'),
        (f"swarm.vote.{task_id}.cast.a", b'{"choice":"yes"}'),
    ):
        found = route(subject, body)
        assert found is not None
        encoded = msgspec.json.encode(found.command)
        assert COMMAND_DECODERS[found.verb].decode(encoded) == found.command
