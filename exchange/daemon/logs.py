"""The exchange's callers' way into ``protocols.logs``, which alone decides how processes log.

Owns nothing but the translation of the older ``json_output`` argument (True: JSON, False:
console, None: JSON unless the stream is a TTY) into ``protocols.logs``' ``log_format``. Kept
only because ``exchange/cli/main.py`` and ``exchange/integrations/cli.py`` still import
``configure_logging`` from here (their owner was editing them when the configuration moved);
once they call ``protocols.logs.configure_logging`` directly, delete this module.
"""

from typing import TextIO

from protocols import logs
from protocols.logs import LogFormat

__all__ = ["configure_logging"]


def configure_logging(
    *, json_output: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """``protocols.logs.configure_logging`` with ``json_output`` for ``log_format``.

    Raises ValueError for an unknown ``level``.
    """
    log_format: LogFormat = "auto"
    if json_output is not None:
        log_format = "json" if json_output else "console"
    logs.configure_logging(log_format=log_format, level=level, stream=stream)
