"""Benchmark: compute futures in the core, and ``exchange import`` of a large export.

Run from the repository root: ``python bench/futures_import.py [--futures 20000] [--postings
200000] [--agents 1000]``.

1. Futures, in one process through ``Exchange.apply`` (no NATS, no journal: the rule's own cost):
   ``--futures`` pairs of ``future.write`` + ``future.take`` among the six genesis agents, then one
   ``tick`` past every expiry that settles them all (margin checks included). Reported: commands
   per second for write and take, the settling tick's duration, and the digest's cost with that
   many futures kept (``ended_futures_kept`` is raised to keep them all).
2. Import: a CSV export of ``--postings`` transfers among ``--agents`` agents (written here in the
   export's format), imported by ``exchange import`` into a fresh directory, in-process; then
   ``exchange doctor`` on the new journal. Reported: seconds for each, and postings per second read.
"""

import argparse
import csv
import io
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from exchange.cli.importing import import_exchange
from exchange.cli.main import main as cli_main
from exchange.core.config import EconomyConfig, FuturesConfig
from exchange.core.machine import Exchange
from exchange.journal.export import export_columns
from protocols import commands as c
from protocols import futures as fu
from protocols.ids import ADMIN, EXCHANGE
from protocols.units import NS_PER_S

ROSTER = ("claude", "builder", "lambda", "spark", "observer", "zero")


def bench_futures(count: int) -> dict[str, float]:
    config = EconomyConfig(futures=FuturesConfig(ended_futures_kept=count + 1))
    ex = Exchange(config)
    now = 0
    for outcome in ex.genesis(now_ns=now):
        assert outcome.ok
    for i, agent in enumerate(ROSTER):  # enough money for every margin and notional
        award = c.Award(request_id=f"a{i}", agent=agent, amount=Decimal(10**9), source="bench")
        assert ex.apply(ADMIN, award, now_ns=now).ok
    writes = [
        fu.WriteFuture(
            request_id=f"w{i}",
            model="llama3.2",
            tokens=1000 + i % 500,
            price=Decimal("0.1"),
            expires_in_s=7200,
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    for i, command in enumerate(writes):
        assert ex.apply(ROSTER[i % 6], command, now_ns=now).ok
    write_s = time.perf_counter() - started
    takes = [
        fu.TakeFuture(
            request_id=f"t{i}",
            future_id=f"future-{i + 1}",
            price=Decimal(1000 + i % 500) / 10_000,
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    for i, take in enumerate(takes):
        outcome = ex.apply(ROSTER[(i + 1) % 6], take, now_ns=now)
        assert outcome.ok, outcome.reply
    take_s = time.perf_counter() - started
    started = time.perf_counter()
    digest_open = ex.digest()
    digest_s = time.perf_counter() - started
    now += 7201 * NS_PER_S
    started = time.perf_counter()
    assert ex.apply(EXCHANGE, c.Tick(request_id="tick"), now_ns=now).ok
    settle_s = time.perf_counter() - started
    assert all(f.state == "settled" for f in ex.futures.by_id.values())
    ex.check_invariants()
    assert digest_open != ex.digest()
    return {
        "futures": count,
        "write_per_s": count / write_s,
        "take_per_s": count / take_s,
        "settle_tick_s": settle_s,
        "digest_s": digest_s,
    }


def bench_import(postings: int, agents: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export = root / "export.csv"
        names = [f"agent-{i}" for i in range(agents)]
        with export.open("w", newline="") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(export_columns)
            seq = 0
            for name in names:
                seq += 1
                writer.writerow(
                    (seq, 0, "t", seq, ADMIN, "agent.register", "@mint", name, "1000",
                     1_000_000_000, "opening", "opening balance")
                )  # fmt: skip
            for i in range(postings):
                seq += 1
                debit, credit = names[i % agents], names[(i * 7 + 1) % agents]
                if debit == credit:
                    credit = names[(i + 1) % agents]
                writer.writerow(
                    (seq, 0, "t", seq, debit, "transfer", debit, credit, "0.000001", 1,
                     "transfer", "")
                )  # fmt: skip
        started = time.perf_counter()
        report = import_exchange(export, root / "new", config_text=None, now_ns=time.time_ns())
        import_s = time.perf_counter() - started
        started = time.perf_counter()
        quiet = io.StringIO()
        status = cli_main(
            ["doctor", "--data", str(root / "new"), "--json"], stdout=quiet, configure_logs=False
        )
        doctor_s = time.perf_counter() - started
        assert status == 0 and report.agents == agents
        return {
            "postings": postings + agents,
            "agents": agents,
            "import_s": import_s,
            "postings_read_per_s": (postings + agents) / import_s,
            "doctor_s": doctor_s,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--futures", type=int, default=20_000)
    parser.add_argument("--postings", type=int, default=200_000)
    parser.add_argument("--agents", type=int, default=1000)
    args = parser.parse_args()
    for name, value in bench_futures(args.futures).items():
        print(f"futures  {name:>20}: {value:,.3f}")
    for name, value in bench_import(args.postings, args.agents).items():
        print(f"import   {name:>20}: {value:,.3f}")


if __name__ == "__main__":
    main()
