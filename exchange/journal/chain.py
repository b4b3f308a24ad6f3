"""The hash chain: the canonical bytes of an entry, the link hash, and batch validation.

Owns: the one byte format that is hashed, and the rules an entry must meet before it is written.
Must not: touch SQLite or files, read clocks, or look inside a command body.

Hash format v1 (fixed forever; a golden test pins it). Integers are big-endian, ``str(x)`` is a
4-byte big-endian length followed by that many bytes (UTF-8 for text)::

    hash(seq) = SHA-256( b"axj1"
                         || prev_hash                      (32 bytes; 32 zero bytes for seq 1)
                         || u64(seq) || u64(at_ns)
                         || str(sender) || str(verb) || str(body) || str(reply)
                         || u32(len(postings))
                         || for each posting, in order:
                              str(debit_account) || str(credit_account) || u64(amount_micro)
                              || str(kind) || str(memo) )

Every variable-length field is length-prefixed, so two different entries never encode to the same
bytes. Any change to an entry, its postings or their order changes its hash and every later one.
"""

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import exchange.journal.limits as limits
from exchange.journal.errors import JournalInputError
from exchange.journal.records import Entry, EntryInput, Posting

hash_format_tag = b"axj1"
genesis_hash_hex = "00" * 32

_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_seq_at = struct.Struct(">QQ")

# Row shapes for the entries and postings tables, in column order.
EntryRow = tuple[int, int, str, str, str, str, int, str]
PostingRow = tuple[int, int, int, str, str, int, str, str]


def link_hash_hex(
    prev_hash_hex: str,
    seq: int,
    at_ns: int,
    sender: str,
    verb: str,
    body: bytes,
    reply: bytes,
    postings: Sequence[Posting],
) -> str:
    """The hex SHA-256 that links entry ``seq`` to the entry before it (format v1 above).

    Raises ValueError if ``prev_hash_hex`` is not hex, UnicodeEncodeError for unencodable text and
    struct.error for an integer outside u64; callers validate first.
    """
    return _link_hash_hex(
        prev_hash_hex,
        seq,
        at_ns,
        sender.encode(),
        verb.encode(),
        body,
        reply,
        [_encode_posting(p) for p in postings],
    )


# A posting's hashed fields, text already UTF-8: debit, credit, amount_micro, kind, memo.
_EncodedPosting = tuple[bytes, bytes, int, bytes, bytes]


def _encode_posting(posting: Posting) -> _EncodedPosting:
    return (
        posting.debit_account.encode(),
        posting.credit_account.encode(),
        posting.amount_micro,
        posting.kind.encode(),
        posting.memo.encode(),
    )


def _link_hash_hex(
    prev_hash_hex: str,
    seq: int,
    at_ns: int,
    sender: bytes,
    verb: bytes,
    body: bytes,
    reply: bytes,
    postings: list[_EncodedPosting],
) -> str:
    """``link_hash_hex`` with the text already encoded (so validation's encoding is reused)."""
    u32 = _u32.pack
    parts = [
        hash_format_tag,
        bytes.fromhex(prev_hash_hex),
        _seq_at.pack(seq, at_ns),
        u32(len(sender)),
        sender,
        u32(len(verb)),
        verb,
        u32(len(body)),
        body,
        u32(len(reply)),
        reply,
        u32(len(postings)),
    ]
    for debit, credit, amount_micro, kind, memo in postings:
        parts += (
            u32(len(debit)),
            debit,
            u32(len(credit)),
            credit,
            _u64.pack(amount_micro),
            u32(len(kind)),
            kind,
            u32(len(memo)),
            memo,
        )
    return hashlib.sha256(b"".join(parts)).hexdigest()


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A validated, hashed batch: the Entries to return and the rows to insert."""

    entries: tuple[Entry, ...]
    entry_rows: tuple[EntryRow, ...]
    posting_rows: tuple[PostingRow, ...]


def prepare_batch(
    batch: Sequence[EntryInput], *, last_seq: int, last_hash_hex: str, last_at_ns: int
) -> PreparedBatch:
    """Validates ``batch``, gives it the seqs after ``last_seq``, chains it from ``last_hash_hex``.

    Pure: the caller writes the rows in one transaction. Raises JournalInputError naming the path
    of the first bad field (``batch[3].postings[1].amount_micro``) if the batch breaks a limit, has
    text that is not UTF-8, or stamps a time before ``last_at_ns``.
    """
    if not isinstance(batch, Sequence):
        raise JournalInputError(f"expected a sequence of EntryInput, got {type(batch).__name__}")
    if len(batch) > limits.batch_entries_max:
        raise JournalInputError(
            f"a batch holds at most {limits.batch_entries_max} entries, got {len(batch)}; "
            "split it into several append_batch calls"
        )
    entries: list[Entry] = []
    entry_rows: list[EntryRow] = []
    posting_rows: list[PostingRow] = []
    seq, prev_hash_hex, prev_at_ns = last_seq, last_hash_hex, last_at_ns
    for position, item in enumerate(batch):
        valid = _valid_encoded(item, prev_at_ns)
        if valid is None:
            # Something is off: the full checks name the first bad field and raise. (Should they
            # pass, the quick check was only stricter, as for a str subclass: encode plainly.)
            _check_entry(item, f"batch[{position}]", prev_at_ns)
            valid = _plain_encoded(item)
        sender_utf8, verb_utf8, body_text, reply_text, encoded_postings = valid
        seq += 1
        at_ns = item.at_ns
        hash_hex = _link_hash_hex(
            prev_hash_hex,
            seq,
            at_ns,
            sender_utf8,
            verb_utf8,
            item.body,
            item.reply,
            encoded_postings,
        )
        postings = tuple(item.postings)
        entry = Entry(
            seq=seq,
            at_ns=at_ns,
            sender=item.sender,
            verb=item.verb,
            body=item.body,
            reply=item.reply,
            postings=postings,
            hash_hex=hash_hex,
        )
        entries.append(entry)
        entry_rows.append(
            (seq, at_ns, item.sender, item.verb, body_text, reply_text, len(postings), hash_hex)
        )
        posting_rows.extend(
            (seq, i, at_ns, p.debit_account, p.credit_account, p.amount_micro, p.kind, p.memo)
            for i, p in enumerate(postings)
        )
        prev_hash_hex, prev_at_ns = hash_hex, at_ns
    assert seq == last_seq + len(batch)
    return PreparedBatch(tuple(entries), tuple(entry_rows), tuple(posting_rows))


# An entry that passed validation: sender and verb as UTF-8, body and reply as text, postings
# encoded for hashing.
_ValidEncoded = tuple[bytes, bytes, str, str, list[_EncodedPosting]]


def _valid_encoded(item: object, prev_at_ns: int) -> _ValidEncoded | None:
    """The quick check of an entry, encoding each text once for both its size and its hash.

    Accepts only what ``_check_entry`` accepts; returns None for anything it doesn't (and for a
    few oddities it does, such as str subclasses), so the caller runs the full checks, which
    build the error message. Why two: the full checks build a path string for every field of
    every entry, which cost as much as the rest of the journal's work per entry.
    """
    if not isinstance(item, EntryInput):
        return None
    at_ns, body, reply, postings = item.at_ns, item.body, item.reply, item.postings
    if type(at_ns) is not int or not prev_at_ns <= at_ns <= limits.int64_max or at_ns < 0:
        return None
    if type(body) is not bytes or type(reply) is not bytes:
        return None
    if len(body) > limits.body_bytes_max or len(reply) > limits.reply_bytes_max:
        return None
    if type(postings) not in (tuple, list) or len(postings) > limits.postings_per_entry_max:
        return None
    name_max = limits.name_bytes_max
    try:
        sender, verb = _utf8(item.sender, name_max), _utf8(item.verb, name_max)
        body_text, reply_text = body.decode(), reply.decode()
        encoded_postings = []
        for posting in postings:
            if type(posting) is not Posting:
                return None
            amount_micro = posting.amount_micro
            if type(amount_micro) is not int or not 1 <= amount_micro <= limits.int64_max:
                return None
            debit = _utf8(posting.debit_account, name_max)
            credit = _utf8(posting.credit_account, name_max)
            kind = _utf8(posting.kind, name_max)
            memo = _utf8(posting.memo, limits.memo_bytes_max, empty_ok=True)
            if debit == credit:
                return None
            encoded_postings.append((debit, credit, amount_micro, kind, memo))
    except (_Invalid, UnicodeError):
        return None
    return sender, verb, body_text, reply_text, encoded_postings


class _Invalid(Exception):
    """A quick check failed; the full checks will say why."""


def _utf8(value: object, bytes_max: int, *, empty_ok: bool = False) -> bytes:
    if type(value) is not str:
        raise _Invalid
    encoded = value.encode()
    if not (0 if empty_ok else 1) <= len(encoded) <= bytes_max:
        raise _Invalid
    return encoded


def _plain_encoded(item: EntryInput) -> _ValidEncoded:
    """The encoding of an entry that the full checks accepted."""
    return (
        item.sender.encode(),
        item.verb.encode(),
        item.body.decode(),
        item.reply.decode(),
        [_encode_posting(p) for p in item.postings],
    )


def _check_entry(item: object, path: str, prev_at_ns: int) -> tuple[str, str]:
    """Checks one entry; returns its body and reply decoded as UTF-8 text for storage."""
    if not isinstance(item, EntryInput):
        raise JournalInputError(f"{path}: expected EntryInput, got {type(item).__name__}")
    check_int(item.at_ns, f"{path}.at_ns", low=0)
    if item.at_ns < prev_at_ns:
        raise JournalInputError(
            f"{path}.at_ns: the exchange clock never goes backwards, expected >= {prev_at_ns}, "
            f"got {item.at_ns}; stamp commands with max(now, journal.last_at_ns)"
        )
    check_text(item.sender, f"{path}.sender", bytes_max=limits.name_bytes_max)
    check_text(item.verb, f"{path}.verb", bytes_max=limits.name_bytes_max)
    body_text = _check_json_bytes(item.body, f"{path}.body", limits.body_bytes_max)
    reply_text = _check_json_bytes(item.reply, f"{path}.reply", limits.reply_bytes_max)
    if not isinstance(item.postings, tuple | list):
        raise JournalInputError(
            f"{path}.postings: expected a tuple of Posting, got {type(item.postings).__name__}"
        )
    if len(item.postings) > limits.postings_per_entry_max:
        raise JournalInputError(
            f"{path}.postings: at most {limits.postings_per_entry_max} postings per entry, "
            f"got {len(item.postings)}"
        )
    for idx, posting in enumerate(item.postings):
        _check_posting(posting, f"{path}.postings[{idx}]")
    return body_text, reply_text


def _check_posting(posting: object, path: str) -> None:
    if not isinstance(posting, Posting):
        raise JournalInputError(f"{path}: expected Posting, got {type(posting).__name__}")
    check_text(posting.debit_account, f"{path}.debit_account", bytes_max=limits.name_bytes_max)
    check_text(posting.credit_account, f"{path}.credit_account", bytes_max=limits.name_bytes_max)
    if posting.debit_account == posting.credit_account:
        raise JournalInputError(
            f"{path}: debit_account and credit_account must differ, both are "
            f"{posting.debit_account!r}"
        )
    check_int(posting.amount_micro, f"{path}.amount_micro", low=1)
    check_text(posting.kind, f"{path}.kind", bytes_max=limits.name_bytes_max)
    check_text(posting.memo, f"{path}.memo", bytes_max=limits.memo_bytes_max, empty_ok=True)


def check_int(value: object, path: str, *, low: int) -> None:
    """Raises JournalInputError unless ``value`` is an int (not a bool) in [low, 2**63 - 1]."""
    # bool is a subclass of int; a True amount is always a bug.
    if type(value) is not int:
        raise JournalInputError(f"{path}: expected int, got {type(value).__name__}")
    if not low <= value <= limits.int64_max:
        raise JournalInputError(
            f"{path}: expected an int in [{low}, {limits.int64_max}], got {value}"
        )


def check_text(value: object, path: str, *, bytes_max: int, empty_ok: bool = False) -> None:
    """Raises JournalInputError unless ``value`` is UTF-8-encodable text of 1..bytes_max bytes."""
    if not isinstance(value, str):
        raise JournalInputError(f"{path}: expected str, got {type(value).__name__}")
    try:
        size_bytes = len(value.encode())
    except UnicodeEncodeError as exc:
        raise JournalInputError(f"{path}: text is not encodable as UTF-8 ({exc.reason})") from exc
    if size_bytes == 0 and not empty_ok:
        raise JournalInputError(f"{path}: expected non-empty text")
    if size_bytes > bytes_max:
        raise JournalInputError(f"{path}: at most {bytes_max} bytes of UTF-8, got {size_bytes}")


def _check_json_bytes(value: object, path: str, bytes_max: int) -> str:
    if not isinstance(value, bytes):
        raise JournalInputError(f"{path}: expected bytes, got {type(value).__name__}")
    if len(value) > bytes_max:
        raise JournalInputError(f"{path}: at most {bytes_max} bytes, got {len(value)}")
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise JournalInputError(
            f"{path}: expected UTF-8 JSON, byte {exc.start} is not UTF-8 ({exc.reason})"
        ) from exc
