"""The routing table: which subjects the daemon subscribes to, and what a message on each becomes.

Owns: ``Route`` rows (a subscription subject and a resolver) and the resolvers, which turn a
subject and a body into work for the batcher (a command with its sender and verb, or a query) or
into a refusal body (``invalid_message`` with msgspec's message and path, ``invalid_amount`` for an
amount string outside the grammar, ``unknown_verb`` listing the valid verbs, ``invalid_agent_id``).
Adding a subject means adding a row: swarm subjects (``swarm.task.<id>.propose.<sender>``...) come
from ``protocols.routes`` that way.
Must not: touch NATS, the core or the clock; decide anything beyond the wire (business rules are the
core's), or trust a sender found anywhere but the subject.

Every command is returned with its canonical JSON (what the journal stores), and that JSON is
checked to decode again, so a command built from a subject (whose fields msgspec did not validate)
can never reach the journal in a form that a replay would refuse.

A query that reads no ledger state (``exchange.core.stateless_queries``: ``shapley``) resolves to
``StatelessQueryWork``, which the receiver hands to the query pool instead of the writer, or, when
it is beyond its size bounds, to a ``query_too_large`` refusal. ``nesting_refusal`` bounds how deep
a body's arrays and objects nest, for the receiver to check before any decoder runs.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec

from exchange.core import stateless_queries
from protocols import routes as swarm_routes
from protocols import subjects
from protocols.commands import Command
from protocols.errors import ErrorCode
from protocols.ids import SYSTEM_SENDERS, is_agent_id
from protocols.nesting import depth_beyond
from protocols.queries import Query
from protocols.registry import COMMAND_DECODERS, QUERY_DECODERS, WIRE_COMMAND_DECODERS
from protocols.results import ErrorBody
from protocols.swarm import HEARTBEAT_VERB, Heartbeat
from protocols.wire import AmountSyntaxError

_encoder: Final = msgspec.json.Encoder()
_heartbeat_decoder: Final = msgspec.json.Decoder(Heartbeat)
# msgspec ends a validation message with " - at `$.path`" when the problem is below the root.
_path_re: Final = re.compile(r" - at `(?P<path>[^`]*)`$")
# For the nesting scan: every byte that is not a JSON bracket (deleted), and the brackets mapped
# to their step in depth, +1 or -1 as a signed byte.


# The per-message records of the daemon are msgspec Structs (gc=False: they hold no cycles), not
# frozen dataclasses: building one costs 0.07 us instead of 0.7 us, paid several times a command.
class CommandWork(msgspec.Struct, frozen=True, gc=False):
    """A decoded command: applied by the core as ``sender``, journaled as ``body``."""

    sender: str
    verb: str
    command: Command
    body: bytes
    reply_expected: bool = True


class QueryWork(msgspec.Struct, frozen=True, gc=False):
    verb: str
    query: Query


class StatelessQueryWork(msgspec.Struct, frozen=True, gc=False):
    """A query that reads no ledger state, within its size bounds: for the query pool.

    ``body`` is what the client sent (decoded once here, so known to be valid); the query
    process decodes it again, which costs less than pickling the decoded query would.
    """

    verb: str
    body: bytes


class HeartbeatWork(msgspec.Struct, frozen=True, gc=False):
    """A worker's heartbeat: recorded by the receiver, never queued, applied or journaled."""

    sender: str
    heartbeat: Heartbeat


Resolved = CommandWork | QueryWork | StatelessQueryWork | HeartbeatWork | ErrorBody
Resolver = Callable[[str, bytes], Resolved]


@dataclass(frozen=True, slots=True)
class Route:
    """One subscription. ``name`` names it in ``$SRV.INFO``/``$SRV.STATS`` (A-Z a-z 0-9 _ -)."""

    name: str
    subscription: str
    resolve: Resolver


def refusal(code: ErrorCode, message: str, *, path: str | None = None) -> ErrorBody:
    return ErrorBody(code=code.value, message=message, path=path)


def invalid_message(exc: msgspec.DecodeError, what: str) -> ErrorBody:
    """``invalid_message`` carrying msgspec's own message and the path of the bad field."""
    text = str(exc)
    found = _path_re.search(text)
    return refusal(
        ErrorCode.invalid_message,
        f"{what} is not valid: {text}; fix that field and send it again (every message's fields: "
        "docs/protocol-reference.md)",
        path=found["path"] if found else "$",
    )


def nesting_refusal(body: bytes, depth_max: int) -> ErrorBody | None:
    """``invalid_message`` when ``body`` nests deeper than ``depth_max``, else None.

    Why a bound at all: msgspec decodes nested values recursively, so a body 3,000 levels deep
    raised RecursionError in the decoder (no reply), and one just under the interpreter's limit
    would decode and could then be journaled, to fail when encoded or replayed at another stack
    depth. The bound keeps every decoder far from the limit, whatever the stack around it.
    """
    depth = depth_beyond(body, depth_max)
    if depth is None:
        return None
    return refusal(
        ErrorCode.invalid_message,
        f"the body nests arrays and objects {depth} levels deep and the exchange takes at most "
        f"{depth_max} (the message_depth_max limit); send a flatter message",
        path="$",
    )


def invalid_amount(exc: AmountSyntaxError, what: str) -> ErrorBody:
    """``invalid_amount``: an amount string outside the grammar, with the grammar and the path."""
    return refusal(
        ErrorCode.invalid_amount,
        f'{what} is not valid: {exc}; send tokens as a string like "12.5"',
        path=exc.path,
    )


def _sender_refusal(sender: str, subject: str) -> ErrorBody | None:
    if is_agent_id(sender) or sender in SYSTEM_SENDERS:
        return None
    return refusal(
        ErrorCode.invalid_agent_id,
        f"the sender {sender[:80]!r} in {subject[:200]!r} is not an agent id (1-64 of a-z, 0-9, - "
        "and _) nor admin; publish on exchange.cmd.<your agent id>.<verb>",
    )


def _unknown_verb(kind: str, verb: str, valid: list[str], example: str) -> ErrorBody:
    return refusal(
        ErrorCode.unknown_verb,
        f"there is no {kind} verb {verb[:80]!r}; valid verbs: {', '.join(sorted(valid))} "
        f"(publish on {example})",
    )


def command_work(sender: str, verb: str, command: Command, *, reply_expected: bool) -> Resolved:
    """The work for a command, with its canonical JSON checked to decode again."""
    body = _encoder.encode(command)
    try:
        COMMAND_DECODERS[verb].decode(body)
    except msgspec.ValidationError as exc:
        return invalid_message(exc, f"the {verb} command")
    return CommandWork(sender, verb, command, body, reply_expected)


def resolve_command(subject: str, body: bytes) -> Resolved:
    """``exchange.cmd.<sender>.<verb...>``: the sender from the subject, the body by the verb."""
    parsed = subjects.parse_command(subject)
    if parsed is None:
        return _unknown_verb(
            "command", "", list(COMMAND_DECODERS), subjects.command("<sender>", "<verb>")
        )
    if (refused := _sender_refusal(parsed.sender, subject)) is not None:
        return refused
    if parsed.verb == HEARTBEAT_VERB:
        try:
            return HeartbeatWork(parsed.sender, _heartbeat_decoder.decode(body or b"{}"))
        except msgspec.DecodeError as exc:
            return invalid_message(exc, "the heartbeat")
    decode = WIRE_COMMAND_DECODERS.get(parsed.verb)
    if decode is None:
        return _unknown_verb(
            "command",
            parsed.verb,
            list(COMMAND_DECODERS),
            subjects.command(parsed.sender, "<verb>"),
        )
    try:
        command = decode(body)
    except AmountSyntaxError as exc:
        return invalid_amount(exc, f"the body of {parsed.verb}")
    except msgspec.DecodeError as exc:
        return invalid_message(exc, f"the body of {parsed.verb}")
    return CommandWork(parsed.sender, parsed.verb, command, _encoder.encode(command))


def resolve_query(subject: str, body: bytes) -> Resolved:
    """``exchange.query.<verb...>``; an empty body is ``{}``."""
    verb = subjects.parse_query(subject) or ""
    decoder = QUERY_DECODERS.get(verb)
    if decoder is None:
        return _unknown_verb("query", verb, list(QUERY_DECODERS), subjects.query("<verb>"))
    try:
        query = decoder.decode(body or b"{}")
    except msgspec.DecodeError as exc:
        return invalid_message(exc, f"the body of query {verb}")
    if stateless_queries.is_stateless(query):
        too_large = stateless_queries.size_refusal(query)
        if too_large is not None:
            return too_large.body
        return StatelessQueryWork(verb, body or b"{}")
    return QueryWork(verb, query)


def resolve_swarm(subject: str, body: bytes) -> Resolved:
    """``swarm.*`` messages the exchange takes (bids, results, ballots, signals), via protocols."""
    try:
        routed = swarm_routes.route(subject, body)
    except AmountSyntaxError as exc:
        return invalid_amount(exc, f"the message on {subject[:200]!r}")
    except msgspec.DecodeError as exc:
        return invalid_message(exc, f"the message on {subject[:200]!r}")
    if routed is None:
        return refusal(
            ErrorCode.unknown_verb,
            f"the exchange takes no message on {subject[:200]!r}; it takes "
            f"{', '.join(swarm_routes.SUBSCRIPTIONS)}",
        )
    if (refused := _sender_refusal(routed.apply_as, subject)) is not None:
        return refused
    return command_work(
        routed.apply_as, routed.verb, routed.command, reply_expected=routed.reply_expected
    )


def default_routes() -> tuple[Route, ...]:
    """Commands, queries, and every swarm subject ``protocols.routes`` turns into commands."""
    swarm = tuple(
        Route(
            name="swarm_" + "_".join(p for p in pattern.split(".")[1:] if p != "*"),
            subscription=pattern,
            resolve=resolve_swarm,
        )
        for pattern in swarm_routes.SUBSCRIPTIONS
    )
    return (
        Route(name="commands", subscription=subjects.CMD_WILDCARD, resolve=resolve_command),
        Route(name="queries", subscription=subjects.QUERY_WILDCARD, resolve=resolve_query),
        *swarm,
    )
