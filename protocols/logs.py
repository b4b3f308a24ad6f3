"""structlog configuration: the one place that decides how every process of the project logs.

Owns: ``configure_logging`` and its choices (``LOG_FORMATS``, ``LOG_LEVELS``). Readable key=value
lines on a terminal, one JSON object per line when the stream is not a TTY (or when asked),
always on stderr by default so that stdout stays for results. The exchange (``exchange up`` and
the other CLI verbs, the demo, the benches) and the workers (``python -m agents``) log through
this same function, so their lines have the same fields and one log pipeline reads both. It sits
in ``protocols`` because ``agents`` may import nothing else of the project; like
``protocols.client`` it needs more than msgspec (structlog), and the protocol's message modules
stay free of it.

Must not: be called by library code (only by a composition root, once per process), or enable
``cache_logger_on_first_use`` (tests capture logs with ``structlog.testing.capture_logs``).

Event names are snake_case and past tense (``exchange_ready``, ``bid_submitted``); data goes in
key=value pairs.
"""

import logging
import sys
from typing import Final, Literal, TextIO

import structlog

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "LogFormat", "configure_logging"]

LogFormat = Literal["auto", "console", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("auto", "console", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


def configure_logging(
    *, log_format: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configures structlog (and the stdlib root logger nats-py reports through) for this process.

    ``log_format="auto"`` picks JSON when ``stream`` (default stderr) is not a TTY. ``level`` is
    one of ``LOG_LEVELS`` in any case. Raises ValueError for another level, or a ``log_format``
    not in ``LOG_FORMATS``.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    out = sys.stderr if stream is None else stream
    level_number = logging.getLevelNamesMapping()[level.upper()]
    use_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_json:
        # The console renderer formats exceptions itself (and warns if this ran first).
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # nats-py reports through the stdlib; keep its warnings, in the same stream.
    logging.basicConfig(level=max(level_number, logging.WARNING), stream=out, force=True)
