"""What the wire layer refuses before the ledger sees it: msgspec decoding of seed-1 commands
raises ``ValidationError`` naming the path of the bad field (too-long strings, wrong types,
unknown fields in strict commands), and what it lets through for the ledger to decide."""

from decimal import Decimal
from typing import Any

import msgspec
import pytest
from core_support import decode_error

from protocols import commands as c
from protocols.registry import COMMAND_DECODERS, VERB_OF

TRANSFER = {"request_id": "r1", "to": "zero", "amount": "1"}


@pytest.mark.parametrize(
    ("verb", "body", "expected"),
    [
        ("transfer", {**TRANSFER, "memo": "x" * 4097}, "length <= 4096 - at `$.memo`"),
        ("transfer", {**TRANSFER, "to": "a" * 65}, "length <= 64 - at `$.to`"),
        ("transfer", {**TRANSFER, "to": ""}, "length >= 1 - at `$.to`"),
        ("transfer", {**TRANSFER, "request_id": "r" * 65}, "at `$.request_id`"),
        ("transfer", {**TRANSFER, "request_id": "a b"}, "at `$.request_id`"),
        ("transfer", {**TRANSFER, "amount": "ten"}, "Invalid decimal string - at `$.amount`"),
        ("transfer", {**TRANSFER, "amount": True}, "got `bool` - at `$.amount`"),
        ("transfer", {**TRANSFER, "amount": None}, "got `null` - at `$.amount`"),
        ("transfer", {"request_id": "r1", "to": "zero"}, "missing required field `amount`"),
        ("transfer", {**TRANSFER, "amout": "1"}, "unknown field `amout`"),
        (
            "award",
            {"request_id": "r", "agent": "zero", "amount": "1", "source": "s", "x": 1},
            "unknown field `x`",
        ),
        (
            "llm",
            {"request_id": "r1", "task_type": "code", "tokens": "5000"},
            "Expected `int`, got `str` - at `$.tokens`",
        ),
        ("llm", {"request_id": "r1", "task_type": "code", "tokens": 0}, "at `$.tokens`"),
        ("llm", {"request_id": "r1", "task_type": "code", "tokens": 1.5}, "at `$.tokens`"),
        ("llm", {"request_id": "r1", "task_type": "code", "tokens": 10**8 + 1}, "at `$.tokens`"),
        ("llm", {"request_id": "r1", "task_type": "a.b", "tokens": 1}, "at `$.task_type`"),
        (
            "llm",
            {"request_id": "r1", "task_type": "x", "tokens": 1, "model": "a b"},
            "at `$.model`",
        ),
        (
            "llm.authorize",
            {"request_id": "r", "task_type": "x", "tokens": 1, "timeout_s": 0},
            "at `$.timeout_s`",
        ),
        (
            "llm.settle",
            {"request_id": "r", "authorization_id": "a", "tokens": -1},
            "at `$.tokens`",
        ),
        (
            "agent.register",
            {"request_id": "r", "agent": "a" * 65, "base_rate": "1", "primary_llm": "llama3.2"},
            "at `$.agent`",
        ),
        (
            "agent.register",
            {
                "request_id": "r",
                "agent": "a",
                "base_rate": "1",
                "primary_llm": "llama3.2",
                "limits": {"bursty": "1"},
            },
            "unknown field `bursty` - at `$.limits`",
        ),
        (
            "commit",
            {"request_id": "r", "author": "a", "project": "p", "message": "m", "sha": "abc"},
            "at `$.sha`",
        ),
        (
            "issue.close",
            {
                "request_id": "r",
                "issue_id": "i",
                "agent": "a",
                "priority": "P2",
                "issue_type": "bug",
                "assignee": "x",
            },
            "unknown field `assignee`",
        ),
        (
            "pool.contribute",
            {"request_id": "r", "pool_id": "p", "amount": [1]},
            "at `$.amount`",
        ),
    ],
)
def test_invalid_fields_are_refused_at_decode_naming_the_path(
    verb: str, body: dict[str, Any], expected: str
) -> None:
    assert expected in decode_error(verb, body)


def test_non_objects_are_refused() -> None:
    assert "Expected `object`, got `array`" in decode_error("transfer", b"[]")


def test_tolerant_commands_skip_unknown_fields() -> None:
    command = COMMAND_DECODERS["pool.join"].decode(
        b'{"request_id":"r","pool_id":"pool-1","from_the_future":1}'
    )
    assert command == c.PoolJoin(request_id="r", pool_id="pool-1")


def test_amounts_decode_from_strings_and_numbers_exactly() -> None:
    for raw, expected in (
        (b'"237.6"', Decimal("237.6")),
        (b"75", Decimal(75)),
        (b'"0.5"', Decimal("0.5")),
        (b"0.1", Decimal("0.1")),
    ):
        command = COMMAND_DECODERS["transfer"].decode(
            b'{"request_id":"r","to":"zero","amount":' + raw + b"}"
        )
        assert isinstance(command, c.Transfer)
        assert command.amount == expected
        assert isinstance(command.amount, Decimal)


def test_every_seed_1_verb_round_trips() -> None:
    examples: list[c.Command] = [
        c.Transfer(request_id="r", to="zero", amount=Decimal("1.5"), memo="m"),
        c.Award(request_id="r", agent="zero", amount=Decimal(1), source="s"),
        c.Commit(request_id="r", author="a@b", project="p", message="m", sha="abcd"),
        c.IssueClose(request_id="r", issue_id="i", agent="a", priority="0", issue_type="bug"),
        c.LlmRequest(request_id="r", task_type="t", tokens=1, model="gemini-pro"),
        c.LlmAuthorize(request_id="r", task_type="t", tokens=1, timeout_s=5),
        c.LlmSettle(request_id="r", authorization_id="auth-1", tokens=0),
        c.SetLimits(request_id="r", agent="a", limits=c.LimitsSpec(burst=Decimal(1))),
        c.RegisterAgent(request_id="r", agent="a", base_rate=Decimal(1), primary_llm="m"),
        c.PoolCreate(request_id="r", name="n", min_contribution=Decimal(1)),
        c.PoolJoin(request_id="r", pool_id="p"),
        c.PoolContribute(request_id="r", pool_id="p", amount=Decimal(1)),
        c.PoolSpend(request_id="r", pool_id="p", model="m", tokens=1),
        c.PoolClose(request_id="r", pool_id="p"),
        c.Tick(request_id="r"),
    ]
    for command in examples:
        decoder = COMMAND_DECODERS[VERB_OF[type(command)]]
        assert decoder.decode(msgspec.json.encode(command)) == command
