"""Which daemon ``exchange up`` runs: the single node on SQLite (``app.py``) or a node of a
replicated exchange on JetStream (``replicated.py``, built on app.py's parts).

Must not: hold any logic of either; it only picks by ``Settings.journal_backend``.
"""

import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from exchange.daemon.app import ExchangeHandle, run_exchange
from exchange.daemon.replicated import run_replicated_exchange
from exchange.daemon.settings import Settings


async def run_daemon(
    settings: Settings,
    *,
    wall_ns: Callable[[], int] = time.time_ns,
    task_status: TaskStatus[ExchangeHandle] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """``run_exchange`` or ``run_replicated_exchange``, as ``settings`` say; same contract."""
    if settings.journal_backend == "jetstream":
        await run_replicated_exchange(settings, wall_ns=wall_ns, task_status=task_status)
    else:
        await run_exchange(settings, wall_ns=wall_ns, task_status=task_status)
