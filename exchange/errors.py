"""The root of every error the exchange raises on purpose.

Owns: ``ExchangeError``. Every family of the package's own errors derives from it (the journal's,
the daemon's, the embedded nats-server's, the config's and the scenario's, the games', the
integrations'), so a caller tells an expected failure, which has a message that says what to do,
from a bug, which keeps its traceback: ``except ExchangeError``. Errors of the public client are
``protocols.client_errors.ClientError`` and of the workers ``agents.errors.AgentError``: those
packages may not import ``exchange``. Must not: import anything.
"""


class ExchangeError(Exception):
    """An expected failure of the exchange, whose message says what to do."""


__all__ = ["ExchangeError"]
