"""What staking and lending cost the rest of the core, in process, through ``Exchange.apply`` and
``Exchange.query``.

- bid: the cost of one bid in a 100-bidder auction with the staking hooks installed (the market
  asks for each bidder's stake and its score term) and with them replaced by the no-stake
  defaults, alternating round by round so that background load hits both (median of the rounds).
- balance: one balance query with no loans or stakes, then with ``--loans`` ended loans kept and
  ``--stakes`` stakes of another agent (a query reads the agent's own stakes and open loans, not
  every one kept).
- credit: applying stakes, offers, accepts and repayments, per command.

    python bench/credit.py [--rounds 40] [--loans 1000] [--stakes 100]
"""

import argparse
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exchange.core import market
from exchange.core.config import EconomyConfig
from exchange.core.machine import Exchange
from protocols import commands as c
from protocols import credit as cr
from protocols import queries as q
from protocols import swarm as s
from protocols.ids import ADMIN
from protocols.units import NS_PER_S

D = Decimal
BIDDERS = 100


class Clocked:
    """An exchange after genesis, a clock that moves a microsecond per command, fresh ids."""

    def __init__(self) -> None:
        self.ex = Exchange(EconomyConfig())
        self.now_ns = NS_PER_S
        self.ids = 0
        for outcome in self.ex.genesis(now_ns=self.now_ns):
            assert outcome.ok

    def rid(self) -> str:
        self.ids += 1
        return f"b{self.ids}"

    def apply(self, sender: str, command: c.Command) -> bytes:
        self.now_ns += 1000
        outcome = self.ex.apply(sender, command, now_ns=self.now_ns)
        assert outcome.ok, outcome.reply
        return outcome.reply


def _bidders(hooks: bool) -> Clocked:
    x = Clocked()
    if not hooks:
        x.ex.market.stake_of, x.ex.market.stake_bonus = market._no_stake, market._no_bonus
    for i in range(BIDDERS):
        register = c.RegisterAgent(
            request_id=x.rid(), agent=f"e{i}", base_rate=D(1), primary_llm="llama3.2"
        )
        x.apply(ADMIN, register)
    return x


def _round_us(x: Clocked) -> float:
    """One auction's bids, microseconds per bid."""
    announce = s.AnnounceTask(
        request_id=x.rid(),
        task_type="t",
        asset="a",
        deadline_ms=1000,
        max_cost=D(100),
        bid_window_ms=600_000,
    )
    reply = x.apply("claude", announce)
    task_id = reply.split(b'"task_id":"')[1].split(b'"')[0].decode()
    bid = s.Bid(cost=D(50), time_ms=500, confidence=0.5)
    bids = [
        (f"e{i}", s.SubmitBid(request_id=x.rid(), task_id=task_id, bid=bid)) for i in range(BIDDERS)
    ]
    start = time.perf_counter()
    for sender, command in bids:
        x.ex.apply(sender, command, now_ns=x.now_ns)
    elapsed = time.perf_counter() - start
    x.apply("claude", s.CancelTask(request_id=x.rid(), task_id=task_id))
    return elapsed / BIDDERS * 1e6


def bench_bids(rounds: int) -> None:
    hooked, bare = _bidders(True), _bidders(False)
    with_hooks, without = [], []
    for _ in range(rounds):
        with_hooks.append(_round_us(hooked))
        without.append(_round_us(bare))
    a, b = statistics.median(with_hooks), statistics.median(without)
    print(f"bid: {a:.1f} us with the staking hooks, {b:.1f} us without ({a - b:+.1f} us)")


def _query_us(x: Clocked, agent: str, n: int = 20_000) -> float:
    query = q.BalanceQuery(agent=agent)
    start = time.perf_counter()
    for _ in range(n):
        x.ex.query(query)
    return (time.perf_counter() - start) / n * 1e6


def bench_balance_and_commands(loans: int, stakes: int) -> None:
    x = Clocked()
    empty = _query_us(x, "zero")
    x.apply(ADMIN, c.Award(request_id=x.rid(), agent="claude", amount=D(10**9), source="b"))
    x.apply(ADMIN, c.Award(request_id=x.rid(), agent="zero", amount=D(10**9), source="b"))
    commands = 0
    start = time.perf_counter()
    for _ in range(loans):
        offer = cr.OfferLoan(
            request_id=x.rid(),
            borrower="zero",
            principal=D(10),
            rate_per_day=D("0.01"),
            term_s=3600,
        )
        loan_id = x.apply("claude", offer).split(b'"loan_id":"')[1].split(b'"')[0].decode()
        x.apply("zero", cr.AcceptLoan(request_id=x.rid(), loan_id=loan_id))
        x.apply("zero", cr.RepayLoan(request_id=x.rid(), loan_id=loan_id))
        commands += 3
    for _ in range(stakes):
        x.apply("claude", cr.Stake(request_id=x.rid(), amount=D(100), lock_s=86_400))
        commands += 1
    per_command = (time.perf_counter() - start) / commands * 1e6
    full = _query_us(x, "zero")
    x.ex.check_invariants()
    print(f"balance: {empty:.1f} us with no credit, {full:.1f} us with {loans} ended loans kept")
    print(f"  and {stakes} stakes of another agent")
    print(
        f"credit: {per_command:.1f} us per stake, loan offer, accept or repay ({commands} applied)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--loans", type=int, default=1000)
    parser.add_argument("--stakes", type=int, default=100)
    args = parser.parse_args()
    bench_bids(args.rounds)
    bench_balance_and_commands(args.loans, args.stakes)


if __name__ == "__main__":
    main()
