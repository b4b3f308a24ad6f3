"""Reading what ``exchange import`` opens an exchange from (exchange/journal/importing.py): seed 1's
wallet S-expressions, as the seed document shows them and as a property over any amounts, and the
balances an export's postings sum to; and the config the import writes."""

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.cli.importing import imported_config
from exchange.core.config import EconomyConfig, config_toml, parse_config
from exchange.journal.importing import ImportInputError, Opening, parse_wallet, read_source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "seed1"
SEED_WALLET = """((tokens . 10000.0)
(spent . 150.0)
(earned . 450.0)
(transactions . (((timestamp . 1734912345)
(type . earn)
(amount . 150)
(description . "git commit")
(project . "agent-token-exchange")))))"""


def test_the_seed_documents_wallet_reads_as_its_fields() -> None:
    wallet = parse_wallet(Path("claude.wallet"), SEED_WALLET)
    assert wallet["tokens"] == Decimal("10000.0") and wallet["spent"] == Decimal(150)
    assert wallet["transactions"] == [
        {
            "timestamp": Decimal(1734912345),
            "type": "earn",
            "amount": Decimal(150),
            "description": "git commit",
            "project": "agent-token-exchange",
        }
    ]


micro_amounts = st.integers(min_value=0, max_value=10**15).map(lambda m: Decimal(m).scaleb(-6))


@given(tokens=micro_amounts, spent=micro_amounts, earned=micro_amounts, count=st.integers(0, 3))
def test_any_wallet_the_scheme_tool_writes_reads_back_exactly(
    tokens: Decimal, spent: Decimal, earned: Decimal, count: int
) -> None:
    """Amounts are exact to the micro-token whatever their size; the transactions are counted."""
    transaction = '((timestamp . 1) (type . spend) (amount . 2.5) (description . "a \\"q\\""))'
    text = (
        f"((tokens . {tokens:f})\n (spent . {spent:f})\n (earned . {earned:f})\n"
        f" (transactions . ({' '.join([transaction] * count)})))"
    )
    wallet = parse_wallet(Path("x.wallet"), text)
    assert (wallet["tokens"], wallet["spent"], wallet["earned"]) == (tokens, spent, earned)
    transactions = wallet["transactions"]
    assert isinstance(transactions, list) and len(transactions) == count
    assert all(t["description"] == 'a "q"' for t in transactions)


def test_a_wallet_directory_gives_one_opening_per_file_in_name_order() -> None:
    source = read_source(FIXTURES / "scheme-exchange")
    assert [o.agent for o in source.openings] == ["builder", "claude", "oracle-7", "zero"]
    assert source.openings[0] == Opening("builder", 10_237_500_000, 312_750_000, 75_250_000)
    assert source.description == "seed-1 wallets of scheme-exchange/wallets/ (3 transactions)"


def test_an_exports_postings_sum_to_each_agents_balance(tmp_path: Path) -> None:
    columns = "seq,idx,at,at_ns,sender,verb,debit_account,credit_account,amount_tokens,"
    columns += "amount_micro,kind,memo\n"
    rows = [
        "1,0,t,1,admin,agent.register,@mint,zero,10000,10000000000,opening,opening balance",
        "2,0,t,2,admin,award,@mint,zero,5,5000000,award,x",
        "3,0,t,3,zero,llm,zero,@llm.llama3.2,0.1,100000,llm,chat",
        '4,0,t,4,zero,transfer,zero,spark,1,1000000,transfer,"a, ""quoted"" memo"',
    ]
    path = tmp_path / "e.csv"
    path.write_text(columns + "\n".join(rows) + "\n")
    source = read_source(path)
    assert source.openings == (
        Opening("spark", 1_000_000, 0, 0),
        Opening("zero", 10_003_900_000, 5_000_000, 100_000),
    )
    assert source.description == "CSV export e.csv (4 postings, to entry 4)"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("((tokens . 1)", "ends before"),
        ("((tokens . 1)))", "text after"),
        ("((tokens 1))", "(key . value)"),
        ("(. 1)", "nothing before the dot"),
        ("((tokens . 1 2))", "must end after its second part"),
        ("tokens", "list of (key . value) pairs"),
        (")", "unexpected )"),
    ],
)
def test_a_malformed_wallet_is_refused_saying_where(text: str, words: str) -> None:
    with pytest.raises(ImportInputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_wallet(Path("w.wallet"), text)


def test_the_imported_config_mints_nothing_and_reads_back_equal() -> None:
    openings = (Opening("claude", 1, 0, 0), Opening("newcomer", 2, 0, 0))
    config = imported_config(EconomyConfig(), openings)
    assert config.opening_balance == 0
    assert [a.id for a in config.agents] == ["claude", "newcomer"]
    assert config.agents[0] == EconomyConfig().agents[0]
    assert parse_config(config_toml(config)) == config


def test_an_opening_comes_from_at_import_for_the_operator_only() -> None:
    from core_support import Harness

    from protocols import commands as c
    from protocols.ids import ADMIN

    h = Harness()
    fields = {"agent": "zero", "amount": Decimal(5), "earned": Decimal(2), "spent": Decimal(1)}
    h.refused("claude", c.ImportOpening, "not_authorized", **fields)
    h.refused(ADMIN, c.ImportOpening, "unknown_agent", **(fields | {"agent": "nobody"}))
    h.refused(
        ADMIN, c.ImportOpening, "amount_must_be_positive", **(fields | {"amount": Decimal(0)})
    )
    h.refused(ADMIN, c.ImportOpening, "invalid_amount", **(fields | {"spent": Decimal(-1)}))
    h.refused(ADMIN, c.ImportOpening, "invalid_amount", **(fields | {"earned": Decimal("1e-7")}))
    h.ok(ADMIN, c.ImportOpening, **fields, source="test")
    assert h.ex.ledger.book.balance("@import") == -5_000_000
    zero = h.ex.ledger.agents["zero"]
    assert (zero.earned_micro, zero.spent_micro) == (2_000_000, 1_000_000)
    h.ex.check_invariants()


def test_import_keeps_the_given_economy_but_mints_nothing(tmp_path: Path) -> None:
    from exchange.cli.importing import import_exchange

    given = 'opening_balance = 500\n[models]\n"llama3.2" = 0.2\n'
    report = import_exchange(
        FIXTURES / "scheme-exchange", tmp_path / "new", config_text=given, now_ns=1
    )
    stored = parse_config((tmp_path / "new" / "economy.toml").read_text())
    assert stored.opening_balance == 0 and stored.models["llama3.2"] == Decimal("0.2")
    assert [a.id for a in stored.agents] == ["builder", "claude", "oracle-7", "zero"]
    assert (report.agents, report.imported, report.seq) == (4, "20237.500001", 7)


def test_a_refused_import_writes_nothing(tmp_path: Path) -> None:
    from exchange.cli.importing import import_exchange

    bad = tmp_path / "admin.wallet"
    bad.write_text("((tokens . 1.0))")
    with pytest.raises(ImportInputError, match="not an agent id"):
        import_exchange(bad, tmp_path / "never", config_text=None, now_ns=1)
    assert not (tmp_path / "never").exists()
