"""The wire contract: every Struct round-trips, golden bytes stay stable, old and new messages
decode across versions, and the published JSON Schema matches the Structs."""

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import commands as c
from protocols import registry, routes, schema, subjects
from protocols import swarm as s
from protocols.amounts import (
    format_amount,
    format_micro,
    micro_of_text,
    positive_micro,
    to_micro,
)
from protocols.errors import ErrorCode
from protocols.results import Envelope, ErrorBody

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("verb", sorted(registry.COMMANDS))
def test_every_command_round_trips_through_its_decoder(verb: str) -> None:
    struct_type = registry.COMMANDS[verb]
    info = msgspec.inspect.type_info(struct_type)
    assert isinstance(info, msgspec.inspect.StructType)
    required = [f.name for f in info.fields if f.required]
    # The JSON Schema lists the required fields; an example built from it must decode, re-encode
    # to the same bytes and decode to an equal value.
    example = _example(struct_type)
    encoded = msgspec.json.encode(example)
    decoded = registry.COMMAND_DECODERS[verb].decode(encoded)
    assert decoded == example
    assert msgspec.json.encode(decoded) == encoded
    assert "request_id" in required


def _example(struct_type: type[msgspec.Struct]) -> msgspec.Struct:
    values = {
        "request_id": "r-1",
        "to": "zero",
        "agent": "zero",
        "amount": Decimal("1.5"),
        "base_rate": Decimal(90),
        "primary_llm": "llama3.2",
        "source": "ci",
        "author": "zero@x.y",
        "project": "p",
        "message": "fix: it",
        "issue_id": "i-1",
        "priority": "P2",
        "issue_type": "bug",
        "task_type": "analyze",
        "tokens": 10,
        "prompt_tokens": 10,
        "max_tokens": 10,
        "completion_tokens": 10,
        "authorization_id": "auth-1",
        "requests": 4,
        "min_tokens": 5,
        "quota_id": "gq-1",
        "usage": [(3, 2), (0, 0)],
        "limits": c.LimitsSpec(),
        "name": "n",
        "min_contribution": Decimal(1),
        "pool_id": "pool-1",
        "model": "llama3.2",
        "asset": "BTC",
        "deadline_ms": 1000,
        "max_cost": Decimal(100),
        "task_id": "task-1",
        "score": 0.9,
        "payee": "zero",
        "escrow_id": "escrow-1",
        "outcome": "release",
        "title": "t",
        "bid": s.Bid(cost=Decimal(1), time_ms=1, confidence=0.5),
        "success": True,
        "proposal_id": "proposal-1",
        "ballot": s.Ballot(choice="yes"),
        "sender": "zero",
        "signal_type": "opportunity",
        "confidence": 0.5,
        "direction": "long",
        "candidates": ["zero"],
        "game": {"values": {"zero": 1.0}},
        "coalition_id": "coalition-1",
        "intact": True,
        "deadline_ns": 1,
        "timer_seq": 1,
        "kind": "hold_expiry",
        "ref": "hold-1",
        "lock_s": 86_400,
        "stake_id": "stake-1",
        "borrower": "zero",
        "principal": Decimal(100),
        "rate_per_day": Decimal("0.01"),
        "term_s": 86_400,
        "loan_id": "loan-1",
        "price": Decimal(15),
        "expires_in_s": 3600,
        "future_id": "future-1",
    }
    info = msgspec.inspect.type_info(struct_type)
    assert isinstance(info, msgspec.inspect.StructType)
    kwargs = {f.name: values[f.name] for f in info.fields if f.required}
    return msgspec.convert(msgspec.to_builtins(kwargs), struct_type)


def test_golden_bytes_of_a_transfer_and_a_refusal_are_stable() -> None:
    transfer = c.Transfer(request_id="r-1", to="zero", amount=Decimal("237.6"), memo="thanks")
    assert msgspec.json.encode(transfer) == (
        b'{"request_id":"r-1","to":"zero","amount":"237.6","memo":"thanks"}'
    )
    refusal = Envelope(ok=False, error=ErrorBody(code="insufficient_funds", message="m"))
    assert msgspec.json.encode(refusal) == (
        b'{"ok":false,"error":{"code":"insufficient_funds","message":"m"}}'
    )


def test_money_commands_refuse_unknown_fields_and_tolerant_ones_skip_them() -> None:
    with pytest.raises(msgspec.ValidationError, match="amout"):
        registry.COMMAND_DECODERS["transfer"].decode(
            b'{"request_id":"r","to":"zero","amout":"5","amount":"5"}'
        )
    # A newer client's extra field in a non-money command is skipped (forward compatible).
    join = registry.COMMAND_DECODERS["pool.join"].decode(
        b'{"request_id":"r","pool_id":"pool-1","note":"from v2"}'
    )
    assert join == c.PoolJoin(request_id="r", pool_id="pool-1")


def test_an_old_message_without_new_optional_fields_still_decodes() -> None:
    # pool.create gained `target` after the seed's CLI: a body without it decodes with None.
    old = registry.COMMAND_DECODERS["pool.create"].decode(
        b'{"request_id":"r","name":"opus-team","min_contribution":100}'
    )
    assert isinstance(old, c.PoolCreate)
    assert old.target is None


def test_amounts_are_exact_from_json_numbers_and_strings() -> None:
    decoder = registry.COMMAND_DECODERS["transfer"]
    as_number = decoder.decode(b'{"request_id":"r","to":"z","amount":0.1}')
    as_string = decoder.decode(b'{"request_id":"r","to":"z","amount":"0.1"}')
    assert isinstance(as_number, c.Transfer) and isinstance(as_string, c.Transfer)
    assert to_micro(as_number.amount) == to_micro(as_string.amount) == 100_000
    assert positive_micro(Decimal("1.0000001")) is ErrorCode.too_many_decimals
    assert positive_micro(Decimal("NaN")) is ErrorCode.amount_not_finite
    assert positive_micro(Decimal("-1")) is ErrorCode.amount_must_be_positive
    assert format_micro(237_600_000) == "237.6"
    assert format_micro(150_000) == "0.15"


@given(st.decimals(allow_nan=True, allow_infinity=True, places=None))
def test_an_amount_formats_as_its_micro_tokens_do(tokens: Decimal) -> None:
    # format_amount takes the Decimal's own text when it is already the shortest form; it must
    # agree with format_micro whatever the text (exponents, trailing zeros, signs).
    micro = to_micro(tokens)
    if isinstance(micro, int):
        assert format_amount(tokens, micro) == format_micro(micro)


@given(st.integers(min_value=-(10**19), max_value=10**19))
def test_micro_tokens_format_as_the_shortest_exact_decimal(micro: int) -> None:
    text = format_micro(micro)
    assert Decimal(text).scaleb(6) == micro
    assert "E" not in text
    assert not ("." in text and text.endswith("0"))
    if abs(micro) <= 10**18:  # up to AMOUNT_TOKENS_MAX tokens: what a reply can carry
        assert micro_of_text(text) == micro


def test_subjects_build_and_parse_back() -> None:
    assert subjects.parse_command(subjects.command("zero", "pool.join")) == ("zero", "pool.join")
    assert subjects.parse_query(subjects.query("balance")) == "balance"
    assert subjects.parse_signal(subjects.signal("a", "opportunity", "BTC")) == (
        "a",
        "opportunity",
        "BTC",
    )
    assert subjects.parse_command("exchange.query.balance") is None


def test_swarm_routes_take_sender_and_ids_from_the_subject() -> None:
    routed = routes.route(
        "swarm.task.task-7.propose.bob", b'{"cost":"3","time_ms":5,"confidence":1}'
    )
    assert routed is not None
    assert routed.apply_as == "bob"
    assert isinstance(routed.command, s.SubmitBid)
    assert routed.command.request_id.startswith("propose:")
    assert (routed.command.task_id, routed.command.bid) == (
        "task-7",
        s.Bid(cost=Decimal(3), time_ms=5, confidence=1.0),
    )
    with pytest.raises(msgspec.ValidationError, match="agent_id"):
        routes.route(
            "swarm.signal.bob.opportunity.BTC",
            b'{"agent_id":"alice","confidence":0.5,"direction":"long"}',
        )
    assert routes.route("swarm.task.cfp.analyze", b"{}") is None


def test_published_schema_matches_the_structs() -> None:
    rendered = schema.render()
    on_disk = {
        str(p.relative_to(ROOT / "schema")): p.read_text(encoding="utf-8")
        for p in (ROOT / "schema").rglob("*.json")
    }
    stale = sorted(set(rendered) ^ set(on_disk)) + sorted(
        name for name in rendered if name in on_disk and rendered[name] != on_disk[name]
    )
    assert not stale, f"schema/ is out of date for {stale}: run `python -m protocols.schema`"


def test_error_codes_are_unique_snake_case() -> None:
    values = [code.value for code in ErrorCode]
    assert len(values) == len(set(values))
    assert all(v == v.lower() and " " not in v for v in values)


def test_protocol_reference_matches_the_structs() -> None:
    on_disk = (ROOT / schema.REFERENCE_PATH).read_text(encoding="utf-8")
    assert on_disk == schema.reference_markdown(), (
        "docs/protocol-reference.md is out of date: run `python -m protocols.schema`"
    )


@pytest.mark.parametrize(
    ("verb", "field", "value"),
    [
        ("transfer", "request_id", "r-1\n"),
        ("task.announce", "task_type", "analyze\n"),
        ("task.announce", "asset", "btc\n"),
        ("llm", "model", "llama3.2\n"),
    ],
)
def test_a_trailing_newline_never_passes_a_pattern(verb: str, field: str, value: str) -> None:
    """Python's "$" matches before a final newline; a subject token with one would break the
    NATS protocol line the exchange publishes it in."""
    fields = {
        "request_id": "r-1",
        "to": "zero",
        "amount": "1",
        "task_type": "analyze",
        "asset": "btc",
        "deadline_ms": 1000,
        "max_cost": "5",
        "tokens": 10,
        "model": "llama3.2",
    }
    info = msgspec.inspect.type_info(registry.COMMANDS[verb])
    assert isinstance(info, msgspec.inspect.StructType)
    body = {f.name: fields[f.name] for f in info.fields if f.name in fields} | {field: value}
    registry.COMMAND_DECODERS[verb].decode(msgspec.json.encode({**body, field: value[:-1]}))
    with pytest.raises(msgspec.ValidationError, match="regex"):
        registry.COMMAND_DECODERS[verb].decode(msgspec.json.encode(body))
