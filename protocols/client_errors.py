"""What a request to the exchange can end in, besides its result: one small hierarchy.

::

    ClientError                   a request to the exchange did not succeed
    ├── RefusedError              the exchange answered ``{"ok": false, ...}``: a business "no",
    │                             with its stable ``code``, its ``message`` and the details
    ├── ExchangeUnavailableError  no connection, or no reply after every attempt (each with the
    │                             same bytes, so the same request_id); it may have been applied
    └── ReplyDecodeError          a reply that is not the documented envelope or result

A refusal is part of the protocol, so callers catch ``RefusedError`` where they expect one (a bid
after the window closed, a limit reached); the other two are about the road, not the answer.
Pure: exception classes only (``protocols.client`` raises them).
"""

from protocols.results import ErrorBody


class ClientError(Exception):
    """Base class of every error ``protocols.client`` raises on purpose."""


class RefusedError(ClientError):
    """The exchange refused a request. ``code`` is stable; ``error`` has every detail
    (``path``, ``limit``, ``used``, ``requested``, ``available``, ``retry_after_s``)."""

    def __init__(self, what: str, error: ErrorBody) -> None:
        super().__init__(f"{what} refused: {error.code}: {error.message}")
        self.what = what
        self.error = error

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def message(self) -> str:
        return self.error.message


class ExchangeUnavailableError(ClientError):
    """No reply came (or no connection could be made); a command may or may not have been
    applied. Sending it again later with the same request_id is safe: the exchange answers a
    repeat with the first reply.

    ``subject`` is None when the connection itself failed; ``attempts`` counts the requests sent.
    """

    def __init__(self, message: str, *, subject: str | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.subject = subject
        self.attempts = attempts


class ReplyDecodeError(ClientError):
    """A reply did not decode as the result envelope or as the expected result (a protocol
    mismatch, or something other than the exchange answering on the subject)."""
