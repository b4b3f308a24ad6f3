"""The journal's high-water mark: the highest seq known to be committed, kept beside the file.

Owns: ``journal.hwm`` next to ``journal.sqlite`` (one small JSON object: seq, that entry's hash,
and a checksum of both); reading it, writing it atomically (temporary file, fsync, rename, fsync
of the directory), and checking a journal's head against it. Must not: touch the SQLite file, use
asyncio or clocks, or decide when to write (the daemon does: at most once a second and at a clean
stop; see docs/daemon.md#durability).

Why it exists: SQLite's WAL protects every frame with a running checksum, and recovery after a
crash stops at the first frame that does not match, dropping it and every frame after it. The
file stays consistent and the hash chain of what remains is sound, so committed, acknowledged
commands can vanish without any error. The mark is another file, written only after the commit it
names returned (fsynced), so a journal that ends before it has provably lost committed entries.

Order matters for a reader that runs beside the writer (``doctor``): read the mark first, then
the journal. A mark is never ahead of what is committed, so a journal read after it holds it.
"""

import hashlib
import os
import secrets
from pathlib import Path
from typing import Final

import msgspec

import exchange.journal.limits as limits
from exchange.journal.errors import (
    JournalCorruptError,
    JournalEntriesLostError,
    JournalOpenError,
)

_durability_doc: Final = "see docs/daemon.md#durability"


class HighWater(msgspec.Struct, frozen=True, kw_only=True):
    """Entry ``seq`` was committed (and fsynced) with hash ``entry_hash_hex``."""

    seq: int
    entry_hash_hex: str


class _HighWaterFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    seq: int
    entry_hash_hex: str
    # sha256 of "<seq>:<entry_hash_hex>": a damaged seq would otherwise read as a plausible mark.
    checksum_sha256_hex: str


def high_water_path(journal_path: Path) -> Path:
    """Where the mark of the journal at ``journal_path`` lives (``journal.sqlite`` → ``.hwm``)."""
    return journal_path.with_suffix(".hwm")


def _checksum_hex(seq: int, entry_hash_hex: str) -> str:
    return hashlib.sha256(f"{seq}:{entry_hash_hex}".encode()).hexdigest()


def read_high_water(path: Path) -> HighWater | None:
    """The mark stored at ``path``, or None if there is none (a new or older data directory).

    Raises JournalCorruptError (seq 0) if the file is not a sound mark, JournalOpenError if it
    cannot be read.
    """
    try:
        with path.open("rb") as file:
            data = file.read(limits.high_water_file_bytes_max + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalOpenError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        stored = msgspec.json.decode(data, type=_HighWaterFile)
    except msgspec.DecodeError as exc:
        raise JournalCorruptError(_damaged(path, f"not a mark: {exc}"), seq=0) from exc
    if len(data) > limits.high_water_file_bytes_max or stored.seq < 1:
        raise JournalCorruptError(_damaged(path, "not a mark"), seq=0)
    if _checksum_hex(stored.seq, stored.entry_hash_hex) != stored.checksum_sha256_hex:
        raise JournalCorruptError(_damaged(path, "its checksum does not match"), seq=0)
    return HighWater(seq=stored.seq, entry_hash_hex=stored.entry_hash_hex)


def _damaged(path: Path, why: str) -> str:
    return (
        f"{path} is damaged ({why}), so whether the journal lost committed entries cannot be "
        f"told; if `exchange doctor` finds nothing else, remove it (the next start writes a new "
        f"one); {_durability_doc}"
    )


def write_high_water(path: Path, mark: HighWater) -> None:
    """Replaces the mark at ``path`` atomically and durably.

    A crash leaves the old mark or the new one, never a torn file: the new one is written to a
    temporary file, fsynced, renamed over the old one, and the directory is fsynced so the rename
    itself survives power loss. Raises OSError (the temporary file is removed).
    """
    assert mark.seq >= 1, mark
    data = msgspec.json.encode(
        _HighWaterFile(
            seq=mark.seq,
            entry_hash_hex=mark.entry_hash_hex,
            checksum_sha256_hex=_checksum_hex(mark.seq, mark.entry_hash_hex),
        )
    )
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("xb") as file:
            file.write(data + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def journal_missing_fault(mark: HighWater, *, journal_path: Path) -> JournalEntriesLostError:
    """The error for a journal file that is gone although ``mark`` says it held entries."""
    return JournalEntriesLostError(
        f"the journal {journal_path} is missing but seq {mark.seq} had been committed "
        f"({high_water_path(journal_path).name}): restore it from a replica or a backup; "
        f"{_durability_doc}",
        last_seq=0,
        high_water_seq=mark.seq,
    )


def high_water_fault(
    mark: HighWater, *, journal_path: Path, last_seq: int, hash_at_mark: str | None
) -> JournalCorruptError | None:
    """Why the journal (ending at ``last_seq``) contradicts ``mark``, or None if it holds it.

    ``hash_at_mark`` is the journal's hash of entry ``mark.seq`` (None when it has no such entry).
    Returns JournalEntriesLostError when the journal ends before the mark, JournalCorruptError
    when its entry at the mark has another hash (another history, or one rewritten after a loss).
    """
    hwm = high_water_path(journal_path)
    if last_seq < mark.seq:
        return JournalEntriesLostError(
            f"the journal {journal_path} ends at seq {last_seq} but seq {mark.seq} had been "
            f"committed ({hwm.name}): the write-ahead log lost committed frames (disk "
            f"damage?); restore it from a replica or a backup; {_durability_doc}",
            last_seq=last_seq,
            high_water_seq=mark.seq,
        )
    if hash_at_mark != mark.entry_hash_hex:
        return JournalCorruptError(
            f"entry {mark.seq} of {journal_path} hashes to {hash_at_mark}, but {hwm.name} "
            f"recorded {mark.entry_hash_hex} when it was committed: this is not the journal the "
            f"mark was written for (replaced, or rewritten after a loss); restore the right one "
            f"from a replica or a backup; {_durability_doc}",
            seq=mark.seq,
        )
    return None
