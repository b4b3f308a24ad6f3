"""The dashboard in a real headless browser: a secure exchange on a real nats-server, the
dashboard fed from it as admin, Debian's chromium driven by playwright. Agents register, an
auction runs with bids from bare agent connections, one refused; the page must show each step as
it happens (the agents, the call, each bid as it arrives, the refusal, the award with scores),
without a console error. Screenshots go to tests/artifacts/dashboard/.

Skipped, with the reason, when chromium or playwright is missing (``.ci/run`` installs chromium).
"""

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from daemon_support import client_for, running_exchange

from exchange.dashboard.cli import run_dashboard
from exchange.dashboard.server import bind
from protocols.client import connect_options

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "dashboard"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Generous: two noisy cores, a browser starting cold.
WAIT_MS = 20_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

playwright_api = pytest.importorskip(
    "playwright.async_api",
    reason="playwright is not installed: pip install -c constraints.txt -e '.[dev]'",
)
if CHROMIUM is None:
    pytest.skip(
        "no chromium on PATH: the dashboard's browser test needs Debian's chromium "
        "(apt-get install -y chromium; .ci/run installs it)",
        allow_module_level=True,
    )


async def _request(nc: nats.NATS, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=10.0)
    envelope: dict[str, Any] = json.loads(reply.data)
    return envelope


async def test_the_page_shows_agents_and_an_auction_as_it_happens(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with (
        running_exchange(tmp_path / "x") as handle,
        client_for(handle) as admin,
        anyio.create_task_group() as tg,
    ):
        for agent, role, caps in (
            ("alice", "executor", ["analyze"]),
            ("bob", "executor", ["analyze"]),
            ("boss", "treasury", []),
        ):
            body = {"agent": agent, "base_rate": "100", "primary_llm": "llama3.2", "role": role}
            envelope = await admin.command_envelope(
                "admin", "agent.register", {**body, "capabilities": caps}
            )
            assert envelope.ok, envelope
        url = await tg.start(run_dashboard, handle.credentials("admin"), bind("127.0.0.1", 0), 0.2)
        alice = await nats.connect(handle.url, **connect_options(handle.credentials("alice")))
        bob = await nats.connect(handle.url, **connect_options(handle.credentials("bob")))
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(url)
            for agent in ("alice", "bob", "boss"):
                await page.wait_for_selector(f'#agents tr[data-agent="{agent}"]', timeout=WAIT_MS)
            assert await page.text_content("#connection") == "live"

            announced = await admin.command_envelope(
                "boss",
                "task.announce",
                {
                    "task_type": "analyze",
                    "asset": "BTC",
                    "deadline_ms": 60_000,
                    "max_cost": "100",
                    "bid_window_ms": 60_000,
                },
            )
            assert announced.ok, announced
            task_id = announced.result["task_id"]
            card = f'.auction[data-task="{task_id}"]'
            await page.wait_for_selector(card, timeout=WAIT_MS)

            propose = f"swarm.task.{task_id}.propose"
            bid = {"cost": "50", "time_ms": 500, "confidence": 0.9}
            assert (await _request(alice, f"{propose}.alice", bid))["ok"] is True
            # The bid shows before the award: it is read off the bus as it arrives.
            await page.wait_for_selector(f'{card} tr.bid[data-bidder="alice"]', timeout=WAIT_MS)
            assert await page.get_attribute(card, "data-state") == "open"
            await page.screenshot(path=str(ARTIFACTS / "1-bid-arrived.png"), full_page=True)

            over = await _request(bob, f"{propose}.bob", {**bid, "cost": "101"})
            assert over["error"]["code"] == "bid_exceeds_max_cost"
            refusal = '#refusals li[data-code="bid_exceeds_max_cost"]'
            await page.wait_for_selector(refusal, timeout=WAIT_MS)
            assert "bob" in (await page.text_content(refusal) or "")
            # The refused bid is withdrawn from the card; alice's stays.
            assert await page.locator(f'{card} tr.bid[data-bidder="bob"]').count() == 0
            assert await page.locator(f'{card} tr.bid[data-bidder="alice"]').count() == 1

            fair = {"cost": "30", "time_ms": 800, "confidence": 0.6}
            assert (await _request(bob, f"{propose}.bob", fair))["ok"] is True
            # Both capable agents answered: the award comes at once, with scores and escrow.
            await page.wait_for_selector(f'{card}[data-state="awarded"]', timeout=WAIT_MS)
            await page.wait_for_selector(f"{card} .escrow[data-state]", timeout=WAIT_MS)
            winner = await page.text_content(f"{card} .winner")
            assert winner == "winner alice at 50", winner
            scores = await page.eval_on_selector_all(
                f"{card} tr.bid",
                "rows => rows.map(r => [r.dataset.bidder, r.cells[4].textContent])",
            )
            score_of = {bidder: float(score) for bidder, score in scores}
            assert sorted(score_of) == ["alice", "bob"] and score_of["alice"] > score_of["bob"]
            accepted = await page.get_attribute(f"{card} tr.bid.accepted", "data-bidder")
            assert accepted == "alice"
            # The pending posting (boss's hold) reaches the flows table too.
            await page.wait_for_selector("#flows td:text('@escrow')", timeout=WAIT_MS)
            await page.screenshot(path=str(ARTIFACTS / "2-awarded.png"), full_page=True)
            await browser.close()
        await alice.close()
        await bob.close()
        tg.cancel_scope.cancel()
    assert errors == [], errors
