"""Weighted votes (seed 2): plurality, supermajority (exactly 2/3), consensus, approval, quadratic.

A voter's weight is its performance score. Share = yes weight / (yes + no weight); abstentions count
toward the quorum, not the share. A proposal closes at its deadline or as soon as every eligible
voter has voted. An approved proposal carrying an action (a model's price, an agent's limits, a
contract's multiplier or budget) is applied by the exchange at once.

Quadratic ballots cost ``votes²`` tokens, paid to ``@fees``, and count ``votes × weight``.
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Final

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Agent, Ledger
from exchange.core.money import micro_of
from exchange.core.refusals import Refusal, refuse
from exchange.core.retention import keep_newest, kept_note
from exchange.core.states import (
    ACTION,
    PROPOSAL,
    ActionEvent,
    ActionState,
    ProposalEvent,
    ProposalState,
)
from protocols import subjects
from protocols import swarm as s
from protocols.amounts import MICRO_PER_TOKEN, format_micro
from protocols.errors import ErrorCode
from protocols.ids import SYSTEM_SENDERS
from protocols.units import NS_PER_S

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
    state: ProposalState = ProposalState.open
    outcome: str = ""
    tally: dict[str, Any] = field(default_factory=dict)
    action_state: ActionState = ActionState.none
    # A governed vote's quorum: the weight its ballots (abstentions too) must reach, "" if none.
    quorum_weight: str = ""


class VotesState(msgspec.Struct, frozen=True, kw_only=True):
    proposals: list[Proposal]
    closed_proposals: list[str]


class Votes:
    """The voting rules, installed into a ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.proposals: dict[str, Proposal] = {}
        # Closed proposals, oldest first: beyond ``config.closed_proposals_kept`` the oldest is
        # forgotten, so the state does not grow with every vote ever held.
        self.closed: deque[str] = deque()
        # A voter's weight: its performance, times its stake's term once staking is installed
        # (machine.py; docs/economy.md, Staking).
        self.weight_of: Callable[[Agent], Decimal] = _performance

    def snapshot(self) -> VotesState:
        return VotesState(
            proposals=list(self.proposals.values()), closed_proposals=list(self.closed)
        )

    def restore(self, state: VotesState) -> None:
        self.proposals.update((p.id, p) for p in state.proposals)
        self.closed.extend(state.closed_proposals)

    def propose(self, sender: str, cmd: s.ProposeVote) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        if sender not in SYSTEM_SENDERS:
            proposer = ledger.acting_agent(sender)
            if isinstance(proposer, Refusal):
                return proposer
        if cmd.kind == "approval" and not (2 <= len(cmd.options) <= options_max):
            return refuse(
                ErrorCode.invalid_ballot,
                f"an approval vote needs 2 to {options_max} options",
                path="$.options",
            )
        quorum_weight = ""
        if cmd.action is None:
            eligible = sorted(set(cmd.eligible)) if cmd.eligible else sorted(ledger.agents)
            for voter in eligible:
                if isinstance(found := ledger.agent(voter), Refusal):
                    return found
        else:
            governed = self._governed(sender, cmd)
            if isinstance(governed, Refusal):
                return governed
            eligible, quorum_weight = governed
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
            action_state=ActionState.none if cmd.action is None else ActionState.pending,
            quorum_weight=quorum_weight,
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

    # ------------------------------------------------------------------------ governance

    def electorate(self) -> list[str]:
        """Who votes on a parameter action: the council's registered members, or every agent."""
        council = self.ledger.config.governance.council
        agents = self.ledger.agents
        return sorted({a for a in council if a in agents}) if council else sorted(agents)

    def _governed(self, sender: str, cmd: s.ProposeVote) -> tuple[list[str], str] | Refusal:
        """The electorate of a vote carrying an action and the weight its ballots must reach
        (``quorum_share`` of the electorate's weight now), or why it may not be held.

        The proposer never picks the electorate, a bare majority never changes the economy, and
        an agent's limits are changed only at its own request (see docs/economy.md, Governance).
        """
        assert cmd.action is not None
        rules = self.ledger.config.governance
        action = cmd.action
        if isinstance(action, s.LimitsAction) and sender not in (action.agent, *SYSTEM_SENDERS):
            return refuse(
                ErrorCode.not_authorized,
                f"only {action.agent} (or the operator) may propose a change to {action.agent}'s "
                "limits; no agent can vote another's limits",
                path="$.action.agent",
            )
        if cmd.kind not in rules.parameter_kinds:
            return refuse(
                ErrorCode.vote_kind_not_allowed,
                f"a vote that changes the economy must be one of {rules.parameter_kinds}, "
                f"not {cmd.kind!r}",
                path="$.kind",
            )
        electorate = self.electorate()
        if not electorate:
            return refuse(ErrorCode.electorate_not_allowed, "no registered agent may vote on it")
        if cmd.eligible and sorted(set(cmd.eligible)) != electorate:
            return refuse(
                ErrorCode.electorate_not_allowed,
                "a vote that changes the economy is held by "
                + ("the council" if rules.council else "every registered agent")
                + f" ({len(electorate)} voters), not by voters the proposer picks; "
                "leave eligible empty",
                path="$.eligible",
            )
        if isinstance(bad := self._check_action(action), Refusal):
            return bad
        agents = self.ledger.agents
        weight = sum((self.weight_of(agents[voter]) for voter in electorate), Decimal(0))
        return electorate, _text(Fraction(weight) * Fraction(rules.quorum_share))

    def _check_action(self, action: s.Action) -> Refusal | None:
        """Every value the action would set, checked now, so that applying it cannot fail."""
        ledger = self.ledger
        rules = ledger.config.governance
        if isinstance(action, s.ModelPriceAction):
            if isinstance(known := ledger.known_model(action.model), Refusal):
                return known
            return _within(
                action.price, rules.price_min, rules.price_max, "action.price", zero_ok=True
            )
        if isinstance(action, s.LimitsAction):
            found = ledger.agent(action.agent)
            if isinstance(found, Refusal):
                return found
            values = [getattr(action, name) for name in ("burst", "reserve", "hourly", "daily")]
            if all(value is None for value in values):
                return refuse(
                    ErrorCode.invalid_message,
                    "a limits action sets at least one of burst, reserve, hourly, daily",
                    path="$.action",
                )
            for name, value in zip(("burst", "reserve", "hourly", "daily"), values, strict=True):
                if value is not None and isinstance(
                    bad := ledger.amount(value, f"action.{name}"), Refusal
                ):
                    return bad
            return None
        if not any(c.name == action.name for c in ledger.config.contracts):
            known = ", ".join(c.name for c in ledger.config.contracts)
            return refuse(
                ErrorCode.no_contract,
                f"no contract named {action.name!r}; one of {known}",
                path="$.action.name",
            )
        if action.multiplier is None and action.budget is None:
            return refuse(
                ErrorCode.invalid_message,
                "a contract action sets multiplier, budget or both",
                path="$.action",
            )
        if action.multiplier is not None and (
            out := _within(
                action.multiplier, rules.multiplier_min, rules.multiplier_max, "action.multiplier"
            )
        ):
            return out
        if action.budget is not None and isinstance(
            budget := ledger.amount(action.budget, "action.budget"), Refusal
        ):
            return budget
        return None

    def ratify(self, sender: str, cmd: s.RatifyVote) -> msgspec.Struct | Refusal:
        if (denied := self.ledger.require_admin(sender, "vote.ratify")) is not None:
            return denied
        proposal = self.find(cmd.proposal_id)
        if isinstance(proposal, Refusal):
            return proposal
        event = ActionEvent.ratify if cmd.approve else ActionEvent.veto
        hint = "only an approved action an agent proposed waits for the operator"
        if no := ACTION.refusal(proposal.action_state, event, f"{proposal.id}'s action", hint):
            return no
        assert proposal.action is not None
        if event == ActionEvent.ratify and not self._apply_action(proposal.action):
            event = ActionEvent.drop  # its target is gone since
        proposal.action_state = ACTION.next(proposal.action_state, event)
        return self.view(proposal)

    def cast(self, sender: str, cmd: s.CastVote) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        voter = ledger.acting_agent(sender)
        if isinstance(voter, Refusal):
            return voter
        proposal = self.find(cmd.proposal_id)
        if isinstance(proposal, Refusal):
            return proposal
        if (
            closed := PROPOSAL.refusal(proposal.state, ProposalEvent.cast, proposal.id)
        ) is not None:
            return closed
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
                weight=str(self.weight_of(voter)),
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

    def on_deadline(self, proposal_id: str) -> None:
        proposal = self.proposals.get(proposal_id)  # None: closed early and forgotten since
        if proposal is not None and proposal.state == ProposalState.open:
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
        cast_weight = sum(
            (Fraction(Decimal(b.weight)) for b in proposal.ballots), start=Fraction(0)
        )
        if cast < proposal.quorum or (
            proposal.quorum_weight and cast_weight < Fraction(Decimal(proposal.quorum_weight))
        ):
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
        if proposal.action is not None:
            if tally.outcome != "approved":
                event = ActionEvent.drop
            elif (
                self.ledger.config.governance.ratification
                and proposal.proposer not in SYSTEM_SENDERS
            ):
                event = ActionEvent.approved
            else:
                applied = self._apply_action(proposal.action)
                event = ActionEvent.apply if applied else ActionEvent.drop
            proposal.action_state = ACTION.next(proposal.action_state, event)
        tally = msgspec.structs.replace(tally, action_applied=applied)
        proposal.state = PROPOSAL.next(proposal.state, ProposalEvent.close)
        proposal.outcome = tally.outcome
        proposal.tally = msgspec.to_builtins(tally)
        self.ledger.publish(subjects.vote_closed(proposal.id), tally)
        keep_newest(
            self.closed, proposal.id, self.ledger.config.closed_proposals_kept, self.proposals.pop
        )

    def _apply_action(self, action: dict[str, Any]) -> bool:
        ledger = self.ledger
        kind = action["type"]
        if kind == "model_price":
            if action["model"] not in ledger.prices_micro:
                return False
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
            action=None if proposal.action is None else msgspec.convert(proposal.action, s.Action),
            action_state=proposal.action_state,
            quorum_weight=proposal.quorum_weight or None,
        )


def _within(
    value: Decimal, low: Decimal, high: Decimal, field_name: str, *, zero_ok: bool = False
) -> Refusal | None:
    """A parameter a vote sets: more than 0 (or 0 too, for a price, if the bounds allow it), at
    most 6 decimals, within the governance bounds."""
    if not value.is_finite() or value < 0 or (value == 0 and not zero_ok):
        return refuse(
            ErrorCode.amount_must_be_positive,
            f"{field_name} must be {'0 or' if zero_ok else ''} more than 0, got {value}",
            path=f"$.{field_name}",
        )
    if not low <= value <= high:
        return refuse(
            ErrorCode.parameter_out_of_bounds,
            f"{field_name} must be between {low} and {high} (the economy's governance bounds), "
            f"got {value}",
            path=f"$.{field_name}",
        )
    # Within the bounds, so quantize cannot exceed the decimal context's precision.
    if value != value.quantize(Decimal("0.000001")):
        return refuse(
            ErrorCode.too_many_decimals,
            f"{field_name} has at most 6 decimal places, got {value}",
            path=f"$.{field_name}",
        )
    return None


def _performance(agent: Agent) -> Decimal:
    return agent.performance


def _text(value: Fraction) -> str:
    rounded = round(value * 10**6)
    return format_micro(rounded)
