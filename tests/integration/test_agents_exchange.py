"""End to end against the real exchange daemon (secure mode, its own nats-server): agents are
registered through admin and connect with the credentials files the exchange writes; a scout's
signal becomes a Contract Net auction that two executors bid on, the winner's paper trade is
verified and its escrow released; with a deliberate dispute, an arbiter resolves it; the analyst
pays for its report. Every wait is for a message under fail_after.
"""

import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from daemon_support import client_for, running_exchange
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from agents.config import RuntimeConfig, load_credentials
from agents.roles.analyst import AnalystOptions, AnalystWorker, SimulatedModel
from agents.roles.executor import ExecutorProfile, ExecutorWorker
from agents.roles.risk import RiskOptions, RiskWorker
from agents.roles.scout import ScoutOptions, ScoutWorker
from agents.roles.treasury import AnnounceSettings, TreasuryOptions, TreasuryWorker
from agents.runtime import Worker, WorkerContext, run_worker
from exchange.daemon.app import ExchangeHandle
from protocols import subjects
from protocols.client import ExchangeClient, connect_options
from protocols.swarm import PriceUpdate, TaskAward, TaskClosed

pytestmark = pytest.mark.anyio

WAIT_S = 30.0
_encoder = msgspec.json.Encoder()

ROSTER = {
    "treasury": {"role": "treasury", "capabilities": []},
    "arbiter": {"role": "treasury", "capabilities": []},
    "exec-a": {"role": "executor", "capabilities": ["execute"]},
    "exec-b": {"role": "executor", "capabilities": ["execute"]},
    "scout-1": {"role": "scout", "capabilities": []},
    "risk": {"role": "risk", "capabilities": []},
    "analyst": {"role": "analyst", "capabilities": []},
}


async def _register(admin: ExchangeClient) -> None:
    for agent, fields in ROSTER.items():
        body = {"agent": agent, "base_rate": "100", "primary_llm": "llama3.2", **fields}
        reply = await admin.command_envelope("admin", "agent.register", body)
        assert reply.ok, reply


def _config(handle: ExchangeHandle, agent: str, role: str) -> RuntimeConfig:
    return RuntimeConfig(
        agent_id=agent,
        role=role,
        credentials=load_credentials(handle.data_dir / "creds" / f"{agent}.json"),
        request_timeout_ms=5_000,
    )


@asynccontextmanager
async def swarm(handle: ExchangeHandle, workers: dict[str, Worker]) -> AsyncIterator[None]:
    """Every worker running (ready) for the block, then stopped gracefully."""
    async with anyio.create_task_group() as tg:
        contexts: list[WorkerContext] = []
        for agent, worker in workers.items():
            config = _config(handle, agent, ROSTER[agent]["role"])  # type: ignore[arg-type]
            contexts.append(await tg.start(partial(run_worker, config, worker)))
        try:
            yield
        finally:
            for ctx in contexts:
                ctx.request_stop()


def _treasury(**changes: Any) -> TreasuryWorker:
    options = TreasuryOptions(
        settings=AnnounceSettings(max_cost=Decimal(20), bid_window_ms=2_000, cooldown_ms=60_000),
        match_window_ms=60_000,
        **changes,
    )
    return TreasuryWorker(options)


def _executors() -> dict[str, Worker]:
    return {
        "exec-a": ExecutorWorker(
            ExecutorProfile(cost_fraction=0.5, time_ms=50, jitter=0.0), random.Random(1)
        ),
        "exec-b": ExecutorWorker(
            ExecutorProfile(cost_fraction=0.8, time_ms=100, jitter=0.0), random.Random(2)
        ),
    }


@asynccontextmanager
async def admin_nats(handle: ExchangeHandle) -> AsyncIterator[Client]:
    """A plain NATS connection as admin (who may publish prices, which agents may not)."""
    creds = handle.credentials("admin")
    client = await nats.connect(creds.url, **connect_options(creds), allow_reconnect=False)
    try:
        yield client
    finally:
        await client.close()


async def _publish_trend(admin_nc: Client) -> None:
    """Two BTC prices, 2% apart: the scout's window of two sees a strong long signal."""
    for price in ("50000", "51000"):
        update = PriceUpdate(asset="BTC", price=Decimal(price), at_ns=time.time_ns(), source="test")
        await admin_nc.publish(subjects.price("BTC"), _encoder.encode(update))


async def _next_json(subscription: Subscription) -> Any:
    msg = await subscription.next_msg(timeout=WAIT_S)
    return json.loads(msg.data)


# With TLS too: every worker connects through agents/runtime.py with its credentials file, which
# names the generated CA (tests/integration/test_daemon_tls.py has the refusals).
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_one_auction_completes_with_its_escrow_released(tmp_path: Path, tls: bool) -> None:
    with anyio.fail_after(2 * WAIT_S):
        async with (
            running_exchange(tmp_path / "x", tls_generate=tls) as handle,
            client_for(handle) as admin,
            admin_nats(handle) as nc,
            AsyncExitStack() as stack,
        ):
            await _register(admin)
            awards = await nc.subscribe(subjects.task_award("*"))
            closed = await nc.subscribe(subjects.task_closed("*"))
            reports = await nc.subscribe(subjects.event("analyst", "*"))
            workers: dict[str, Worker] = {
                "treasury": _treasury(),
                **_executors(),
                "scout-1": ScoutWorker(ScoutOptions(window_prices=2)),
                "risk": RiskWorker(RiskOptions()),
                "analyst": AnalystWorker(AnalystOptions(), SimulatedModel(random.Random(3))),
            }
            await stack.enter_async_context(swarm(handle, workers))
            await _publish_trend(nc)
            award = msgspec.json.decode(
                (await awards.next_msg(timeout=WAIT_S)).data, type=TaskAward
            )
            final = msgspec.json.decode(
                (await closed.next_msg(timeout=WAIT_S)).data, type=TaskClosed
            )
            # The analyst paid for its report on the award.
            while (event := await _next_json(reports))["verb"] != "llm.settle":
                pass
            task = await admin.query_envelope("task", {"task_id": award.task_id})
            executor_balance = await admin.query_envelope("balance", {"agent": "exec-a"})
    assert award.manager == "treasury"
    # exec-a bids 10 (half of 20) in 50 ms and beats exec-b's 16 in 100 ms.
    assert (award.winner, award.cost) == ("exec-a", "10")
    assert sorted(bid.bidder for bid in award.bids) == ["exec-a", "exec-b"]
    assert (final.task_id, final.state, final.winner) == (award.task_id, "completed", "exec-a")
    assert (final.paid, final.fee) == ("9.9", "0.1")
    assert task.result["escrow_state"] == "released"
    output = task.result["output"]
    assert (output["asset"], output["direction"], output["fill_price"]) == ("BTC", "long", "51000")
    # 1000 of notional at 51000, to six places.
    assert output["size"] == "0.019608"
    assert executor_balance.result["balance"] == "10009.9"
    assert event["sender"] == "analyst"
    assert handle.url.startswith("tls://" if tls else "nats://")


async def test_a_disputed_result_is_resolved_by_the_arbiter(tmp_path: Path) -> None:
    with anyio.fail_after(2 * WAIT_S):
        async with (
            running_exchange(tmp_path / "x") as handle,
            client_for(handle) as admin,
            admin_nats(handle) as nc,
            AsyncExitStack() as stack,
        ):
            await _register(admin)
            closed = await nc.subscribe(subjects.task_closed("*"))
            arbiter = TreasuryWorker(
                TreasuryOptions(
                    announce=False,
                    arbitrate=True,
                    arbitrate_interval_ms=100,
                    match_window_ms=60_000,
                )
            )
            workers: dict[str, Worker] = {
                "treasury": _treasury(dispute_nth=1),
                "arbiter": arbiter,
                **_executors(),
                "scout-1": ScoutWorker(ScoutOptions(window_prices=2)),
            }
            await stack.enter_async_context(swarm(handle, workers))
            await _publish_trend(nc)
            final = msgspec.json.decode(
                (await closed.next_msg(timeout=WAIT_S)).data, type=TaskClosed
            )
            escrow = await admin.query_envelope("tasks", {"state": "completed"})
    assert (final.state, final.reason) == ("completed", "released by arbitration")
    assert final.paid == "9.9"
    assert [t["task_id"] for t in escrow.result["tasks"]] == [final.task_id]
