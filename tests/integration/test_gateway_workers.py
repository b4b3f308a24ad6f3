"""``exchange gateway serve --workers N`` as real processes: a supervisor and N workers sharing
one port (SO_REUSEPORT), in front of the fake upstream, metering on a real secure exchange.

Checked: requests over many connections are all answered and the ledger charges exactly their
reported usage once the gateway stops (each worker settles its own quotas); a worker that dies
stops the set with its status; a killed supervisor leaves no worker behind.
"""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import Process
from daemon_support import client_for, running_exchange, wait_exited

from exchange.core.metering import metered_cost_micro
from exchange.gateway.fake_upstream import fake_upstream_process
from exchange.gateway.keys import issue_key, keys_path
from protocols.client import ExchangeClient

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads on Linux"
    ),
]

CONFIG = "[models]\ngpt-x = { input = 2.5, output = 10 }\n"
PRICE_IN, PRICE_OUT = 2_500_000, 10_000_000  # micro-tokens per 1,000
WORKERS = 2
CONNECTIONS = 16
REQUESTS = 64
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Served:
    supervisor: Process
    url: str
    workers: list[int]
    key: str
    admin: ExchangeClient


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@asynccontextmanager
async def _served(tmp_path: Path) -> AsyncIterator[Served]:
    async with (
        running_exchange(tmp_path, config_text=CONFIG) as handle,
        client_for(handle) as admin,
        fake_upstream_process(start_timeout_s=START_TIMEOUT_S) as upstream,
    ):
        command = [sys.executable, "-m", "exchange.cli.main", "gateway", "serve"]
        command += ["--data", str(tmp_path), "--upstream", upstream, "--port", "0"]
        command += ["--workers", str(WORKERS)]
        async with await anyio.open_process(command, stderr=None) as supervisor:
            try:
                assert supervisor.stdout is not None
                line = b""
                with anyio.fail_after(START_TIMEOUT_S):
                    while not line.endswith(b"\n"):
                        line += await supervisor.stdout.receive(1)
                assert line.startswith(b"gateway at ") and b"2 workers" in line, line
                workers = _children(supervisor.pid)
                assert len(workers) == WORKERS, workers
                key = issue_key(keys_path(tmp_path), "zero")[0]
                yield Served(supervisor, line.split()[2].decode(), workers, key, admin)
            finally:
                if supervisor.returncode is None:
                    supervisor.kill()
                with anyio.CancelScope(shield=True):
                    await supervisor.wait()


async def _balance(admin: ExchangeClient, agent: str) -> Decimal:
    envelope = await admin.query_envelope("balance", {"agent": agent})
    assert envelope.ok, envelope
    return Decimal(envelope.result["balance"])


async def test_the_workers_answer_every_connection_and_charge_exactly_the_usage(
    tmp_path: Path,
) -> None:
    async with _served(tmp_path) as served:
        # Limits out of the way: this test is about the workers sharing the load and each
        # settling its quotas. (Under the default hourly limit, two workers' quotas held at their
        # worst case can fill the window between them and one refuses: docs/gateway.md, How
        # limits apply; the limits themselves are test_gateway.py's.)
        generous = {"burst": "100000", "hourly": "1000000", "daily": "1000000"}
        limits = await served.admin.command_envelope(
            "admin", "limits.set", {"agent": "zero", "limits": generous, "rates": {}}
        )
        assert limits.ok, limits
        before = await _balance(served.admin, "zero")
        pool = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        headers = {"authorization": f"Bearer {served.key}"}
        async with httpx.AsyncClient(limits=pool, headers=headers, timeout=30) as http:

            async def ask(index: int) -> httpx.Response:
                body = {"model": "gpt-x", "messages": [{"role": "user", "content": f"q {index}"}]}
                return await http.post(f"{served.url}/chat/completions", json=body)

            replies = await asyncio.gather(*(ask(i) for i in range(REQUESTS)))
        refused = [r.text for r in replies if r.status_code != 200]
        assert refused == [], refused
        usages = [r.json()["usage"] for r in replies]
        charged_micro = sum(
            metered_cost_micro(PRICE_IN, PRICE_OUT, u["prompt_tokens"], u["completion_tokens"])
            for u in usages
        )
        # A clean stop: every worker finishes, settles its quotas and exits 0.
        served.supervisor.send_signal(signal.SIGTERM)
        with anyio.fail_after(STOP_TIMEOUT_S):
            assert await served.supervisor.wait() == 0
            for pid in served.workers:
                await wait_exited(pid)
        status = await served.admin.query_envelope("status")
        assert status.ok and status.result["open_holds"] == 0, status
        assert await _balance(served.admin, "zero") == before - Decimal(charged_micro).scaleb(-6)


async def test_a_worker_that_dies_stops_the_set_with_its_status(tmp_path: Path) -> None:
    async with _served(tmp_path) as served:
        dead, other = served.workers
        os.kill(dead, signal.SIGKILL)
        with anyio.fail_after(STOP_TIMEOUT_S):
            status = await served.supervisor.wait()
            await wait_exited(other)
        assert status == 128 + signal.SIGKILL, status


async def test_a_killed_supervisor_leaves_no_worker_behind(tmp_path: Path) -> None:
    async with _served(tmp_path) as served:
        served.supervisor.kill()
        with anyio.fail_after(STOP_TIMEOUT_S):
            await served.supervisor.wait()
            for pid in served.workers:
                await wait_exited(pid)
