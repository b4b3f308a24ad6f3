"""The dashboard's pure model: bus messages and query results folded into the page's document.

Examples walk an auction through the wire bodies the protocol defines (protocols.swarm Structs,
encoded as the exchange encodes them); a hypothesis test feeds arbitrary subjects and bodies and
checks the board never raises and keeps every bound; a simulation's --out folder, written by the
simulator itself, becomes the same document.
"""

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.dashboard import model
from exchange.dashboard.model import Board
from exchange.dashboard.simulation import SimulationFolderError, simulation_view
from exchange.dashboard.view import View
from exchange.sim.engine import simulate
from exchange.sim.report import write_files
from exchange.sim.scenario import default_scenario
from protocols.events import PostingEvent
from protocols.results import AgentInfo, AgentsResult, Envelope, ErrorBody
from protocols.swarm import (
    BidScore,
    CallForProposals,
    PheromoneOut,
    PheromonesResult,
    TaskAward,
    TaskClosed,
    Weights,
)

enc = msgspec.json.encode
CFP = CallForProposals(
    task_id="task-1",
    manager="boss",
    task_type="analyze",
    asset="BTC",
    deadline_ms=1000,
    max_cost="100",
    payload={},
    weights=Weights(),
    closes_at_ns=0,
    eligible=["alice", "bob"],
)


def _bid(cost: str) -> bytes:
    return enc({"cost": cost, "time_ms": 500, "confidence": 0.9})


def _auction(board: Board) -> dict[str, object]:
    auctions = msgspec.to_builtins(board.view(now_ms=0).auctions)
    assert len(auctions) == 1
    result: dict[str, object] = auctions[0]
    return result


def test_an_auction_shows_bids_as_they_arrive_then_the_award_and_the_closure() -> None:
    board = Board()
    board.observe("swarm.task.cfp.analyze", None, enc(CFP), now_ms=1)
    assert _auction(board)["state"] == "open"
    board.observe("swarm.task.task-1.propose.alice", "_INBOX_alice.a.1", _bid("50"), now_ms=2)
    assert [b["bidder"] for b in _auction(board)["bids"]] == ["alice"]
    award = TaskAward(
        task_id="task-1",
        manager="boss",
        winner="alice",
        cost="50",
        escrow_id="escrow-1",
        result_due_at_ns=0,
        bids=[BidScore(bidder="alice", cost="50", time_ms=500, confidence=0.9, score="0.62",
                       accepted=True)],
    )  # fmt: skip
    board.observe("swarm.task.task-1.award", None, enc(award), now_ms=3)
    shown = _auction(board)
    assert (shown["state"], shown["winner"], shown["escrow_state"]) == (
        "awarded",
        "alice",
        "locked",
    )
    assert shown["bids"] == [
        {"bidder": "alice", "cost": "50", "time_ms": 500, "confidence": 0.9, "score": "0.62",
         "accepted": True}
    ]  # fmt: skip
    closed = TaskClosed(
        task_id="task-1", state="completed", winner="alice", paid="49.5", fee="0.5", refunded="0"
    )
    board.observe("swarm.task.task-1.closed", None, enc(closed), now_ms=4)
    assert (_auction(board)["state"], _auction(board)["paid"]) == ("completed", "49.5")
    kinds = [e.kind for e in board.view(now_ms=5).events]
    assert kinds == ["closed", "award", "bid", "cfp"]  # newest first


def test_a_refused_request_shows_with_its_sender_verb_and_code_and_withdraws_the_bid() -> None:
    board = Board()
    board.observe("swarm.task.cfp.analyze", None, enc(CFP), now_ms=1)
    board.observe("swarm.task.task-1.propose.bob", "_INBOX_bob.x.1", _bid("101"), now_ms=2)
    refusal = Envelope(
        ok=False, error=ErrorBody(code="bid_exceeds_max_cost", message="bid at most 100")
    )
    board.observe("_INBOX_bob.x.1", None, enc(refusal), now_ms=3)
    view = board.view(now_ms=4)
    assert [(r.agent, r.verb, r.code) for r in view.refusals] == [
        ("bob", "task.propose", "bid_exceeds_max_cost")
    ]
    assert view.auctions[0].bids == []
    # A command's refusal too; a success is not a refusal, and an unawaited reply is ignored.
    board.observe("exchange.cmd.alice.transfer", "_INBOX_alice.y.1", b"{}", now_ms=5)
    board.observe("exchange.cmd.alice.llm", "_INBOX_alice.y.2", b"{}", now_ms=5)
    limit = Envelope(ok=False, error=ErrorBody(code="hourly_limit_exceeded", message="wait"))
    board.observe("_INBOX_alice.y.1", None, enc(Envelope(ok=True, result={})), now_ms=6)
    board.observe("_INBOX_alice.y.2", None, enc(limit), now_ms=6)
    board.observe("_INBOX_alice.y.3", None, enc(limit), now_ms=6)
    board.on_agents(_agents("alice", "bob"), now_ms=7)
    counts = {a.agent: a.refusals for a in board.view(now_ms=8).agents}
    assert counts == {"alice": {"hourly_limit_exceeded": 1}, "bob": {"bid_exceeds_max_cost": 1}}


def _agents(*names: str) -> AgentsResult:
    return AgentsResult(
        agents=[
            AgentInfo(agent=n, level="1", base_rate="100", primary_llm="m", preferences={},
                      role="executor", capabilities=[], balance="10000", performance="1")
            for n in names
        ]
    )  # fmt: skip


def test_each_posting_counts_once_though_both_sides_receive_it() -> None:
    board = Board()
    event = PostingEvent(
        seq=9, idx=0, at_ns=0, sender="alice", verb="transfer", debit_account="alice",
        credit_account="bob", amount="2.5", kind="transfer", memo="",
    )  # fmt: skip
    board.observe("exchange.event.alice.posting", None, enc(event), now_ms=1)
    board.observe("exchange.event.bob.posting", None, enc(event), now_ms=1)
    again = msgspec.structs.replace(event, seq=10)
    board.observe("exchange.event.bob.posting", None, enc(again), now_ms=2)
    flows = board.view(now_ms=3).flows
    assert [(f.source, f.target, f.amount, f.count) for f in flows] == [("alice", "bob", "5", 2)]


def test_the_pheromone_map_sums_scanners_by_asset_and_direction() -> None:
    board = Board()
    board.on_pheromones(
        PheromonesResult(
            pheromones=[
                PheromoneOut(key="ETH:long:mom", strength=0.5),
                PheromoneOut(key="ETH:long:vol", strength=0.25),
                PheromoneOut(key="BTC:short:mom", strength=0.1),
            ]
        )
    )
    heat = [(c.asset, c.direction, c.strength) for c in board.view(now_ms=0).heat]
    assert heat == [("BTC", "short", 0.1), ("ETH", "long", 0.75)]


_subjects = st.sampled_from(
    [
        "swarm.task.cfp.analyze",
        "swarm.task.t.propose.a",
        "swarm.task.t.award",
        "swarm.task.t.closed",
        "swarm.task.t.disputed",
        "swarm.signal.a.opportunity.ETH",
        "swarm.vote.p.open",
        "swarm.vote.p.closed",
        "exchange.cmd.a.coalition.end",
        "exchange.event.a.posting",
        "_INBOX_a.r",
    ]
) | st.text(max_size=30)
_bodies = st.one_of(
    st.binary(max_size=40),
    st.just(enc(CFP)),
    st.dictionaries(st.sampled_from(["task_id", "cost", "state", "ok", "error"]),
                    st.one_of(st.text(max_size=5), st.integers(), st.booleans()), max_size=4)
    .map(enc),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_subjects, st.one_of(st.none(), st.just("_INBOX_a.r")), _bodies)))
def test_any_messages_leave_the_board_within_its_bounds(
    messages: list[tuple[str, str | None, bytes]],
) -> None:
    board = Board()
    for at, (subject, reply, body) in enumerate(messages):
        board.observe(subject, reply, body, now_ms=at)
    view = board.view(now_ms=len(messages))
    assert len(view.auctions) <= model.auctions_max
    assert len(view.refusals) <= model.refusals_max
    assert len(view.events) <= model.events_max
    assert len(board.pending) <= model.pending_max
    msgspec.json.decode(msgspec.json.encode(view), type=View)


def test_the_bounds_hold_under_many_auctions_and_requests() -> None:
    board = Board()
    for n in range(model.auctions_max + 10):
        cfp = msgspec.structs.replace(CFP, task_id=f"task-{n}")
        board.observe("swarm.task.cfp.analyze", None, enc(cfp), now_ms=n)
    for n in range(model.pending_max + 10):
        board.observe("exchange.cmd.a.transfer", f"_INBOX.r.{n}", b"{}", now_ms=n)
    assert len(board.view(now_ms=0).auctions) == model.auctions_max
    assert board.view(now_ms=0).auctions[0].task_id == f"task-{model.auctions_max + 9}"
    assert len(board.pending) == model.pending_max


def test_a_simulation_folder_becomes_the_same_document(tmp_path: Path) -> None:
    result = simulate(default_scenario(), seed=1, hours=3)
    write_files(result, tmp_path)
    view = simulation_view(tmp_path, now_ms=0)
    assert view.mode == "simulation"
    assert {a.agent for a in view.agents} == {a.agent for a in result.agents}
    assert set(view.series) == set(result.timeline)
    assert [m.name for m in view.metrics] == [m.name for m in result.metrics]
    assert len(view.refusals) == min(len(result.refusals), 60)
    spent = {a.agent: a.spent for a in view.agents}
    for flow in view.flows:  # agent -> model: what each agent spent on each model
        assert flow.source in spent


def test_a_folder_without_results_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SimulationFolderError, match="exchange simulate --out"):
        simulation_view(tmp_path, now_ms=0)
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(SimulationFolderError, match="does not hold"):
        simulation_view(tmp_path, now_ms=0)
