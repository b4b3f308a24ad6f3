"""Per-agent API keys for the gateway: issued by the operator (``exchange gateway key AGENT``),
stored only as SHA-256 hashes in ``DATA/gateway-keys.json`` (mode 0600, replaced atomically),
revocable (``exchange gateway revoke KEY_ID``).

A key is ``axk-<key_id>-<secret>``: the id names it in listings and revocations, the secret is 32
random bytes. The gateway reads the file again when it changes, so a revocation takes effect
within ``reload_s`` without a restart.
"""

import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Final

import msgspec

from exchange.daemon.private_files import write_private
from exchange.errors import ExchangeError
from protocols.ids import is_agent_id

KEYS_FILE: Final = "gateway-keys.json"
PREFIX: Final = "axk-"


class KeysError(ExchangeError):
    """The keys file cannot be read, or a key operation names nothing it knows."""


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    agent: str
    sha256: str
    created_at_s: int
    revoked: bool = False


class KeysFile(msgspec.Struct, frozen=True, kw_only=True):
    keys: list[KeyRecord] = []


_decoder: Final = msgspec.json.Decoder(KeysFile)
_encoder: Final = msgspec.json.Encoder()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_path(data_dir: Path) -> Path:
    return data_dir / KEYS_FILE


def read_keys(path: Path) -> KeysFile:
    try:
        return _decoder.decode(path.read_bytes())
    except FileNotFoundError:
        return KeysFile()
    except (OSError, msgspec.DecodeError) as exc:
        raise KeysError(f"cannot read gateway keys {path}: {exc}") from exc


def issue_key(path: Path, agent: str, *, now_s: int | None = None) -> tuple[str, KeyRecord]:
    """A new key for ``agent``; only its hash is written. Returns (the key, its record)."""
    if not is_agent_id(agent):
        raise KeysError(f"{agent!r} is not an agent id")
    key_id = secrets.token_hex(4)
    key = f"{PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
    record = KeyRecord(
        key_id=key_id,
        agent=agent,
        sha256=hash_key(key),
        created_at_s=int(time.time()) if now_s is None else now_s,
    )
    current = read_keys(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, _encoder.encode(KeysFile(keys=[*current.keys, record])))
    return key, record


def revoke_key(path: Path, key_id: str) -> KeyRecord:
    """Marks a key revoked (kept, so a listing shows it). Raises KeysError for an unknown id."""
    current = read_keys(path)
    found = [k for k in current.keys if k.key_id == key_id]
    if not found:
        raise KeysError(f"no gateway key {key_id!r}; list them with `exchange gateway keys`")
    keys = [
        msgspec.structs.replace(k, revoked=True) if k.key_id == key_id else k for k in current.keys
    ]
    write_private(path, _encoder.encode(KeysFile(keys=keys)))
    return msgspec.structs.replace(found[0], revoked=True)


class KeyRing:
    """The live keys, by hash, re-read when the file's modification time changes."""

    def __init__(self, path: Path, *, reload_s: float = 1.0) -> None:
        self.path = path
        self.reload_s = reload_s
        self._by_hash: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = -1e18
        self.reload()

    def reload(self) -> None:
        try:
            stat = os.stat(self.path)
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._by_hash = {k.sha256: k.agent for k in read_keys(self.path).keys if not k.revoked}
            self._stamp = stamp

    def agent_for(self, key: str) -> str | None:
        """The agent a presented key belongs to, or None (unknown or revoked)."""
        now = time.monotonic()
        if now - self._checked >= self.reload_s:
            self._checked = now
            self.reload()
        # Looked up by the key's SHA-256: timing reveals nothing about a stored key's text.
        return self._by_hash.get(hash_key(key))
