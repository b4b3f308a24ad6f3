"""Shared helpers for the ledger-core example tests: a harness that drives ``Exchange`` with the
default roster, and asserts that a refusal is a value that changes nothing (digest unchanged)."""

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Final

import msgspec
from hypothesis.stateful import RuleBasedStateMachine

from exchange.core.config import EconomyConfig
from exchange.core.ledger import Outcome, RememberedRow, RememberedRows
from exchange.core.machine import Exchange, genesis_commands
from protocols import commands as c
from protocols import queries as q
from protocols.ids import ADMIN, EXCHANGE
from protocols.registry import COMMAND_DECODERS
from protocols.units import NS_PER_S

ROSTER: Final = ("claude", "builder", "lambda", "spark", "observer", "zero")
D = Decimal


def remembered_rows_of(ex: Exchange) -> RememberedRows:
    """What a journal would give for ``ex``'s remembered seqs, read back from its own records
    (a unit test has no journal; the daemon's restart tests and the core's stateful test read
    the entries themselves)."""
    by_seq = dict(zip(ex.ledger.remembered(), ex.ledger.remembered_records(), strict=True))

    def rows(seqs: list[int]) -> Iterator[RememberedRow]:
        for seq in seqs:
            key, record = by_seq[seq]
            sender = key.split(" ", 1)[0]
            head, _, reply = record.partition(b"\n")
            verb, _, body = head.partition(b" ")
            yield sender, verb.decode(), body, reply

    return rows


def restored(ex: Exchange) -> Exchange:
    """A copy of ``ex`` through its snapshot, as a restart would make it."""
    return Exchange.restore(ex.config, ex.snapshot(), remembered_rows_of(ex))


class Harness:
    """One exchange after genesis, a clock that tests move by hand, and request ids from a
    counter so that each command is new unless a test reuses an id on purpose."""

    def __init__(self, config: EconomyConfig | None = None, *, now_s: int = 0) -> None:
        self.config = config or EconomyConfig()
        self.ex = Exchange(self.config)
        self.now_ns = now_s * NS_PER_S
        self._ids = 0
        for outcome in self.ex.genesis(now_ns=self.now_ns):
            assert outcome.ok, outcome.reply

    # ---------------------------------------------------------------------- the clock

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * NS_PER_S)

    def at(self, seconds: float) -> None:
        target = round(seconds * NS_PER_S)
        assert target >= self.now_ns, "tests never move the clock backwards"
        self.now_ns = target

    def tick(self) -> Outcome:
        outcome = self.ex.apply(EXCHANGE, c.Tick(request_id=self.rid()), now_ns=self.now_ns)
        assert outcome.ok, outcome.reply
        return outcome

    # ---------------------------------------------------------------------- commands

    def rid(self) -> str:
        self._ids += 1
        return f"req-{self._ids}"

    def make(self, kind: type[c.Command], **fields: Any) -> c.Command:
        fields.setdefault("request_id", self.rid())
        return kind(**fields)

    def apply(self, sender: str, command: c.Command) -> Outcome:
        return self.ex.apply(sender, command, now_ns=self.now_ns)

    def send(self, sender: str, kind: type[c.Command], **fields: Any) -> Outcome:
        return self.apply(sender, self.make(kind, **fields))

    def ok(self, sender: str, kind: type[c.Command], **fields: Any) -> dict[str, Any]:
        """Applies a command that must succeed; returns its result object."""
        outcome = self.send(sender, kind, **fields)
        assert outcome.ok, outcome.reply
        assert outcome.code is None
        envelope = json.loads(outcome.reply)
        assert envelope["ok"] is True
        result: dict[str, Any] = envelope["result"]
        return result

    def refused(
        self, sender: str, kind: type[c.Command], code: str, **fields: Any
    ) -> dict[str, Any]:
        """Applies a command that must be refused with ``code``; returns the error body.

        Ticks to the current time first (so that due timers fire), then checks that the refusal
        posts nothing, publishes nothing and leaves the state digest exactly as it was."""
        return self.refused_command(sender, self.make(kind, **fields), code)

    def refused_command(self, sender: str, command: c.Command, code: str) -> dict[str, Any]:
        self.tick()
        before = self.ex.digest()
        outcome = self.apply(sender, command)
        assert not outcome.ok, outcome.reply
        assert outcome.code == code, outcome.reply
        assert outcome.postings == ()
        assert outcome.publications == ()
        assert not outcome.duplicate
        assert self.ex.digest() == before, f"refusal {code} changed the state"
        envelope = json.loads(outcome.reply)
        assert envelope["ok"] is False
        assert "result" not in envelope
        error: dict[str, Any] = envelope["error"]
        assert error["code"] == code
        assert error["message"]
        return error

    # ---------------------------------------------------------------------- reads

    def query(self, query: q.Query) -> dict[str, Any]:
        envelope = json.loads(self.ex.query(query))
        assert envelope["ok"] is True, envelope
        result: dict[str, Any] = envelope["result"]
        return result

    def balance(self, agent: str) -> Decimal:
        return Decimal(self.query(q.BalanceQuery(agent=agent))["balance"])

    def limits(self, agent: str) -> dict[str, Any]:
        """The agent's limits and window use now (a query sees the time of the last command, so
        this ticks to the harness clock first)."""
        self.tick()
        return self.query(q.LimitsQuery(agent=agent))

    def account(self, account: str) -> Decimal:
        """Any account's balance in tokens, system accounts included."""
        return Decimal(self.ex.ledger.book.balance(account)).scaleb(-6)

    def award(self, agent: str, amount: Decimal | int | str) -> None:
        self.ok(ADMIN, c.Award, agent=agent, amount=Decimal(amount), source="test")

    def drain_to(self, agent: str, balance: Decimal | int, *, sink: str = "zero") -> None:
        """Moves tokens away (a transfer, which counts toward no spend window) so that ``agent``
        holds exactly ``balance``; needs ``balance`` at or above the reserve."""
        excess = self.balance(agent) - Decimal(balance)
        assert excess > 0
        self.ok(agent, c.Transfer, to=sink, amount=excess)
        assert self.balance(agent) == Decimal(balance)


def tokens_for_cost(price_per_1000: Decimal, cost: Decimal) -> int:
    """Inference tokens that cost exactly ``cost`` at ``price_per_1000``; asserts it is exact."""
    tokens = cost * 1000 / price_per_1000
    assert tokens == tokens.to_integral_value(), f"{cost} is not a whole number of tokens"
    return int(tokens)


def decode_error(verb: str, body: dict[str, Any] | bytes) -> str:
    """The ``msgspec.ValidationError`` message decoding ``body`` for ``verb`` raises."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        COMMAND_DECODERS[verb].decode(raw)
    except msgspec.ValidationError as exc:
        return str(exc)
    raise AssertionError(f"{verb} decoded {raw!r} without complaint")


class ReplayedMachine(RuleBasedStateMachine):
    """A Hypothesis state machine over one exchange from genesis: every command is applied at
    the machine's clock and logged with its reply, a refusal that fired no timer must change
    nothing, and ``check_replay`` folds the log into a fresh exchange and restores a snapshot,
    both to the same digest."""

    def __init__(self, config: EconomyConfig) -> None:
        super().__init__()
        self.config = config
        self.ex = Exchange(config)
        self.now_ns = 0
        self.log: list[tuple[str, c.Command, int, bytes]] = []
        self.ids = 0
        for command in genesis_commands(config):
            self.apply(ADMIN, command)

    def rid(self) -> str:
        self.ids += 1
        return f"r{self.ids}"

    def apply(self, sender: str, command: c.Command) -> Outcome:
        before = self.ex.digest()
        outcome = self.ex.apply(sender, command, now_ns=self.now_ns)
        self.log.append((sender, command, self.now_ns, outcome.reply))
        if not outcome.ok and not outcome.postings:
            # No timer fired with it: a refusal changes nothing at all.
            assert self.ex.digest() == before, outcome.reply
        return outcome

    def check_replay(self) -> None:
        fresh = Exchange(self.config)
        for sender, command, at_ns, reply in self.log:
            assert fresh.apply(sender, command, now_ns=at_ns).reply == reply
        assert fresh.digest() == self.ex.digest()
        assert restored(self.ex).digest() == self.ex.digest()
