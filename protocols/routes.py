"""How messages agents publish on ``swarm.*`` subjects become exchange commands.

The subject carries the ids and the sender; the body carries the rest. Request ids are derived
from the subject's ids and the decoded body, so a bidder retrying the same bid gets the same reply,
and a second, different bid (or ballot) reaches the rules and is refused with their code
(``duplicate_bid``, ``already_voted``). Pure: no I/O.
"""

import hashlib
from collections.abc import Callable
from typing import Final, get_args

import msgspec

from protocols import subjects
from protocols import swarm as s
from protocols.commands import Command
from protocols.ids import EXCHANGE
from protocols.wire import wire_decoder

SUBSCRIPTIONS: Final = (
    "swarm.signal.*.*.*",
    "swarm.task.*.propose.*",
    "swarm.task.*.refuse.*",
    "swarm.task.*.inform.*",
    "swarm.task.*.failure.*",
    "swarm.vote.*.cast.*",
)
_signal_types: Final = frozenset(get_args(s.SignalType))

# Peers' bodies: amount strings only in the published grammar (protocols.wire).
_decode_signal: Final = wire_decoder(s.AgentSignal)
_decode_bid: Final = wire_decoder(s.Bid)
_decode_refuse: Final = wire_decoder(s.RefuseTask)
_decode_report: Final = wire_decoder(s.TaskReport)
_decode_ballot: Final = wire_decoder(s.Ballot)


class Routed(msgspec.Struct, frozen=True):
    """``command`` applied as ``apply_as``; ``reply_expected`` false for fire-and-forget signals."""

    apply_as: str
    verb: str
    command: Command
    reply_expected: bool = True


def route(subject: str, body: bytes) -> Routed | None:
    """The command for a swarm message, or None when the subject is not one the exchange takes.

    Raises ``msgspec.ValidationError`` or ``msgspec.DecodeError`` for a bad body (with the path),
    ``protocols.wire.AmountSyntaxError`` (a ``ValidationError``) for an amount outside the grammar.
    """
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "swarm":
        return None
    builder = _builders.get((parts[1], parts[3]))
    if builder is None and parts[1] == "signal":
        return _signal(subject, body)
    return None if builder is None else builder(subject, body)


def _signal(subject: str, body: bytes) -> Routed | None:
    parsed = subjects.parse_signal(subject)
    if parsed is None:
        return None
    if parsed.signal_type not in _signal_types:
        raise msgspec.ValidationError(
            f"signal_type must be one of {sorted(_signal_types)}, got {parsed.signal_type!r}"
            " - at `subject`"
        )
    signal = _decode_signal(body or b"{}")
    for name, expected in (("signal_type", parsed.signal_type), ("asset", parsed.asset)):
        given = getattr(signal, name)
        if given is not None and given != expected:
            raise msgspec.ValidationError(
                f"{name} {given!r} differs from the subject's {expected!r} - at `$.{name}`"
            )
    if signal.agent_id is not None and signal.agent_id != parsed.sender:
        raise msgspec.ValidationError(
            f"agent_id {signal.agent_id!r} differs from the subject's sender - at `$.agent_id`"
        )
    scanner = signal.metadata.get("scanner")
    command = s.ObserveSignal(
        request_id="signal",
        sender=parsed.sender,
        signal_type=parsed.signal_type,
        asset=parsed.asset,
        confidence=signal.confidence,
        direction=signal.direction,
        scanner=scanner if isinstance(scanner, str) and _is_token(scanner) else None,
    )
    return Routed(EXCHANGE, "signal.observe", command, reply_expected=False)


def _is_token(text: str) -> bool:
    return 0 < len(text) <= 64 and all(ch.isalnum() or ch in "_-" for ch in text)


def _request_id(kind: str, target_id: str, body: msgspec.Struct) -> str:
    """``<kind>:<32 hex digits>``, from the target's id and the body's canonical JSON: the same
    message gives the same id (a retry), a different one a new id. Hashed, not spelled out: ids
    are up to 128 characters and a request id at most 64."""
    digest = hashlib.sha256(target_id.encode() + b"\n" + msgspec.json.encode(body))
    return f"{kind}:{digest.hexdigest()[:32]}"


def _propose(subject: str, body: bytes) -> Routed:
    task_id, _, sender = _task_parts(subject)
    bid = _decode_bid(body)
    request_id = _request_id("propose", task_id, bid)
    command = s.SubmitBid(request_id=request_id, task_id=task_id, bid=bid)
    return Routed(sender, "task.propose", command)


def _refuse(subject: str, body: bytes) -> Routed:
    task_id, _, sender = _task_parts(subject)
    refusal = _decode_refuse(body or b"{}")
    request_id = _request_id("refuse", task_id, refusal)
    command = s.SubmitRefusal(request_id=request_id, task_id=task_id, reason=refusal.reason)
    return Routed(sender, "task.refuse", command)


def _report(subject: str, body: bytes) -> Routed:
    task_id, performative, sender = _task_parts(subject)
    report = _decode_report(body or b"{}")
    command = s.SubmitResult(
        request_id=_request_id(f"report-{performative}", task_id, report),
        task_id=task_id,
        success=performative == "inform",
        output=report.output,
        reason=report.reason,
    )
    return Routed(sender, "task.report", command)


def _cast(subject: str, body: bytes) -> Routed:
    parsed = subjects.parse_vote_cast(subject)
    assert parsed is not None
    ballot = _decode_ballot(body)
    command = s.CastVote(
        request_id=_request_id("vote", parsed.proposal_id, ballot),
        proposal_id=parsed.proposal_id,
        ballot=ballot,
    )
    return Routed(parsed.sender, "vote.cast", command)


def _task_parts(subject: str) -> tuple[str, str, str]:
    parsed = subjects.parse_task_message(subject)
    assert parsed is not None
    return parsed.task_id, parsed.performative, parsed.sender


_builders: Final[dict[tuple[str, str], Callable[[str, bytes], Routed]]] = {
    ("task", "propose"): _propose,
    ("task", "refuse"): _refuse,
    ("task", "inform"): _report,
    ("task", "failure"): _report,
    ("vote", "cast"): _cast,
}
