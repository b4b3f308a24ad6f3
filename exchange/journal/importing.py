"""Reading what ``exchange import`` opens a new exchange from (docs/economy.md, Import): an export
of this exchange (``exchange export``, CSV or JSON) or seed 1's wallet files.

Owns: the formats read, and turning each into ``Opening`` rows (one per agent: its balance, and
the earned and spent totals it brings, in micro-tokens) and, for an export, its postings in order
(``SourcePosting``) with the first point, if any, where one would take an agent below 0 (an export
cut with ``--since`` or ``--agent``). Must not: build a journal (the CLI does, in
``exchange/cli/importing.py``), or guess: anything that is not exactly one of the formats is
refused with ``ImportInputError``, one line naming the file and what to fix.

Seed 1's wallet format (the Scheme tool's ``.exchange/wallets/<agent>.wallet``), an association
list::

    ((tokens . 10000.0)
     (spent . 150.0)
     (earned . 450.0)
     (transactions . (((timestamp . 1734912345) (type . earn) (amount . 150)
                       (description . "git commit") (project . "agent-token-exchange")))))

The agent is the file's name without ``.wallet``; its balance is ``tokens``.
"""

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

import msgspec

from exchange.journal.errors import JournalError
from exchange.journal.export import export_columns
from protocols.amounts import MICRO_PER_TOKEN, format_micro
from protocols.ids import SYSTEM_SENDERS, is_agent_id

WALLET_SUFFIX: Final = ".wallet"
# An agent's totals as the exchange keeps them (the core adds to them where it makes these
# postings): earned is what it was minted (its opening aside), paid as a task's payee or
# referrer from escrow, or paid out by a pool; spent is what it paid a model account, directly
# or from a hold it had made (the hold's postings name it in their memo: the hold's id).
_MINT: Final = "@mint"
_ESCROW: Final = "@escrow"
_EARNED_FROM_ESCROW: Final = frozenset({"escrow.release", "referral"})
_POOL_PAYOUT: Final = "pool.payout"
_HOLD_KIND_PREFIX: Final = "hold."
_SPENT_PREFIX: Final = "@llm."
# A wallet file is a few hundred bytes; an export is streamed, but bounded all the same.
_WALLET_BYTES_MAX: Final = 16 * 1024 * 1024


class ImportInputError(JournalError):
    """The file is not an export or a seed-1 wallet, or holds a value that cannot be imported."""


@dataclass(frozen=True, slots=True)
class Opening:
    """One agent of the imported exchange: what it opens with."""

    agent: str
    balance_micro: int
    earned_micro: int
    spent_micro: int


class SourcePosting(msgspec.Struct, frozen=True):
    """One posting of an export, with the columns ``import.history`` carries."""

    seq: int
    at_ns: int
    debit_account: str
    credit_account: str
    amount_micro: int
    kind: str
    memo: str


@dataclass(frozen=True, slots=True)
class ImportSource:
    """What a file holds: the agents' openings (in a stable order) and a line for each memo; for
    an export, its postings in order (held in memory: the new journal's entries are, too), and
    ``cut``, where one would first take an agent below 0 (None when none does)."""

    openings: tuple[Opening, ...]
    description: str
    postings: tuple[SourcePosting, ...] = ()
    cut: str | None = None


def read_source(path: Path) -> ImportSource:
    """The openings in ``path``: an export (``.csv``, ``.json``), a ``.wallet`` file, or a
    directory of them (seed 1's ``.exchange/`` or its ``wallets/``).

    Raises ImportInputError (one line: the file and what to fix); OSError is turned into it.
    """
    try:
        if path.is_dir():
            return _read_wallet_dir(path)
        if path.suffix == WALLET_SUFFIX:
            return _wallets([path], f"seed-1 wallet {path.name}")
        with path.open(encoding="utf-8", newline="") as file:
            first = file.read(4096).lstrip()[:1]
            file.seek(0)
            if first == "[":
                # One JSON array: decoded whole (msgspec needs the document).
                return _from_postings(path, _json_postings(path, file.read()), "JSON")
            # A CSV export is streamed row by row: memory does not grow with the file.
            return _from_postings(path, _csv_postings(path, file), "CSV")
    except OSError as exc:
        raise ImportInputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ImportInputError(f"{path}: is not UTF-8 text: not an export") from exc
    except csv.Error as exc:
        raise ImportInputError(f"{path}: not a CSV export ({exc})") from exc


# ----------------------------------------------------------------------------- exports


def _json_postings(path: Path, text: str) -> Iterator[SourcePosting]:
    try:
        yield from msgspec.json.decode(text, type=list[SourcePosting])
    except msgspec.ValidationError as exc:
        raise ImportInputError(
            f"{path}: not an export of `exchange export --format json` ({exc})"
        ) from exc
    except msgspec.DecodeError as exc:
        raise ImportInputError(f"{path}: not valid JSON ({exc})") from exc


def _csv_postings(path: Path, file: Iterable[str]) -> Iterator[SourcePosting]:
    reader = csv.reader(file)
    header = next(reader, None)
    if header is None or tuple(header) != export_columns:
        raise ImportInputError(
            f"{path}: not an export of `exchange export` (its first row must be the columns "
            f"{','.join(export_columns)})"
        )
    index = {name: i for i, name in enumerate(export_columns)}
    for line, row in enumerate(reader, start=2):
        if len(row) != len(export_columns):
            raise ImportInputError(
                f"{path}: row {line} has {len(row)} fields, not {len(export_columns)}"
            )
        amount, seq = row[index["amount_micro"]], row[index["seq"]]
        at_ns = row[index["at_ns"]]
        if not amount.isascii() or not amount.isdigit():
            raise ImportInputError(
                f"{path}: row {line}: amount_micro {amount!r} is not a whole number of micro-tokens"
            )
        if not seq.isascii() or not seq.isdigit():
            raise ImportInputError(f"{path}: row {line}: seq {seq!r} is not a journal entry number")
        if not at_ns.isascii() or not at_ns.isdigit():
            raise ImportInputError(
                f"{path}: row {line}: at_ns {at_ns!r} is not a time in ns since the epoch"
            )
        yield SourcePosting(
            int(seq),
            int(at_ns),
            row[index["debit_account"]],
            row[index["credit_account"]],
            int(amount),
            row[index["kind"]],
            row[index["memo"]],
        )


def _from_postings(path: Path, postings: Iterable[SourcePosting], fmt: str) -> ImportSource:
    balances: dict[str, int] = {}
    earned: dict[str, int] = {}
    spent: dict[str, int] = {}
    hold_owner: dict[str, str] = {}  # hold id -> the agent whose money it holds
    count = last_seq = 0
    kept: list[SourcePosting] = []
    cut = None
    for posting in postings:
        if posting.amount_micro <= 0:
            raise ImportInputError(
                f"{path}: posting {count + 1} moves {posting.amount_micro} micro-tokens; every "
                "posting of an export moves a positive amount"
            )
        debit, credit = posting.debit_account, posting.credit_account
        balances[debit] = balances.get(debit, 0) - posting.amount_micro
        balances[credit] = balances.get(credit, 0) + posting.amount_micro
        if cut is None and balances[debit] < 0 and not debit.startswith("@"):
            cut = (
                f"posting {count + 1} (entry {posting.seq}) would take {debit} to "
                f"{format_micro(balances[debit])} tokens"
            )
        kept.append(posting)
        kind = posting.kind
        if credit == _ESCROW and kind.startswith(_HOLD_KIND_PREFIX) and not debit.startswith("@"):
            hold_owner[posting.memo] = debit
        if not credit.startswith("@") and (
            (debit == _MINT and kind != "opening")
            or (debit == _ESCROW and kind in _EARNED_FROM_ESCROW)
            or kind == _POOL_PAYOUT
        ):
            earned[credit] = earned.get(credit, 0) + posting.amount_micro
        if credit.startswith(_SPENT_PREFIX):
            payer = hold_owner.get(posting.memo) if debit == _ESCROW else debit
            if payer is not None and not payer.startswith("@"):
                spent[payer] = spent.get(payer, 0) + posting.amount_micro
        count += 1
        last_seq = max(last_seq, posting.seq)
    agents = [account for account in balances if not account.startswith("@")]
    for agent in agents:
        _check_agent(path, agent)
        if balances[agent] < 0:
            raise ImportInputError(
                f"{path}: {agent}'s postings sum to a negative balance; an export of a whole "
                "journal never does (was it cut with --agent or --since?)"
            )
    openings = tuple(
        Opening(agent, balances[agent], earned.get(agent, 0), spent.get(agent, 0))
        for agent in sorted(agents)
    )
    if not openings:
        raise ImportInputError(f"{path}: the export holds no agent account: nothing to import")
    # The memo of every opening names the original: the file, and the last journal entry it holds.
    return ImportSource(
        openings,
        f"{fmt} export {path.name} ({count} postings, to entry {last_seq})",
        tuple(kept),
        cut,
    )


def _check_agent(path: Path, agent: str) -> None:
    if not is_agent_id(agent) or agent in SYSTEM_SENDERS:
        raise ImportInputError(
            f"{path}: {agent!r} is not an agent id (1-64 characters of a-z, 0-9, - and _, not "
            "admin or exchange)"
        )


# ----------------------------------------------------------------------------- seed-1 wallets


def _read_wallet_dir(path: Path) -> ImportSource:
    folder = path / "wallets" if (path / "wallets").is_dir() else path
    files = sorted(folder.glob(f"*{WALLET_SUFFIX}"))
    if not files:
        raise ImportInputError(
            f"{folder}: holds no {WALLET_SUFFIX} file; give seed 1's .exchange directory, its "
            "wallets/ directory, a wallet file, or an export"
        )
    return _wallets(files, f"seed-1 wallets of {folder.parent.name}/{folder.name}/")


def _wallets(files: list[Path], description: str) -> ImportSource:
    openings = []
    transactions = 0
    for file in files:
        agent = file.name.removesuffix(WALLET_SUFFIX)
        _check_agent(file, agent)
        with file.open("rb") as handle:
            raw = handle.read(_WALLET_BYTES_MAX + 1)
        if len(raw) > _WALLET_BYTES_MAX:
            raise ImportInputError(f"{file}: larger than {_WALLET_BYTES_MAX} bytes: not a wallet")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportInputError(f"{file}: is not UTF-8 text: not a wallet") from exc
        wallet = parse_wallet(file, text)
        openings.append(
            Opening(
                agent,
                _wallet_micro(file, wallet, "tokens"),
                _wallet_micro(file, wallet, "earned"),
                _wallet_micro(file, wallet, "spent"),
            )
        )
        transactions += len(_list_field(wallet.get("transactions")))
    return ImportSource(tuple(openings), f"{description} ({transactions} transactions)")


def _wallet_micro(file: Path, wallet: dict[str, object], field: str) -> int:
    value = wallet.get(field, Decimal(0) if field != "tokens" else None)
    if not isinstance(value, Decimal):
        raise ImportInputError(f"{file}: ({field} . NUMBER) is missing or not a number")
    micro = value * MICRO_PER_TOKEN
    if value < 0 or micro != micro.to_integral_value():
        raise ImportInputError(
            f"{file}: {field} is {value}; it must be 0 or more with at most 6 decimals"
        )
    return int(micro)


def _list_field(value: object) -> list[object]:
    return value if isinstance(value, list) else []


# A tiny reader for the wallet's S-expressions: lists, dotted pairs, strings, numbers, symbols.
_TOKEN: Final = re.compile(
    r"""\s*(?:(?P<open>\()|(?P<close>\))|(?P<string>"(?:[^"\\]|\\.)*")|(?P<atom>[^\s()";]+)
    |(?P<comment>;[^\n]*))""",
    re.VERBOSE,
)
_NUMBER: Final = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_DOT: Final = object()


class _Pair:
    """``(car . cdr)`` whose cdr is not a list."""

    __slots__ = ("car", "cdr")

    def __init__(self, car: list[object], cdr: object) -> None:
        self.car, self.cdr = car, cdr


def parse_wallet(file: Path, text: str) -> dict[str, object]:
    """The wallet's association list as a dict: ``tokens``, ``spent`` and ``earned`` as Decimal,
    ``transactions`` as a list of dicts. Raises ImportInputError."""
    tokens = list(_tokens(file, text))
    value, end = _datum(file, tokens, 0)
    if end != len(tokens):
        raise ImportInputError(f"{file}: text after the wallet's closing parenthesis")
    return _alist(file, value)


def _tokens(file: Path, text: str) -> Iterator[object]:
    position = 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if match is None or match.end() == position:
            raise ImportInputError(f"{file}: cannot read the wallet at character {position}")
        position = match.end()
        if match["open"]:
            yield "("
        elif match["close"]:
            yield ")"
        elif match["string"]:
            yield ("string", _unescape(match["string"][1:-1]))
        elif match["atom"]:
            yield _DOT if match["atom"] == "." else _atom(match["atom"])


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), body)


def _atom(text: str) -> object:
    if _NUMBER.fullmatch(text):
        try:
            return Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            pass
    return ("symbol", text)


def _datum(file: Path, tokens: list[object], at: int) -> tuple[object, int]:
    if at >= len(tokens):
        raise ImportInputError(f"{file}: the wallet ends before its closing parenthesis")
    token = tokens[at]
    if token == ")" or token is _DOT:
        raise ImportInputError(f"{file}: unexpected {')' if token == ')' else '.'} in the wallet")
    if token != "(":
        if isinstance(token, tuple):
            return token[1], at + 1
        return token, at + 1
    items: list[object] = []
    at += 1
    while True:
        if at >= len(tokens):
            raise ImportInputError(f"{file}: the wallet ends before its closing parenthesis")
        if tokens[at] == ")":
            return items, at + 1
        if tokens[at] is _DOT:
            if not items:
                raise ImportInputError(f"{file}: a dotted pair with nothing before the dot")
            cdr, at = _datum(file, tokens, at + 1)
            if at >= len(tokens) or tokens[at] != ")":
                raise ImportInputError(f"{file}: a dotted pair must end after its second part")
            return (items + cdr if isinstance(cdr, list) else _Pair(items, cdr)), at + 1
        item, at = _datum(file, tokens, at)
        items.append(item)


def _alist(file: Path, value: object) -> dict[str, object]:
    if not isinstance(value, list):
        raise ImportInputError(f"{file}: a wallet is a list of (key . value) pairs")
    out: dict[str, object] = {}
    for entry in value:
        if isinstance(entry, _Pair) and len(entry.car) == 1 and isinstance(entry.car[0], str):
            key, item = entry.car[0], entry.cdr
        elif isinstance(entry, list) and entry and isinstance(entry[0], str):
            key, item = entry[0], [_alist(file, t) for t in entry[1:]]
        else:
            raise ImportInputError(f"{file}: each wallet entry is (key . value)")
        out[key] = item
    return out


__all__ = [
    "ImportInputError",
    "ImportSource",
    "Opening",
    "SourcePosting",
    "parse_wallet",
    "read_source",
]
