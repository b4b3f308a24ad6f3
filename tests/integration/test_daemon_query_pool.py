"""Stateless queries (``shapley``) run off the writer, within bounds: beyond the size bounds they
are refused at once, beyond the time bound their process is killed, a full pool answers
``overloaded``, no query process outlives the exchange, and transfers keep their latency while
queries run.
Method: a real exchange (``running_exchange``, its own nats-server), requests from nats-py clients,
the query processes observed through /proc (children of this process running the worker module).
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from daemon_support import client_for, running_exchange

from exchange.core.stateless_queries import SHAPLEY_QUERY_SAMPLED_WORK_MAX
from exchange.daemon.app import ExchangeHandle
from protocols.client import ExchangeClient

pytestmark = pytest.mark.anyio

SHAPLEY = "exchange.query.shapley"
AGENTS = ("claude", "builder", "lambda", "spark", "observer", "zero")
# Generous: a loaded 2-core CI machine, not the expected time (a few ms here). What shows the
# refusal came at the wire is that no query process started, not this bound.
REFUSAL_TIMEOUT_S = 10.0
QUERY_TIMEOUT_S = 30.0


def _shapley_body(players: int, permutations: int, synergies: int = 0) -> bytes:
    names = [f"p{index:05d}" for index in range(players)]
    terms = [
        {"members": [names[index], names[(index + 1) % players]], "bonus": 1.0}
        for index in range(synergies)
    ]
    values = {name: float(index % 7) for index, name in enumerate(names)}
    game = {"values": values, "synergies": terms}
    return json.dumps({"game": game, "permutations": permutations, "seed": 1}).encode()


# The issue's query: 1,800 players, 100,000 permutations, ~30 KB (5-6 s on the writer before).
HUGE = _shapley_body(1_800, 100_000, synergies=100)
# The most work a query may ask for: 500 players x 20,000 permutations (~0.3 s of one core here).
AT_BOUND = _shapley_body(500, SHAPLEY_QUERY_SAMPLED_WORK_MAX // 500)
SMALL = _shapley_body(30, 200)


def query_processes() -> list[int]:
    """The pids of this process's children that run the query worker (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # It exited while we looked.
        parent_pid = int(stat.rsplit(")", 1)[1].split()[1])
        if parent_pid == os.getpid() and b"exchange.daemon.query_worker" in cmdline:
            found.append(int(entry.name))
    return found


async def _ask(client: ExchangeClient, body: bytes, timeout_s: float = QUERY_TIMEOUT_S) -> Any:
    msg = await client.nc.request(SHAPLEY, body, timeout=timeout_s)
    return msgspec.json.decode(msg.data)


async def test_the_issue_s_huge_query_is_refused_at_once(tmp_path: Path) -> None:
    assert len(HUGE) > 30_000
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        with anyio.fail_after(REFUSAL_TIMEOUT_S):
            envelope = await _ask(admin, HUGE)
        assert envelope["ok"] is False
        assert envelope["error"]["code"] == "query_too_large"
        assert "at most 10000000" in envelope["error"]["message"]
        # Refused at the wire: no query process was even started for it.
        assert query_processes() == []
        good = await admin.command_envelope("claude", "transfer", {"to": "zero", "amount": "1"})
        assert good.ok, good


async def test_a_query_over_the_time_bound_is_stopped_and_its_process_killed(
    tmp_path: Path,
) -> None:
    # Within the size bounds, but ~0.3 s of work against a 20 ms bound (a process's start, which
    # takes longer, is not counted against it).
    async with (
        running_exchange(tmp_path / "x", query_time_s_max=0.02) as handle,
        client_for(handle) as admin,
    ):
        msg = await admin.nc.request(SHAPLEY, AT_BOUND, timeout=QUERY_TIMEOUT_S)
        envelope = msgspec.json.decode(msg.data)
        assert envelope["ok"] is False
        assert envelope["error"]["code"] == "query_timed_out"
        assert "0.02 s" in envelope["error"]["message"]
        # The service API's error headers, with the pool's own code for a timeout.
        assert msg.headers == {
            "Nats-Service-Error": envelope["error"]["message"],
            "Nats-Service-Error-Code": "504",
        }
        # Killed and reaped before the reply left: it burns no core afterwards.
        assert query_processes() == []
        # The next query gets a new process, and an answer.
        small = await _ask(admin, SMALL)
        assert small["ok"] is True, small
        assert len(query_processes()) == 1
    # A clean stop closes the pool: its process is gone once the exchange has stopped.
    assert query_processes() == []


async def test_a_full_pool_answers_overloaded(tmp_path: Path) -> None:
    async with (
        running_exchange(tmp_path / "x", query_processes_max=1, query_queue_size_max=0) as handle,
        client_for(handle) as admin,
    ):
        envelopes: list[Any] = []

        async def ask() -> None:
            envelopes.append(await _ask(admin, AT_BOUND))

        # Both are sent before the first can be answered (it needs a process start, then ~0.3 s).
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            tg.start_soon(ask)
        codes = sorted("ok" if e["ok"] else e["error"]["code"] for e in envelopes)
        assert codes == ["ok", "overloaded"], envelopes


# Several clients, a few hundred transfers a phase.
TRANSFER_CLIENTS = 4
TRANSFERS_PER_CLIENT = 150
# Shapley queries kept in flight during the loaded phase: the query process never idles.
SHAPLEY_IN_FLIGHT = 2
# The issue asks for p99 within 2x of idle; on 2 shared, noisy cores a test allows 5x plus a
# floor, and bench/query_isolation.py measures the real ratio. The floor is wide because the
# daemon, the clients and the query process share two cores here (a fresh clone's CI run once
# saw 52 ms against a 3.4 ms idle p99), and still far below what the test exists to catch: with
# the queries answered on the writer, the loaded p99 was 470-707 ms (a query at the bound holds
# one core for 0.2-0.3 s).
P99_RATIO_MAX = 5.0
P99_FLOOR_S = 0.120


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _transfer_latencies(clients: list[ExchangeClient]) -> list[float]:
    latencies: list[float] = []

    async def transfers(index: int, client: ExchangeClient) -> None:
        sender, recipient = AGENTS[index % len(AGENTS)], AGENTS[(index + 1) % len(AGENTS)]
        for _ in range(TRANSFERS_PER_CLIENT):
            started = time.perf_counter()
            reply = await client.command_envelope(
                sender, "transfer", {"to": recipient, "amount": "0.000001"}
            )
            latencies.append(time.perf_counter() - started)
            assert reply.ok, reply

    async with anyio.create_task_group() as tg:
        for index, client in enumerate(clients):
            tg.start_soon(transfers, index, client)
    return latencies


async def _measure(handle: ExchangeHandle) -> tuple[float, float, int]:
    """Transfers' p99 idle, then p99 while Shapley queries keep the query process busy."""
    async with (
        client_for(handle) as c1,
        client_for(handle) as c2,
        client_for(handle) as c3,
        client_for(handle) as c4,
        client_for(handle) as asker,
    ):
        clients = [c1, c2, c3, c4][:TRANSFER_CLIENTS]
        # Warm: connections, the journal's pages, and the query process (started, numpy loaded).
        await _transfer_latencies(clients)
        assert (await _ask(asker, SMALL))["ok"] is True
        idle_p99 = _p99(await _transfer_latencies(clients))
        answered = 0
        done = anyio.Event()

        async def load() -> None:
            nonlocal answered
            while not done.is_set():
                envelope = await _ask(asker, AT_BOUND)
                assert envelope["ok"] is True, envelope["error"]
                answered += 1

        async with anyio.create_task_group() as tg:
            for _ in range(SHAPLEY_IN_FLIGHT):
                tg.start_soon(load)
            loaded_p99 = _p99(await _transfer_latencies(clients))
            done.set()
        return idle_p99, loaded_p99, answered


async def test_transfers_keep_their_p99_while_shapley_queries_run(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle:
        idle_p99, loaded_p99, answered = await _measure(handle)
    # The load was real: queries were computed while the transfers ran.
    assert answered >= 1
    bound_s = P99_RATIO_MAX * idle_p99 + P99_FLOOR_S
    assert loaded_p99 <= bound_s, (
        f"p99 {loaded_p99 * 1000:.1f} ms with Shapley load, {idle_p99 * 1000:.1f} ms idle "
        f"(bound {bound_s * 1000:.1f} ms)"
    )


async def test_a_cancelled_exchange_leaves_no_query_process_behind(tmp_path: Path) -> None:
    # A drain bound too short for the query in progress: the stop cancels the pool mid-query.
    async with (
        running_exchange(tmp_path / "x", drain_timeout_s=0.001) as handle,
        client_for(handle) as admin,
    ):
        assert (await _ask(admin, SMALL))["ok"] is True
        assert len(query_processes()) == 1
        await admin.nc.publish(SHAPLEY, AT_BOUND, reply="_INBOX.nobody")
        # Same subscription, handled in order: once this is answered, the query is in the pool.
        assert (await admin.query_envelope("status")).ok
    assert query_processes() == []
