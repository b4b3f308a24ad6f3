"""Weighted votes (seed 2): plurality, supermajority (exactly 2/3), consensus, approval, quadratic.

A voter's weight is its performance score. Share = yes weight / (yes + no weight); abstentions count
toward the quorum, not the share. A proposal closes at its deadline or as soon as every eligible
voter has voted. An approved proposal carrying an action (a model's price, an agent's limits, a
contract's multiplier or budget) is applied by the exchange at once.

Quadratic ballots cost ``votes²`` tokens, paid to ``@fees``, and count ``votes × weight``.
"""

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Ledger, Refusal, refuse
from exchange.core.limits import NS_PER_S
from exchange.core.money import micro_of
from exchange.core.retention import keep_newest, kept_note
from protocols import subjects
from protocols import swarm as s
from protocols.amounts import MICRO_PER_TOKEN, format_micro
from protocols.errors import ErrorCode

options_max: Final = 32
_thresholds: Final = {
    "plurality": (Fraction(1, 2), False),
    "supermajority": (Fraction(2, 3), True),
    "consensus": (Fraction(1), True),
    "quadratic": (Fraction(1, 2), False),
}


@dataclass(slots=True)
class BallotRecord:
    voter: str
    weight: str
    choice: str | None
    approvals: list[str]
    votes: int


@dataclass(slots=True)
class Proposal:
    id: str
    proposer: str
    title: str
    kind: str
    options: list[str]
    quorum: int
    closes_at_ns: int
    eligible: list[str]
    action: dict[str, Any] | None
    ballots: list[BallotRecord] = field(default_factory=list)
    state: str = "open"
    outcome: str = ""
    tally: dict[str, Any] = field(default_factory=dict)


class Votes:
    """The voting rules, installed into a ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.proposals: dict[str, Proposal] = {}
        # Closed proposals, oldest first: beyond ``config.closed_proposals_kept`` the oldest is
        # forgotten, so the state does not grow with every vote ever held.
        self.closed: deque[str] = deque()
        ledger.register_handler(s.ProposeVote, self.propose)
        ledger.register_handler(s.CastVote, self.cast)
        ledger.register_timer_kind("vote_deadline", self._on_deadline)

    def propose(self, sender: str, cmd: s.ProposeVote) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        if sender not in ("admin", "exchange"):
            proposer = ledger.acting_agent(sender)
            if isinstance(proposer, Refusal):
                return proposer
        if cmd.kind == "approval" and not (2 <= len(cmd.options) <= options_max):
            return refuse(
                ErrorCode.invalid_ballot,
                f"an approval vote needs 2 to {options_max} options",
                path="$.options",
            )
        eligible = sorted(set(cmd.eligible)) if cmd.eligible else sorted(ledger.agents)
        for voter in eligible:
            if isinstance(found := ledger.agent(voter), Refusal):
                return found
        if cmd.action is not None and isinstance(bad := self._check_action(cmd.action), Refusal):
            return bad
        proposal = Proposal(
            id=ledger.new_id("proposal"),
            proposer=sender,
            title=cmd.title,
            kind=cmd.kind,
            options=list(cmd.options),
            quorum=cmd.quorum,
            closes_at_ns=ledger.book.now_ns + cmd.deadline_s * NS_PER_S,
            eligible=eligible,
            action=None if cmd.action is None else msgspec.to_builtins(cmd.action),
        )
        self.proposals[proposal.id] = proposal
        ledger.add_timer(proposal.closes_at_ns, "vote_deadline", proposal.id)
        ledger.publish(
            subjects.vote_open(proposal.id),
            s.VoteOpened(
                proposal_id=proposal.id,
                proposer=sender,
                title=cmd.title,
                kind=cmd.kind,
                options=proposal.options,
                quorum=cmd.quorum,
                closes_at_ns=proposal.closes_at_ns,
                eligible=eligible,
                action=cmd.action,
            ),
        )
        return self.view(proposal)

    def _check_action(self, action: s.Action) -> Refusal | None:
        ledger = self.ledger
        if isinstance(action, s.ModelPriceAction):
            if action.price < 0 or action.price != action.price.quantize(Decimal("0.000001")):
                return refuse(ErrorCode.too_many_decimals, "a price is ≥ 0 with ≤ 6 decimals")
            return None
        if isinstance(action, s.LimitsAction):
            found = ledger.agent(action.agent)
            if isinstance(found, Refusal):
                return found
            for name in ("burst", "reserve", "hourly", "daily"):
                value = getattr(action, name)
                if value is not None and isinstance(
                    bad := ledger.amount(value, f"action.{name}"), Refusal
                ):
                    return bad
            return None
        if not any(c.name == action.name for c in ledger.config.contracts):
            return refuse(ErrorCode.invalid_message, f"no contract named {action.name!r}")
        return None

    def cast(self, sender: str, cmd: s.CastVote) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        voter = ledger.acting_agent(sender)
        if isinstance(voter, Refusal):
            return voter
        proposal = self.find(cmd.proposal_id)
        if isinstance(proposal, Refusal):
            return proposal
        if proposal.state != "open":
            return refuse(ErrorCode.proposal_closed, f"{proposal.id} is closed")
        if voter.id not in proposal.eligible:
            return refuse(ErrorCode.not_eligible, f"{voter.id} may not vote on {proposal.id}")
        if any(b.voter == voter.id for b in proposal.ballots):
            return refuse(ErrorCode.already_voted, f"{voter.id} already voted on {proposal.id}")
        ballot = cmd.ballot
        if proposal.kind == "approval":
            unknown = sorted(set(ballot.approvals) - set(proposal.options))
            if unknown or ballot.choice not in (None, "abstain"):
                return refuse(
                    ErrorCode.invalid_ballot,
                    f"approve any of {proposal.options} in `approvals`; unknown: {unknown}",
                )
        elif ballot.choice is None:
            return refuse(ErrorCode.invalid_ballot, "a ballot needs choice: yes, no or abstain")
        votes = ballot.votes if proposal.kind == "quadratic" else 1
        cost = votes * votes * MICRO_PER_TOKEN if proposal.kind == "quadratic" else 0
        if cost and (denied := ledger.check_debit(voter, cost)) is not None:
            return denied
        if cost:
            ledger.book.post(voter.id, acc.FEES, cost, "vote.quadratic", proposal.id)
        proposal.ballots.append(
            BallotRecord(
                voter=voter.id,
                weight=str(voter.performance),
                choice=ballot.choice,
                approvals=sorted(set(ballot.approvals)),
                votes=votes,
            )
        )
        if len(proposal.ballots) == len(proposal.eligible):
            self._close(proposal)
        return self.view(proposal)

    def find(self, proposal_id: str) -> Proposal | Refusal:
        proposal = self.proposals.get(proposal_id)
        if proposal is None:
            return refuse(
                ErrorCode.unknown_proposal,
                f"no proposal {proposal_id!r} "
                + kept_note(self.ledger.config.closed_proposals_kept, "closed proposals"),
            )
        return proposal

    def _on_deadline(self, proposal_id: str) -> None:
        proposal = self.proposals.get(proposal_id)  # None: closed early and forgotten since
        if proposal is not None and proposal.state == "open":
            self._close(proposal)

    def tally(self, proposal: Proposal) -> s.VoteTally:
        yes = no = Fraction(0)
        abstentions = 0
        approvals: dict[str, Fraction] = {o: Fraction(0) for o in proposal.options}
        for ballot in proposal.ballots:
            weight = Fraction(Decimal(ballot.weight)) * ballot.votes
            if ballot.choice == "yes":
                yes += weight
            elif ballot.choice == "no":
                no += weight
            elif proposal.kind != "approval" or not ballot.approvals:
                abstentions += 1
            for option in ballot.approvals:
                approvals[option] += weight
        cast = len(proposal.ballots)
        share = yes / (yes + no) if yes + no else None
        winner = None
        if cast < proposal.quorum:
            outcome = "no_quorum"
        elif proposal.kind == "approval":
            best = max(approvals.values(), default=Fraction(0))
            if best == 0:
                outcome = "abstained"
            else:
                # The most approved option wins; among equals the first listed.
                winner = next(o for o in proposal.options if approvals[o] == best)
                outcome = "approved"
        elif share is None:
            outcome = "abstained"
        else:
            threshold, inclusive = _thresholds[proposal.kind]
            passed = share >= threshold if inclusive else share > threshold
            outcome = "approved" if passed else "rejected"
        return s.VoteTally(
            proposal_id=proposal.id,
            outcome=outcome,
            kind=proposal.kind,
            yes_weight=_text(yes),
            no_weight=_text(no),
            abstentions=abstentions,
            votes_cast=cast,
            yes_share=None if share is None else _text(share),
            winner=winner,
            approvals={o: _text(v) for o, v in approvals.items()},
            action_applied=False,
        )

    def _close(self, proposal: Proposal) -> None:
        tally = self.tally(proposal)
        applied = False
        if tally.outcome == "approved" and proposal.action is not None:
            applied = self._apply_action(proposal.action)
        tally = msgspec.structs.replace(tally, action_applied=applied)
        proposal.state, proposal.outcome = "closed", tally.outcome
        proposal.tally = msgspec.to_builtins(tally)
        self.ledger.publish(subjects.vote_closed(proposal.id), tally)
        keep_newest(
            self.closed, proposal.id, self.ledger.config.closed_proposals_kept, self.proposals.pop
        )

    def _apply_action(self, action: dict[str, Any]) -> bool:
        ledger = self.ledger
        kind = action["type"]
        if kind == "model_price":
            ledger.prices_micro[action["model"]] = Decimal(micro_of(Decimal(action["price"])))
            return True
        if kind == "limits":
            agent = ledger.agents.get(action["agent"])
            if agent is None:
                return False
            for name in ("burst", "reserve", "hourly", "daily"):
                if action.get(name) is not None:
                    setattr(agent.limits, f"{name}_micro", micro_of(Decimal(action[name])))
            return True
        if kind == "contract":
            return ledger.rules.amend_contract(
                action["name"],
                None if action.get("multiplier") is None else Decimal(action["multiplier"]),
                None if action.get("budget") is None else micro_of(Decimal(action["budget"])),
            )
        return False

    def view(self, proposal: Proposal) -> s.ProposalView:
        return s.ProposalView(
            proposal_id=proposal.id,
            proposer=proposal.proposer,
            title=proposal.title,
            kind=proposal.kind,
            options=list(proposal.options),
            quorum=proposal.quorum,
            closes_at_ns=proposal.closes_at_ns,
            eligible=list(proposal.eligible),
            state=proposal.state,
            outcome=proposal.outcome,
            votes_cast=len(proposal.ballots),
            tally=msgspec.convert(proposal.tally, s.VoteTally) if proposal.tally else None,
        )


def _text(value: Fraction) -> str:
    rounded = round(value * 10**6)
    return format_micro(rounded)
