"""The Prometheus endpoint serves the ledger's and the bus's counters, latency histograms, refusals
by code, spend by agent and model, build and process metrics, and they move with the commands
applied: each test scrapes a real exchange over HTTP. The Grafana dashboard names only metrics a
real scrape has."""

import json
import re
from pathlib import Path

import anyio
import pytest
from daemon_support import client_for, running_exchange

from exchange.daemon.prometheus import LATENCY_BUCKETS_S

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "exchange.json"


async def _scrape(port: int, path: str = "/metrics", method: str = "GET") -> tuple[str, str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        with anyio.fail_after(5):
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def _sample(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the scrape")


async def test_metrics_endpoint_counts_commands_and_balances(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x", metrics_port=0) as handle:
        assert handle.metrics_port is not None
        status, body = await _scrape(handle.metrics_port)
        assert status == "HTTP/1.1 200 OK"
        assert "# TYPE exchange_commands_applied_total counter" in body
        before = _sample(body, "exchange_commands_applied_total")
        assert _sample(body, "exchange_agents") == 6
        async with client_for(handle) as admin:
            reply = await admin.command_envelope(
                "zero", "transfer", {"to": "builder", "amount": "2.5"}
            )
            assert reply.ok
        _, body = await _scrape(handle.metrics_port)
        assert _sample(body, "exchange_commands_applied_total") == before + 1
        assert _sample(body, 'exchange_balance_tokens{account="zero"}') == 9997.5
        assert 'exchange_swarm_metric_status{name="earnings_gini",status="no_data"} 1.0' in body
        status, _ = await _scrape(handle.metrics_port, "/other")
        assert status == "HTTP/1.1 404 Not Found"


async def test_a_heartbeat_is_recorded_quietly_and_not_journaled(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x", metrics_port=0) as handle:
        assert handle.metrics_port is not None
        _, body = await _scrape(handle.metrics_port)
        before = _sample(body, "exchange_commands_applied_total")
        assert "exchange_agent_heartbeat_age_seconds{" not in body
        async with client_for(handle) as admin:
            beat = b'{"role": "scout", "capabilities": ["analyze"], "at_ms": 1}'
            # With a reply inbox: answered ok. Without one (as workers send it): nothing to say,
            # but recorded all the same; the request that follows is answered after it.
            reply = await admin.request_envelope("exchange.cmd.claude.heartbeat", beat)
            assert reply.ok, reply
            await admin.nc.publish("exchange.cmd.spark.heartbeat", b"{}")
            bad = await admin.request_envelope("exchange.cmd.zero.heartbeat", b'{"at_ms": -1}')
            assert bad.error is not None and bad.error.code == "invalid_message"
            assert (await admin.query_envelope("status")).ok
        _, body = await _scrape(handle.metrics_port)
        ages = {
            line.split("{")[1].split("}")[0]: float(line.split()[-1])
            for line in body.splitlines()
            if line.startswith("exchange_agent_heartbeat_age_seconds{")
        }
        assert set(ages) == {'agent="claude",role="scout"', 'agent="spark",role=""'}
        assert all(0 <= age < 60 for age in ages.values())
        # Not a command: nothing applied, nothing journaled.
        assert _sample(body, "exchange_commands_applied_total") == before


def _names(body: str) -> set[str]:
    """The sample names of a scrape (``name{labels} value`` or ``name value``)."""
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


async def test_latency_refusals_spend_build_and_process_metrics(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x", metrics_port=0) as handle:
        assert handle.metrics_port is not None
        async with client_for(handle) as admin:
            refused = await admin.command_envelope(
                "zero", "transfer", {"to": "builder", "amount": "99999"}
            )
            assert refused.error is not None
            code = refused.error.code
            spent = await admin.command_envelope(
                "zero", "llm", {"task_type": "code", "tokens": 1000}
            )
            assert spent.ok, spent
            held = await admin.command_envelope(
                "claude", "llm.authorize", {"task_type": "code", "tokens": 1000}
            )
            assert held.ok, held
            settled = await admin.command_envelope(
                "admin",
                "llm.settle",
                {"authorization_id": held.result["authorization_id"], "tokens": 500},
            )
            assert settled.ok, settled
        status, body = await _scrape(handle.metrics_port)
        assert status == "HTTP/1.1 200 OK"
        assert "# TYPE exchange_endpoint_latency_seconds histogram" in body
        # Every endpoint has its buckets, from the start; the commands' count all four.
        for endpoint in ("commands", "queries", "swarm_signal"):
            for le in (*LATENCY_BUCKETS_S, "+Inf"):
                bucket = (
                    f'exchange_endpoint_latency_seconds_bucket{{endpoint="{endpoint}",le="{le}"}}'
                )
                assert bucket + " " in body, bucket
        commands = 'endpoint="commands"'
        assert (
            _sample(body, f'exchange_endpoint_latency_seconds_bucket{{{commands},le="+Inf"}}') == 4
        )
        assert _sample(body, f"exchange_endpoint_latency_seconds_count{{{commands}}}") == 4
        assert _sample(body, f'exchange_refusals_total{{code="{code}",{commands}}}') == 1
        assert _sample(body, f"exchange_endpoint_errors_total{{{commands}}}") == 1
        assert _sample(body, 'exchange_llm_spent_tokens_total{agent="zero",model="llama3.2"}') > 0
        claude = [
            n
            for n in body.splitlines()
            if n.startswith('exchange_llm_spent_tokens_total{agent="claude"')
        ]
        assert len(claude) == 1 and float(claude[0].split()[-1]) > 0, claude
        assert _sample(body, 'exchange_agent_spent_tokens_total{agent="zero"}') > 0
        assert re.search(r'^exchange_build_info\{.*version="[^"]+".*\} 1\.0$', body, re.M)
        assert _sample(body, "process_resident_memory_bytes") > 0
        assert _sample(body, "process_cpu_seconds_total") > 0
        assert "exchange_open_task_bids" in _names(body)


async def test_head_and_query_strings(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x", metrics_port=0) as handle:
        assert handle.metrics_port is not None
        async with await anyio.connect_tcp("127.0.0.1", handle.metrics_port) as stream:
            await stream.send(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            with anyio.fail_after(5):
                while True:
                    try:
                        data += await stream.receive()
                    except anyio.EndOfStream:
                        break
        head, _, body = data.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200 OK\r\n"), head
        assert "Content-Type: text/plain" in head
        length = int(head.split("Content-Length: ")[1].split("\r\n")[0])
        assert length > 0 and body == ""
        status, body = await _scrape(
            handle.metrics_port, "/metrics?name[]=exchange_agents&name[]=process_open_fds"
        )
        assert status == "HTTP/1.1 200 OK"
        assert _names(body) == {"exchange_agents", "process_open_fds"}
        status, body = await _scrape(handle.metrics_port, "/metrics?unknown=1")
        assert status == "HTTP/1.1 200 OK" and "exchange_agents 6.0" in body


async def test_the_dashboard_names_only_metrics_the_exchange_exports(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    assert len(exprs) > 20
    named = {
        name
        for expr in exprs
        for name in re.findall(r"\b((?:exchange|process|python)_[a-z0-9_]+)\b", expr)
    }
    async with running_exchange(tmp_path / "x", metrics_port=0) as handle:
        assert handle.metrics_port is not None
        async with client_for(handle) as admin:
            # A refusal and a payment, so the families that start empty have a sample.
            refused = await admin.command_envelope("zero", "transfer", {"to": "x", "amount": "1"})
            assert not refused.ok
            spent = await admin.command_envelope("zero", "llm", {"task_type": "code", "tokens": 1})
            assert spent.ok, spent
        _, body = await _scrape(handle.metrics_port)
    scraped = _names(body) | {
        line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")
    }
    assert named <= scraped, sorted(named - scraped)
