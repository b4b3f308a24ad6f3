"""Journal throughput: group commit of 1, 16, 64 and 256 entries per batch with synchronous=FULL.

Each entry has a ~200-byte JSON body and 2 postings. For each batch size, three runs on a fresh file
each append batches for ``--seconds``; the table shows the median run's entries/s and batches/s
and the median run's p50/p99 commit latency. Then it times replay (``iter_entries``) and ``verify``
over the largest file. Run it on the disk the exchange will use (``--dir``): fsync cost is the
whole story, and tmpfs would report fiction.

    python bench/journal.py [--dir bench/out] [--seconds 2]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from exchange.journal import EntryInput, Journal, Posting

batch_sizes = (1, 16, 64, 256)
runs_per_size = 3


def make_batch(first_n: int, size: int, at_ns: int) -> list[EntryInput]:
    batch = []
    for n in range(first_n, first_n + size):
        body = json.dumps(
            {
                "request_id": f"req-{n:012d}",
                "to": "agent-executor-0042",
                "amount": "12.345678",
                "memo": "payment for task 7f3a: summarise 40 issues and open 3 pull requests",
                "pad": "x" * 40,
            }
        ).encode()
        batch.append(
            EntryInput(
                at_ns=at_ns,
                sender="agent-scout-0007",
                verb="transfer",
                body=body,
                reply=b'{"ok":true,"balance":"987.654322"}',
                postings=(
                    Posting(
                        debit_account="agent-scout-0007",
                        credit_account="agent-executor-0042",
                        amount_micro=12_345_678,
                        kind="transfer",
                        memo="task 7f3a",
                    ),
                    Posting(
                        debit_account="agent-scout-0007",
                        credit_account="exchange-fees",
                        amount_micro=12_346,
                        kind="fee",
                    ),
                ),
            )
        )
    return batch


def one_run(directory: Path, size: int, seconds: float) -> tuple[float, float, list[float]]:
    """Appends batches of ``size`` for ``seconds``; returns entries/s, batches/s, latencies."""
    path = Path(tempfile.mkdtemp(dir=directory)) / "journal.sqlite"
    latencies_s: list[float] = []
    with Journal.open(path) as journal:
        n, at_ns = 0, time.time_ns()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            batch = make_batch(n, size, at_ns)
            before = time.perf_counter()
            journal.append_batch(batch)
            latencies_s.append(time.perf_counter() - before)
            n, at_ns = n + size, at_ns + 1
        elapsed_s = time.perf_counter() - started
    return n / elapsed_s, len(latencies_s) / elapsed_s, latencies_s


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("bench/out"))
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"journal bench in {args.dir.resolve()}, synchronous=FULL, {args.seconds} s per run")
    print(f"{'batch':>6} {'entries/s':>11} {'batches/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for size in batch_sizes:
        runs = sorted(
            (one_run(args.dir, size, args.seconds) for _ in range(runs_per_size)),
            key=lambda run: run[0],
        )
        entries_per_s, batches_per_s, latencies_s = runs[len(runs) // 2]
        print(
            f"{size:>6} {entries_per_s:>11,.0f} {batches_per_s:>10,.0f} "
            f"{1000 * percentile(latencies_s, 0.5):>8.2f} "
            f"{1000 * percentile(latencies_s, 0.99):>8.2f}"
        )
    replay(args.dir)


def replay(directory: Path) -> None:
    path = Path(tempfile.mkdtemp(dir=directory)) / "journal.sqlite"
    with Journal.open(path) as journal:
        for first_n in range(0, 100_000, 256):
            journal.append_batch(make_batch(first_n, 256, 1_700_000_000_000_000_000 + first_n))
        count = journal.entry_count
    with Journal.open(path, read_only=True) as journal:
        started = time.perf_counter()
        replayed = sum(1 for _ in journal.iter_entries())
        replay_s = time.perf_counter() - started
        started = time.perf_counter()
        report = journal.verify()
        verify_s = time.perf_counter() - started
    assert replayed == count and report.ok
    print(
        f"replay (iter_entries, hash-checked): {count / replay_s:,.0f} entries/s; "
        f"verify: {count / verify_s:,.0f} entries/s; "
        f"file {path.stat().st_size / count:.0f} bytes/entry ({count:,} entries)"
    )


if __name__ == "__main__":
    main()
