"""The durable, hash-chained command journal: SQLite, WAL, one transaction and one fsync per batch.

The daemon (the single writer) appends each applied batch with ``Journal.append_batch`` on its
event loop and replies to clients only after it returns. On restart it loads
``latest_snapshot()`` and replays ``iter_entries(after_seq=snapshot.seq)`` through the ledger.
``verify_file`` and ``export_postings`` serve ``doctor`` and ``export`` on a read-only journal.
``Journal.record_high_water`` keeps ``journal.hwm`` beside the file, a seq known committed: the
writer refuses to open a journal that ends before it (``JournalEntriesLostError``).

Must not: use asyncio or NATS, read clocks, or contain business logic.
"""

from exchange.journal.chain import genesis_hash_hex, link_hash_hex
from exchange.journal.errors import (
    JournalClosedError,
    JournalConcurrentWriterError,
    JournalCorruptError,
    JournalDiskFullError,
    JournalEntriesLostError,
    JournalError,
    JournalInputError,
    JournalOpenError,
    JournalReadOnlyError,
    JournalWriteError,
)
from exchange.journal.export import (
    ExportedPosting,
    ExportFormat,
    export_columns,
    export_postings,
    format_rfc3339_ns,
)
from exchange.journal.highwater import high_water_path
from exchange.journal.records import (
    Entry,
    EntryInput,
    Posting,
    PostingRecord,
    Snapshot,
    VerifyProblem,
    VerifyReport,
)
from exchange.journal.sqlite import Journal
from exchange.journal.verify import verify_file

__all__ = [
    "Entry",
    "EntryInput",
    "ExportFormat",
    "ExportedPosting",
    "Journal",
    "JournalClosedError",
    "JournalConcurrentWriterError",
    "JournalCorruptError",
    "JournalDiskFullError",
    "JournalEntriesLostError",
    "JournalError",
    "JournalInputError",
    "JournalOpenError",
    "JournalReadOnlyError",
    "JournalWriteError",
    "Posting",
    "PostingRecord",
    "Snapshot",
    "VerifyProblem",
    "VerifyReport",
    "export_columns",
    "export_postings",
    "format_rfc3339_ns",
    "genesis_hash_hex",
    "high_water_path",
    "link_hash_hex",
    "verify_file",
]
