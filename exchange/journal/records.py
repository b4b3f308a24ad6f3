"""The values the journal stores and returns: postings, entries, snapshots, verify reports.

Owns: the frozen msgspec Structs of the journal's public surface. Must not: do I/O, hash, validate
or interpret a command body (the journal stores the ledger's decisions; it never makes them).

Vocabulary:
- entry: one command the ledger applied, with the exchange clock stamp and the reply it produced.
- posting: one money movement caused by an entry. ``amount_micro`` leaves ``debit_account`` and
  reaches ``credit_account`` (TigerBeetle's convention, as the core uses it).
- seq: the 1-based position of an entry in the journal. Seqs are contiguous, so the entry count is
  the last seq.
- snapshot at seq N: the ledger's serialised state after applying entries 1..N.
"""

from enum import StrEnum

import msgspec


class Posting(msgspec.Struct, frozen=True, kw_only=True):
    """One money movement: ``amount_micro`` moves from ``debit_account`` to ``credit_account``."""

    debit_account: str
    credit_account: str
    amount_micro: int
    # What kind of movement, in the core's words ("transfer", "fee", "escrow_release"...).
    kind: str
    memo: str = ""


class EntryInput(msgspec.Struct, frozen=True, kw_only=True):
    """An entry as the daemon hands it over; the journal assigns its seq and hash.

    ``body`` is the command's JSON as received (or canonicalised) and ``reply`` the JSON reply the
    ledger produced. Both must be UTF-8 (JSON always is), so a person can read them with sqlite3.
    """

    at_ns: int
    sender: str
    verb: str
    body: bytes
    reply: bytes
    postings: tuple[Posting, ...] = ()


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """A committed entry. ``hash_hex`` chains it to the entry before (see ``chain.py``)."""

    seq: int
    at_ns: int
    sender: str
    verb: str
    body: bytes
    reply: bytes
    postings: tuple[Posting, ...]
    hash_hex: str


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger's state after entries 1..seq.

    ``entry_hash_hex`` is the hash of entry ``seq``, so a snapshot is pinned to one chain.
    ``digest`` is the ledger's own digest of the state, stored untouched for the caller to check.
    """

    seq: int
    entry_hash_hex: str
    digest: str
    state: bytes


class PostingRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A posting with its place in the journal and the command that caused it (for export)."""

    seq: int
    idx: int
    at_ns: int
    sender: str
    verb: str
    debit_account: str
    credit_account: str
    amount_micro: int
    kind: str
    memo: str


class VerifyProblem(StrEnum):
    """Why ``verify`` stopped, in the order the checks run for each entry. Never rename a value."""

    # The file cannot be read at all: missing, not SQLite, or an I/O error.
    file_unreadable = "file_unreadable"
    # Tables or the schema version row are missing or not ours.
    schema_invalid = "schema_invalid"
    # A column holds the wrong type or an impossible value.
    row_malformed = "row_malformed"
    # An entry is missing: seqs must run 1, 2, 3... up to the head.
    seq_gap = "seq_gap"
    # The exchange clock never goes backwards, so at_ns never decreases along the chain.
    at_ns_decreasing = "at_ns_decreasing"
    # An entry's postings are missing, extra or not numbered 0..n-1.
    postings_count_mismatch = "postings_count_mismatch"
    # A posting's copy of at_ns differs from its entry's.
    posting_at_ns_mismatch = "posting_at_ns_mismatch"
    # The stored hash is not sha256(previous hash, this entry): the entry was changed.
    hash_mismatch = "hash_mismatch"
    # The head row disagrees with the last entry, or entries lie beyond the head.
    head_mismatch = "head_mismatch"
    # A posting belongs to no entry.
    posting_orphan = "posting_orphan"
    # A snapshot's checksum or chain hash is wrong, or it lies beyond the head.
    snapshot_invalid = "snapshot_invalid"
    # The journal ends before its high-water mark (journal.hwm): committed entries were lost.
    entries_lost = "entries_lost"
    # The high-water mark is damaged, or the journal's entry at its seq has another hash.
    high_water_mismatch = "high_water_mismatch"


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``verify`` found. ``problem`` is None exactly when the journal is sound.

    ``entries_checked`` counts entries whose link was verified, ``last_seq`` and ``last_hash_hex``
    are those of the last good entry (the whole chain when sound). ``problem_seq`` is the first
    broken entry's seq (or the broken snapshot's seq).
    """

    entries_checked: int
    last_seq: int
    last_hash_hex: str
    snapshots_checked: int
    problem: VerifyProblem | None = None
    problem_seq: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None
