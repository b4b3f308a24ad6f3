"""A command that breaks a core invariant is refused with ``internal_error`` and the exchange
serves on, with the state it had before that command (issue: no journaled command can crash it
again). The failures are injected into real rules of a real daemon on a real nats-server.
"""

import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest
from daemon_support import READY_TIMEOUT_S, client_for, status_of

from exchange.core.earning import Earning
from exchange.core.escrow import Escrows
from exchange.core.refusals import Refusal
from exchange.daemon.app import ExchangeHandle, run_exchange
from exchange.daemon.settings import Settings
from exchange.journal import Entry, Journal
from protocols import commands as c

pytestmark = pytest.mark.anyio

INJECTED = "injected: a broken invariant"


class FakeWall:
    """The daemon's wall clock, moved by the test (the exchange clock never goes backwards)."""

    def __init__(self) -> None:
        self.now_ns = time.time_ns()

    def __call__(self) -> int:
        return self.now_ns


@asynccontextmanager
async def exchange_at(
    data_dir: Path, wall: Callable[[], int] = time.time_ns
) -> AsyncIterator[ExchangeHandle]:
    settings = Settings(data_dir=data_dir, nats_port=-1)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(READY_TIMEOUT_S):
            handle: ExchangeHandle = await tg.start(
                functools.partial(run_exchange, wall_ns=wall), settings
            )
        try:
            yield handle
        finally:
            handle.stop()


@pytest.fixture
def award_breaks_after_minting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An award of exactly 13 tokens mints, then trips an assertion: half a command applied."""
    original = Earning.award

    def award(self: Earning, sender: str, cmd: c.Award) -> msgspec.Struct | Refusal:
        if cmd.amount == 13:
            agent = self.ledger.agents[cmd.agent]
            self.ledger.mint(agent, 13_000_000, "award", "half done")
            raise AssertionError(INJECTED)
        return original(self, sender, cmd)

    monkeypatch.setattr(Earning, "award", award)
    yield


def journal_entries(data_dir: Path) -> list[Entry]:
    with Journal.open(data_dir / "journal.sqlite", read_only=True) as journal:
        return list(journal.iter_entries(after_seq=0))


@pytest.mark.usefixtures("award_breaks_after_minting")
async def test_a_command_that_breaks_an_invariant_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "x"
    async with exchange_at(data) as handle, client_for(handle) as admin:
        before = await status_of(admin)
        award = {"agent": "claude", "amount": "13", "source": "test"}
        refused = await admin.command_envelope("admin", "award", award)
        assert not refused.ok and refused.error is not None
        assert refused.error.code == "internal_error"
        assert "state is as it was before" in refused.error.message
        after = await status_of(admin)
        assert after["digest"] == before["digest"]
        assert after["commands_applied"] == before["commands_applied"] + 1
        balance = await admin.query_envelope("balance", {"agent": "claude"})
        assert balance.result["balance"] == "10000"  # the half-made mint is gone
        # It serves on: the next commands apply as usual, on the rebuilt state.
        moved = await admin.command_envelope("claude", "transfer", {"to": "zero", "amount": "2"})
        assert moved.ok, moved
        awarded = await admin.command_envelope("admin", "award", {**award, "amount": "5"})
        assert awarded.ok, awarded
        served_digest = (await status_of(admin))["digest"]
    failed = [e for e in journal_entries(data) if b'"internal_error"' in e.reply]
    assert [(e.sender, e.verb, e.postings) for e in failed] == [("admin", "award", ())]
    # The journaled refusal replays as a refusal: a restart reaches the same state, no crash.
    async with exchange_at(data) as handle, client_for(handle) as admin:
        assert (await status_of(admin))["digest"] == served_digest


@pytest.fixture
def escrow_deadline_breaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """An escrow's deadline timer trips an assertion when it fires (after refunding half)."""
    fired: list[str] = []

    def on_deadline(self: Escrows, ref: str) -> None:
        fired.append(ref)
        self.ledger.book.post("@escrow", "claude", 1, "half", ref)
        raise AssertionError(INJECTED)

    monkeypatch.setattr(Escrows, "on_deadline", on_deadline)
    yield fired


async def test_a_timer_that_breaks_an_invariant_is_dropped_and_the_command_applies(
    tmp_path: Path, escrow_deadline_breaks: list[str]
) -> None:
    data, wall = tmp_path / "x", FakeWall()
    async with exchange_at(data, wall) as handle, client_for(handle) as admin:
        lock = {"payee": "zero", "amount": "10", "timeout_s": 1}
        locked = await admin.command_envelope("claude", "escrow.lock", lock)
        assert locked.ok, locked
        wall.now_ns += 5_000_000_000  # the escrow's deadline has passed
        # Whichever comes first, this transfer or the timer loop's tick, fires the broken timer.
        moved = await admin.command_envelope("claude", "transfer", {"to": "zero", "amount": "1"})
        assert moved.ok, moved
        assert escrow_deadline_breaks, "the deadline fired"
        escrow = await admin.query_envelope("escrow", {"escrow_id": locked.result["escrow_id"]})
        assert escrow.result["state"] == "locked"  # its timer is gone; an arbiter settles it
        balance = await admin.query_envelope("balance", {"agent": "claude"})
        assert balance.result["balance"] == "9989"  # 10 held, 1 moved, the half refund undone
        digest = (await status_of(admin))["digest"]
    drops = [e for e in journal_entries(data) if e.verb == "timer.drop"]
    assert len(drops) == 1 and drops[0].sender == "exchange"
    async with exchange_at(data, wall) as handle, client_for(handle) as admin:
        assert (await status_of(admin))["digest"] == digest
