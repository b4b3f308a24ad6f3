"""The book: account balances and double-entry postings. Every movement debits one account and
credits another by the same positive amount, so the sum of all balances is always exactly zero.

System accounts start with ``@``; agent accounts are bare agent ids and may never go negative.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Final

import msgspec

MINT: Final = "@mint"
ESCROW: Final = "@escrow"
FEES: Final = "@fees"
ROUNDING: Final = "@rounding"
# The opening equity of an imported exchange: imported balances come from it (docs/economy.md).
IMPORT: Final = "@import"
history_per_agent_max: Final = 1000


def llm_account(model: str) -> str:
    return f"@llm.{model}"


def pool_account(pool_id: str) -> str:
    return f"@pool.{pool_id}"


def is_system(account: str) -> bool:
    return account.startswith("@")


# Only the source of minted tokens, the rounding account and the opening equity of an import may
# be negative; every other account (agents, pools, escrow, fees, model sinks) holds real tokens.
MAY_GO_NEGATIVE: Final = frozenset({MINT, ROUNDING, IMPORT})


class Posting(msgspec.Struct, frozen=True, gc=False):
    """One movement, as the outcome hands it out and as the histories of its agent accounts keep
    it: with the command that made it (``seq``, ``at_ns``) and the balance it left on each side.

    One object serves the outcome and both histories (a transfer between two agents is one
    Posting in two histories). A Struct, not a frozen dataclass: one is made for every movement,
    and a frozen dataclass's __init__ costs about ten times as much. gc-free: up to
    ``history_per_agent_max`` live per agent, and they refer only to strings and ints, so the
    collector need never look at them.
    """

    debit: str
    credit: str
    amount_micro: int
    kind: str
    memo: str
    seq: int
    at_ns: int
    debit_balance_after_micro: int
    credit_balance_after_micro: int


# (seq, at_ns, kind, counterparty, signed amount, balance after, memo): one posting as one agent
# sees it, in queries and snapshots.
HistoryRow = tuple[int, int, str, str, int, int, str]


def history_row(account: str, posting: Posting) -> HistoryRow:
    """The posting from the side of ``account`` (its debit or its credit)."""
    if posting.debit == account:
        return (
            posting.seq,
            posting.at_ns,
            posting.kind,
            posting.credit,
            -posting.amount_micro,
            posting.debit_balance_after_micro,
            posting.memo,
        )
    assert posting.credit == account, f"{account} is not a side of posting {posting.seq}"
    return (
        posting.seq,
        posting.at_ns,
        posting.kind,
        posting.debit,
        posting.amount_micro,
        posting.credit_balance_after_micro,
        posting.memo,
    )


def history_posting(account: str, row: HistoryRow) -> Posting:
    """Rebuilds a posting from one side's history row (a snapshot keeps rows). Only that side's
    balance is known; the other side's is set to 0 and is never read, since the posting is
    then in the history of ``account`` alone."""
    seq, at_ns, kind, counterparty, signed_micro, balance_after_micro, memo = row
    assert signed_micro != 0, "a posting moves a positive amount"
    if signed_micro < 0:
        return Posting(
            account, counterparty, -signed_micro, kind, memo, seq, at_ns, balance_after_micro, 0
        )
    return Posting(
        counterparty, account, signed_micro, kind, memo, seq, at_ns, 0, balance_after_micro
    )


class BookState(msgspec.Struct, frozen=True, kw_only=True):
    """The book in a snapshot: balances, and each agent's history as its own rows."""

    balances: dict[str, int]
    histories: dict[str, list[HistoryRow]]


@dataclass(slots=True)
class Book:
    balances: dict[str, int] = field(default_factory=dict)
    histories: dict[str, deque[Posting]] = field(default_factory=dict)
    # Postings of the command being applied; the ledger hands them out with its outcome.
    pending: list[Posting] = field(default_factory=list)
    seq: int = 0
    now_ns: int = 0

    def snapshot(self) -> BookState:
        return BookState(
            balances=self.balances,
            histories={
                account: [history_row(account, posting) for posting in postings]
                for account, postings in self.histories.items()
            },
        )

    def restore(self, state: BookState) -> None:
        """Takes back what ``snapshot`` gave, into an empty book."""
        assert not self.balances, "restore into an empty book"
        self.balances.update(state.balances)
        for account, rows in state.histories.items():
            self.open(account)
            self.histories[account].extend(history_posting(account, row) for row in rows)

    def open(self, account: str) -> None:
        self.balances.setdefault(account, 0)
        if not is_system(account):
            self.histories.setdefault(account, deque(maxlen=history_per_agent_max))

    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)

    def post(self, debit: str, credit: str, amount_micro: int, kind: str, memo: str = "") -> None:
        """Moves ``amount_micro`` from ``debit`` to ``credit``. The caller has checked funds."""
        assert amount_micro > 0, "a posting moves a positive amount"
        assert debit != credit, "a posting moves money between two accounts"
        balances = self.balances
        debit_after = balances.get(debit, 0) - amount_micro
        credit_after = balances.get(credit, 0) + amount_micro
        assert debit_after >= 0 or debit in MAY_GO_NEGATIVE, f"{debit} would go negative"
        balances[debit] = debit_after
        balances[credit] = credit_after
        posting = Posting(
            debit,
            credit,
            amount_micro,
            kind,
            memo,
            self.seq,
            self.now_ns,
            debit_after,
            credit_after,
        )
        self.pending.append(posting)
        histories = self.histories
        if (history := histories.get(debit)) is not None:
            history.append(posting)
        if (history := histories.get(credit)) is not None:
            history.append(posting)

    def take_postings(self) -> tuple[Posting, ...]:
        postings = tuple(self.pending)
        self.pending.clear()
        return postings

    def supply_micro(self) -> int:
        """What has been minted and not yet spent: minus the balance of ``@mint``."""
        return -self.balances.get(MINT, 0)

    def assert_conserved(self) -> None:
        """O(accounts): the full conservation check, run by tests, doctor and snapshots."""
        total = sum(self.balances.values())
        assert total == 0, f"balances sum to {total} micro-tokens, not 0"
        negative = sorted(a for a, b in self.balances.items() if b < 0 and a not in MAY_GO_NEGATIVE)
        assert not negative, f"negative balances: {negative}"
