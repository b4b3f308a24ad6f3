"""Amounts on the wire are exactly the published grammar: the schema (read by ``jsonschema``, an
outside validator) and the exchange's decoders accept and refuse the same strings and numbers, and
every amount field of every message a peer sends is checked. Method: documented examples, then
hypothesis strings from the grammar and from near misses, JSON numbers from JSON's own grammar,
and a bad amount put at each amount path that the Structs' type information reveals.
"""

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from msgspec import inspect as mi

from protocols import commands as c
from protocols import registry, routes, schema
from protocols.amounts import AMOUNT_PATTERN, is_amount_text, to_micro
from protocols.errors import ErrorCode
from protocols.wire import AmountSyntaxError, wire_decoder

# The published file itself (test_wire checks that it is what the Structs generate).
TRANSFER_SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schema/commands/transfer.json").read_text("utf-8")
)
TRANSFER_VALIDATOR = jsonschema.Draft202012Validator(TRANSFER_SCHEMA)
decode_transfer = registry.WIRE_COMMAND_DECODERS["transfer"]

# Each accepted by Decimal(text), so by msgspec's own Decimal decoding, and none in the grammar.
REFUSED = [
    "1_0",
    "+1",
    " 1 ",
    "1.",
    ".5",
    "1E+0",
    "1e3",
    "\u0661",  # ARABIC-INDIC DIGIT ONE
    "\uff11",  # FULLWIDTH DIGIT ONE
    "NaN",
    "-Infinity",
    "1\n",
    "-.5",
    # Decimal(text) refuses these itself, so msgspec's first pass does; still invalid_amount.
    "",
    "1..2",
    "abc",
]
# (JSON text of the amount, the exact tokens it decodes to).
ACCEPTED = [
    ('"12.5"', Decimal("12.5")),
    ('"0.000001"', Decimal("0.000001")),
    ('"1000000000000"', Decimal(10**12)),
    ("12.5", Decimal("12.5")),
    ("1e3", Decimal(1000)),
    ("0.1", Decimal("0.1")),
    ('"\\u0031"', Decimal(1)),  # JSON escapes are read before the grammar: this is "1"
    ('"007"', Decimal(7)),
    ('"-3"', Decimal(-3)),  # grammatical; the sign is the ledger's rule
    ('"1.1234567"', Decimal("1.1234567")),  # grammatical; too_many_decimals in the ledger
]


def _transfer(amount_json: str) -> bytes:
    return f'{{"request_id":"r-1","to":"zero","amount":{amount_json}}}'.encode()


def _amount(body: bytes) -> Decimal:
    """The amount of a transfer as the wire decoder takes it (raises as it does)."""
    decoded = decode_transfer(body)
    assert isinstance(decoded, c.Transfer)
    return decoded.amount


@pytest.mark.parametrize("text", REFUSED)
def test_each_documented_bad_amount_is_refused_by_the_decoder_and_the_schema(text: str) -> None:
    # msgspec's plain Decoder (what the journal replays with) takes most of them: the check is
    # the wire decoder's own.
    with pytest.raises(AmountSyntaxError) as refused:
        decode_transfer(_transfer(json.dumps(text)))
    assert refused.value.path == "$.amount"
    assert refused.value.text == text
    assert '"12.5"' in str(refused.value) and str(refused.value).endswith(" - at `$.amount`")
    assert not TRANSFER_VALIDATOR.is_valid({"request_id": "r-1", "to": "zero", "amount": text})


@pytest.mark.parametrize(("amount_json", "tokens"), ACCEPTED)
def test_grammatical_strings_and_json_numbers_decode_exactly(
    amount_json: str, tokens: Decimal
) -> None:
    assert _amount(_transfer(amount_json)) == tokens
    assert decode_transfer(_transfer(amount_json)) == registry.COMMAND_DECODERS["transfer"].decode(
        _transfer(amount_json)
    )
    assert TRANSFER_VALIDATOR.is_valid(json.loads(_transfer(amount_json)))


def test_the_value_rules_stay_the_ledgers_for_strings_and_numbers_alike() -> None:
    # Seven decimals are grammatical, so they reach to_micro, which refuses them whatever the
    # form; trailing zeros are not decimals in either form.
    for amount_json in ('"1.1234567"', "1.1234567"):
        assert to_micro(_amount(_transfer(amount_json))) is ErrorCode.too_many_decimals
    for amount_json in ('"1.5000000"', "1.5000000"):
        assert to_micro(_amount(_transfer(amount_json))) == 1_500_000


# Characters that Decimal(text) or a careless regex would take, and the grammar's own.
_NEAR = st.sampled_from(
    [*"0123456789-.+_eE ,\n\t\r\u00a0\u0661\uff11\u00b2\U0001d7ce", "NaN", "Inf", "0x"]
)
_GRAMMATICAL = st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{1,20})?", fullmatch=True)


@st.composite
def _near_misses(draw: st.DrawFn) -> str:
    """A grammatical amount with a few characters inserted, replaced or deleted."""
    text = draw(_GRAMMATICAL)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        edit = draw(st.sampled_from(["insert", "replace", "delete"]))
        piece = draw(_NEAR)
        if edit == "insert":
            text = text[:at] + piece + text[at:]
        elif edit == "replace":
            text = text[:at] + piece + text[at + 1 :]
        else:
            text = text[:at] + text[at + 1 :]
    return text


@given(st.one_of(_GRAMMATICAL, _near_misses(), st.text(max_size=12)))
@example("1\n")
@example("\u0661")
@example("1.")
def test_the_schema_and_the_decoder_agree_on_every_string(text: str) -> None:
    body = {"request_id": "r-1", "to": "zero", "amount": text}
    schema_accepts = TRANSFER_VALIDATOR.is_valid(body)
    try:
        tokens = _amount(json.dumps(body).encode())
    except AmountSyntaxError as exc:
        assert exc.path == "$.amount"
        assert not schema_accepts, f"the schema takes {text!r}, the decoder refuses it"
        assert not is_amount_text(text)
    else:
        assert schema_accepts, f"the decoder takes {text!r}, the schema refuses it"
        assert tokens == Decimal(text)


_DIGITS = st.text("0123456789", min_size=1, max_size=15)
_JSON_NUMBERS = st.builds(
    lambda sign, whole, fraction, exponent: sign + whole + fraction + exponent,
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.builds(lambda a, b: a + b, st.sampled_from("123456789"), _DIGITS)),
    st.one_of(st.just(""), _DIGITS.map(lambda d: "." + d)),
    st.one_of(
        st.just(""),
        st.builds(
            lambda e, sign, d: e + sign + d,
            st.sampled_from("eE"),
            st.sampled_from(["", "+", "-"]),
            st.text("0123456789", min_size=1, max_size=3),
        ),
    ),
)


@given(_JSON_NUMBERS)
@example("1e400")
@example("-0")
def test_every_json_number_is_an_amount_read_from_its_text(number: str) -> None:
    # The schema's "number" is JSON's number grammar; the decoder reads its text, never a float
    # (1e400 is beyond a float's range and must reach the ledger's amount_too_large).
    body = _transfer(number)
    assert TRANSFER_VALIDATOR.is_valid(json.loads(body))
    assert _amount(body) == Decimal(number)


def test_the_published_pattern_is_the_one_the_decoder_applies() -> None:
    amount = TRANSFER_SCHEMA["$defs"]["Transfer"]["properties"]["amount"]
    assert {"type": "string", "pattern": AMOUNT_PATTERN} in amount["anyOf"]
    assert {"type": "number"} in amount["anyOf"]
    assert amount["description"].startswith("tokens:")


# ----------------------------------------------------------------------------- every amount field


def _minimal(t: mi.Type) -> Any:
    """The JSON of a valid value of ``t`` with as little in it as msgspec allows."""
    if isinstance(t, mi.StructType):
        value = {} if t.tag is None else {t.tag_field: t.tag}
        return value | {f.encode_name: _minimal(f.type) for f in t.fields if f.required}
    if isinstance(t, mi.UnionType):
        kinds = [m for m in t.types if not isinstance(m, mi.NoneType)]
        return None if len(kinds) < len(t.types) else _minimal(kinds[0])
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.Metadata):  # a state name (protocols.state_names)
        return _minimal(t.type)
    if isinstance(t, mi.IntType | mi.FloatType):
        low = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else 1)
        return low if isinstance(t, mi.IntType) else float(low)
    simple: dict[type, Any] = {
        mi.DecimalType: "1",
        mi.StrType: "x",
        mi.BoolType: True,
        mi.ListType: [],
        mi.DictType: {},
        mi.AnyType: None,
    }
    return simple[type(t)]


def _amount_sites(t: mi.Type, path: str) -> Iterator[tuple[str, Callable[[Any], Any]]]:
    """Every amount in ``t``: its path, and a builder of a minimal ``t`` with that amount set.

    Written apart from protocols.wire's own walk, so that a kind of field the wire check misses
    (a new nesting, a union member) shows up here as a site it does not refuse."""
    if isinstance(t, mi.DecimalType):
        yield path, lambda amount: amount
    elif isinstance(t, mi.StructType):
        base = _minimal(t)
        for field in t.fields:
            for site, build in _amount_sites(field.type, f"{path}.{field.encode_name}"):
                yield site, _put(base, field.encode_name, build)
    elif isinstance(t, mi.UnionType):
        for member in t.types:
            yield from _amount_sites(member, path)
    elif isinstance(t, mi.ListType):
        for site, build in _amount_sites(t.item_type, f"{path}[0]"):
            yield site, _in_list(build)


def _put(base: dict[str, Any], name: str, build: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda amount: base | {name: build(amount)}


def _in_list(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda amount: [build(amount)]


# Every message type of the protocol: what the exchange takes, and what it and oracles publish.
WIRE_TYPES: dict[str, type[msgspec.Struct]] = {
    **{f"command {verb}": t for verb, t in registry.COMMANDS.items()},
    **{f"swarm {name}": t for name, (_, t) in schema.SWARM_BODIES.items()},
}
SITES = [
    (name, site, build)
    for name, struct_type in sorted(WIRE_TYPES.items())
    for site, build in _amount_sites(mi.type_info(struct_type), "$")
]


def test_the_walk_finds_the_amounts_a_reader_of_the_protocol_knows() -> None:
    found = {(name, site) for name, site, _ in SITES}
    assert {
        ("command transfer", "$.amount"),
        ("command agent.register", "$.limits.burst"),
        ("command vote.propose", "$.action.price"),
        ("command vote.propose", "$.action.budget"),
        ("command task.announce", "$.weights.cost"),
        ("command task.propose", "$.bid.cost"),
        ("swarm Bid", "$.cost"),
    } <= found


@pytest.mark.parametrize(("name", "site", "build"), SITES, ids=[f"{n} {p}" for n, p, _ in SITES])
def test_every_amount_field_of_every_message_type_is_checked(
    name: str, site: str, build: Callable[[Any], Any]
) -> None:
    decode = wire_decoder(WIRE_TYPES[name])
    decode(json.dumps(build("12.5")).encode())
    with pytest.raises(AmountSyntaxError) as refused:
        decode(json.dumps(build("1_0")).encode())
    assert refused.value.path == site


def test_a_bid_on_a_swarm_subject_is_checked_as_a_command_is() -> None:
    with pytest.raises(AmountSyntaxError) as refused:
        routes.route("swarm.task.t-1.propose.bob", b'{"cost":"+3","time_ms":5,"confidence":1}')
    assert refused.value.path == "$.cost"
    routed = routes.route("swarm.task.t-1.propose.bob", b'{"cost":"3","time_ms":5,"confidence":1}')
    assert routed is not None


def test_a_message_without_amounts_keeps_msgspecs_own_decoder() -> None:
    # No second pass where there is nothing to check: the bound method of msgspec's Decoder.
    decode = registry.WIRE_COMMAND_DECODERS["pool.join"]
    assert isinstance(getattr(decode, "__self__", None), msgspec.json.Decoder)
    assert not isinstance(getattr(decode_transfer, "__self__", None), msgspec.json.Decoder)


def test_other_errors_stay_msgspecs_and_a_bad_amount_is_named_first() -> None:
    # The amount check runs after a failed first pass too (that is how "" is caught), so where
    # both are wrong the amount is named; every other error is msgspec's, path and all.
    with pytest.raises(msgspec.ValidationError) as missing:
        decode_transfer(b'{"request_id":"r-1","amount":"1"}')
    assert not isinstance(missing.value, AmountSyntaxError)
    assert "`to`" in str(missing.value)
    with pytest.raises(msgspec.ValidationError) as wrong_type:
        decode_transfer(b'{"request_id":"r-1","to":"zero","amount":[1]}')
    assert not isinstance(wrong_type.value, AmountSyntaxError)
    assert str(wrong_type.value).endswith("- at `$.amount`")
    with pytest.raises(AmountSyntaxError):
        decode_transfer(b'{"request_id":"r-1","amount":"1_0"}')
    # Malformed after the first invalid field: msgspec's error for that field, not the JSON's.
    with pytest.raises(msgspec.ValidationError) as first:
        decode_transfer(b'{"request_id":"r-1","to":7,"amount":"1_0"')
    assert not isinstance(first.value, AmountSyntaxError)
    assert str(first.value).endswith("- at `$.to`")
