"""Ledger core throughput: commands applied per second in process, through ``Exchange.apply``.

Every command takes the real path: the clock, timers, the idempotency record, the rules, the
postings and the encoded reply. Commands are built before the clock starts; each has a distinct
request id and a later ``now_ns``.

Streams:
- transfers: 0.000001 to 10 tokens around the ring of the six genesis agents (balances stay put);
- mixed: transfers, inference spends, authorize/settle pairs, commits, issue closes, awards, pool
  create/join/contribute/spend/close, ticks, retries (duplicates) and refusals of many kinds
  (unknown agents, bad amounts, unknown models, the reserve, spent budgets, reused request ids).

Each stream runs ``--runs`` times on a fresh exchange (median reported), then again on one
exchange that has already applied ``--history`` commands, to show that the cost of a command
does not grow with history (idempotency lookups are by key; rate windows are kept
incrementally). Finally the peak memory of the process.

    python bench/core.py [--commands 200000] [--history 1000000] [--runs 5]
"""

import argparse
import gc
import random
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steal import StealWindow, share_text

from exchange.core.config import EconomyConfig
from exchange.core.ledger import Outcome
from exchange.core.machine import Exchange
from protocols import commands as c
from protocols.ids import ADMIN, EXCHANGE

ROSTER = ("claude", "builder", "lambda", "spark", "observer", "zero")
RING_AMOUNTS = tuple(Decimal(a) for a in ("1", "2.5", "0.000001", "10"))
STEP_NS = 10_000_000  # 10 ms of exchange time per command
Stream = list[tuple[str, c.Command, int]]


def new_exchange() -> Exchange:
    """A fresh exchange after genesis and the bench's setup: generous limits and balances, so
    that the mixed stream's spends are admitted unless a command is meant to be refused."""
    ex = Exchange(EconomyConfig())
    for outcome in ex.genesis(now_ns=0):
        assert outcome.ok
    limits = c.LimitsSpec(burst=Decimal(10**6), hourly=Decimal(10**9), daily=Decimal(10**9))
    for agent in ROSTER:
        setup: list[c.Command] = [
            c.SetLimits(request_id=f"setup-limits-{agent}", agent=agent, limits=limits),
            c.Award(
                request_id=f"setup-award-{agent}",
                agent=agent,
                amount=Decimal(10**8),
                source="bench",
            ),
        ]
        for command in setup:
            assert ex.apply(ADMIN, command, now_ns=0).ok
    return ex


class Clock:
    def __init__(self) -> None:
        self.now_ns = 0

    def next(self) -> int:
        self.now_ns += STEP_NS
        return self.now_ns


def transfer_stream(n: int, tag: str, clock: Clock) -> Stream:
    stream: Stream = []
    for i in range(n):
        sender, recipient = ROSTER[i % 6], ROSTER[(i + 1) % 6]
        # All six of a round move the same amount, so every balance is back where it was.
        amount = RING_AMOUNTS[i // 6 % len(RING_AMOUNTS)]
        command = c.Transfer(request_id=f"{tag}-{i}", to=recipient, amount=amount)
        stream.append((sender, command, clock.next()))
    return stream


class MixedStream:
    """A realistic mix, generated ahead of time. It predicts the ids the exchange will give
    (authorizations and pools are numbered in order, and the setup makes them succeed)."""

    def __init__(self, seed: int, clock: Clock) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.n = 0
        self.authorizations = 0
        self.pending: list[tuple[str, str]] = []  # (agent, authorization id), oldest first
        self.pools_made = 0
        self.pools: dict[str, tuple[str, set[str]]] = {}  # open pool id -> creator, members
        self.successes: list[tuple[str, c.Command]] = []

    def take(self, n: int, tag: str) -> Stream:
        stream: Stream = []
        for _ in range(n):
            self.n += 1
            sender, command = self.one(f"{tag}-{self.n}")
            stream.append((sender, command, self.clock.next()))
        return stream

    def one(self, rid: str) -> tuple[str, c.Command]:
        rng = self.rng
        agent = rng.choice(ROSTER)
        roll = rng.random() * 100
        if roll < 40:
            to = rng.choice([a for a in ROSTER if a != agent])
            amount = Decimal(rng.randint(1, 10_000)).scaleb(-2)
            return self.remember(agent, c.Transfer(request_id=rid, to=to, amount=amount))
        if roll < 55:
            task = rng.choice(("code", "chat", "planning", "review"))
            return self.remember(
                agent, c.LlmRequest(request_id=rid, task_type=task, tokens=rng.randint(100, 5000))
            )
        if roll < 60:
            self.authorizations += 1
            self.pending.append((agent, f"auth-{self.authorizations}"))
            return agent, c.LlmAuthorize(request_id=rid, task_type="code", tokens=4000)
        if roll < 65 and self.pending:
            owner, auth_id = self.pending.pop(0)
            tokens = rng.choice((0, 2000, 4000, 6000))
            return owner, c.LlmSettle(request_id=rid, authorization_id=auth_id, tokens=tokens)
        if roll < 70:
            project = rng.choice(("nexushive-setup", "claude-monitor", "scheme-x", "other"))
            message = rng.choice(("fix: bug", "docs: readme", "add tests", "feature"))
            return ADMIN, c.Commit(
                request_id=rid,
                author=f"{agent}@aygp-dr.ai",
                project=project,
                message=message,
                sha=f"sha-{rid}",
            )
        if roll < 73:
            kind = rng.choice(("bug", "feature", "chore", "epic"))  # epic: unknown_issue_type
            return ADMIN, c.IssueClose(
                request_id=rid,
                issue_id=f"is-{rid}",
                agent=agent,
                priority=rng.choice(("P1", "P3", "0")),
                issue_type=kind,
            )
        if roll < 75:
            return ADMIN, c.Award(request_id=rid, agent=agent, amount=Decimal(5), source="ops")
        if roll < 83:
            return self.pool_op(rid, agent)
        if roll < 85:
            return EXCHANGE, c.Tick(request_id=rid)
        if roll < 89 and self.successes:
            # A retry of an earlier success: the stored reply, no second effect.
            return self.successes[rng.randrange(len(self.successes))]
        if roll < 90 and self.successes:
            sender, done = self.successes[rng.randrange(len(self.successes))]
            return sender, c.PoolJoin(request_id=done.request_id, pool_id="none")  # reused id
        return agent, self.refusal(rid, agent)

    def refusal(self, rid: str, agent: str) -> c.Command:
        pick = self.rng.randrange(5)
        if pick == 0:
            return c.Transfer(request_id=rid, to="nobody", amount=Decimal(1))
        if pick == 1:
            return c.Transfer(request_id=rid, to="zero", amount=Decimal("0.0000001"))
        if pick == 2:
            return c.Transfer(request_id=rid, to="zero", amount=Decimal(10**11))  # reserve
        if pick == 3:
            return c.LlmRequest(request_id=rid, task_type="code", tokens=10, model="gpt-9")
        return c.Transfer(request_id=rid, to="zero", amount=Decimal("NaN"))

    def pool_op(self, rid: str, agent: str) -> tuple[str, c.Command]:
        rng = self.rng
        if not self.pools or rng.random() < 0.05:
            self.pools_made += 1
            self.pools[f"pool-{self.pools_made}"] = (agent, {agent})
            return agent, c.PoolCreate(request_id=rid, name="team", min_contribution=Decimal(1))
        pool_id = rng.choice(sorted(self.pools))
        creator, members = self.pools[pool_id]
        roll = rng.random()
        if roll < 0.3:
            members.add(agent)  # already a member: already_pool_member
            return agent, c.PoolJoin(request_id=rid, pool_id=pool_id)
        member = rng.choice(sorted(members))
        if roll < 0.7:
            amount = Decimal(rng.randint(1, 50))
            return member, c.PoolContribute(request_id=rid, pool_id=pool_id, amount=amount)
        if roll < 0.97:
            tokens = rng.randint(100, 3000)
            return member, c.PoolSpend(
                request_id=rid, pool_id=pool_id, model="gemini-pro", tokens=tokens
            )
        del self.pools[pool_id]
        return creator, c.PoolClose(request_id=rid, pool_id=pool_id)

    def remember(self, sender: str, command: c.Command) -> tuple[str, c.Command]:
        if len(self.successes) < 10_000:
            self.successes.append((sender, command))
        return sender, command


def run(ex: Exchange, stream: Stream) -> tuple[float, float, list[Outcome]]:
    """Applies the stream; returns commands per second of wall time and of CPU time (the
    process's own, which other load on a shared machine disturbs less), and the outcomes."""
    apply = ex.apply
    outcomes: list[Outcome] = []
    append = outcomes.append
    started_s, started_cpu_s = time.perf_counter(), time.process_time()
    for sender, command, now_ns in stream:
        append(apply(sender, command, now_ns=now_ns))
    wall_s = time.perf_counter() - started_s
    cpu_s = time.process_time() - started_cpu_s
    return len(stream) / wall_s, len(stream) / cpu_s, outcomes


# Wall-clock rates, CPU-time rates, and the share of CPU time stolen by the hypervisor meanwhile.
Rates = tuple[list[float], list[float], float | None]


def runs(streams: Iterator[tuple[Exchange, Stream]], count: int) -> tuple[Rates, Counter[str]]:
    rates: list[float] = []
    cpu_rates: list[float] = []
    codes: Counter[str] = Counter()
    window = StealWindow.start()
    for _ in range(count):
        ex, stream = next(streams)
        gc.collect()
        rate, cpu_rate, outcomes = run(ex, stream)
        rates.append(rate)
        cpu_rates.append(cpu_rate)
        codes = Counter(
            ("duplicate" if o.duplicate else "ok") if o.ok else str(o.code) for o in outcomes
        )
        ex.check_invariants()
    return (rates, cpu_rates, window.share()), codes


def fresh_transfers(n: int) -> Iterator[tuple[Exchange, Stream]]:
    while True:
        yield new_exchange(), transfer_stream(n, "t", Clock())


def fresh_mixed(n: int) -> Iterator[tuple[Exchange, Stream]]:
    while True:
        clock = Clock()
        yield new_exchange(), MixedStream(seed=1, clock=clock).take(n, "m")


def loaded(
    ex: Exchange, clock: Clock, mixed: MixedStream, n: int, kind: str
) -> Iterator[tuple[Exchange, Stream]]:
    run_index = 0
    while True:
        run_index += 1
        tag = f"{kind}{run_index}"
        if kind == "t":
            yield ex, transfer_stream(n, tag, clock)
        else:
            yield ex, mixed.take(n, tag)


def row(name: str, history: int, rates: Rates) -> str:
    wall, cpu, steal = rates
    median, median_cpu = statistics.median(wall), statistics.median(cpu)
    return (
        f"| {name:<9} | {history:>9,} | {len(wall):>4} | {median:>10,.0f} | {min(wall):>10,.0f} "
        f"| {max(wall):>10,.0f} | {median_cpu:>10,.0f} | {1e6 / median_cpu:>8.2f} "
        f"| {share_text(steal):<11} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200_000, help="commands per run")
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    header = (
        "| stream    |   history | runs | median/s   | min/s      | max/s      | median/s   | "
        "µs/cmd   | steal       |\n"
        "|           |           |      | (wall)     | (wall)     | (wall)     | (CPU)      | "
        "(CPU)    |             |\n"
        "|-----------|-----------|------|------------|------------|------------|------------|"
        "----------|-------------|"
    )
    lines = [header]
    transfer_rates, _ = runs(fresh_transfers(args.commands), args.runs)
    lines.append(row("transfers", 0, transfer_rates))
    mixed_rates, mix = runs(fresh_mixed(args.commands), args.runs)
    lines.append(row("mixed", 0, mixed_rates))

    # One exchange with a long history of the mixed stream behind it.
    ex, clock = new_exchange(), Clock()
    mixed = MixedStream(seed=2, clock=clock)
    started = time.perf_counter()
    chunk = 100_000
    for start in range(0, args.history, chunk):
        run(ex, mixed.take(min(chunk, args.history - start), "h"))
    history_s = time.perf_counter() - started
    ex.check_invariants()
    loaded_transfers, _ = runs(loaded(ex, clock, mixed, args.commands, "t"), args.runs)
    lines.append(row("transfers", args.history, loaded_transfers))
    loaded_mixed, _ = runs(loaded(ex, clock, mixed, args.commands, "m"), args.runs)
    lines.append(row("mixed", args.history, loaded_mixed))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\nLedger core, in process, {args.commands:,} commands a run")
    print("\n".join(lines))
    print(
        f"\nhistory: {args.history:,} mixed commands applied at "
        f"{args.history / history_s:,.0f} cmd/s; peak RSS {peak_mib:,.0f} MiB "
        f"(after {args.history + 2 * args.runs * args.commands:,} commands on one exchange)"
    )
    total = sum(mix.values())
    shares = ", ".join(f"{code} {count / total:.1%}" for code, count in mix.most_common())
    print(f"mixed stream outcomes: {shares}")
    print(
        "steal: the share of CPU time the hypervisor gave to other guests during a row's runs; "
        "a noisy row measures the neighbours more than the code"
    )


if __name__ == "__main__":
    main()
