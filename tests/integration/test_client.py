"""The protocol's request client (``protocols.client``) against a real nats-server, with a
responder playing the exchange, and against the real daemon: typed results, refusals raised or
returned as envelopes, one request id per logical request kept across retries, silence and
``overloaded`` retried within the bounds, and replies that are not the envelope refused.
"""

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from daemon_support import running_exchange
from nats.aio.client import Client

from exchange.daemon.natsserver import NatsServer, NatsServerConfig, run_nats_server
from protocols import subjects
from protocols.client import connect, flush_commands, new_request_id
from protocols.client_errors import ExchangeUnavailableError, RefusedError, ReplyDecodeError
from protocols.commands import Transfer
from protocols.credentials import Credentials
from protocols.queries import BalanceQuery
from protocols.results import BalanceResult, TransferResult

pytestmark = pytest.mark.anyio

ClientOpener = Callable[..., AbstractAsyncContextManager[Client]]

WAIT_S = 10.0
TRANSFER = subjects.command("zero", "transfer")
PAID = b'{"ok":true,"result":{"sender":"zero","recipient":"b","amount":"1.5","balance":"8.5"}}'
OVERLOADED = b'{"ok":false,"error":{"code":"overloaded","message":"queue full"}}'
REFUSED = b'{"ok":false,"error":{"code":"insufficient_funds","message":"need 20","limit":"5"}}'


class Responder:
    """Plays the exchange on one subject: answers requests in turn (None: leaves one unanswered)
    and records the bodies it received."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.seen: list[dict[str, Any]] = []

    async def serve(self, client: Client, subject: str, *, task_status: TaskStatus[None]) -> None:
        subscription = await client.subscribe(subject)
        await flush_commands(client)
        task_status.started()
        async for msg in subscription.messages:
            self.seen.append(json.loads(msg.data))
            answer = self.answers.pop(0)
            if answer is not None:
                await client.publish(msg.reply, answer)
            if not self.answers:
                await subscription.unsubscribe()


async def _answered(
    server: NatsServer, opener: ClientOpener, answers: list[bytes | None], call: Any
) -> tuple[Any, Responder]:
    """Runs ``call(client)`` on a fresh client while a responder answers with ``answers``."""
    responder = Responder(answers)
    credentials = Credentials(url=server.url)
    async with opener(server) as exchange, anyio.create_task_group() as tg:
        await tg.start(responder.serve, exchange, TRANSFER)
        with anyio.fail_after(WAIT_S):
            async with connect(credentials, request_timeout_s=0.3, attempts_max=3) as client:
                result = await call(client)
    return result, responder


def test_request_ids() -> None:
    plain, prefixed = new_request_id(), new_request_id("announce")
    assert len(plain) == 36 and plain != new_request_id()
    assert prefixed.startswith("announce:") and len(prefixed) == len("announce:") + 32


async def test_a_command_keeps_its_request_id_across_a_timeout(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    async def pay(client: Any) -> TransferResult:
        body = {"to": "b", "amount": "1.5"}
        result: TransferResult = await client.command("zero", "transfer", body, TransferResult)
        return result

    result, responder = await _answered(nats_server, nats_client, [None, PAID], pay)
    assert result == TransferResult(sender="zero", recipient="b", amount="1.5", balance="8.5")
    first, second = responder.seen
    assert first == second and first["request_id"]


async def test_overloaded_is_retried_and_a_refusal_is_raised_with_its_details(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    async def pay(client: Any) -> None:
        with pytest.raises(RefusedError) as refusal:
            await client.command("zero", "transfer", {"request_id": "r-1"}, TransferResult)
        assert (refusal.value.code, refusal.value.error.limit) == ("insufficient_funds", "5")
        assert "transfer refused: insufficient_funds" in str(refusal.value)

    _, responder = await _answered(nats_server, nats_client, [OVERLOADED, REFUSED], pay)
    assert responder.seen == [{"request_id": "r-1"}, {"request_id": "r-1"}]


async def test_the_envelope_calls_return_a_refusal_as_it_came(
    nats_server: NatsServer, nats_client: ClientOpener
) -> None:
    async def pay(client: Any) -> Any:
        return await client.command_envelope("zero", "transfer", {}, request_id="r-2")

    envelope, responder = await _answered(nats_server, nats_client, [REFUSED], pay)
    assert not envelope.ok and envelope.error.code == "insufficient_funds"
    assert responder.seen == [{"request_id": "r-2"}]


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (b"hello", "not a result envelope"),
        (b'{"ok":false}', "ok=false and no error"),
        (b'{"ok":true,"result":{"balance":1}}', "not a TransferResult"),
        (b'{"ok":true,"result":' + b"[" * 100 + b"]" * 100 + b"}", "nests 101 levels"),
    ],
)
async def test_a_reply_that_is_not_the_documented_one_is_a_decode_error(
    nats_server: NatsServer, nats_client: ClientOpener, reply: bytes, problem: str
) -> None:
    async def pay(client: Any) -> None:
        with pytest.raises(ReplyDecodeError, match=problem):
            await client.command("zero", "transfer", {}, TransferResult)

    await _answered(nats_server, nats_client, [reply], pay)


async def test_nobody_answering_is_unavailable_after_the_attempts(nats_server: NatsServer) -> None:
    credentials = Credentials(url=nats_server.url)
    with anyio.fail_after(WAIT_S), pytest.raises(ExchangeUnavailableError) as unavailable:
        async with connect(credentials, request_timeout_s=0.2, attempts_max=2) as client:
            await client.query("status", None, BalanceResult)
    assert (unavailable.value.subject, unavailable.value.attempts) == ("exchange.query.status", 2)
    assert "no exchange is subscribed" in str(unavailable.value)


async def test_an_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    async with run_nats_server(NatsServerConfig(), data_dir=tmp_path / "gone") as server:
        url = server.url
    with anyio.fail_after(WAIT_S), pytest.raises(ExchangeUnavailableError, match="cannot connect"):
        async with connect(Credentials(url=url), reconnect=False, connect_timeout_s=1.0):
            pass


async def test_typed_calls_against_the_exchange(tmp_path: Path) -> None:
    async with (
        running_exchange(tmp_path / "x") as handle,
        connect(handle.credentials("admin"), reconnect=False) as client,
    ):
        pay = Transfer(request_id=new_request_id("pay"), to="zero", amount=Decimal("1.5"))
        first = await client.command("claude", "transfer", pay, TransferResult)
        # The same Struct, so the same request id: the first reply again, applied once.
        again = await client.command("claude", "transfer", pay, TransferResult)
        balance = await client.query("balance", BalanceQuery(agent="zero"), BalanceResult)
        with pytest.raises(RefusedError) as refusal:
            await client.command(
                "claude", "transfer", {"to": "zero", "amount": "99999"}, TransferResult
            )
    assert first == again and first.balance == "9998.5"
    assert balance.balance == "10001.5"
    assert refusal.value.code == "reserve_would_be_breached"
