"""The exceptions of the worker package, one base class for all of them.

::

    AgentError                    anything a worker refuses or cannot do
    ├── ConfigError               bad options or a bad credentials file; nothing was started
    └── ConnectionLostError       the NATS connection closed for good (reconnects exhausted)

Requests to the exchange raise the client's own errors (``protocols.client_errors``:
``ClientError``, with ``RefusedError``, ``ExchangeUnavailableError`` and ``ReplyDecodeError``),
the same for every client of the protocol. A refusal is part of the protocol, so roles catch
``RefusedError`` where they expect one (a bid after the window closed, a limit reached). The
runtime treats any other ``ClientError`` raised while handling one message as the loss of that
message, logs it, and keeps serving; bugs (every other exception) stop the worker.
"""


class AgentError(Exception):
    """Base class of every error raised on purpose by the worker package."""


class ConfigError(AgentError):
    """An option or a credentials file is invalid; the message names it and says what to do."""


class ConnectionLostError(AgentError):
    """The NATS connection closed while the worker was running and will not come back."""
