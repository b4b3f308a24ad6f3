"""Weighted votes (docs/economy.md): the five kinds, quorum, abstention, deadlines, actions."""

import json
from decimal import Decimal
from typing import Any

from core_support import Harness
from core_support import restored as restore

from exchange.core.config import EconomyConfig, GovernanceConfig
from protocols import commands as c
from protocols import queries as q
from protocols import swarm as s
from protocols.ids import ADMIN
from protocols.routes import route

MICRO = 1_000_000
START = 10_000 * MICRO
VOTERS = ["builder", "claude", "lambda"]


def propose(h: Harness, kind: str = "plurality", **fields: Any) -> str:
    fields.setdefault("eligible", VOTERS)
    command = s.ProposeVote(request_id=h.rid(), title="motion", kind=kind, **fields)
    outcome = h.apply(ADMIN, command)
    assert outcome.ok, outcome.reply
    view = json.loads(outcome.reply)["result"]
    assert view["state"] == "open"
    return view["proposal_id"]


def cast(h: Harness, voter: str, proposal_id: str, **ballot: Any):
    outcome = h.send(voter, s.CastVote, proposal_id=proposal_id, ballot=s.Ballot(**ballot))
    assert outcome.ok, outcome.reply
    return outcome


def tally_of(outcome: Any) -> s.VoteTally | None:
    found = [p for p in outcome.publications if isinstance(p.payload, s.VoteTally)]
    assert len(found) <= 1
    if not found:
        return None
    assert found[0].subject == f"swarm.vote.{found[0].payload.proposal_id}.closed"
    return found[0].payload


def run(h: Harness, kind: str, choices: list[str], **fields: Any) -> s.VoteTally:
    """Every voter of VOTERS casts its choice in turn; the last closes the proposal."""
    proposal_id = propose(h, kind, **fields)
    outcomes = [cast(h, v, proposal_id, choice=ch) for v, ch in zip(VOTERS, choices, strict=True)]
    assert all(tally_of(o) is None for o in outcomes[:-1])
    tally = tally_of(outcomes[-1])
    assert tally is not None
    assert h.ex.votes.proposals[proposal_id].state == "closed"
    return tally


def test_plurality() -> None:
    h = Harness()
    assert run(h, "plurality", ["yes", "yes", "no"]).outcome == "approved"
    tally = run(h, "plurality", ["yes", "no", "abstain"])  # share exactly 1/2 is not a majority
    assert (tally.outcome, tally.yes_share, tally.abstentions) == ("rejected", "0.5", 1)


def test_supermajority_two_of_three_is_approved_exactly() -> None:
    h = Harness()
    tally = run(h, "supermajority", ["yes", "no", "yes"])
    assert (tally.outcome, tally.yes_share, tally.yes_weight, tally.no_weight) == (
        "approved",
        "0.666667",
        "2",
        "1",
    )
    assert run(h, "supermajority", ["no", "yes", "no"]).outcome == "rejected"


def test_consensus_needs_every_yes() -> None:
    h = Harness()
    assert run(h, "consensus", ["yes", "yes", "yes"]).outcome == "approved"
    assert run(h, "consensus", ["yes", "yes", "no"]).outcome == "rejected"


def test_approval_most_approvals_wins_and_ties_go_to_first_listed() -> None:
    h = Harness()
    options = ["x", "y", "z"]
    pid = propose(h, "approval", options=options)
    cast(h, "builder", pid, approvals=["x", "y"])
    cast(h, "claude", pid, approvals=["y"])
    tally = tally_of(cast(h, "lambda", pid, approvals=["z"]))
    assert tally is not None
    assert (tally.outcome, tally.winner) == ("approved", "y")
    assert tally.approvals == {"x": "1", "y": "2", "z": "1"}

    pid = propose(h, "approval", options=["z", "y", "x"])
    cast(h, "builder", pid, approvals=["x"])
    cast(h, "claude", pid, approvals=["y"])
    tally = tally_of(cast(h, "lambda", pid, approvals=["x", "y"]))
    assert tally is not None
    assert (tally.outcome, tally.winner) == ("approved", "y")  # y is listed before x


def test_quadratic_costs_votes_squared_and_counts_weight_times_votes() -> None:
    h = Harness()
    h.ex.ledger.agents["lambda"].performance = Decimal("1.5")
    pid = propose(h, "quadratic")
    cast(h, "builder", pid, choice="yes", votes=3)
    assert h.ex.ledger.book.balance("builder") == START - 9 * MICRO
    assert h.ex.ledger.book.balance("@fees") == 9 * MICRO
    cast(h, "claude", pid, choice="no", votes=1)
    tally = tally_of(cast(h, "lambda", pid, choice="no", votes=2))
    assert tally is not None
    # yes 3 × 1.0 = 3; no 1 × 1.0 + 2 × 1.5 = 4
    assert (tally.outcome, tally.yes_weight, tally.no_weight) == ("rejected", "3", "4")
    assert h.ex.ledger.book.balance("@fees") == 14 * MICRO
    assert h.ex.ledger.book.balance("claude") == START - MICRO
    assert h.ex.ledger.book.balance("lambda") == START - 4 * MICRO
    h.ex.check_invariants()


def test_quorum_failure_at_deadline() -> None:
    h = Harness()
    pid = propose(h, quorum=3, deadline_s=60)
    cast(h, "builder", pid, choice="yes")
    cast(h, "claude", pid, choice="yes")
    h.advance(59)
    assert tally_of(h.tick()) is None
    h.advance(1)
    tally = tally_of(h.tick())
    assert tally is not None
    assert (tally.outcome, tally.votes_cast) == ("no_quorum", 2)


def test_only_abstentions_is_abstained() -> None:
    h = Harness()
    tally = run(h, "plurality", ["abstain", "abstain", "abstain"], quorum=3)
    assert (tally.outcome, tally.abstentions, tally.yes_share) == ("abstained", 3, None)


def test_deadline_close_by_tick() -> None:
    h = Harness()
    pid = propose(h, "supermajority", deadline_s=120)
    cast(h, "builder", pid, choice="yes")
    cast(h, "claude", pid, choice="yes")
    h.advance(120)
    tally = tally_of(h.tick())
    assert tally is not None
    assert (tally.outcome, tally.votes_cast, tally.yes_share) == ("approved", 2, "1")
    h.refused(
        "lambda", s.CastVote, "proposal_closed", proposal_id=pid, ballot=s.Ballot(choice="no")
    )


def test_vote_refusals() -> None:
    h = Harness()
    pid = propose(h)
    cast(h, "builder", pid, choice="yes")
    h.refused("builder", s.CastVote, "already_voted", proposal_id=pid, ballot=s.Ballot(choice="no"))
    h.refused("zero", s.CastVote, "not_eligible", proposal_id=pid, ballot=s.Ballot(choice="yes"))
    h.refused(
        "claude",
        s.CastVote,
        "unknown_proposal",
        proposal_id="proposal-x",
        ballot=s.Ballot(choice="yes"),
    )


# Parameter actions are held by the council (here the three VOTERS), by supermajority or consensus
# (see test_governance.py for who may propose what).
COUNCIL = EconomyConfig(governance=GovernanceConfig(council=VOTERS))


def test_approved_model_price_changes_later_llm_cost() -> None:
    h = Harness(COUNCIL)
    h.ok("zero", c.LlmRequest, task_type="chat", tokens=5000, model="llama3.2")
    assert h.ex.ledger.book.balance("zero") == START - 500_000
    action = s.ModelPriceAction(model="llama3.2", price=Decimal("0.2"))
    tally = run(h, "supermajority", ["yes", "yes", "no"], action=action, eligible=[])
    assert (tally.outcome, tally.action_applied) == ("approved", True)
    h.ok("zero", c.LlmRequest, task_type="chat", tokens=5000, model="llama3.2")
    assert h.ex.ledger.book.balance("zero") == START - 500_000 - MICRO
    assert h.ex.ledger.book.balance("@llm.llama3.2") == 1_500_000


def test_rejected_action_is_not_applied() -> None:
    h = Harness(COUNCIL)
    action = s.ModelPriceAction(model="llama3.2", price=Decimal(50))
    tally = run(h, "supermajority", ["no", "yes", "no"], action=action, eligible=[])
    assert (tally.outcome, tally.action_applied) == ("rejected", False)
    h.ok("zero", c.LlmRequest, task_type="chat", tokens=5000, model="llama3.2")
    assert h.ex.ledger.book.balance("zero") == START - 500_000


def test_only_the_configured_number_of_closed_proposals_is_kept() -> None:
    h = Harness(EconomyConfig(closed_proposals_kept=1))
    first = propose(h, deadline_s=60)
    for voter in VOTERS:
        cast(h, voter, first, choice="yes")  # closes it early; its deadline timer stays
    second = propose(h, deadline_s=60)
    for voter in VOTERS:
        cast(h, voter, second, choice="no")
    assert list(h.ex.votes.proposals) == [second] and list(h.ex.votes.closed) == [second]
    refusal = json.loads(h.ex.query(q.ProposalQuery(proposal_id=first)))["error"]
    assert refusal["code"] == "unknown_proposal" and "the last 1 closed" in refusal["message"]
    h.refused(
        "claude", s.CastVote, "unknown_proposal", proposal_id=first, ballot=s.Ballot(choice="no")
    )
    h.advance(61)
    h.tick()  # both deadlines pass: the forgotten proposal's timer finds nothing
    assert h.query(q.ProposalQuery(proposal_id=second))["outcome"] == "rejected"
    again = restore(h.ex)
    assert again.digest() == h.ex.digest() and list(again.votes.closed) == [second]


def test_a_second_ballot_on_the_swarm_subject_is_already_voted() -> None:
    """Ballots arrive on swarm.vote.<id>.cast.<sender>: the same ballot again gets its first
    reply; a different one gets the documented already_voted, not request_id_reused."""
    h = Harness()
    pid = propose(h)
    subject = f"swarm.vote.{pid}.cast.builder"
    outcomes = []
    for body in (b'{"choice":"yes"}', b'{"choice":"yes"}', b'{"choice":"no"}'):
        found = route(subject, body)
        assert found is not None
        outcomes.append(h.apply(found.apply_as, found.command))
    first, retry, changed = outcomes
    assert first.ok and retry.duplicate and retry.reply == first.reply
    assert changed.code == "already_voted", changed.reply
