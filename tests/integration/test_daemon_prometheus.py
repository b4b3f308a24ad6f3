"""The Prometheus endpoint serves the ledger's and the bus's counters in the text format, and they
move with the commands applied."""

from pathlib import Path

import anyio
import pytest
from daemon_support import client_for, running_exchange

pytestmark = pytest.mark.anyio


async def _scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
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
        assert 'exchange_swarm_metric_status{name="earnings_gini",status="no_data"} 1' in body
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
