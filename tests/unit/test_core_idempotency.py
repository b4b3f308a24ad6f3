"""Idempotency by (sender, request_id): a retry with the same body gets the stored reply and has no
second effect; the same id with another body is refused; a refused id stays free for reuse."""

import msgspec
import pytest
from core_support import D, Harness
from core_support import restored as restore

from exchange.core.ledger import Outcome
from protocols import commands as c
from protocols.errors import ErrorCode
from protocols.ids import ADMIN
from protocols.registry import COMMAND_DECODERS, VERB_OF


def replay(h: Harness, sender: str, command: c.Command) -> Outcome:
    """Applies a retry and checks that it changed nothing: balances, digest, postings."""
    h.tick()
    before = h.ex.digest()
    outcome = h.apply(sender, command)
    assert outcome.postings == ()
    assert h.ex.digest() == before
    return outcome


SUCCESSES = [
    ("claude", c.Transfer(request_id="r1", to="zero", amount=D(10))),
    (ADMIN, c.Award(request_id="r1", agent="zero", amount=D(10), source="s")),
    (ADMIN, c.Commit(request_id="r1", author="zero", project="p", message="fix", sha="abcd")),
    (
        ADMIN,
        c.IssueClose(request_id="r1", issue_id="i", agent="zero", priority="P2", issue_type="bug"),
    ),
    ("zero", c.LlmRequest(request_id="r1", task_type="x", tokens=1000)),
    ("zero", c.LlmAuthorize(request_id="r1", task_type="x", tokens=1000)),
    (ADMIN, c.SetLimits(request_id="r1", agent="zero", limits=c.LimitsSpec(burst=D(1)))),
    (ADMIN, c.RegisterAgent(request_id="r1", agent="new", base_rate=D(1), primary_llm="llama3.2")),
    ("zero", c.PoolCreate(request_id="r1", name="team", min_contribution=D(1))),
]


@pytest.mark.parametrize(("sender", "command"), SUCCESSES)
def test_a_retry_with_the_same_body_gets_the_same_reply_and_no_second_effect(
    sender: str, command: c.Command
) -> None:
    h = Harness()
    first = h.apply(sender, command)
    assert first.ok, first.reply
    assert not first.duplicate
    h.advance(10)
    again = replay(h, sender, command)
    assert again.ok
    assert again.duplicate
    assert again.code is None
    assert again.reply == first.reply
    # An equal command decoded afresh is the same body too.
    decoded = COMMAND_DECODERS[VERB_OF[type(command)]].decode(msgspec.json.encode(command))
    assert replay(h, sender, decoded).reply == first.reply


def test_the_stored_reply_is_returned_even_after_the_state_moved_on() -> None:
    h = Harness()
    first = h.apply("claude", c.Transfer(request_id="r1", to="zero", amount=D(10)))
    h.ok("claude", c.Transfer, to="zero", amount=D(100))
    again = replay(h, "claude", c.Transfer(request_id="r1", to="zero", amount=D(10)))
    assert again.reply == first.reply
    assert b'"balance":"9990"' in again.reply
    assert h.balance("claude") == 9890


@pytest.mark.parametrize(
    "other",
    [
        c.Transfer(request_id="r1", to="zero", amount=D(11)),
        c.Transfer(request_id="r1", to="spark", amount=D(10)),
        c.Transfer(request_id="r1", to="zero", amount=D(10), memo="x"),
        # The same amount written differently is a different body.
        c.Transfer(request_id="r1", to="zero", amount=D("10.0")),
        c.LlmRequest(request_id="r1", task_type="x", tokens=1),
    ],
)
def test_the_same_request_id_with_another_body_is_refused(other: c.Command) -> None:
    h = Harness()
    assert h.apply("claude", c.Transfer(request_id="r1", to="zero", amount=D(10))).ok
    error = h.refused_command("claude", other, ErrorCode.request_id_reused)
    assert "r1" in error["message"]
    assert h.balance("claude") == 9990


def test_verbs_with_identical_fields_are_different_bodies() -> None:
    h = Harness()
    pool_id = h.ok("zero", c.PoolCreate, name="team", min_contribution=D(1))["pool_id"]
    assert h.apply("spark", c.PoolJoin(request_id="same", pool_id=pool_id)).ok
    # PoolClose encodes to the same JSON as PoolJoin; the verb tells them apart.
    h.refused_command(
        "spark", c.PoolClose(request_id="same", pool_id=pool_id), ErrorCode.request_id_reused
    )


def test_a_refused_request_id_can_be_reused() -> None:
    h = Harness()
    h.refused_command(
        "claude",
        c.Transfer(request_id="r1", to="zero", amount=D(9600)),
        ErrorCode.reserve_would_be_breached,
    )
    # The refusal was not remembered: a retry is decided afresh...
    h.refused_command(
        "claude",
        c.Transfer(request_id="r1", to="zero", amount=D(9600)),
        ErrorCode.reserve_would_be_breached,
    )
    # ...and the id is free for a corrected command.
    outcome = h.apply("claude", c.Transfer(request_id="r1", to="zero", amount=D(9000)))
    assert outcome.ok
    assert not outcome.duplicate
    assert h.balance("claude") == 1000


def test_a_refused_retry_succeeds_once_the_rule_allows_it() -> None:
    h = Harness()
    command = c.Transfer(request_id="r1", to="zero", amount=D(600))
    h.drain_to("claude", 1000)
    h.refused_command("claude", command, ErrorCode.reserve_would_be_breached)
    h.award("claude", 100)
    assert h.apply("claude", command).ok


def test_request_ids_are_per_sender() -> None:
    h = Harness()
    assert h.apply("claude", c.Transfer(request_id="r1", to="zero", amount=D(10))).ok
    outcome = h.apply("spark", c.Transfer(request_id="r1", to="zero", amount=D(10)))
    assert outcome.ok
    assert not outcome.duplicate
    assert h.balance("zero") == 10_020


def test_ticks_are_not_remembered() -> None:
    h = Harness()
    first = h.apply("exchange", c.Tick(request_id="tick"))
    h.advance(5)
    second = h.apply("exchange", c.Tick(request_id="tick"))
    assert first.ok and second.ok
    assert not second.duplicate
    assert first.reply != second.reply


def test_a_retry_after_a_restore_is_still_a_duplicate() -> None:
    h = Harness()
    command = c.Transfer(request_id="r1", to="zero", amount=D(10))
    first = h.apply("claude", command)
    restored = restore(h.ex)
    again = restored.apply("claude", command, now_ns=h.now_ns)
    assert (again.duplicate, again.reply) == (True, first.reply)
    other = restored.apply(
        "claude", c.Transfer(request_id="r1", to="zero", amount=D(1)), now_ns=h.now_ns
    )
    assert other.code == ErrorCode.request_id_reused
