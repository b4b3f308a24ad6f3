"""The exceptions of the worker package, one base class for all of them.

::

    AgentError                    anything a worker refuses or cannot do
    ├── ConfigError               bad options or a bad credentials file; nothing was started
    ├── ConnectionLostError       the NATS connection closed for good (reconnects exhausted)
    └── BusError                  a request to the exchange did not succeed
        ├── RefusedError          the exchange answered ``{"ok": false, ...}``: a business "no",
        │                         carrying its stable ``code`` and its ``message``
        ├── ExchangeUnavailableError
        │                         no reply after every attempt (same request_id each time)
        └── ReplyDecodeError      a reply that is not the documented envelope or result

A refusal is part of the protocol, so roles catch ``RefusedError`` where they expect one (a bid
after the window closed, a limit reached). The runtime treats any other ``BusError`` raised while
handling one message as the loss of that message, logs it, and keeps serving; bugs (every other
exception) stop the worker.
"""

from protocols.results import ErrorBody


class AgentError(Exception):
    """Base class of every error raised on purpose by the worker package."""


class ConfigError(AgentError):
    """An option or a credentials file is invalid; the message names it and says what to do."""


class ConnectionLostError(AgentError):
    """The NATS connection closed while the worker was running and will not come back."""


class BusError(AgentError):
    """A request to the exchange did not succeed."""


class RefusedError(BusError):
    """The exchange refused a request. ``code`` is stable (PROTOCOL.md); ``error`` has details."""

    def __init__(self, verb: str, error: ErrorBody) -> None:
        super().__init__(f"{verb} refused: {error.code}: {error.message}")
        self.verb = verb
        self.error = error

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def message(self) -> str:
        return self.error.message


class ExchangeUnavailableError(BusError):
    """No reply came within the attempts; the request may or may not have been applied.

    Retrying later with the same request_id is safe: the exchange answers a repeat with the first
    reply.
    """

    def __init__(self, subject: str, attempts: int) -> None:
        super().__init__(
            f"no reply on {subject} after {attempts} attempts; is the exchange running "
            "(`exchange up`) and reachable?"
        )
        self.subject = subject
        self.attempts = attempts


class ReplyDecodeError(BusError):
    """A reply did not decode as the documented envelope or result (a protocol mismatch)."""
