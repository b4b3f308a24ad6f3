"""``exchange doctor``: checks a journal from the outside, whether or not the daemon runs.

Owns: the checks and the report. Opens the journal read-only (a WAL reader never blocks the
daemon), checks that it reaches its high-water mark (``journal.hwm``: no committed entry was
lost), verifies the hash chain and the snapshots' checksums, replays every entry from genesis
into a fresh exchange comparing each reply and its postings with the journaled ones, compares the
state at the latest snapshot's seq with that snapshot's digest (and the snapshot's own state with
it too), and checks conservation and the other invariants at the end.
Must not: write to the journal or the data directory, or stop at a problem without saying which
entry it is and what to do.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec
import nats
import nats.errors

from exchange.core.config import ConfigError, EconomyConfig, parse_config
from exchange.core.machine import SNAPSHOT_VERSION, Exchange
from exchange.daemon.creds import read_credentials
from exchange.daemon.recovery import RecoveryError, check_digest, replay
from exchange.daemon.settings import DataPaths
from exchange.daemon.store import JournalReader
from exchange.daemon.stream_journal import ClusterJournalCopy, ClusterNames, read_cluster_journal
from exchange.errors import ExchangeError
from exchange.journal import Entry, Journal, JournalError, Snapshot, VerifyProblem, verify_file
from exchange.journal.tail import BundledSnapshot, JournalTail
from protocols.amounts import format_micro
from protocols.client import connect
from protocols.client_errors import ClientError
from protocols.credentials import Credentials


class DoctorReport(msgspec.Struct, frozen=True, kw_only=True):
    """``ok`` exactly when ``problems`` is empty."""

    ok: bool
    journal: str
    entries: int
    entries_replayed: int
    snapshots_checked: int
    latest_snapshot_seq: int | None
    head_hash: str
    digest: str | None
    supply: str | None
    problems: list[str]


def _config(paths: DataPaths, problems: list[str]) -> EconomyConfig | None:
    try:
        return parse_config(paths.economy_config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(
            f"{paths.economy_config} is missing: the journal can only be replayed with the config "
            "it was written with; restore that file"
        )
    except ConfigError as exc:
        problems.append(f"{paths.economy_config} is not a valid config: {exc}")
    return None


@dataclass(slots=True)
class _Findings:
    journal: str
    entries: int = 0
    entries_replayed: int = 0
    snapshots_checked: int = 0
    latest_snapshot_seq: int | None = None
    head_hash: str = ""
    digest: str | None = None
    supply: str | None = None
    problems: list[str] = field(default_factory=list)

    def report(self) -> DoctorReport:
        return DoctorReport(
            ok=not self.problems,
            journal=self.journal,
            entries=self.entries,
            entries_replayed=self.entries_replayed,
            snapshots_checked=self.snapshots_checked,
            latest_snapshot_seq=self.latest_snapshot_seq,
            head_hash=self.head_hash,
            digest=self.digest,
            supply=self.supply,
            problems=self.problems,
        )


def run_doctor(data_dir: Path) -> DoctorReport:
    """Every check, in order; later checks are skipped once an earlier one makes them moot."""
    paths = DataPaths(data_dir)
    verified = verify_file(paths.journal)
    found = _Findings(
        journal=str(paths.journal),
        entries=verified.entries_checked,
        snapshots_checked=verified.snapshots_checked,
        head_hash=verified.last_hash_hex,
    )
    if verified.problem in (VerifyProblem.entries_lost, VerifyProblem.high_water_mismatch):
        # Its detail is the whole story, in the words the daemon refuses to start with.
        found.problems.append(verified.detail)
        return found.report()
    if not verified.ok:
        found.problems.append(
            f"the journal is damaged: {verified.problem} at seq {verified.problem_seq}: "
            f"{verified.detail}. Entries before it are sound; restore the file from a backup"
        )
        return found.report()
    config = _config(paths, found.problems)
    if config is None:
        return found.report()
    with Journal.open(paths.journal, read_only=True) as journal:
        _replay_checks(journal, config, found)
    return found.report()


def run_stream_doctor(url: str, cluster_name: str, creds_file: Path | None) -> DoctorReport:
    """The same checks on a journal kept on a JetStream cluster (``--journal jetstream``): the
    whole stream is read from its first message; its hash chain, the replay from genesis, the
    newest snapshot's digest and the invariants are checked as for a SQLite journal."""
    names = ClusterNames(cluster_name)
    found = _Findings(journal=f"{names.journal_stream} at {url}")
    try:
        copy = anyio.run(_read_cluster, url, names, creds_file)
    except (ExchangeError, ClientError, OSError, TimeoutError, nats.errors.Error) as exc:
        found.problems.append(f"cannot read the journal from the cluster: {exc}")
        return found.report()
    if copy.config_text is None:
        found.problems.append(
            f"the cluster has no economy.toml beside {names.journal_stream}: it cannot be replayed"
        )
        return found.report()
    tail = JournalTail()
    for stream_seq, entries in copy.messages:
        try:
            tail.extend(entries or ())
        except JournalError as exc:
            found.problems.append(
                f"the stream is damaged at stream sequence {stream_seq}: {exc}. Entries before "
                "it are sound"
            )
            return found.report()
    found.entries, found.head_hash = tail.last_seq, tail.last_hash_hex
    _replay_checks(_StreamCopy(tail, copy.snapshot), parse_config(copy.config_text), found)
    found.snapshots_checked = 0 if copy.snapshot is None else 1
    return found.report()


async def _read_cluster(
    url: str, names: ClusterNames, creds_file: Path | None
) -> ClusterJournalCopy:
    credentials = Credentials(url=url) if creds_file is None else read_credentials(creds_file)
    if credentials is None:
        raise OSError(f"no credentials in {creds_file}")
    as_user = msgspec.structs.replace(credentials, url=url)  # --nats, not the file's URL
    async with connect(as_user, reconnect=False) as client:
        return await read_cluster_journal(client.nc.jetstream(), names)


class _StreamCopy:
    """A whole stream read into memory, with the cluster's snapshot, as ``_replay_checks`` reads a
    journal: every entry from the first, the snapshot's remembered rows from its bundle."""

    def __init__(self, tail: JournalTail, snapshot: BundledSnapshot | None) -> None:
        self._tail, self._snapshot = tail, snapshot
        self._bundle = JournalTail(snapshot)

    @property
    def last_seq(self) -> int:
        return self._tail.last_seq

    def latest_snapshot(self) -> Snapshot | None:
        return self._bundle.latest_snapshot()

    def iter_entries(self, after_seq: int = 0) -> Iterator[Entry]:
        return self._tail.iter_entries(after_seq)

    def entries_at(self, seqs: Sequence[int]) -> Iterator[tuple[str, str, bytes, bytes]]:
        return self._bundle.entries_at(seqs)


def _replay_checks(journal: JournalReader, config: EconomyConfig, found: _Findings) -> None:
    exchange = Exchange(config)
    digests: dict[int, str] = {}
    try:
        snapshot = journal.latest_snapshot()
        if snapshot is not None:
            found.latest_snapshot_seq = snapshot.seq
            # A snapshot of an older format has a digest over another layout: the daemon
            # replaces it by a replay, and its digest cannot be compared.
            if Exchange.snapshot_version(snapshot.state) == SNAPSHOT_VERSION:
                digests[snapshot.seq] = snapshot.digest
                check_digest(
                    Exchange.restore(config, snapshot.state, journal.entries_at),
                    snapshot.seq,
                    snapshot.digest,
                )
        replay(exchange, journal.iter_entries(), digests_expected=digests)
    except (JournalError, RecoveryError, ValueError) as exc:
        found.problems.append(f"replay stopped at seq {exchange.seq + 1}: {exc}")
    except AssertionError as exc:
        found.problems.append(
            f"the ledger's own checks failed while replaying entry {exchange.seq}: {exc}; the "
            "journal holds a command this release applies differently"
        )
    found.entries_replayed = exchange.seq
    try:
        exchange.check_invariants()
    except AssertionError as exc:
        found.problems.append(f"an invariant does not hold after replay: {exc}")
    found.digest = exchange.digest()
    found.supply = format_micro(exchange.ledger.book.supply_micro())
