"""The routing table's resolvers, as pure functions: subject and body in, work or a refusal out."""

import msgspec
import pytest

from exchange.daemon.routes import (
    CommandWork,
    QueryWork,
    StatelessQueryWork,
    default_routes,
    nesting_refusal,
    resolve_command,
    resolve_query,
    resolve_swarm,
)
from protocols.commands import Transfer
from protocols.nesting import nesting_depth
from protocols.queries import BalanceQuery, StatusQuery
from protocols.registry import COMMAND_DECODERS
from protocols.results import ErrorBody


def test_a_command_takes_its_sender_from_the_subject() -> None:
    work = resolve_command(
        "exchange.cmd.claude.transfer", b'{"request_id":"r","to":"zero","amount":"1.50"}'
    )
    assert isinstance(work, CommandWork)
    assert (work.sender, work.verb) == ("claude", "transfer")
    assert isinstance(work.command, Transfer)
    # The journaled body is canonical and decodes to the same command.
    assert COMMAND_DECODERS["transfer"].decode(work.body) == work.command
    assert msgspec.json.decode(work.body)["amount"] == "1.50"


def test_a_dotted_verb_is_one_verb() -> None:
    work = resolve_command("exchange.cmd.zero.pool.join", b'{"request_id":"r","pool_id":"pool-1"}')
    assert isinstance(work, CommandWork) and work.verb == "pool.join"


TRANSFER = "exchange.cmd.claude.transfer"
WRONG_TYPE = b'{"request_id":"r","to":1,"amount":"1"}'
UNKNOWN_FIELD = b'{"request_id":"r","to":"z","amount":"1","x":1}'


@pytest.mark.parametrize(
    ("subject", "body", "code", "path"),
    [
        (TRANSFER, b"{", "invalid_message", "$"),
        (TRANSFER, WRONG_TYPE, "invalid_message", "$.to"),
        (TRANSFER, UNKNOWN_FIELD, "invalid_message", "$"),
        ("exchange.cmd.claude.fly", b"{}", "unknown_verb", None),
        ("exchange.cmd.claude", b"{}", "unknown_verb", None),
        ("exchange.cmd.Bad!.transfer", b"{}", "invalid_agent_id", None),
    ],
)
def test_a_bad_command_is_refused_with_a_code_and_path(
    subject: str, body: bytes, code: str, path: str | None
) -> None:
    refused = resolve_command(subject, body)
    assert isinstance(refused, ErrorBody)
    assert refused.code == code
    assert refused.path == path
    assert refused.message


def test_msgspec_s_message_is_kept() -> None:
    refused = resolve_command(
        "exchange.cmd.claude.transfer", b'{"request_id":"r","to":"z","amount":[1]}'
    )
    assert isinstance(refused, ErrorBody)
    assert "Expected `decimal`, got `array` - at `$.amount`" in refused.message


def test_unknown_verbs_are_listed() -> None:
    refused = resolve_command("exchange.cmd.claude.fly", b"{}")
    assert isinstance(refused, ErrorBody)
    for verb in ("transfer", "award", "pool.create", "llm.settle"):
        assert verb in refused.message


def test_queries() -> None:
    empty = resolve_query("exchange.query.status", b"")
    assert isinstance(empty, QueryWork) and isinstance(empty.query, StatusQuery)
    balance = resolve_query("exchange.query.balance", b'{"agent":"zero","extra":1}')
    assert isinstance(balance, QueryWork) and balance.query == BalanceQuery(agent="zero")
    unknown = resolve_query("exchange.query.gossip", b"{}")
    assert isinstance(unknown, ErrorBody) and unknown.code == "unknown_verb"
    assert "balance" in unknown.message


def test_a_bid_becomes_a_command_of_its_sender() -> None:
    work = resolve_swarm(
        "swarm.task.t-1.propose.spark", b'{"cost":"5","time_ms":100,"confidence":0.9}'
    )
    assert isinstance(work, CommandWork)
    assert (work.sender, work.verb) == ("spark", "task.propose")
    assert COMMAND_DECODERS["task.propose"].decode(work.body) == work.command


def test_a_swarm_message_from_a_bad_sender_is_refused() -> None:
    refused = resolve_swarm(
        "swarm.task.t-1.propose.Bad!", b'{"cost":"5","time_ms":100,"confidence":0.9}'
    )
    assert isinstance(refused, ErrorBody) and refused.code == "invalid_agent_id"


def test_a_command_built_from_a_subject_is_checked_before_the_journal() -> None:
    # The task id comes from the subject, where msgspec never validated it: a task id longer
    # than the protocol allows must be refused here, not found unreplayable later.
    refused = resolve_swarm(
        "swarm.task." + "t" * 200 + ".propose.spark",
        b'{"cost":"5","time_ms":100,"confidence":0.9}',
    )
    assert isinstance(refused, ErrorBody) and refused.code == "invalid_message"


def test_signals_expect_no_reply() -> None:
    work = resolve_swarm(
        "swarm.signal.spark.opportunity.btc", b'{"confidence":0.7,"direction":"long"}'
    )
    assert isinstance(work, CommandWork) and not work.reply_expected


def test_the_routing_table_names_every_subscription_once() -> None:
    routes = default_routes()
    assert [r.subscription for r in routes][:2] == ["exchange.cmd.>", "exchange.query.>"]
    assert len({r.name for r in routes}) == len(routes)
    assert len({r.subscription for r in routes}) == len(routes)
    assert "swarm.task.*.propose.*" in {r.subscription for r in routes}


def test_a_shapley_query_goes_to_the_query_pool_with_its_body() -> None:
    body = b'{"game":{"values":{"a":1,"b":2}},"seed":1}'
    work = resolve_query("exchange.query.shapley", body)
    assert isinstance(work, StatelessQueryWork)
    assert (work.verb, work.body) == ("shapley", body)


def test_a_shapley_query_beyond_its_bounds_is_refused_at_the_wire() -> None:
    values = ",".join(f'"p{index:04d}":1' for index in range(1_800))
    body = b'{"game":{"values":{' + values.encode() + b'}},"permutations":100000,"seed":1}'
    refused = resolve_query("exchange.query.shapley", body)
    assert isinstance(refused, ErrorBody)
    assert (refused.code, refused.path) == ("query_too_large", "$.permutations")


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * depth + inner + b"}" * depth


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b'{"to":"zero"}', 1),
        (b"[{}]", 2),
        (b"[[],[],[[]]]", 3),
        (_nested(3_000), 3_000),
        # Brackets inside strings do not nest, escaped quotes do not end a string, and an
        # escaped backslash before a quote does not escape the quote.
        (b'{"memo":"[[[[{{{{"}', 1),
        (b'{"memo":"\\"[[[[\\""}', 1),
        (b'{"memo":"\\\\"}', 1),
        (b'{"memo":"\\\\\\"[["}', 1),
        (b'{"a":"\\\\","b":[[1]]}', 3),
    ],
)
def test_nesting_depth_skips_strings(body: bytes, depth: int) -> None:
    assert nesting_depth(body) == depth


def test_nesting_beyond_the_bound_is_refused_with_the_bound_in_the_message() -> None:
    assert nesting_refusal(_nested(64), 64) is None
    refused = nesting_refusal(_nested(65), 64)
    assert isinstance(refused, ErrorBody)
    assert (refused.code, refused.path) == ("invalid_message", "$")
    assert "65 levels deep" in refused.message and "at most 64" in refused.message
    # Many brackets, shallow: counted, scanned, and let through.
    wide = b"[" + b",".join([b'{"members":["a"]}'] * 500) + b"]"
    assert nesting_refusal(wide, 64) is None
    # Deep only inside a string: nothing to refuse.
    assert nesting_refusal(b'{"memo":"' + b"[" * 1_000 + b'"}', 64) is None
