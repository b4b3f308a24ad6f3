"""The journal's exceptions: one base class, one subclass per thing a caller can do about it.

```
JournalError                      anything the journal refuses or cannot do
├── JournalInputError             a batch or snapshot breaks a limit or a rule; nothing was written
├── JournalClosedError            used after close(), or after a failed commit closed it
├── JournalReadOnlyError          a write on a journal opened with read_only=True
├── JournalOpenError              the file is missing, not a journal, or has another schema version
├── JournalConcurrentWriterError  the file's head moved under this writer: a second writer exists
├── JournalCorruptError           reading found a broken hash chain or a malformed row
│   └── JournalEntriesLostError   the journal ends before its high-water mark (journal.hwm)
└── JournalWriteError             SQLite failed inside a write transaction (see ``rolled_back``)
    └── JournalDiskFullError      ... because the disk (or the file's size limit) is full
```

Owns: the exception types only. Must not: import sqlite3 or anything else from the journal.
"""

from pathlib import Path

from exchange.errors import ExchangeError


class JournalError(ExchangeError):
    """Base class for every error the journal raises."""


class JournalInputError(JournalError):
    """A batch or snapshot broke a limit or an ordering rule. Nothing was written.

    This is a bug in the caller (the daemon), never a client's mistake: clients' bad input is
    refused by the core before it reaches the journal.
    """


class JournalClosedError(JournalError):
    """The journal was closed, by ``close()`` or because a commit failed with an unknown outcome."""


class JournalReadOnlyError(JournalError):
    """A write was attempted on a journal opened with ``read_only=True``."""


class JournalOpenError(JournalError):
    """The file cannot be opened as a journal: missing, not SQLite, not a journal, another schema
    version, or on a filesystem without WAL support."""


class JournalConcurrentWriterError(JournalError):
    """The head in the file is not the head this writer last committed.

    Another process or another ``Journal`` object appended to the same file. The chain is still
    intact (each append re-reads the head under the write lock), but this writer's in-memory state
    is stale: stop, and let exactly one writer own the file.
    """


class JournalCorruptError(JournalError):
    """Reading found a broken hash chain, a gap in seqs, a malformed row, or SQLite could not read
    the file.

    ``seq`` is the first entry (or snapshot) found broken. Run ``verify()`` for a full report.
    """

    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message)
        self.seq = seq


class JournalEntriesLostError(JournalCorruptError):
    """The journal ends at ``last_seq``, but ``high_water_seq`` was committed: entries were lost.

    The high-water mark (``journal.hwm``, see ``highwater.py``) is written only for seqs whose
    commit was fsynced, so the journal holding fewer means committed data vanished after the fact,
    typically WAL frames that SQLite dropped at recovery because their checksum no longer matched.
    ``seq`` is the first lost entry (``last_seq + 1``).
    """

    def __init__(self, message: str, *, last_seq: int, high_water_seq: int) -> None:
        super().__init__(message, seq=last_seq + 1)
        self.last_seq = last_seq
        self.high_water_seq = high_water_seq


class JournalWriteError(JournalError):
    """SQLite failed inside a write transaction.

    If ``rolled_back`` is True the batch was not written, the file is exactly as before and the
    journal stays usable. If it is False the outcome is unknown (the failure hit COMMIT itself, or
    the rollback failed): the journal has closed itself, and the caller must reopen the file and
    rebuild its state from what is there. The batch's replies must not have been sent either way.
    """

    def __init__(self, message: str, *, rolled_back: bool) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


class JournalDiskFullError(JournalWriteError):
    """SQLite reported SQLITE_FULL: the disk holding ``directory`` (or its quota) has no room.

    ``operation`` is the journal method that failed (``append_batch``, ``write_snapshot``);
    ``rolled_back`` means what it means for ``JournalWriteError``. Freeing space and reopening the
    file is enough: nothing committed before was touched.
    """

    def __init__(self, message: str, *, rolled_back: bool, directory: Path, operation: str) -> None:
        super().__init__(message, rolled_back=rolled_back)
        self.directory = directory
        self.operation = operation
