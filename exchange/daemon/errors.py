"""The daemon's exceptions: one base class, and what a caller (``exchange up``) can do about each.

```
DaemonError                     anything the daemon refuses at startup or cannot recover from
├── DataDirInUseError           another live daemon holds the data directory (exchange.lock)
├── DataDirUnusableError        the data directory cannot be made or written (a file in its place,
│                               a read-only filesystem, no permission, a full disk)
├── CredentialsFileError        a file under DATA/creds/ is not credentials (creds.py)
├── TlsError                    a TLS file cannot be read, or DATA/tls/ cannot be made (tls.py)
└── RecoveryError               the journal cannot be turned back into its state (recovery.py)
    ├── ConfigMismatchError     --config differs from the config the journal was made with
    ├── ReplayMismatchError     an entry replayed to another reply or other postings
    └── SnapshotMismatchError   a snapshot's state does not have the digest stored with it
```

``DaemonError`` derives from ``exchange.errors.ExchangeError``, the package's one root. The
embedded server raises ``natsserver.NatsServerError`` and the journal ``JournalError``; the
daemon lets both propagate (they have trees of their own). Owns: the classes only.
"""

from exchange.errors import ExchangeError


class DaemonError(ExchangeError):
    """Base class for the daemon's own errors."""


class DataDirInUseError(DaemonError):
    """Another live process runs an exchange on this data directory."""


class DataDirUnusableError(DaemonError):
    """The data directory cannot be made or written; the message names the path and the cause.

    Raised before anything is created in it, so a refusal leaves the disk as it was.
    """
