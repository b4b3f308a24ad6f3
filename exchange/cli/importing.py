"""``exchange import FILE --data NEWDIR``: a new exchange whose first entries open the balances of
another (docs/economy.md, Import).

Owns: the new data directory's config (the given or default economy with ``opening_balance = 0``
and the imported agents as its roster) and its first batch: the genesis that registers them,
then one ``import.opening`` per agent with a balance, from ``@import``, applied through the core
and journaled like any command, so that ``exchange doctor`` replays and checks it and ``exchange
up`` starts on it. Must not: touch an existing journal, or write anything before the source has
been read in full (a bad file leaves no directory behind).
"""

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

import msgspec

from exchange.core.config import AgentSpec, EconomyConfig, config_toml, default_toml, parse_config
from exchange.core.machine import Exchange
from exchange.daemon.datadir import make_data_dir
from exchange.daemon.recovery import apply_as_admin, apply_genesis, load_economy_config
from exchange.daemon.settings import DataPaths
from exchange.journal import Journal
from exchange.journal.importing import ImportInputError, ImportSource, Opening, read_source
from protocols import commands as c
from protocols.amounts import format_micro, tokens_of

# An agent the default roster does not know is registered with these.
NEW_AGENT_LEVEL: Final = "L5"
NEW_AGENT_BASE_RATE: Final = Decimal(100)
NEW_AGENT_MODEL: Final = "claude-sonnet"


@dataclass(frozen=True, slots=True)
class ImportReport:
    data_dir: Path
    source: str
    agents: int
    imported: str
    seq: int
    digest: str


def import_exchange(
    source_path: Path, data_dir: Path, *, config_text: str | None, now_ns: int
) -> ImportReport:
    """Builds the new exchange in ``data_dir`` from ``source_path``.

    Raises ImportInputError (the file, or a ``data_dir`` that already holds a journal),
    ConfigError, DataDirUnusableError, JournalError, OSError.
    """
    paths = DataPaths(data_dir)
    if paths.journal.exists() or paths.economy_config.exists():
        raise ImportInputError(
            f"{data_dir} already holds an exchange; import into a new --data directory"
        )
    source = read_source(source_path)
    config = imported_config(parse_config(config_text or default_toml()), source.openings)
    exchange = Exchange(config)
    entries = apply_genesis(exchange, now_ns=now_ns)
    total = 0
    for opening in source.openings:
        if not opening.balance_micro:
            continue
        command = c.ImportOpening(
            request_id=f"import-{opening.agent}",
            agent=opening.agent,
            amount=tokens_of(opening.balance_micro),
            earned=tokens_of(opening.earned_micro),
            spent=tokens_of(opening.spent_micro),
            source=source.description,
        )
        outcome, entry = apply_as_admin(exchange, command, now_ns=now_ns)
        if not outcome.ok:
            raise ImportInputError(
                f"{source_path}: {opening.agent} cannot be opened: {outcome.reply.decode()}"
            )
        total += opening.balance_micro
        entries.append(entry)
    exchange.check_invariants()
    make_data_dir(data_dir)
    load_economy_config(paths.economy_config, config_toml(config))
    with Journal.open(paths.journal) as journal:
        journal.append_batch(entries)
        journal.record_high_water()
    return ImportReport(
        data_dir=data_dir,
        source=source.description,
        agents=len(source.openings),
        imported=format_micro(total),
        seq=exchange.seq,
        digest=exchange.digest(),
    )


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
