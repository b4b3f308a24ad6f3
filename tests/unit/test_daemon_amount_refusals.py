"""An amount outside the grammar is refused at the wire as ``invalid_amount`` (not the generic
``invalid_message``), with the field's path and a message that gives the grammar and an example;
grammatical amounts become commands. Method: the pure resolvers, subject and body in."""

import json

import pytest

from exchange.daemon.routes import CommandWork, resolve_command, resolve_swarm
from protocols.registry import COMMAND_DECODERS, WIRE_COMMAND_DECODERS
from protocols.results import ErrorBody
from protocols.wire import AmountSyntaxError

TRANSFER = "exchange.cmd.claude.transfer"
# Each taken by Decimal(text), so by msgspec's Decimal decoding, and none in the grammar; "" is
# refused by Decimal itself, so by msgspec's first pass, and must still be invalid_amount.
BAD = ["1_0", "+1", " 1 ", "1.", ".5", "1E+0", "\u0661", "\uff11", "NaN", "1\n", ""]


@pytest.mark.parametrize("text", BAD)
def test_a_transfer_with_an_amount_outside_the_grammar_is_invalid_amount(text: str) -> None:
    body = json.dumps({"request_id": "r", "to": "zero", "amount": text}).encode()
    refused = resolve_command(TRANSFER, body)
    assert isinstance(refused, ErrorBody)
    assert (refused.code, refused.path) == ("invalid_amount", "$.amount")
    assert refused.message.startswith("the body of transfer is not valid: Expected tokens")
    assert json.dumps(text) in refused.message
    assert refused.message.endswith('send tokens as a string like "12.5"')


@pytest.mark.parametrize("amount", ['"12.5"', '"0.000001"', '"1000000000000"', "12.5", "1e3"])
def test_grammatical_amounts_become_commands(amount: str) -> None:
    body = f'{{"request_id":"r","to":"zero","amount":{amount}}}'.encode()
    assert isinstance(resolve_command(TRANSFER, body), CommandWork)


def test_an_amount_deep_in_a_command_is_refused_with_its_path() -> None:
    body = b'{"request_id":"r","title":"t","action":{"type":"limits","agent":"zero","daily":"1_0"}}'
    refused = resolve_command("exchange.cmd.claude.vote.propose", body)
    assert isinstance(refused, ErrorBody)
    assert (refused.code, refused.path) == ("invalid_amount", "$.action.daily")


def test_a_bid_on_a_swarm_subject_is_refused_as_invalid_amount() -> None:
    refused = resolve_swarm(
        "swarm.task.t-1.propose.claude", b'{"cost":"\xef\xbc\x91","time_ms":5,"confidence":1}'
    )
    assert isinstance(refused, ErrorBody)
    assert (refused.code, refused.path) == ("invalid_amount", "$.cost")
    assert '"\\uff11"' in refused.message  # shown escaped: a person cannot tell it from "1"
    accepted = resolve_swarm(
        "swarm.task.t-1.propose.claude", b'{"cost":"1","time_ms":5,"confidence":1}'
    )
    assert isinstance(accepted, CommandWork)


def test_a_canonical_body_from_an_exponent_number_is_still_journaled() -> None:
    # 1e3 becomes Decimal("1E+3"), whose canonical JSON is the string "1E+3": outside the grammar
    # but written by the exchange itself, and the journal replays with the plain decoders.
    work = resolve_command(TRANSFER, b'{"request_id":"r","to":"zero","amount":1e3}')
    assert isinstance(work, CommandWork)
    assert json.loads(work.body)["amount"] == "1E+3"
    assert COMMAND_DECODERS["transfer"].decode(work.body) == work.command
    with pytest.raises(AmountSyntaxError):
        WIRE_COMMAND_DECODERS["transfer"](work.body)
