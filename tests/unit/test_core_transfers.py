"""Transfers, amounts and registration: the double-entry moves between agents, every amount
refusal, agent ids, the opening balance and who may act for whom. Each refusal leaves the state
digest unchanged."""

import json
from decimal import Decimal
from typing import Any

import pytest
from core_support import ROSTER, D, Harness
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.core.config import EconomyConfig
from exchange.core.refusals import result_reply
from protocols import commands as c
from protocols import queries as q
from protocols import results as r
from protocols.amounts import format_micro
from protocols.errors import ErrorCode
from protocols.ids import ADMIN, EXCHANGE
from protocols.registry import COMMAND_DECODERS

# ---------------------------------------------------------------------------------- genesis


def test_genesis_registers_the_roster_with_10000_each_minted_from_mint() -> None:
    h = Harness()
    agents = h.query(q.AgentsQuery())["agents"]
    assert [a["agent"] for a in agents] == list(ROSTER)
    assert {a["balance"] for a in agents} == {"10000"}
    by_id = {a["agent"]: a for a in agents}
    assert (by_id["claude"]["level"], by_id["claude"]["base_rate"]) == ("L7", "150")
    assert by_id["builder"]["preferences"] == {"planning": "claude-sonnet"}
    assert by_id["zero"]["primary_llm"] == "llama3.2"
    assert h.account("@mint") == -60_000
    status = h.query(q.StatusQuery())
    assert (status["agents"], status["supply"], status["open_holds"]) == (6, "60000", 0)


# ---------------------------------------------------------------------------------- transfers


def test_a_transfer_debits_one_agent_and_credits_the_other() -> None:
    h = Harness()
    outcome = h.send("claude", c.Transfer, to="zero", amount=D("12.5"), memo="thanks")
    assert outcome.ok
    assert outcome.reply == (
        b'{"ok":true,"result":{"sender":"claude","recipient":"zero","amount":"12.5",'
        b'"balance":"9987.5"}}'
    )
    assert [(p.debit, p.credit, p.amount_micro, p.kind, p.memo) for p in outcome.postings] == [
        ("claude", "zero", 12_500_000, "transfer", "thanks")
    ]
    assert (h.balance("claude"), h.balance("zero")) == (D("9987.5"), D("10012.5"))
    history = h.query(q.HistoryQuery(agent="zero", limit=1))["entries"]
    assert [
        (e["kind"], e["counterparty"], e["amount"], e["balance"], e["memo"]) for e in history
    ] == [("transfer", "claude", "12.5", "10012.5", "thanks")]


@settings(max_examples=200, deadline=None)
@given(
    micro=st.integers(min_value=1, max_value=9_000 * 1_000_000),
    form=st.sampled_from(["plain", "trailing_zeros", "exponent"]),
)
def test_a_transfer_reply_is_the_encoded_transfer_result(micro: int, form: str) -> None:
    # The transfer handler builds its reply from a template; it must be, byte for byte, what
    # encoding the result Struct gives, whatever text the amount was written in.
    amount = Decimal(micro).scaleb(-6)
    if form == "trailing_zeros":
        amount = amount.quantize(Decimal("0.0000001"))
    elif form == "exponent":
        amount = Decimal(f"{micro}E-6")
    h = Harness()
    before_micro = h.ex.ledger.book.balance("claude")
    outcome = h.send("claude", c.Transfer, to="zero", amount=amount)
    assert outcome.ok, outcome.reply
    expected = result_reply(
        r.TransferResult(
            sender="claude",
            recipient="zero",
            amount=format_micro(micro),
            balance=format_micro(before_micro - micro),
        )
    )
    assert outcome.reply == expected


def test_both_sides_of_a_transfer_see_it_in_their_history() -> None:
    # One posting is kept in both histories; each side reads its own view of it.
    h = Harness()
    h.ok("claude", c.Transfer, to="zero", amount=D("0.5"), memo="m")
    sent = h.query(q.HistoryQuery(agent="claude", limit=1))["entries"]
    received = h.query(q.HistoryQuery(agent="zero", limit=1))["entries"]
    assert [(e["counterparty"], e["amount"], e["balance"], e["memo"]) for e in sent] == [
        ("zero", "-0.5", "9999.5", "m")
    ]
    assert [(e["counterparty"], e["amount"], e["balance"], e["memo"]) for e in received] == [
        ("claude", "0.5", "10000.5", "m")
    ]


def test_a_transfer_may_go_down_to_the_reserve_and_no_further() -> None:
    h = Harness()
    h.ok("claude", c.Transfer, to="zero", amount=D(9500))
    assert h.balance("claude") == 500
    error = h.refused(
        "claude", c.Transfer, ErrorCode.reserve_would_be_breached, to="zero", amount=D("0.000001")
    )
    assert (error["limit"], error["used"], error["requested"]) == ("500", "500", "0.000001")


def test_a_transfer_to_an_unknown_agent_is_refused() -> None:
    h = Harness()
    error = h.refused("claude", c.Transfer, ErrorCode.unknown_agent, to="nobody", amount=D(1))
    assert "nobody" in error["message"]
    # A malformed id gets a hint about the id rules.
    error = h.refused("claude", c.Transfer, ErrorCode.unknown_agent, to="No.Body", amount=D(1))
    assert "a-z" in error["message"]


def test_a_transfer_from_an_unknown_sender_is_refused() -> None:
    h = Harness()
    h.refused("nobody", c.Transfer, ErrorCode.unknown_agent, to="zero", amount=D(1))


@pytest.mark.parametrize("sender", [ADMIN, EXCHANGE])
def test_system_senders_cannot_transfer(sender: str) -> None:
    h = Harness()
    h.refused(sender, c.Transfer, ErrorCode.not_authorized, to="zero", amount=D(1))


def test_a_transfer_to_oneself_is_refused() -> None:
    h = Harness()
    h.refused("zero", c.Transfer, ErrorCode.not_authorized, to="zero", amount=D(1))


AMOUNT_REFUSALS = [
    (D(0), ErrorCode.amount_must_be_positive),
    (D("-0"), ErrorCode.amount_must_be_positive),
    (D("-0.000001"), ErrorCode.amount_must_be_positive),
    (D(-100), ErrorCode.amount_must_be_positive),
    (D("0.0000001"), ErrorCode.too_many_decimals),
    (D("1.1234567"), ErrorCode.too_many_decimals),
    (D("1E-7"), ErrorCode.too_many_decimals),
    (D("NaN"), ErrorCode.amount_not_finite),
    (D("sNaN"), ErrorCode.amount_not_finite),
    (D("Infinity"), ErrorCode.amount_not_finite),
    (D("-Infinity"), ErrorCode.amount_not_finite),
    (D("1000000000000.000001"), ErrorCode.amount_too_large),
    (D("1E+13"), ErrorCode.amount_too_large),
    (D("1E+999999"), ErrorCode.amount_too_large),
    # Longer than the decimal context's 28 digits: refused, never an exception.
    (D("1000000000000000000000000.1234567"), ErrorCode.too_many_decimals),
    (D("123456789012345678901234567890"), ErrorCode.amount_too_large),
]


@pytest.mark.parametrize(("amount", "code"), AMOUNT_REFUSALS)
def test_transfer_amount_refusals(amount: Decimal, code: ErrorCode) -> None:
    h = Harness()
    error = h.refused("claude", c.Transfer, code, to="zero", amount=amount)
    assert error["path"] == "$.amount"


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (D("0.000001"), "0.000001"),
        (D("1.0000000"), "1"),  # seven places, but the seventh is zero
        (D("1.50"), "1.5"),
        (D("2E+3"), "2000"),
        (D("0.1"), "0.1"),
    ],
)
def test_transfer_amounts_that_are_exact_to_the_micro_token(amount: Decimal, shown: str) -> None:
    h = Harness()
    assert h.ok("claude", c.Transfer, to="zero", amount=amount)["amount"] == shown


def test_the_largest_amount_passes_the_amount_rules_and_meets_the_reserve() -> None:
    h = Harness()
    h.refused(
        "claude", c.Transfer, ErrorCode.reserve_would_be_breached, to="zero", amount=D(10**12)
    )


def test_amounts_on_the_wire_are_exact_decimals_never_floats() -> None:
    h = Harness()
    body = b'{"request_id":"w1","to":"zero","amount":0.1}'
    command = COMMAND_DECODERS["transfer"].decode(body)
    assert h.apply("claude", command).ok
    body = b'{"request_id":"w2","to":"zero","amount":"0.2"}'
    assert h.apply("claude", COMMAND_DECODERS["transfer"].decode(body)).ok
    assert h.balance("zero") == D("10000.3")
    assert h.balance("claude") == D("9999.7")


def test_a_wire_nan_is_refused_by_the_ledger() -> None:
    h = Harness()
    for text in (b'"NaN"', b'"Infinity"', b'"-Infinity"', b"1e400"):
        body = b'{"request_id":"w","to":"zero","amount":' + text + b"}"
        command = COMMAND_DECODERS["transfer"].decode(body)
        expected = ErrorCode.amount_too_large if text == b"1e400" else ErrorCode.amount_not_finite
        h.refused_command("claude", command, expected)


# ---------------------------------------------------------------------------------- registration


def register(h: Harness, agent: str, **fields: object) -> dict[str, Any]:
    fields.setdefault("base_rate", D(80))
    fields.setdefault("primary_llm", "gemini-pro")
    return h.ok(ADMIN, c.RegisterAgent, agent=agent, **fields)


def test_registration_opens_with_10000_minted() -> None:
    h = Harness()
    result = register(
        h,
        "scout-7",
        level="L4",
        role="scout",
        capabilities=["search", "summarise"],
        preferences={"chat": "llama3.2"},
    )
    assert result == {"agent": "scout-7", "balance": "10000"}
    assert h.account("@mint") == -70_000
    info = h.query(q.AgentsQuery(role="scout"))["agents"]
    assert info == [
        {
            "agent": "scout-7",
            "level": "L4",
            "base_rate": "80",
            "primary_llm": "gemini-pro",
            "preferences": {"chat": "llama3.2"},
            "role": "scout",
            "capabilities": ["search", "summarise"],
            "balance": "10000",
            "performance": "1",
        }
    ]
    # The new agent acts at once: it spends, earns and receives.
    assert h.ok("scout-7", c.LlmRequest, task_type="chat", tokens=10_000)["cost"] == "1"
    assert h.ok(ADMIN, c.Commit, author="scout-7@x.ai", project="p", message="x")["reward"] == "80"
    h.ok("claude", c.Transfer, to="scout-7", amount=D(1))


def test_the_opening_balance_comes_from_the_config() -> None:
    h = Harness(EconomyConfig(opening_balance=D("2.5")))
    assert h.balance("claude") == D("2.5")
    assert register(h, "new")["balance"] == "2.5"


def test_a_zero_opening_balance_posts_nothing() -> None:
    h = Harness(EconomyConfig(opening_balance=D(0)))
    outcome = h.send(ADMIN, c.RegisterAgent, agent="new", base_rate=D(1), primary_llm="llama3.2")
    assert outcome.ok
    assert outcome.postings == ()


@pytest.mark.parametrize(
    "agent",
    [
        "a.b",
        "a*",
        "a>",
        "*",
        ">",
        "Claude",
        "UPPER",
        "a b",
        " a",
        "a\n",
        "a\t",
        "é",
        "a" * 65,
        "",
        "admin",
        "exchange",
    ],
)
def test_invalid_agent_ids_are_refused(agent: str) -> None:
    h = Harness()
    error = h.refused(
        ADMIN,
        c.RegisterAgent,
        ErrorCode.invalid_agent_id,
        agent=agent,
        base_rate=D(1),
        primary_llm="llama3.2",
    )
    assert error["path"] == "$.agent"


@pytest.mark.parametrize("agent", ["a", "a" * 64, "agent-7_x", "0", "-", "_"])
def test_valid_agent_ids(agent: str) -> None:
    h = Harness()
    register(h, agent)


def test_an_existing_agent_cannot_be_registered_again() -> None:
    h = Harness()
    h.refused(
        ADMIN,
        c.RegisterAgent,
        ErrorCode.agent_exists,
        agent="claude",
        base_rate=D(1),
        primary_llm="llama3.2",
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"primary_llm": "gpt-9"},
        {"primary_llm": "llama3.2", "preferences": {"chat": "gpt-9"}},
    ],
)
def test_registration_with_an_unknown_model_is_refused(fields: dict[str, Any]) -> None:
    h = Harness()
    h.refused(
        ADMIN, c.RegisterAgent, ErrorCode.unknown_model, agent="new", base_rate=D(1), **fields
    )


@pytest.mark.parametrize(("amount", "code"), AMOUNT_REFUSALS[:12])
def test_registration_base_rate_refusals(amount: Decimal, code: ErrorCode) -> None:
    h = Harness()
    error = h.refused(
        ADMIN, c.RegisterAgent, code, agent="new", base_rate=amount, primary_llm="llama3.2"
    )
    assert error["path"] == "$.base_rate"


def test_registration_limit_refusals() -> None:
    h = Harness()
    error = h.refused(
        ADMIN,
        c.RegisterAgent,
        ErrorCode.amount_must_be_positive,
        agent="new",
        base_rate=D(1),
        primary_llm="llama3.2",
        limits=c.LimitsSpec(hourly=D(0)),
    )
    assert error["path"] == "$.limits.hourly"


@pytest.mark.parametrize("sender", ["claude", "nobody"])
def test_only_the_operator_registers_agents(sender: str) -> None:
    h = Harness()
    h.refused(
        sender,
        c.RegisterAgent,
        ErrorCode.not_authorized,
        agent="new",
        base_rate=D(1),
        primary_llm="llama3.2",
    )


def test_queries_about_unknown_agents_are_refusals() -> None:
    h = Harness()
    for query in (
        q.BalanceQuery(agent="nobody"),
        q.LimitsQuery(agent="nobody"),
        q.HistoryQuery(agent="nobody"),
    ):
        envelope = json.loads(h.ex.query(query))
        assert (envelope["ok"], envelope["error"]["code"]) == (False, "unknown_agent")


def test_a_tick_from_anyone_but_the_exchange_is_refused() -> None:
    h = Harness()
    for sender in (ADMIN, "claude", "nobody"):
        h.refused(sender, c.Tick, ErrorCode.not_authorized)


def test_balance_answers_for_system_accounts() -> None:
    """`balance` takes a system account too (`@fees`...): its balance, and 0 earned, spent, held;
    an unknown one is refused like an unknown agent."""
    h = Harness()
    fees = h.query(q.BalanceQuery(agent="@fees"))
    assert fees == {"agent": "@fees", "balance": "0", "earned": "0", "spent": "0", "held": "0"}
    h.ok("zero", c.LlmRequest, task_type="chat", model="llama3.2", tokens=10_000)
    assert h.query(q.BalanceQuery(agent="@llm.llama3.2"))["balance"] == "1"
    minted = Decimal(h.query(q.BalanceQuery(agent="@mint"))["balance"])
    assert minted < 0
    envelope = json.loads(h.ex.query(q.BalanceQuery(agent="@nope")))
    assert envelope["error"]["code"] == "unknown_agent"
    assert "@fees" in envelope["error"]["message"]
