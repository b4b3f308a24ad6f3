"""The market through a real nats-server and a secure exchange: bidders are bare nats-py clients
sending raw JSON on swarm subjects with their own credentials, the manager and the voters use the
CLI, a signal from a bare client reaches the history and the pheromone map, and the protocol
guide's two examples run as written."""

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from daemon_support import client_for, run_cli, running_exchange

from protocols.client import connect_options, flush_commands
from protocols.credentials import Credentials

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 10.0


async def _bare(creds: Credentials) -> nats.NATS:
    """A plain nats-py connection as an agent: its nkey seed and its own inbox prefix."""
    return await nats.connect(
        creds.url,
        **connect_options(creds),
        allow_reconnect=False,
    )


async def _request(nc: nats.NATS, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=WAIT_S)
    envelope: dict[str, Any] = json.loads(reply.data)
    return envelope


async def _cli(data: str, *argv: str) -> Any:
    result = await run_cli(*argv, "--data", data, "--json")
    assert result.status == 0, result
    return result.json()


async def test_auction_example_escrow_fee_referral_signal_and_vote(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        for agent, role, caps in (
            ("alice", "executor", ["analyze"]),
            ("bob", "executor", ["analyze"]),
            ("arb", "treasury", []),
        ):
            body = {
                "agent": agent,
                "base_rate": "100",
                "primary_llm": "llama3.2",
                "role": role,
                "capabilities": caps,
            }
            assert (await admin.command_envelope("admin", "agent.register", body)).ok
        alice = await _bare(handle.credentials("alice"))
        bob = await _bare(handle.credentials("bob"))
        awards = await admin.nc.subscribe("swarm.task.*.award")
        try:
            announced = await _cli(
                data, "task", "announce", "claude", "analyze", "BTC", "100",
                "--deadline-ms", "1000", "--bid-window-ms", "60000", "--referrer", "zero",
            )  # fmt: skip
            task_id = announced["task_id"]
            assert announced["held"] == "100" and announced["eligible"] == ["alice", "bob"]
            propose = f"swarm.task.{task_id}.propose"
            bid_a = {"cost": "50", "time_ms": 500, "confidence": 0.9}
            assert (await _request(alice, f"{propose}.alice", bid_a))["ok"] is True
            again = await _request(alice, f"{propose}.alice", {**bid_a, "cost": "40"})
            assert again["error"]["code"] == "duplicate_bid"
            over = await _request(
                bob, f"{propose}.bob", {"cost": "101", "time_ms": 1, "confidence": 1}
            )
            assert over["error"]["code"] == "bid_exceeds_max_cost"
            bid_b = {"cost": "30", "time_ms": 800, "confidence": 0.6}
            assert (await _request(bob, f"{propose}.bob", bid_b))["ok"] is True
            # Both capable agents answered: the window closes at once, long before its 60 s.
            with anyio.fail_after(WAIT_S):
                award = json.loads((await awards.next_msg(timeout=WAIT_S)).data)
            assert award["winner"] == "alice" and award["cost"] == "50"
            assert {b["bidder"]: b["score"] for b in award["bids"]} == {
                "alice": "0.62",
                "bob": "0.52",
            }
            late = await _request(bob, f"swarm.task.{task_id}.refuse.bob", {})
            assert late["error"]["code"] == "bid_window_closed"
            inform = await _request(
                alice, f"swarm.task.{task_id}.inform.alice", {"output": {"fill": "101.5"}}
            )
            assert inform["ok"] is True
            verified = await _cli(data, "task", "verify", "claude", task_id, "0.8")
            assert verified["state"] == "completed" and verified["escrow_state"] == "released"
            balances = {
                a: (await _cli(data, "balance", a))["balance"] for a in ("alice", "zero", "claude")
            }
            # 50 locked: alice 99% = 49.5; fee 0.5 of which 15% = 0.075 to the referrer.
            assert balances == {"alice": "10049.5", "zero": "10000.075", "claude": "9950"}
            tasks = await _cli(data, "tasks")
            assert [(t["task_id"], t["state"]) for t in tasks["tasks"]] == [(task_id, "completed")]

            # A signal from a bare client, raw JSON: recorded and deposited in the pheromone map.
            signal = {"confidence": 0.8, "direction": "long", "metadata": {"scanner": "mom"}}
            await alice.publish("swarm.signal.alice.opportunity.ETH", json.dumps(signal).encode())
            await flush_commands(alice)
            recent = await _cli(data, "signals", "recent")
            assert recent["signals"][0]["asset"] == "ETH"
            assert recent["signals"][0]["sender"] == "alice"
            top = await _cli(data, "pheromones", "top", "3")
            assert top["pheromones"] == [{"key": "ETH:long:mom", "strength": 0.8}]

            # Exactly two of three equal weights is a supermajority (the seed's 0.667 was not).
            # (alice is left out: her completed task raised her weight to 1.05.)
            proposal = await _cli(
                data, "vote", "propose", "admin", "raise opus", "--kind", "supermajority",
                "--eligible", "bob,zero,arb",
            )  # fmt: skip
            pid = proposal["proposal_id"]
            for voter, choice in (("bob", "yes"), ("zero", "yes"), ("arb", "no")):
                await _cli(data, "vote", "cast", voter, pid, choice)
            tally = (await _cli(data, "vote", "show", pid))["tally"]
            assert tally["outcome"] == "approved" and tally["yes_share"] == "0.666667"
            metrics = {m["name"]: m for m in (await _cli(data, "metrics"))["metrics"]}
            assert metrics["task_success_rate"]["value"] == 1.0
            assert metrics["task_success_rate"]["status"] == "ok"
        finally:
            await awards.unsubscribe()
            await alice.close()
            await bob.close()


async def test_the_guide_examples_run_as_written(tmp_path: Path) -> None:
    # The bare TCP client has no Ed25519 library: it is the client --passwords is for.
    async with running_exchange(tmp_path / "p", passwords=True) as handle:
        creds = handle.credentials("zero")
        assert creds.user and creds.password
        host, port = creds.url.removeprefix("nats://").split(":")
        args = [host, port, "zero", "builder", "1.5", creds.user, creds.password]
        done = await anyio.run_process(
            [sys.executable, str(ROOT / "examples" / "bare_tcp_transfer.py"), *args], check=False
        )
        reply = json.loads(done.stdout)
        assert reply["ok"] is True and reply["result"]["balance"] == "9998.5", done
    async with running_exchange(tmp_path / "x") as handle:
        assert handle.credentials("zero").nkey_seed
        creds_file = handle.data_dir / "creds" / "zero.json"
        done = await anyio.run_process(
            [
                sys.executable,
                str(ROOT / "examples" / "publish_signal.py"),
                "--creds",
                str(creds_file),
            ],
            check=False,
        )
        assert done.returncode == 0, done.stderr
        signals_reply, pheromones_reply = (json.loads(line) for line in done.stdout.splitlines())
        assert signals_reply["result"]["signals"][0]["sender"] == "zero"
        assert pheromones_reply["result"]["pheromones"][0]["key"] == "BTC:long:momentum_v2"


def test_the_examples_use_no_project_code() -> None:
    # The examples must not import the project: they are what a stranger's client looks like.
    for name in ("bare_tcp_transfer.py", "publish_signal.py"):
        text = (ROOT / "examples" / name).read_text(encoding="utf-8")
        assert "import exchange" not in text and "from exchange" not in text
        assert "from protocols" not in text
