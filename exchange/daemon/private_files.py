"""Files only their owner may read (credentials, keys, the server config that lists users).

Owns: ``write_private``, the one way the daemon writes such a file: to a new temporary file
created 0600 (never readable by others, not even for a moment), then renamed over the target,
so a reader sees the old file or the new one, never half of one. Must not: log or decide paths.
"""

import os
from pathlib import Path


def write_private(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replaces ``path`` atomically with ``data``, mode 0600.

    ``durable``: fsync before the rename, for what must survive a crash (credentials, keys); a
    file made again at every start (the server's config, its pid) skips it, since it is written
    on the event loop and a thread hop would cost more than the write.
    """
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(temporary, path)
