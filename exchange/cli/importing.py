"""``exchange import FILE --data NEWDIR``: a new exchange whose first entries carry the balances
and history of another (docs/economy.md, Import).

Owns: the new data directory's config (the given or default economy with ``opening_balance = 0``
and the imported agents as its roster) and its first entries: the genesis that registers them,
then, for an export, its postings in order in ``import.history`` batches (each agent's balance
comes from its history) and the earned and spent totals; for seed-1 wallets, or an export with
``balances_only``, one ``import.opening`` per agent with a balance, from ``@import``. Each is
applied through the core and journaled like any command, so that ``exchange doctor`` replays and
checks it and ``exchange up`` starts on it. Must not: touch an existing journal, or write anything
before the source has been read and applied in full (a bad file leaves no directory behind).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

import msgspec

from exchange.core.config import AgentSpec, EconomyConfig, config_toml, default_toml, parse_config
from exchange.core.machine import Exchange
from exchange.daemon import limits as daemon_limits
from exchange.daemon.datadir import make_data_dir
from exchange.daemon.recovery import apply_as_admin, apply_genesis, load_economy_config
from exchange.daemon.settings import DataPaths
from exchange.journal import Journal
from exchange.journal import limits as journal_limits
from exchange.journal.importing import (
    ImportInputError,
    ImportSource,
    Opening,
    SourcePosting,
    read_source,
)
from protocols import commands as c
from protocols.amounts import format_micro, tokens_of
from protocols.registry import COMMAND_DECODERS

# An agent the default roster does not know is registered with these.
NEW_AGENT_LEVEL: Final = "L5"
NEW_AGENT_BASE_RATE: Final = Decimal(100)
NEW_AGENT_MODEL: Final = "claude-sonnet"
# An ``import.history`` batch: at most this many postings (or totals), and a body the daemon would
# take too (its message bound, 64 KiB, well within the journal's 1 MiB), less room for the rest.
HISTORY_BATCH_POSTINGS: Final = 256
HISTORY_BATCH_BYTES_MAX: Final = daemon_limits.message_bytes_max - 4096
_MEMO_CHARS_MAX: Final = 4096  # protocols.ids.Text: a longer source memo is cut to it
_encode: Final = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class ImportReport:
    data_dir: Path
    source: str
    agents: int
    imported: str
    seq: int
    digest: str
    # The export's postings carried as history (0 for wallets and --balances-only): posted, and
    # skipped as touching no agent.
    history_posted: int = 0
    history_skipped: int = 0


def import_exchange(
    source_path: Path,
    data_dir: Path,
    *,
    config_text: str | None,
    now_ns: int,
    balances_only: bool = False,
) -> ImportReport:
    """Builds the new exchange in ``data_dir`` from ``source_path``: an export's history, or
    (wallet files, ``balances_only``) its balances alone.

    Raises ImportInputError (the file, an export whose history does not start at the beginning,
    or a ``data_dir`` that already holds a journal), ConfigError, DataDirUnusableError,
    JournalError, OSError.
    """
    paths = DataPaths(data_dir)
    if paths.journal.exists() or paths.economy_config.exists():
        raise ImportInputError(
            f"{data_dir} already holds an exchange; import into a new --data directory"
        )
    source = read_source(source_path)
    with_history = bool(source.postings) and not balances_only
    if with_history and source.cut is not None:
        raise ImportInputError(
            f"{source_path}: {source.cut}: the export lacks the beginning of that history (was "
            "it cut with --since or --agent?); export the whole journal, or pass "
            "--balances-only to import the balances alone"
        )
    config = imported_config(parse_config(config_text or default_toml()), source.openings)
    exchange = Exchange(config)
    entries = apply_genesis(exchange, now_ns=now_ns)
    posted = skipped = 0
    commands = _history_commands(source_path, source) if with_history else _opening_commands(source)
    for command in commands:
        outcome, entry = apply_as_admin(exchange, command, now_ns=now_ns)
        if not outcome.ok:
            raise ImportInputError(
                f"{source_path}: {command.request_id} is refused: {outcome.reply.decode()}"
            )
        if isinstance(command, c.ImportHistory):
            posted += len(outcome.postings)
            skipped += len(command.postings) - len(outcome.postings)
        entries.append(entry)
    exchange.check_invariants()
    book = exchange.ledger.book
    for opening in source.openings:
        # The history sums to the balances the reader found (the core and the reader agree).
        assert book.balance(opening.agent) == opening.balance_micro, opening.agent
    make_data_dir(data_dir)
    load_economy_config(paths.economy_config, config_toml(config))
    with Journal.open(paths.journal) as journal:
        step = journal_limits.batch_entries_max
        for start in range(0, len(entries), step):
            journal.append_batch(entries[start : start + step])
        journal.record_high_water()
    return ImportReport(
        data_dir=data_dir,
        source=source.description,
        agents=len(source.openings),
        imported=format_micro(sum(o.balance_micro for o in source.openings)),
        seq=exchange.seq,
        digest=exchange.digest(),
        history_posted=posted,
        history_skipped=skipped,
    )


def _opening_commands(source: ImportSource) -> Iterator[c.ImportOpening]:
    """One ``import.opening`` per agent with a balance (what an import without history makes)."""
    for opening in source.openings:
        if opening.balance_micro:
            yield c.ImportOpening(
                request_id=f"import-{opening.agent}",
                agent=opening.agent,
                amount=tokens_of(opening.balance_micro),
                earned=tokens_of(opening.earned_micro),
                spent=tokens_of(opening.spent_micro),
                source=source.description,
            )


def _history_commands(path: Path, source: ImportSource) -> Iterator[c.ImportHistory]:
    """The export's postings in order, in ``import.history`` batches within both bounds, then the
    agents' earned and spent totals in batches of their own."""
    number = 0
    batch: list[c.ImportedPosting] = []
    size = 0
    for posting in source.postings:
        item = _imported(posting)
        item_size = len(_encode(item)) + 1
        if batch and (len(batch) == HISTORY_BATCH_POSTINGS or size + item_size > _room(source)):
            number += 1
            yield _checked(
                path,
                c.ImportHistory(
                    request_id=f"import-history-{number}", postings=batch, source=source.description
                ),
            )
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        number += 1
        yield _checked(
            path,
            c.ImportHistory(
                request_id=f"import-history-{number}", postings=batch, source=source.description
            ),
        )
    totals = [
        c.ImportedTotals(
            agent=o.agent, earned=tokens_of(o.earned_micro), spent=tokens_of(o.spent_micro)
        )
        for o in source.openings
        if o.earned_micro or o.spent_micro
    ]
    for start in range(0, len(totals), HISTORY_BATCH_POSTINGS):
        yield _checked(
            path,
            c.ImportHistory(
                request_id=f"import-totals-{start // HISTORY_BATCH_POSTINGS + 1}",
                totals=totals[start : start + HISTORY_BATCH_POSTINGS],
                source=source.description,
            ),
        )


def _room(source: ImportSource) -> int:
    """The bytes a batch's postings may take: the bound, less the rest of the body."""
    return HISTORY_BATCH_BYTES_MAX - len(source.description.encode()) - 256


def _imported(posting: SourcePosting) -> c.ImportedPosting:
    return c.ImportedPosting(
        seq=posting.seq,
        at_ns=posting.at_ns,
        debit=posting.debit_account,
        credit=posting.credit_account,
        amount=tokens_of(posting.amount_micro),
        kind=posting.kind,
        memo=posting.memo[:_MEMO_CHARS_MAX],
    )


def _checked(path: Path, command: c.ImportHistory) -> c.ImportHistory:
    """The command as the journal's replay will decode it: a posting the wire's bounds refuse
    (an account or kind too long, an account with a space) is refused here, before anything is
    written, rather than by ``exchange doctor`` later."""
    try:
        COMMAND_DECODERS["import.history"].decode(_encode(command))
    except msgspec.ValidationError as exc:
        raise ImportInputError(f"{path}: {command.request_id} cannot be imported: {exc}") from exc
    return command


def imported_config(base: EconomyConfig, openings: tuple[Opening, ...]) -> EconomyConfig:
    """``base`` with no minted opening balance and the imported agents as its roster (a default
    roster agent keeps its row of ``base``)."""
    known = {spec.id: spec for spec in base.agents}
    roster = [
        known.get(o.agent)
        or AgentSpec(
            id=o.agent,
            level=NEW_AGENT_LEVEL,
            base_rate=NEW_AGENT_BASE_RATE,
            primary_llm=NEW_AGENT_MODEL,
        )
        for o in openings
    ]
    return msgspec.structs.replace(base, opening_balance=Decimal(0), agents=roster)


__all__ = ["ImportInputError", "ImportReport", "ImportSource", "import_exchange"]
