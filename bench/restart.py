"""Restart cost against snapshot cost, with many remembered request ids.

Builds a real journal (SQLite, ``synchronous=FULL``) of genesis plus ``--transfers`` transfers,
applied by the core and appended in batches of 1,000 as the daemon would, then takes a snapshot
the daemon's way (``snapshot_and_digest``, on the loop in the daemon) and writes it, and finally
times ``recover``: load the snapshot, read the remembered commands' entries back from the journal
by seq, check the digest. Every transfer is remembered (up to ``idempotency_keys_max``), which is
the worst case for both.

    python bench/restart.py [--transfers 1000000] [--dir DIR]
"""

import argparse
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exchange.core.config import EconomyConfig
from exchange.core.machine import Exchange
from exchange.daemon.recovery import apply_genesis, entry_of, recover
from exchange.journal import EntryInput, Journal
from protocols import commands as c
from protocols.ids import ADMIN
from protocols.registry import VERB_OF
from protocols.units import NS_PER_MS

ROSTER = ("claude", "builder", "lambda", "spark", "observer", "zero")

BATCH = 1_000


def journaled(exchange: Exchange, sender: str, command: c.Command, now_ns: int) -> EntryInput:
    outcome = exchange.apply(sender, command, now_ns=now_ns)
    assert outcome.ok, outcome.reply
    verb = VERB_OF[type(command)]
    return entry_of(at_ns=now_ns, sender=sender, verb=verb, command=command, outcome=outcome)


def build(path: Path, transfers: int) -> tuple[int, float, float, int]:
    """The journal at ``path``; returns (seq, snapshot ms, snapshot write ms, snapshot bytes)."""
    exchange = Exchange(EconomyConfig())
    limits = c.LimitsSpec(burst=Decimal(10**6), hourly=Decimal(10**9), daily=Decimal(10**9))
    with Journal.open(path) as journal:
        journal.append_batch(apply_genesis(exchange, now_ns=0))
        journal.append_batch(
            [
                journaled(
                    exchange, ADMIN, c.SetLimits(request_id=f"l-{a}", agent=a, limits=limits), 0
                )
                for a in ROSTER
            ]
        )
        pending: list[EntryInput] = []
        started = time.perf_counter()
        for i in range(transfers):
            sender, recipient = ROSTER[i % 6], ROSTER[(i + 1) % 6]
            command = c.Transfer(request_id=f"r-{i}", to=recipient, amount=Decimal(1))
            pending.append(journaled(exchange, sender, command, (i + 1) * NS_PER_MS))
            if len(pending) == BATCH or i == transfers - 1:
                journal.append_batch(pending)
                pending = []
            if (i + 1) % 100_000 == 0:
                rate = (i + 1) / (time.perf_counter() - started)
                print(f"  {i + 1:>9,} transfers journaled ({rate:,.0f}/s)", file=sys.stderr)
        snapshot_started = time.perf_counter()
        state, digest = exchange.snapshot_and_digest()
        snapshot_ms = (time.perf_counter() - snapshot_started) * 1000
        write_started = time.perf_counter()
        journal.write_snapshot(exchange.seq, state, digest)
        write_ms = (time.perf_counter() - write_started) * 1000
        return exchange.seq, snapshot_ms, write_ms, len(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the journal goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="restart-bench-", dir=args.dir) as tmp:
        path = Path(tmp) / "journal.sqlite"
        seq, snapshot_ms, write_ms, state_bytes = build(path, args.transfers)
        started = time.perf_counter()
        with Journal.open(path) as journal:
            recovered = recover(journal, EconomyConfig())
        recover_ms = (time.perf_counter() - started) * 1000
        remembered = len(recovered.exchange.ledger.remembered())
        print()
        print("| remembered ids | snapshot | snapshot + digest | snapshot write | restart |")
        print("|---:|---:|---:|---:|---:|")
        print(
            f"| {remembered:,} | {state_bytes / 1e6:.1f} MB | {snapshot_ms:,.0f} ms "
            f"| {write_ms:,.0f} ms | {recover_ms:,.0f} ms |"
        )
        assert recovered.snapshot_seq == seq and recovered.replayed_count == 0


if __name__ == "__main__":
    main()
