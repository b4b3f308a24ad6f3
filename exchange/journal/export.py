"""Exporting the transaction history (postings) as CSV or JSON, streamed in constant memory.

Owns: the export formats and their columns. Must not: query SQLite itself (it reads through
``Journal.iter_postings``), check the chain (callers run ``verify`` first), or do arithmetic on
amounts beyond formatting them.

Formats, one record per posting in journal order, with the same fields in both:
- ``csv``: a header row, then one row per posting; ``\\n`` line ends, RFC 4180 quoting.
- ``json``: one JSON array, streamed element by element (not JSON Lines), so ``json.load`` reads it.
Amounts appear twice: ``amount_tokens`` as an exact decimal string ("237.6") and ``amount_micro``
as the integer. Times appear as RFC 3339 UTC with nanoseconds (``at``) and as raw ``at_ns``.
"""

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal, TextIO

import msgspec

from exchange.journal.errors import JournalInputError
from exchange.journal.records import PostingRecord
from exchange.journal.sqlite import Journal
from protocols.amounts import format_micro
from protocols.units import NS_PER_S

ExportFormat = Literal["csv", "json"]


class ExportedPosting(msgspec.Struct, frozen=True, kw_only=True):
    """One exported posting; the field order is the CSV column order."""

    seq: int
    idx: int
    at: str
    at_ns: int
    sender: str
    verb: str
    debit_account: str
    credit_account: str
    amount_tokens: str
    amount_micro: int
    kind: str
    memo: str


export_columns: tuple[str, ...] = ExportedPosting.__struct_fields__


def format_rfc3339_ns(at_ns: int) -> str:
    """Nanoseconds since the Unix epoch as RFC 3339 UTC: ``2024-05-01T12:00:00.000000001Z``.

    Always nine fraction digits, so the strings sort like the numbers. Exact: no float involved.
    """
    seconds, nanos = divmod(at_ns, NS_PER_S)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def exported(record: PostingRecord) -> ExportedPosting:
    """The export view of one posting."""
    return ExportedPosting(
        seq=record.seq,
        idx=record.idx,
        at=format_rfc3339_ns(record.at_ns),
        at_ns=record.at_ns,
        sender=record.sender,
        verb=record.verb,
        debit_account=record.debit_account,
        credit_account=record.credit_account,
        amount_tokens=format_micro(record.amount_micro),
        amount_micro=record.amount_micro,
        kind=record.kind,
        memo=record.memo,
    )


def export_postings(
    journal: Journal,
    out: TextIO,
    fmt: ExportFormat,
    *,
    agent: str | None = None,
    since_ns: int | None = None,
) -> int:
    """Writes the postings of ``journal`` to ``out``; returns how many were written.

    ``agent`` keeps postings where it is the debit or credit account, ``since_ns`` those stamped
    at or after it. Streams: memory does not grow with the journal.
    Raises JournalInputError for an unknown ``fmt``, whatever ``Journal.iter_postings`` raises,
    and OSError from ``out``.
    """
    records = journal.iter_postings(agent=agent, since_ns=since_ns)
    if fmt == "csv":
        return _write_csv(records, out)
    if fmt == "json":
        return _write_json(records, out)
    raise JournalInputError(f"fmt: expected 'csv' or 'json', got {fmt!r}")


def _write_csv(records: Iterator[PostingRecord], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(export_columns)
    count = 0
    for record in records:
        writer.writerow(msgspec.structs.astuple(exported(record)))
        count += 1
    return count


def _write_json(records: Iterator[PostingRecord], out: TextIO) -> int:
    encoder = msgspec.json.Encoder()
    count = 0
    out.write("[")
    for record in records:
        out.write(",\n" if count else "\n")
        out.write(encoder.encode(exported(record)).decode())
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count
