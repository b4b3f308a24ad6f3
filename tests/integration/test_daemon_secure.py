"""Secure mode (the default) and open mode: per-agent credentials made by the exchange, the
server refusing an agent that publishes as another, registration reloading the server, and
open mode on loopback. Every wait is for a reply or a NATS error, under fail_after.
"""

import stat
from pathlib import Path

import anyio
import msgspec
import nats
import pytest
from daemon_support import client_for, running_exchange, status_of

from exchange.daemon.creds import nkey_public_key, read_credentials
from protocols.client import connect, connect_options

pytestmark = pytest.mark.anyio

WAIT_S = 10.0


async def test_credentials_are_private_files_for_admin_and_every_agent(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle:
        creds_dir = tmp_path / "x" / "creds"
        names = sorted(p.stem for p in creds_dir.glob("*.json"))
        assert names == sorted(
            [
                *("admin", "exchange", "gateway"),
                *("claude", "builder", "lambda", "spark", "observer", "zero"),
            ]
        )
        assert stat.S_IMODE(creds_dir.stat().st_mode) == 0o700
        for path in creds_dir.glob("*.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        zero = read_credentials(creds_dir / "zero.json")
        assert zero is not None
        assert (zero.url, zero.user, zero.inbox_prefix) == (handle.url, "zero", "_INBOX_zero")
        # nkeys by default: the file holds the seed, the server config only the public key.
        assert zero.password is None
        assert zero.nkey_seed is not None and zero.nkey_seed.startswith("SU")
        config = (tmp_path / "x" / "nats" / "nats-server.conf").read_text()
        assert "password" not in config
        assert zero.nkey_seed not in config
        assert f'nkey: "{nkey_public_key(zero.nkey_seed)}"' in config


async def test_an_agent_acts_as_itself_with_its_own_credentials(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle, "claude") as claude:
        reply = await claude.command_envelope("claude", "transfer", {"to": "zero", "amount": "2"})
        assert reply.ok, reply
        balance = await claude.query_envelope("balance", {"agent": "claude"})
        assert balance.result["balance"] == "9998"


async def test_publishing_a_command_as_another_agent_is_refused_by_the_server(
    tmp_path: Path,
) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        before = await status_of(admin)
        violations: list[str] = []
        seen = anyio.Event()

        async def on_error(error: Exception) -> None:
            violations.append(str(error))
            seen.set()

        creds = handle.credentials("claude")
        thief = await nats.connect(
            creds.url,
            **connect_options(creds),
            allow_reconnect=False,
            error_cb=on_error,
        )
        try:
            body = msgspec.json.encode({"request_id": "steal", "to": "claude", "amount": "500"})
            await thief.publish("exchange.cmd.zero.transfer", body, reply=thief.new_inbox())
            await thief.publish("exchange.cmd.admin.award", b"{}", reply=thief.new_inbox())
            with anyio.fail_after(WAIT_S):
                await seen.wait()
        finally:
            await thief.close()
        assert any("permissions violation" in v.lower() for v in violations), violations
        after = await status_of(admin)
        assert after["commands_applied"] == before["commands_applied"]
        assert after["digest"] == before["digest"]
        stats = msgspec.json.decode(
            (await admin.nc.request("$SRV.STATS.exchange", b"", timeout=WAIT_S)).data
        )
        commands = next(e for e in stats["endpoints"] if e["name"] == "commands")
        assert commands["num_requests"] == 0  # The exchange never saw the forged commands.


async def test_a_registered_agent_can_connect_at_once(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        reply = await admin.command_envelope(
            "admin",
            "agent.register",
            {"agent": "newbie", "base_rate": "80", "primary_llm": "llama3.2"},
        )
        assert reply.ok, reply
        path = tmp_path / "x" / "creds" / "newbie.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # The reply is sent after the server reloaded with the new user.
        async with connect(handle.credentials("newbie"), reconnect=False) as newbie:
            balance = await newbie.query_envelope("balance", {"agent": "newbie"})
            transfer = await newbie.command_envelope(
                "newbie", "transfer", {"to": "zero", "amount": "1"}
            )
        assert balance.result["balance"] == "10000"
        assert transfer.ok, transfer


async def test_passwords_when_asked_and_a_data_dir_from_before_nkeys_keeps_working(
    tmp_path: Path,
) -> None:
    async with running_exchange(tmp_path / "x", passwords=True) as handle:
        claude = handle.credentials("claude")
        assert claude.password and claude.nkey_seed is None
        async with client_for(handle, "claude") as client:
            reply = await client.command_envelope(
                "claude", "transfer", {"to": "zero", "amount": "1"}
            )
        assert reply.ok, reply
    # Restarted without --passwords: the stored passwords stay; a new agent gets an nkey, and
    # both kinds sign in to the same server.
    async with running_exchange(tmp_path / "x") as handle, client_for(handle) as admin:
        assert handle.credentials("claude") == msgspec.structs.replace(claude, url=handle.url)
        reply = await admin.command_envelope(
            "admin",
            "agent.register",
            {"agent": "newbie", "base_rate": "80", "primary_llm": "llama3.2"},
        )
        assert reply.ok, reply
        assert handle.credentials("newbie").nkey_seed is not None
        for agent in ("claude", "newbie"):
            async with client_for(handle, agent) as client:
                reply = await client.command_envelope(
                    agent, "transfer", {"to": "zero", "amount": "1"}
                )
            assert reply.ok, (agent, reply)


async def test_open_mode_needs_no_credentials(tmp_path: Path) -> None:
    async with running_exchange(tmp_path / "x", open_mode=True) as handle:
        assert not handle.secure
        assert not (tmp_path / "x" / "creds").exists()
        async with connect(handle.credentials("zero"), reconnect=False) as anyone:
            reply = await anyone.command_envelope(
                "claude", "transfer", {"to": "zero", "amount": "1"}
            )
        assert reply.ok, reply
