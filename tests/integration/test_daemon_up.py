"""``exchange up`` as a real process: JSON logs, a loud open mode, a clean SIGTERM, a refused second
daemon on the same data directory, a bad --config, and a taken port. Waits are on log events, under
fail_after.
"""

import json
import socket
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest
from daemon_support import DaemonProcess, free_port, run_cli

from exchange.daemon.natsserver import NatsServer, NatsUser

pytestmark = pytest.mark.anyio
SecureServerStarter = Callable[[Iterable[NatsUser]], AbstractAsyncContextManager[NatsServer]]
UsersMaker = Callable[..., dict[str, NatsUser]]

UP = (sys.executable, "-m", "exchange.cli.main", "up")


async def test_open_mode_warns_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "x"
    daemon = DaemonProcess(data, free_port(), "--open")
    async with daemon.running():
        warning = next(e for e in daemon.events if e["event"] == "open_mode_enabled")
        assert warning["level"] == "warning" and warning["authentication"] is False
        status = await run_cli("status", "--data", str(data), "--json")
        assert status.status == 0, status
        assert await daemon.terminate_and_wait() == 0
    names = [e["event"] for e in daemon.events]
    assert names.index("signal_received") < names.index("exchange_stopped")
    assert "nats_server_stopped" in names
    assert not (data / "exchange.json").exists()
    assert not (data / "nats" / "nats-server.pid").exists()


async def test_a_second_daemon_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "x"
    async with DaemonProcess(data, free_port()).running():
        with anyio.fail_after(60):
            second = await anyio.run_process(
                [*UP, "--data", str(data), "--log-json", "--port", str(free_port())],
                check=False,
            )
    assert second.returncode == 1
    assert b"DataDirInUseError" in second.stderr and b"exchange_failed" in second.stderr


async def test_a_bad_config_is_refused_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "economy.toml"
    config.write_text("opening_balance = 'lots'\n")
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*UP, "--data", str(tmp_path / "x"), "--config", str(config), "--json"],
            check=False,
        )
    assert done.returncode == 1
    assert b"config_invalid" in done.stdout
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("data_dir_exists", [False, True])
async def test_a_taken_port_is_one_line_and_creates_nothing(
    tmp_path: Path, data_dir_exists: bool
) -> None:
    data = tmp_path / "x"
    if data_dir_exists:
        data.mkdir()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [*UP, "--data", str(data), "--port", str(port)], check=False
            )
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    failure = json.loads(lines[0])
    assert failure["event"] == "exchange_failed"
    assert failure["error"] == (
        f"port {port} on 127.0.0.1 is in use by another process; pass --port N or stop it"
    )
    if data_dir_exists:
        # What a run leaves in any directory it locks: nothing of an exchange's.
        assert sorted(path.name for path in data.iterdir()) == ["exchange.lock"]
    else:
        assert not data.exists()


async def test_joining_a_secure_server_uses_the_nats_creds_file(
    tmp_path: Path, start_secure_nats_server: SecureServerStarter, nats_users: UsersMaker
) -> None:
    users = nats_users()
    creds = tmp_path / "exchange.json"
    exchange = users["exchange"]
    creds.write_text(json.dumps({"url": "x", "user": "exchange", "password": exchange.password}))
    async with start_secure_nats_server(users.values()) as server:
        # Without the file the server refuses the exchange; with it the exchange serves.
        with anyio.fail_after(60):
            anonymous = await anyio.run_process(
                [*UP, "--data", str(tmp_path / "a"), "--nats", server.url, "--log-json"],
                check=False,
            )
        assert anonymous.returncode == 1
        assert b"Authorization Violation" in anonymous.stderr
        daemon = DaemonProcess(
            tmp_path / "x", None, "--nats", server.url, "--nats-creds", str(creds)
        )
        async with daemon.running():
            admin = tmp_path / "admin.json"
            admin.write_text(
                json.dumps(
                    {"url": server.url, "user": "admin", "password": users["admin"].password}
                )
            )
            status = await run_cli("status", "--creds", str(admin), "--json")
            assert status.status == 0, status
