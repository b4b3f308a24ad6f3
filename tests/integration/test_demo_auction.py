"""The auction demo, short form, as a real process: it must finish, leave nothing running, and
leave a journal whose replayed ledger shows released escrows with fees and conservation."""

import os
import subprocess
import sys
from pathlib import Path

from exchange.core.config import EconomyConfig
from exchange.daemon.recovery import recover
from exchange.journal import Journal

DEMO_TIMEOUT_S = 120


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_demo_runs_auctions_to_released_escrow_and_leaves_nothing_running(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    code = (
        "from exchange.demo.auction import main; "
        f"raise SystemExit(main(['--data', {str(data)!r}, '--auctions', '2', "
        "'--timeout-s', '60', '--json']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert _processes_mentioning(str(data)) == []

    with Journal.open(data / "journal.sqlite", read_only=True) as journal:
        exchange = recover(journal, EconomyConfig()).exchange
    exchange.check_invariants()
    tasks = list(exchange.market.tasks.values())
    completed = [t for t in tasks if t.state == "completed"]
    assert len(completed) >= 2, [(t.id, t.state) for t in tasks]
    escrows = [exchange.escrows.by_id[t.escrow_id or ""] for t in completed]
    assert all(e.state == "released" and e.fee_micro > 0 for e in escrows)
    assert exchange.ledger.book.balance("@fees") > 0
    # Every winner was paid: its balance is above the opening 10,000 tokens.
    for task in completed:
        assert task.winner is not None
        assert exchange.ledger.book.balance(task.winner) > 10_000 * 1_000_000
