"""structlog configuration for worker processes: the one place that decides how workers log.

Readable key=value lines on a terminal, one JSON object per line otherwise (or when asked), always
on stderr. Only the composition root (``agents.cli.main``) calls ``configure_logging``; library
code takes a bound logger. Never enables ``cache_logger_on_first_use`` (tests capture logs with
``structlog.testing.capture_logs``).

Event names are snake_case and past tense (``price_published``, ``bid_submitted``); data goes in
key=value pairs. Every line of a worker carries ``agent`` and ``role`` (bound by the runtime).
"""

import logging
import sys
from typing import Literal, TextIO

import structlog

from agents.errors import ConfigError

LogFormat = Literal["auto", "console", "json"]
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(
    *, log_format: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configures structlog (and the stdlib logging nats-py reports through) for this process.

    Raises ConfigError for an unknown ``level``.
    """
    out = sys.stderr if stream is None else stream
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    level_number = logging.getLevelNamesMapping()[level.upper()]
    use_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level_number, logging.WARNING), stream=out, force=True)
