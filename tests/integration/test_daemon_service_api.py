"""The NATS service API's conventions as an agent meets them in secure mode: it may ask
``$SRV.PING/INFO/STATS`` (and nothing else under ``$SRV``), a refusal's reply carries the
``Nats-Service-Error`` headers beside its unchanged JSON body, and STATS shows it as
``last_error``. Method: a real exchange and nats-server; the agent connects with its own
credentials; every wait is for a reply or a server error, under fail_after.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from daemon_support import client_for, running_exchange
from nats.aio.client import Client
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

from exchange.daemon.app import ExchangeHandle
from protocols import subjects
from protocols.client import connect_options

pytestmark = pytest.mark.anyio

WAIT_S = 10.0


class ServerErrors:
    """The errors the server sends one connection (a permissions violation is one each)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._changed = anyio.Event()

    async def record(self, error: Exception) -> None:
        self.messages.append(str(error))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_count(self, count: int) -> None:
        while len(self.messages) < count:
            await self._changed.wait()


@asynccontextmanager
async def agent_connection(
    handle: ExchangeHandle, agent: str, errors: ServerErrors
) -> AsyncIterator[Client]:
    creds = handle.credentials(agent)
    nc = await nats.connect(
        creds.url,
        **connect_options(creds),
        allow_reconnect=False,
        error_cb=errors.record,
    )
    try:
        yield nc
    finally:
        await nc.close()


async def _request(nc: Client, subject: str, body: Any = b"") -> Any:
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return await nc.request(subject, data, timeout=WAIT_S)


async def _request_json(nc: Client, subject: str) -> Any:
    return msgspec.json.decode((await _request(nc, subject)).data)


def _endpoint(stats: ServiceStats, name: str) -> Any:
    return next(e for e in stats.endpoints if e.name == name)


async def test_an_agent_may_ask_the_service_api_and_nothing_else_under_srv(
    tmp_path: Path,
) -> None:
    errors = ServerErrors()
    async with (
        running_exchange(tmp_path / "x") as handle,
        agent_connection(handle, "claude", errors) as claude,
    ):
        service_id = handle.service_id
        for suffix in ("", ".exchange", f".exchange.{service_id}"):
            ping = ServicePing.from_dict(await _request_json(claude, f"$SRV.PING{suffix}"))
            assert (ping.name, ping.id) == ("exchange", service_id)
            info = ServiceInfo.from_dict(await _request_json(claude, f"$SRV.INFO{suffix}"))
            assert "exchange.cmd.>" in {e.subject for e in info.endpoints}
            stats = ServiceStats.from_dict(await _request_json(claude, f"$SRV.STATS{suffix}"))
            assert _endpoint(stats, "commands").num_requests == 0
        assert errors.messages == []

        forbidden = (
            "$SRV.PING.other",
            "$SRV.RESET.exchange",
            f"$SRV.STATS.exchange.{service_id}.x",
        )
        for subject in forbidden:
            await claude.publish(subject, b"", reply=claude.new_inbox())
        with anyio.fail_after(WAIT_S):
            await errors.wait_count(len(forbidden))
        for subject in forbidden:
            assert any(
                "permissions violation" in e.lower() and subject.lower() in e.lower()
                for e in errors.messages
            ), (subject, errors.messages)


async def test_a_refusal_carries_the_error_headers_and_shows_in_stats(tmp_path: Path) -> None:
    errors = ServerErrors()
    async with (
        running_exchange(tmp_path / "x") as handle,
        agent_connection(handle, "claude", errors) as claude,
        client_for(handle) as admin,
    ):
        paid = await _request(
            claude,
            subjects.command("claude", "transfer"),
            {"request_id": "t1", "to": "zero", "amount": "1"},
        )
        assert msgspec.json.decode(paid.data)["ok"] is True
        assert not paid.headers  # A success reply is its body alone.

        refused = await _request(
            claude,
            subjects.command("claude", "transfer"),
            {"request_id": "t2", "to": "zero", "amount": "99999"},
        )
        body = msgspec.json.decode(refused.data)
        assert body["ok"] is False and set(body) == {"ok", "error"}
        error = body["error"]
        assert refused.headers == {
            "Nats-Service-Error": error["message"],
            "Nats-Service-Error-Code": "400",
        }

        malformed = await _request(claude, subjects.query("balance"), b'{"agent": 3}')
        wire_error = msgspec.json.decode(malformed.data)["error"]
        assert wire_error["code"] == "invalid_message"
        assert malformed.headers is not None
        assert malformed.headers["Nats-Service-Error"] == wire_error["message"]
        assert malformed.headers["Nats-Service-Error-Code"] == "400"

        stats = ServiceStats.from_dict(await _request_json(admin.nc, "$SRV.STATS.exchange"))
        commands, queries = _endpoint(stats, "commands"), _endpoint(stats, "queries")
        assert (commands.num_requests, commands.num_errors) == (2, 1)
        assert commands.last_error == f"{error['code']}: {error['message']}"
        assert (queries.num_requests, queries.num_errors) == (1, 1)
        assert queries.last_error == f"invalid_message: {wire_error['message']}"
        assert errors.messages == []
