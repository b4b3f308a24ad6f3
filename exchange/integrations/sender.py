"""How the integrations reach a running exchange: the ``RewardSender`` interface and its one
real implementation on the protocol's client (``protocols.client``).

Owns: ``ExchangeTarget`` (``--data DIR`` and ``--nats URL``, resolved as the CLI does),
``open_exchange`` (one NATS connection, sending commands as ``admin`` with a short
timeout and a single attempt) and ``deliver``, which sorts a reply into rewarded, already rewarded,
refused (final) or unreachable (try again later).
Must not: decide what to reward (git_hook.py and beads.py do), print, or retry: a caller that
gets ``unreachable`` keeps the command (with its request id) and sends it again later.

Errors::

    ExchangeUnreachableError   no exchange answered: not running, no credentials, NATS down
"""

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from exchange.daemon.creds import CredentialsFileError
from exchange.daemon.endpoint import EndpointFileError
from exchange.errors import ExchangeError
from exchange.locate import LocateError, locate
from protocols.client import ExchangeClient, connect
from protocols.client_errors import ClientError
from protocols.commands import Command
from protocols.credentials import Credentials
from protocols.errors import ErrorCode
from protocols.ids import ADMIN
from protocols.results import Envelope

__all__ = [
    "Delivery",
    "DeliveryStatus",
    "ExchangeTarget",
    "ExchangeUnreachableError",
    "RewardSender",
    "SenderOpener",
    "classify",
    "deliver",
    "open_exchange",
    "resolve_credentials",
]

# Refusals about the sender's set-up rather than the command: the command is kept and sent again
# once the set-up is fixed (or the exchange is no longer overloaded).
RETRYABLE_CODES: Final = frozenset(
    {ErrorCode.overloaded.value, ErrorCode.not_authorized.value, ErrorCode.unknown_verb.value}
)


class ExchangeUnreachableError(ExchangeError):
    """No exchange answered; the message says where it looked and what to do next."""


class RewardSender(Protocol):
    """Sends one command as ``admin`` and returns the exchange's reply envelope."""

    def send(self, verb: str, command: Command) -> Envelope:
        """Raises ExchangeUnreachableError when no reply came."""
        ...


SenderOpener = Callable[[], AbstractContextManager[RewardSender]]


class DeliveryStatus(StrEnum):
    rewarded = "rewarded"
    already_rewarded = "already_rewarded"
    refused = "refused"
    unreachable = "unreachable"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one command. ``result`` is the reply's result object when rewarded."""

    status: DeliveryStatus
    message: str = ""
    code: str | None = None
    result: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        """Whether the command is settled for good (sending it again changes nothing)."""
        return self.status is not DeliveryStatus.unreachable


def classify(envelope: Envelope) -> Delivery:
    """Sorts a reply: ok, ``already_rewarded``, a retryable code, or a final refusal."""
    if envelope.ok:
        result = envelope.result if isinstance(envelope.result, dict) else {}
        return Delivery(DeliveryStatus.rewarded, result=result)
    error = envelope.error
    assert error is not None, "a refused envelope carries an error"
    if error.code == ErrorCode.already_rewarded.value:
        return Delivery(DeliveryStatus.already_rewarded, error.message, error.code)
    if error.code in RETRYABLE_CODES:
        return Delivery(DeliveryStatus.unreachable, error.message, error.code)
    return Delivery(DeliveryStatus.refused, error.message, error.code)


def deliver(sender: RewardSender, verb: str, command: Command) -> Delivery:
    """Sends ``command`` once and sorts the outcome; never raises for an absent exchange."""
    try:
        envelope = sender.send(verb, command)
    except ExchangeUnreachableError as exc:
        return Delivery(DeliveryStatus.unreachable, str(exc))
    return classify(envelope)


@dataclass(frozen=True, slots=True)
class ExchangeTarget:
    """Where the exchange is, as the CLI finds it (``exchange.locate.locate``): ``--nats URL``
    (else ``EXCHANGE_NATS_URL``, else the data directory's ``exchange.json``), connecting as
    admin when the data directory holds ``creds/admin.json``."""

    data_dir: Path
    nats_url: str | None = None

    def arguments(self) -> list[str]:
        """The command-line options that name this target."""
        options = ["--data", str(self.data_dir)]
        return options if self.nats_url is None else [*options, "--nats", self.nats_url]


def resolve_credentials(target: ExchangeTarget) -> Credentials:
    """The URL and admin credentials for ``target``.

    Raises ExchangeUnreachableError when no exchange can be found or its files are unreadable.
    """
    try:
        return locate(target.nats_url, target.data_dir).credentials
    except (LocateError, CredentialsFileError, EndpointFileError) as exc:
        raise ExchangeUnreachableError(str(exc)) from exc
    except OSError as exc:
        raise ExchangeUnreachableError(
            f"cannot read the exchange's files in {target.data_dir}: {exc}"
        ) from exc


class _PortalSender:
    """A ``RewardSender`` over one client whose event loop runs in a blocking portal's thread."""

    def __init__(self, portal: BlockingPortal, client: ExchangeClient) -> None:
        self._portal = portal
        self._client = client

    def send(self, verb: str, command: Command) -> Envelope:
        try:
            envelope: Envelope = self._portal.call(
                self._client.command_envelope, ADMIN, verb, command
            )
        except ClientError as exc:
            raise ExchangeUnreachableError(str(exc)) from exc
        return envelope


@asynccontextmanager
async def _connected(credentials: Credentials, timeout_s: float) -> AsyncIterator[ExchangeClient]:
    """``protocols.client.connect`` with the whole first connection bounded by ``timeout_s``.

    The bound sits here because nats-py keeps retrying a refused connection even without
    reconnects (``max_reconnect_attempts=0`` means no limit in its server selection).
    Raises ExchangeUnreachableError.
    """
    async with AsyncExitStack() as stack:
        try:
            with anyio.fail_after(timeout_s):
                client = await stack.enter_async_context(
                    connect(
                        credentials,
                        name="exchange-integrations",
                        request_timeout_s=timeout_s,
                        attempts_max=1,
                        connect_timeout_s=timeout_s,
                        reconnect=False,
                    )
                )
        except TimeoutError as exc:
            raise ExchangeUnreachableError(
                f"no NATS connection to {credentials.url} within {timeout_s} s; is the exchange "
                "running (`exchange status`)?"
            ) from exc
        except ClientError as exc:
            raise ExchangeUnreachableError(str(exc)) from exc
        yield client


@contextmanager
def open_exchange(target: ExchangeTarget, *, timeout_s: float) -> Iterator[RewardSender]:
    """A sender on one NATS connection to ``target``, closed on exit.

    Connecting and each request wait at most ``timeout_s`` and are tried once: the caller keeps
    what was not answered and sends it again later under the same request id.
    Raises ExchangeUnreachableError when no connection can be made.
    """
    assert timeout_s > 0, timeout_s
    credentials = resolve_credentials(target)
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(_connected(credentials, timeout_s)) as client,
    ):
        yield _PortalSender(portal, client)
