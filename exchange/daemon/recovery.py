"""Rebuilding the exchange from its journal, starting a new one, and the config both depend on.

Owns: the economy config stored in the data directory (fixed when the journal is made, because a
replay must see the same rules), the genesis batch of a new journal, the canonical journal entry of
an applied command, and replay: latest snapshot, then every later entry applied again with its
journaled stamp and sender, each reply and posting checked against the journaled ones.
Must not: touch NATS, asyncio or the clock (the daemon runs it in a worker thread before it
serves; ``exchange doctor`` runs it on a read-only journal), or log per entry.

Errors::

    RecoveryError                 the journal cannot be turned back into the same state
    ├── ConfigMismatchError       --config differs from the config the journal was made with
    ├── ReplayMismatchError       an entry replayed to another reply or other postings
    └── SnapshotMismatchError     a snapshot's state does not have the digest stored with it
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import structlog

from exchange.core.accounts import Posting as CorePosting
from exchange.core.config import ConfigError, EconomyConfig, default_toml, parse_config
from exchange.core.ledger import Outcome
from exchange.core.machine import SNAPSHOT_VERSION, Exchange, genesis_commands
from exchange.core.refusals import refusal_reply
from exchange.daemon.errors import DaemonError
from exchange.daemon.store import JournalReader
from exchange.journal import Entry, EntryInput
from exchange.journal import Posting as JournalPosting
from protocols.commands import Command
from protocols.errors import ErrorCode
from protocols.ids import ADMIN
from protocols.registry import COMMAND_DECODERS, VERB_OF
from protocols.results import ErrorBody

log = structlog.get_logger()

_encoder: Final = msgspec.json.Encoder()


class RecoveryError(DaemonError):
    """Base class: the journal cannot be turned back into the state it recorded."""


class ConfigMismatchError(RecoveryError):
    """``--config`` names another economy than the one this data directory was made with."""


class ReplayMismatchError(RecoveryError):
    """Replaying entry ``seq`` gave another reply or other postings than the journal holds."""

    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message)
        self.seq = seq


class SnapshotMismatchError(RecoveryError):
    """The state at a snapshot's seq does not have the digest the snapshot was stored with."""

    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message)
        self.seq = seq


def load_economy_config(path: Path, given_text: str | None) -> EconomyConfig:
    """The economy config of the data directory whose ``economy.toml`` is ``path``.

    A new directory stores ``given_text`` (or the defaults); an existing one keeps its own, and a
    different ``given_text`` is refused: replay must apply the rules the journal was written with.
    Raises ConfigMismatchError, ConfigError (a bad TOML, naming the field), OSError.
    """
    try:
        stored_text: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        stored_text = None
    if stored_text is not None:
        if given_text is not None and given_text != stored_text:
            raise ConfigMismatchError(
                f"{path} holds the config this exchange was created with, and --config differs "
                "from it; the rules of an existing journal cannot change (replay would differ). "
                "Drop --config, or start a new data directory with --data"
            )
        return parse_config(stored_text)
    text = default_toml() if given_text is None else given_text
    config = parse_config(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return config


def encode_command(command: Command) -> bytes:
    """The canonical JSON of a command, as journaled (it decodes back to an equal command)."""
    return _encoder.encode(command)


def journal_postings(postings: Iterable[CorePosting]) -> tuple[JournalPosting, ...]:
    """The core's postings as the journal stores them (its bounds fit any memo the protocol
    allows, so nothing is cut)."""
    return tuple(
        JournalPosting(
            debit_account=p.debit,
            credit_account=p.credit,
            amount_micro=p.amount_micro,
            kind=p.kind,
            memo=p.memo,
        )
        for p in postings
    )


def entry_of(
    *, at_ns: int, sender: str, verb: str, command: Command, outcome: Outcome
) -> EntryInput:
    """The journal entry of one applied command, refusals included."""
    return EntryInput(
        at_ns=at_ns,
        sender=sender,
        verb=verb,
        body=encode_command(command),
        reply=outcome.reply,
        postings=journal_postings(outcome.postings),
    )


def apply_genesis(exchange: Exchange, *, now_ns: int) -> list[EntryInput]:
    """Applies ``genesis_commands(config)`` as admin to a new exchange; returns their entries."""
    assert exchange.seq == 0, "genesis is the first batch of a new journal"
    return [
        apply_as_admin(exchange, command, now_ns=now_ns)[1]
        for command in genesis_commands(exchange.config)
    ]


def apply_as_admin(
    exchange: Exchange, command: Command, *, now_ns: int
) -> tuple[Outcome, EntryInput]:
    """Applies ``command`` as admin, outside the daemon (a new data directory); its outcome and
    the journal entry that records it."""
    outcome = exchange.apply(ADMIN, command, now_ns=now_ns)
    entry = entry_of(
        at_ns=now_ns, sender=ADMIN, verb=VERB_OF[type(command)], command=command, outcome=outcome
    )
    return outcome, entry


@dataclass(frozen=True, slots=True)
class Recovered:
    exchange: Exchange
    snapshot_seq: int
    replayed_count: int


def recover(journal: JournalReader, config: EconomyConfig) -> Recovered:
    """The exchange as of the journal's last entry: the latest snapshot plus a checked replay.

    Raises SnapshotMismatchError, ReplayMismatchError, RecoveryError, and the journal's errors
    (JournalCorruptError at the first broken link).
    """
    snapshot = journal.latest_snapshot()
    version = None if snapshot is None else Exchange.snapshot_version(snapshot.state)
    if snapshot is not None and version != SNAPSHOT_VERSION:
        # Written by an older release: its digest was taken over another layout, so it can be
        # neither restored nor checked. The journal is whole: replay it from the start (once; the
        # next snapshot is of this format).
        log.warning(
            "snapshot_format_old",
            seq=snapshot.seq,
            version=version,
            expected=SNAPSHOT_VERSION,
            action="replaying the journal from its start",
        )
        snapshot = None
    if snapshot is None:
        exchange, after_seq = Exchange(config), 0
    else:
        try:
            exchange = Exchange.restore(config, snapshot.state, journal.entries_at)
        except ValueError as exc:
            raise RecoveryError(f"snapshot at seq {snapshot.seq} cannot be loaded: {exc}") from exc
        check_digest(exchange, snapshot.seq, snapshot.digest)
        after_seq = snapshot.seq
    replayed = replay(exchange, journal.iter_entries(after_seq=after_seq))
    assert exchange.seq == journal.last_seq, (exchange.seq, journal.last_seq)
    return Recovered(exchange=exchange, snapshot_seq=after_seq, replayed_count=replayed)


def check_digest(exchange: Exchange, seq: int, digest: str) -> None:
    """Raises SnapshotMismatchError unless the exchange is at ``seq`` with ``digest``."""
    if exchange.seq != seq:
        raise SnapshotMismatchError(
            f"the snapshot is stamped seq {seq} but its state says {exchange.seq}", seq=seq
        )
    actual = exchange.digest()
    if actual != digest:
        raise SnapshotMismatchError(
            f"the state at seq {seq} has digest {actual}, the snapshot recorded {digest}", seq=seq
        )


def replay(
    exchange: Exchange,
    entries: Iterable[Entry],
    *,
    digests_expected: Mapping[int, str] | None = None,
    on_entry: Callable[[Entry], None] | None = None,
) -> int:
    """Applies ``entries`` in order, checking each reply and its postings; returns how many.

    ``digests_expected`` maps seqs to the digest the state must have right after them (doctor
    passes the snapshots'). Raises ReplayMismatchError, SnapshotMismatchError, RecoveryError for
    an entry this exchange cannot decode.
    """
    count = 0
    for entry in entries:
        replay_entry(exchange, entry)
        count += 1
        if digests_expected is not None and entry.seq in digests_expected:
            check_digest(exchange, entry.seq, digests_expected[entry.seq])
        if on_entry is not None:
            on_entry(entry)
    return count


def failed_reply(message: str) -> bytes:
    """The journaled reply of a command the exchange failed to apply (see ``rebuild``)."""
    return refusal_reply(ErrorBody(code=ErrorCode.internal_error.value, message=message))


_failed_prefix: Final = failed_reply("").partition(b',"message"')[0]


def failed(reply: bytes) -> bool:
    """Whether a journaled reply is ``failed_reply``'s: its command was never applied."""
    return reply.startswith(_failed_prefix)


def rebuild(
    journal: JournalReader, config: EconomyConfig, pending: Sequence[EntryInput]
) -> Exchange:
    """The state as of the journal's last entry and then ``pending`` (applied, not yet
    journaled): what a restart would rebuild, without the restart.

    The shell calls it when applying a command broke an invariant half way: the live state may
    then hold half of that command, and this is the state before it. Raises as ``recover``."""
    exchange = recover(journal, config).exchange
    for seq, item in enumerate(pending, start=exchange.seq + 1):
        replay_entry(exchange, Entry(**msgspec.structs.asdict(item), seq=seq, hash_hex=""))
    return exchange


def replay_entry(exchange: Exchange, entry: Entry) -> Outcome | None:
    """Applies one journaled entry again and checks it reproduces the journaled reply.

    An entry the exchange failed to apply (``failed``) is not applied again: it takes its seq
    and stamp, as it did live. Returns None for it."""
    if failed(entry.reply):
        if exchange.seq + 1 != entry.seq:
            raise RecoveryError(f"entry {entry.seq} follows state at seq {exchange.seq}")
        exchange.ledger.skip(now_ns=entry.at_ns)
        return None
    decoder = COMMAND_DECODERS.get(entry.verb)
    if decoder is None:
        raise RecoveryError(
            f"entry {entry.seq} is a {entry.verb!r} command, which this exchange does not know; "
            "run the exchange release that wrote the journal"
        )
    try:
        command = decoder.decode(entry.body)
    except msgspec.DecodeError as exc:
        raise RecoveryError(
            f"entry {entry.seq} ({entry.verb}) no longer decodes: {exc}; run the exchange release "
            "that wrote the journal"
        ) from exc
    if exchange.seq + 1 != entry.seq:
        raise RecoveryError(f"entry {entry.seq} follows state at seq {exchange.seq}")
    outcome = exchange.apply(entry.sender, command, now_ns=entry.at_ns)
    if outcome.reply != entry.reply:
        raise ReplayMismatchError(
            f"entry {entry.seq} ({entry.sender} {entry.verb}) replayed to the reply "
            f"{outcome.reply[:300]!r}, the journal recorded {entry.reply[:300]!r}",
            seq=entry.seq,
        )
    postings = journal_postings(outcome.postings)
    if postings != entry.postings:
        raise ReplayMismatchError(
            f"entry {entry.seq} ({entry.sender} {entry.verb}) replayed to {len(postings)} "
            f"postings that differ from the {len(entry.postings)} the journal recorded",
            seq=entry.seq,
        )
    return outcome


__all__ = [
    "ConfigError",
    "ConfigMismatchError",
    "Recovered",
    "RecoveryError",
    "ReplayMismatchError",
    "SnapshotMismatchError",
    "apply_genesis",
    "check_digest",
    "encode_command",
    "entry_of",
    "failed",
    "failed_reply",
    "journal_postings",
    "load_economy_config",
    "rebuild",
    "recover",
    "replay",
    "replay_entry",
]
