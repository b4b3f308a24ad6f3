"""TLS for the embedded server, on loopback with a CA the exchange generates (or files the
operator names): agents that trust the CA connect and act, a client that does not trust it is
refused during the handshake. Real nats-server, random ports; every wait is for a reply or a
handshake, under fail_after.
"""

import datetime
import json
import ssl
import stat
from pathlib import Path

import anyio
import msgspec
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream
from daemon_support import client_for, run_cli, running_exchange

from exchange.daemon.creds import read_credentials
from exchange.daemon.tls import ensure_generated_tls
from protocols.client import connect
from protocols.client_errors import ExchangeUnavailableError

pytestmark = pytest.mark.anyio

WAIT_S = 10.0


async def _handshake(url: str, context: ssl.SSLContext) -> dict[str, object]:
    """The server's INFO, read in the clear, then a TLS handshake as NATS clients make it.

    Raises ssl.SSLError when ``context`` does not trust the server's certificate.
    """
    host, port = url.removeprefix("tls://").rsplit(":", 1)
    async with await anyio.connect_tcp(host, int(port)) as tcp:
        info = await BufferedByteReceiveStream(tcp).receive_until(b"\r\n", 64 * 1024)
        tls = await TLSStream.wrap(tcp, hostname=host, ssl_context=context)
        await tls.aclose()
    result: dict[str, object] = json.loads(info.removeprefix(b"INFO "))
    return result


async def test_generated_ca_agents_connect_over_tls_and_others_are_refused(
    tmp_path: Path,
) -> None:
    data = tmp_path / "x"
    async with running_exchange(data, tls_generate=True) as handle:
        assert handle.url.startswith("tls://127.0.0.1:")
        tls_dir = data / "tls"
        assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
        for name in ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem"):
            assert stat.S_IMODE((tls_dir / name).stat().st_mode) == 0o600, name
        claude = read_credentials(data / "creds" / "claude.json")
        assert claude is not None
        assert claude.url == handle.url
        assert claude.tls_ca_file == str((tls_dir / "ca.pem").resolve())

        # An agent with its credentials file connects over TLS and runs a command.
        with anyio.fail_after(WAIT_S):
            async with client_for(handle, "claude") as client:
                reply = await client.command_envelope(
                    "claude", "transfer", {"to": "zero", "amount": "2"}
                )
        assert reply.ok, reply
        # So does the CLI, as admin, finding the exchange through its data directory.
        balance = await run_cli("balance", "claude", "--data", str(data), "--json")
        assert balance.status == 0, balance.stderr
        assert balance.json()["balance"] == "9998"

        with anyio.fail_after(WAIT_S):
            trusted = ssl.create_default_context(cafile=claude.tls_ca_file)
            info = await _handshake(handle.url, trusted)
            assert info["tls_required"] is True
            # The system's trust store does not know the generated CA.
            with pytest.raises(ssl.SSLCertVerificationError):
                await _handshake(handle.url, ssl.create_default_context())
            other = ensure_generated_tls(tmp_path / "other-ca", "127.0.0.1", now=_now())
            with pytest.raises(ssl.SSLCertVerificationError):
                await _handshake(handle.url, ssl.create_default_context(cafile=other.ca_file))
            untrusting = msgspec.structs.replace(claude, tls_ca_file=other.ca_file)
            with pytest.raises(ExchangeUnavailableError, match="cannot connect"):
                async with connect(untrusting, reconnect=False, connect_timeout_s=2.0):
                    pass
        ca_before = (tls_dir / "ca.pem").read_bytes()
    # A restart keeps the CA the agents were given.
    async with running_exchange(data, tls_generate=True) as handle:
        assert (tls_dir / "ca.pem").read_bytes() == ca_before
        with anyio.fail_after(WAIT_S):
            async with client_for(handle, "zero") as client:
                balance_reply = await client.query_envelope("balance", {"agent": "zero"})
        assert balance_reply.ok, balance_reply


async def test_tls_with_files_the_operator_names(tmp_path: Path) -> None:
    files = ensure_generated_tls(tmp_path / "pki", "127.0.0.1", now=_now())
    assert files.ca_file is not None
    settings = {
        "tls_cert_file": Path(files.cert_file),
        "tls_key_file": Path(files.key_file),
        "tls_ca_file": Path(files.ca_file),
    }
    async with running_exchange(tmp_path / "x", **settings) as handle:
        assert handle.url.startswith("tls://")
        assert handle.credentials("zero").tls_ca_file == files.ca_file
        assert not (tmp_path / "x" / "tls").exists()
        with anyio.fail_after(WAIT_S):
            async with client_for(handle, "zero") as client:
                reply = await client.command_envelope(
                    "zero", "transfer", {"to": "claude", "amount": "1"}
                )
        assert reply.ok, reply


async def test_tls_options_that_do_not_go_together_are_refused(tmp_path: Path) -> None:
    data = str(tmp_path / "x")
    for argv, problem in (
        (["--tls-cert", "c.pem"], "go together"),
        (["--tls-generate", "--open"], "secure mode"),
        (["--tls-ca", "ca.pem"], "--tls-ca"),
    ):
        result = await run_cli("up", "--data", data, "--json", *argv)
        assert result.status == 2, (argv, result.stderr)
        assert problem in result.json()["error"]["message"], argv


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
