"""``import.history`` in the core (exchange/core/imports.py; docs/economy.md, Import): a batch of
another exchange's postings is posted in order by double entry, every account that is not a
registered agent standing as ``@import``, a posting between two such accounts skipped; the kind
is kept and the memo names the original entry, time and accounts. Every refusal has its code and
changes nothing (the Harness checks the digest), a posting that would take an agent below 0
included, wherever it is in the batch."""

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from core_support import Harness, restored
from hypothesis import given
from hypothesis import strategies as st

from exchange.core.imports import rfc3339
from exchange.journal.export import format_rfc3339_ns
from protocols import commands as c
from protocols.ids import ADMIN
from protocols.registry import COMMAND_DECODERS, WIRE_COMMAND_DECODERS

D = Decimal
T0 = 1_764_790_361_123_456_789  # 2025-12-03T19:32:41.123456789Z
OPENING = 10_000_000_000  # the default roster's opening balance, in micro-tokens


def posting(
    seq: int, debit: str, credit: str, amount: str, kind: str = "transfer", memo: str = ""
) -> c.ImportedPosting:
    return c.ImportedPosting(
        seq=seq,
        at_ns=T0 + seq,
        debit=debit,
        credit=credit,
        amount=D(amount),
        kind=kind,
        memo=memo,
    )


def rows(h: Harness, agent: str) -> list[tuple[str, str, str]]:
    """The agent's history as the history query gives it: (kind, counterparty, amount)."""
    from protocols import queries as q

    result = json.loads(h.ex.query(q.HistoryQuery(agent=agent, limit=1000)))["result"]
    return [(e["kind"], e["counterparty"], e["amount"]) for e in result["entries"]]


def test_system_accounts_stand_as_at_import_and_a_posting_between_two_is_skipped() -> None:
    h = Harness()
    batch = [
        posting(7, "@mint", "zero", "5", "award", "for the docs"),
        posting(8, "zero", "@llm.llama3.2", "0.25", "llm"),
        posting(9, "@escrow", "@llm.llama3.2", "1", "llm"),  # touched no agent: skipped
        posting(10, "zero", "spark", "2.5"),
        posting(11, "spark", "@stake.spark", "1", "stake"),
    ]
    result = h.ok(ADMIN, c.ImportHistory, postings=batch, source="test")
    assert result == {"posted": 4, "skipped": 1, "totals": 0}
    book = h.ex.ledger.book
    assert book.balance("zero") == OPENING + 5_000_000 - 250_000 - 2_500_000
    assert book.balance("spark") == OPENING + 2_500_000 - 1_000_000
    # Nothing but @import and the two agents moved: the system accounts are not carried.
    assert book.balance("@import") == -(5_000_000 - 250_000 - 1_000_000)
    assert book.balance("@llm.llama3.2") == 0 and "@stake.spark" not in book.balances
    assert rows(h, "zero")[1:] == [
        ("award", "@import", "5"),
        ("llm", "@import", "-0.25"),
        ("transfer", "spark", "-2.5"),
    ]
    assert rows(h, "spark")[1:] == [("transfer", "zero", "2.5"), ("stake", "@import", "-1")]
    memos = [p.memo for p in book.histories["zero"]][1:]
    assert memos[0] == (
        f"[imported entry 7, {format_rfc3339_ns(T0 + 7)}, @mint -> zero] for the docs"
    )
    assert memos[1] == f"[imported entry 8, {format_rfc3339_ns(T0 + 8)}, zero -> @llm.llama3.2]"
    # Earned and spent totals are the totals' business, not the postings'.
    zero = h.ex.ledger.agents["zero"]
    assert (zero.earned_micro, zero.spent_micro) == (0, 0)
    h.ex.check_invariants()
    assert restored(h.ex).digest() == h.ex.digest()


def test_totals_add_to_the_agents_earned_and_spent() -> None:
    h = Harness()
    totals = [c.ImportedTotals(agent="zero", earned=D("4.5"), spent=D("0.000001"))]
    assert h.ok(ADMIN, c.ImportHistory, totals=totals) == {"posted": 0, "skipped": 0, "totals": 1}
    zero = h.ex.ledger.agents["zero"]
    assert (zero.earned_micro, zero.spent_micro) == (4_500_000, 1)


GOOD = posting(3, "@mint", "zero", "1", "award")


@pytest.mark.parametrize(
    ("sender", "fields", "code"),
    [
        ("zero", {"postings": [GOOD]}, "not_authorized"),
        (ADMIN, {}, "invalid_message"),
        (ADMIN, {"postings": [GOOD, posting(4, "zero", "zero", "1")]}, "invalid_message"),
        (ADMIN, {"postings": [posting(4, "@mint", "zero", "1", kind="")]}, "invalid_message"),
        (ADMIN, {"postings": [posting(4, "@mint", "zero", "1", kind="k" * 65)]}, "invalid_message"),
        (
            ADMIN,
            {"postings": [posting(4, "@mint", "zero", "1", memo="m" * 4097)]},
            "invalid_message",
        ),
        (ADMIN, {"postings": [posting(4, "@x" * 129, "zero", "1")]}, "invalid_message"),
        (ADMIN, {"postings": [GOOD, posting(4, "@mint", "nobody", "1")]}, "unknown_agent"),
        (ADMIN, {"postings": [posting(4, "Zero", "@mint", "1")]}, "unknown_agent"),
        (ADMIN, {"postings": [GOOD, posting(4, "@mint", "zero", "0")]}, "amount_must_be_positive"),
        (ADMIN, {"postings": [posting(4, "@mint", "zero", "-1")]}, "amount_must_be_positive"),
        (ADMIN, {"postings": [posting(4, "@mint", "zero", "1e-7")]}, "too_many_decimals"),
        (ADMIN, {"postings": [posting(4, "@mint", "zero", "1e13")]}, "amount_too_large"),
        # 10,000 and 1 tokens in, 10,002 out: the second debit would leave zero at -1.
        (
            ADMIN,
            {"postings": [GOOD, posting(4, "zero", "@llm.x", "10002")]},
            "insufficient_funds",
        ),
        # Through a transfer: spark cannot pay on what zero would have sent it later.
        (
            ADMIN,
            {
                "postings": [
                    posting(4, "spark", "zero", "10000.5"),
                    posting(5, "zero", "spark", "1"),
                ]
            },
            "insufficient_funds",
        ),
        (ADMIN, {"totals": [c.ImportedTotals(agent="nobody", earned=D(1))]}, "unknown_agent"),
        (ADMIN, {"totals": [c.ImportedTotals(agent="zero", spent=D(-1))]}, "invalid_amount"),
        (
            ADMIN,
            {"postings": [GOOD], "totals": [c.ImportedTotals(agent="zero", earned=D("1e-7"))]},
            "invalid_amount",
        ),
    ],
)
def test_a_refused_batch_changes_nothing(sender: str, fields: dict[str, Any], code: str) -> None:
    h = Harness()
    error = h.refused(sender, c.ImportHistory, code, **fields)
    assert error["message"]
    assert h.ex.ledger.book.balance("@import") == 0


def test_the_negative_refusal_says_what_to_do() -> None:
    h = Harness()
    error = h.refused(
        ADMIN,
        c.ImportHistory,
        "insufficient_funds",
        postings=[posting(9, "zero", "@fees", "10001")],
    )
    assert error["path"] == "$.postings[0]"
    assert "entry 9" in error["message"] and "--balances-only" in error["message"]
    assert "--since" in error["message"]


def test_a_batch_that_ends_at_zero_is_taken_and_replays_by_request_id() -> None:
    h = Harness()
    command = h.make(
        c.ImportHistory,
        postings=[posting(4, "zero", "@fees", "9999"), posting(5, "zero", "@llm.x", "1")],
    )
    first = h.apply(ADMIN, command)
    assert first.ok and len(first.postings) == 2
    assert h.ex.ledger.book.balance("zero") == 0
    digest = h.ex.digest()
    again = h.apply(ADMIN, command)
    assert again.ok and again.duplicate and again.reply == first.reply
    assert h.ex.digest() == digest
    changed = msgspec.structs.replace(command, source="other")
    h.refused_command(ADMIN, changed, "request_id_reused")


def test_the_wire_decodes_a_batch_and_refuses_what_the_journal_could_not_hold() -> None:
    decode = WIRE_COMMAND_DECODERS["import.history"]
    body = {
        "request_id": "r-1",
        "postings": [
            {
                "seq": 1,
                "at_ns": 5,
                "debit": "@mint",
                "credit": "zero",
                "amount": "10000",
                "kind": "opening",
            }
        ],
    }
    command = decode(json.dumps(body).encode())
    assert isinstance(command, c.ImportHistory) and command.postings[0].memo == ""
    assert COMMAND_DECODERS["import.history"].decode(msgspec.json.encode(command)) == command
    for field, value in [
        ("debit", "@pool.a b"),
        ("credit", "zero\n"),
        ("kind", ""),
        ("at_ns", -1),
        ("amount", "1_0"),
        ("extra", 1),
    ]:
        bad = json.loads(json.dumps(body))
        bad["postings"][0][field] = value
        with pytest.raises(msgspec.ValidationError):
            decode(json.dumps(bad).encode())


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_the_cores_time_text_is_the_exports(at_ns: int) -> None:
    assert rfc3339(at_ns) == format_rfc3339_ns(at_ns)
