"""Import (docs/economy.md, Import): the opening entries of an exchange built from another's
export or from seed 1's wallet files. ``import.opening`` moves an agent's balance from ``@import``
(the opening equity, which may go negative like ``@mint``) by double entry, and sets the earned
and spent totals it brings. ``import.history`` replays the source's postings instead, one by one
in their order, every account that is not an imported agent standing as ``@import``, so that each
agent keeps its transaction history. Stateless: its effects are the ledger's.
"""

from typing import Final

import msgspec

from exchange.core import accounts as acc
from exchange.core.ledger import Ledger
from exchange.core.refusals import Refusal, refuse
from protocols import commands as c
from protocols import results as r
from protocols.amounts import format_micro, to_micro
from protocols.errors import ErrorCode
from protocols.units import NS_PER_S

# Bounds the core holds a posting to whatever built the command (a Struct made in Python is not
# checked against its wire Meta): those of ``protocols.commands``'s fields, so that the memo and
# the kind fit the journal (exchange/journal/limits.py).
_ACCOUNT_CHARS_MAX: Final = 256
_KIND_CHARS_MAX: Final = 64
_MEMO_CHARS_MAX: Final = 4096
_S_PER_DAY: Final = 86_400


class Imports:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def opening(self, sender: str, cmd: c.ImportOpening) -> msgspec.Struct | Refusal:
        ledger = self.ledger
        if (denied := ledger.require_admin(sender, "import.opening")) is not None:
            return denied
        agent = ledger.agent(cmd.agent)
        if isinstance(agent, Refusal):
            return agent
        amount = ledger.amount(cmd.amount, "amount")
        if isinstance(amount, Refusal):
            return amount
        totals = _totals_micro(cmd, "")
        if isinstance(totals, Refusal):
            return totals
        ledger.book.post(acc.IMPORT, agent.id, amount, "opening", cmd.source)
        agent.earned_micro += totals[0]
        agent.spent_micro += totals[1]
        return r.RegisterResult(agent=agent.id, balance=format_micro(ledger.book.balance(agent.id)))

    def history(self, sender: str, cmd: c.ImportHistory) -> msgspec.Struct | Refusal:
        """Checks every posting and total first (so a refusal changes nothing), then posts."""
        ledger = self.ledger
        if (denied := ledger.require_admin(sender, "import.history")) is not None:
            return denied
        if not cmd.postings and not cmd.totals:
            return refuse(
                ErrorCode.invalid_message,
                "import.history carries no postings and no totals; send at least one",
                path="$.postings",
            )
        book = ledger.book
        moves: list[tuple[str, str, int, str, str]] = []
        after: dict[str, int] = {}  # the agents' balances as the batch leaves them
        for index, posting in enumerate(cmd.postings):
            checked = self._posting(index, posting)
            if isinstance(checked, Refusal):
                return checked
            if checked is None:
                continue  # between two accounts that are @import here: it touched no agent
            debit, credit, amount = checked
            if debit != acc.IMPORT:
                left = after.get(debit, book.balance(debit)) - amount
                if left < 0:
                    return refuse(
                        ErrorCode.insufficient_funds,
                        f"postings[{index}] (entry {posting.seq}) takes {format_micro(amount)} "
                        f"tokens from {debit}, who would then hold {format_micro(left)}: the "
                        "history does not start at its beginning; import the whole export (not "
                        "one cut with --since or --agent), or its balances alone "
                        "(--balances-only)",
                        path=f"$.postings[{index}]",
                    )
                after[debit] = left
            if credit != acc.IMPORT:
                after[credit] = after.get(credit, book.balance(credit)) + amount
            memo = (
                f"[imported entry {posting.seq}, {rfc3339(posting.at_ns)}, "
                f"{posting.debit} -> {posting.credit}]"
            )
            if posting.memo:
                memo += " " + posting.memo
            moves.append((debit, credit, amount, posting.kind, memo))
        totals = []
        for index, entry in enumerate(cmd.totals):
            agent = ledger.agent(entry.agent)
            if isinstance(agent, Refusal):
                return agent
            pair = _totals_micro(entry, f"totals[{index}].")
            if isinstance(pair, Refusal):
                return pair
            totals.append((agent, *pair))
        for move in moves:
            book.post(*move)
        for agent, earned, spent in totals:
            agent.earned_micro += earned
            agent.spent_micro += spent
        return r.ImportHistoryResult(
            posted=len(moves), skipped=len(cmd.postings) - len(moves), totals=len(totals)
        )

    def _posting(
        self, index: int, posting: c.ImportedPosting
    ) -> tuple[str, str, int] | Refusal | None:
        """The posting's (debit, credit, micro-tokens) in this exchange; None when both sides
        are ``@import`` here; a Refusal for a malformed one or one naming an unknown agent."""
        path = f"$.postings[{index}]"
        malformed = None
        if posting.debit == posting.credit:
            malformed = f"debits and credits the same account {posting.debit!r}"
        elif not 0 < len(posting.kind) <= _KIND_CHARS_MAX:
            malformed = f"has a kind of {len(posting.kind)} characters, not 1 to {_KIND_CHARS_MAX}"
        elif len(posting.memo) > _MEMO_CHARS_MAX:
            malformed = f"has a memo longer than {_MEMO_CHARS_MAX} characters"
        elif posting.at_ns < 0 or posting.seq < 0:
            malformed = "has a negative seq or at_ns"
        elif any(not 0 < len(a) <= _ACCOUNT_CHARS_MAX for a in (posting.debit, posting.credit)):
            malformed = f"names an account of more than {_ACCOUNT_CHARS_MAX} characters"
        if malformed is not None:
            return refuse(
                ErrorCode.invalid_message,
                f"postings[{index}] {malformed}; send an export's postings as they are",
                path=path,
            )
        sides = []
        for field, account in (("debit", posting.debit), ("credit", posting.credit)):
            if acc.is_system(account):
                sides.append(acc.IMPORT)
                continue
            if account not in self.ledger.agents:
                return refuse(
                    ErrorCode.unknown_agent,
                    f"postings[{index}].{field} {account!r} is not a registered agent (a system "
                    "account starts with @); register every agent of the export first",
                    path=f"{path}.{field}",
                )
            sides.append(account)
        amount = self.ledger.amount(posting.amount, f"postings[{index}].amount")
        if isinstance(amount, Refusal):
            return amount
        if sides[0] == sides[1]:
            return None
        return sides[0], sides[1], amount


def _totals_micro(
    entry: c.ImportOpening | c.ImportedTotals, path: str
) -> tuple[int, int] | Refusal:
    """An entry's earned and spent totals in micro-tokens, each 0 or more and exact; ``path``:
    where the entry sits in its command (``""`` or ``"totals[3]."``)."""
    micro = []
    for field in ("earned", "spent"):
        value = getattr(entry, field)
        total = to_micro(value)
        if type(total) is not int or total < 0:
            return refuse(
                ErrorCode.invalid_amount,
                f"{path}{field} is a total of tokens, 0 or more with at most 6 decimals; "
                f"got {value}",
                path=f"$.{path}{field}",
            )
        micro.append(total)
    return micro[0], micro[1]


def rfc3339(at_ns: int) -> str:
    """Nanoseconds since the Unix epoch as RFC 3339 UTC with nine fraction digits, as
    ``exchange export`` writes ``at``, by arithmetic (the core reads no clock and no calendar
    module): days to a civil date by H. Hinnant's ``civil_from_days``."""
    seconds, nanos = divmod(at_ns, NS_PER_S)
    days, rest = divmod(seconds, _S_PER_DAY)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    z = days + 719_468
    era = z // 146_097
    day_of_era = z - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    year = year_of_era + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{nanos:09d}Z"
