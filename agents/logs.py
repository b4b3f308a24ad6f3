"""How workers log: ``protocols.logs``, re-exported for the worker CLI.

Owns nothing: the exchange and the workers log through the one configuration in
``protocols/logs.py`` (same processors, same fields). Only the composition root
(``agents.cli.main``) calls ``configure_logging``, and it validates the level and format with
argparse choices, so the ValueError for a bad one is a bug, not a usage error. Kept because
``agents/cli.py`` imports from here (it was being edited elsewhere when the configuration moved);
once it imports ``protocols.logs`` itself, delete this module.

Every line of a worker carries ``agent`` and ``role`` (bound by the runtime).
"""

from protocols.logs import LOG_FORMATS, LOG_LEVELS, LogFormat, configure_logging

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "LogFormat", "configure_logging"]
