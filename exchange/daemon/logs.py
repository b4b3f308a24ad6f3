"""structlog configuration: the one place that decides how the daemon and the CLI log.

Owns: ``configure_logging``. Readable key=value lines on a terminal, one JSON object per line when
stderr is not a TTY (or when asked), always on stderr so stdout stays for results. Must not: be
called by library code (only by a composition root: ``exchange up``, the CLI, the bench), or
enable ``cache_logger_on_first_use`` (tests capture logs with ``structlog.testing.capture_logs``).

Event names are snake_case and past tense (``exchange_ready``, ``batch_committed``); data goes in
key=value pairs.
"""

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(
    *, json_output: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Configures structlog (and the stdlib root logger nats-py uses) for this process.

    ``json_output=None`` picks JSON when ``stream`` (default stderr) is not a TTY.
    Raises ValueError for an unknown ``level``.
    """
    out = sys.stderr if stream is None else stream
    level_number = logging.getLevelNamesMapping().get(level.upper())
    if level_number is None:
        raise ValueError(f"log level must be debug, info, warning or error, got {level!r}")
    use_json = not out.isatty() if json_output is None else json_output
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
