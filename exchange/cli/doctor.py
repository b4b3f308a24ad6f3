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

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from exchange.core.config import ConfigError, EconomyConfig, parse_config
from exchange.core.machine import SNAPSHOT_VERSION, Exchange
from exchange.daemon.recovery import RecoveryError, check_digest, replay
from exchange.daemon.settings import DataPaths
from exchange.journal import Journal, JournalError, VerifyProblem, verify_file
from protocols.amounts import format_micro


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


def _replay_checks(journal: Journal, config: EconomyConfig, found: _Findings) -> None:
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
