"""The exchange's embedded nats-server kept running: restarted on its port when it dies.

Owns: ``run_supervised_nats_server``, which runs one ``run_nats_server`` at a time and, when the
server exits unexpectedly (a crash, the OOM killer, ``kill -9``), starts another one on the same
port with the config in force, so with every user a reload added since the start; reloads that
a restart interrupts (the successor starts with the new config); and the restart budget: at most
``restarts_max`` restarts within ``restart_window_s``, the first at once and each further one
after a growing pause, and then it gives up, so a server that cannot run does not spin for ever.

Clients are not this module's concern: the daemon's and the workers' nats-py connections reconnect
by themselves and subscribe again, so a restart costs them an outage of about their reconnect wait.

Must not: connect as a NATS client, read the environment, restart a server it was asked to stop,
or leave a process or a task running once its context has exited.

Errors: those of ``natsserver`` (``NatsServerStartError`` when the first start fails,
``NatsServerReloadError`` from ``reload``), and one of its own::

    NatsServerExitedError
    └── NatsServerRestartsExhaustedError  it exited more than restarts_max times in the window
"""

import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from exchange.daemon.natsserver import (
    RELOAD_TIMEOUT_S,
    NatsServer,
    NatsServerConfig,
    NatsServerExitedError,
    NatsServerReloadError,
    NatsServerStartError,
    run_nats_server,
)

__all__ = [
    "RESTARTS_MAX",
    "RESTART_WINDOW_S",
    "NatsServerRestartsExhaustedError",
    "SupervisedNatsServer",
    "restart_pause_s",
    "run_supervised_nats_server",
]

log = structlog.get_logger()

# A server that exits more often than this is broken (its binary, its config, the machine), and
# restarting it again would only hide that.
RESTARTS_MAX: Final = 5
RESTART_WINDOW_S: Final = 60.0
# The first restart in a window is at once (clients wait meanwhile); then 0.25 s, 0.5 s, 1 s...
RESTART_PAUSE_S_FIRST: Final = 0.25
RESTART_PAUSE_S_MAX: Final = 4.0


class NatsServerRestartsExhaustedError(NatsServerExitedError):
    """The server exited more than ``restarts_max`` times within ``restart_window_s``."""


def restart_pause_s(exits_in_window: int) -> float:
    """The pause before restarting after the ``exits_in_window``-th recent exit. Pure."""
    assert exits_in_window >= 1, exits_in_window
    if exits_in_window == 1:
        return 0.0
    doublings = exits_in_window - 2
    return min(RESTART_PAUSE_S_FIRST * float(2**doublings), RESTART_PAUSE_S_MAX)


@dataclass(frozen=True, slots=True)
class _Exit:
    """How one server ended: its exit status (None if it never started) and what was said."""

    pid: int | None
    returncode: int | None
    reason: str


class SupervisedNatsServer:
    """The server of the moment, restarted when it dies. Made by ``run_supervised_nats_server``."""

    def __init__(
        self,
        *,
        config: NatsServerConfig,
        data_dir: Path,
        restarts_max: int,
        restart_window_s: float,
    ) -> None:
        assert config.cluster is None, "a cluster node's routes are not restarted"
        assert restarts_max >= 0, restarts_max
        assert restart_window_s > 0, restart_window_s
        self._config = config
        self._data_dir = data_dir
        self._restarts_max = restarts_max
        self._restart_window_s = restart_window_s
        self._server: NatsServer | None = None
        self._restarts = 0
        # Held while a server starts and while a reload runs: a reload is then applied either to
        # the server that runs or, through ``_config``, to the one that starts after it.
        self._lock = anyio.Lock()
        # Set and replaced at every start, so a waiter re-checks its condition.
        self._changed = anyio.Event()

    @property
    def url(self) -> str:
        return self._current().url

    @property
    def client_port(self) -> int:
        return self._current().client_port

    @property
    def pid(self) -> int:
        """The pid of the server of the moment (it changes at every restart)."""
        return self._current().pid

    @property
    def config(self) -> NatsServerConfig:
        """The config every restart uses: random ports made fixed, users as the last reload."""
        return self._config

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def restarts(self) -> int:
        """How many times the server has been restarted (and was ready again) since the start."""
        return self._restarts

    def _current(self) -> NatsServer:
        assert self._server is not None, "the server has not started"
        return self._server

    async def wait_restarts(self, count: int) -> None:
        """Returns once the server has been restarted ``count`` times. The caller bounds it."""
        while self._restarts < count:
            await self._changed.wait()

    async def reload(self, config: NatsServerConfig) -> None:
        """Applies ``config`` to the running server (see ``NatsServer.reload``) and to restarts.

        If the server exits before it applied the config, its successor starts with it: this
        returns once that one is ready.

        Raises:
            NatsServerReloadError: the server refused the config (the old one stays in force),
                did not confirm it in time, or no successor was ready within RELOAD_TIMEOUT_S (it
                will still start with the new config).
        """
        async with self._lock:
            restarts_before = self._restarts
            try:
                await self._current().reload(config)
            except NatsServerExitedError:
                exited = True
            else:
                exited = False
            self._config = config
        if not exited:
            return
        log.warning("nats_server_reload_deferred", reason="exited_before_applying_it")
        try:
            with anyio.fail_after(RELOAD_TIMEOUT_S):
                await self.wait_restarts(restarts_before + 1)
        except TimeoutError as exc:
            raise NatsServerReloadError(
                f"nats-server exited during a reload and was not running again within "
                f"{RELOAD_TIMEOUT_S} s; it restarts with the new config"
            ) from exc

    async def _supervise(self, *, task_status: TaskStatus[None]) -> None:
        """Runs servers one after another until cancelled or out of restarts.

        Raises:
            NatsServerStartError: the first server did not start (before ``task_status.started``).
            NatsServerRestartsExhaustedError: too many exits within the window.
        """
        exits_s: deque[float] = deque()
        previous = await self._run_until_exit(None, task_status)
        while True:
            now_s = time.monotonic()
            exits_s.append(now_s)
            while exits_s[0] < now_s - self._restart_window_s:
                exits_s.popleft()
            if len(exits_s) > self._restarts_max:
                log.error(
                    "nats_server_restarts_exhausted",
                    exits=len(exits_s),
                    restart_window_s=self._restart_window_s,
                    returncode=previous.returncode,
                )
                raise NatsServerRestartsExhaustedError(
                    f"nats-server exited {len(exits_s)} times within {self._restart_window_s} s "
                    f"(at most {self._restarts_max} restarts are made); giving up. The last "
                    f"exit: {previous.reason}"
                )
            pause_s = restart_pause_s(len(exits_s))
            if pause_s > 0:
                # Not a wait for a condition: a limit on the restart rate.
                log.warning("nats_server_restart_paused", pause_s=pause_s, exits=len(exits_s))
                await anyio.sleep(pause_s)
            previous = await self._run_until_exit(previous, anyio.TASK_STATUS_IGNORED)

    async def _run_until_exit(self, previous: _Exit | None, task_status: TaskStatus[None]) -> _Exit:
        """Starts one server and returns once it has exited unexpectedly (never when cancelled).

        Raises:
            NatsServerStartError: the first server (``previous is None``) did not start.
        """
        server: NatsServer | None = None
        reason = ""
        try:
            async with AsyncExitStack() as stack:
                async with self._lock:
                    try:
                        server = await stack.enter_async_context(
                            run_nats_server(self._config, data_dir=self._data_dir)
                        )
                    except NatsServerStartError as exc:
                        if previous is None:
                            raise
                        # The port may be taken meanwhile, or the machine short of something.
                        log.error("nats_server_restart_failed", error=str(exc))
                        return _Exit(pid=None, returncode=None, reason=str(exc))
                    self._adopt(server, previous)
                task_status.started()
                await anyio.sleep_forever()
        except* NatsServerExitedError as group:
            reason = str(group.exceptions[0])
        assert server is not None
        return _Exit(pid=server.pid, returncode=server.returncode, reason=reason)

    def _adopt(self, server: NatsServer, previous: _Exit | None) -> None:
        if previous is None:
            # Restarts listen where clients already connect: random ports become fixed ones.
            self._config = msgspec.structs.replace(
                self._config,
                port=server.client_port,
                monitoring_port=(
                    None if self._config.monitoring_port is None else server.monitoring_port
                ),
            )
        else:
            self._restarts += 1
            log.warning(
                "nats_server_restarted",
                pid=server.pid,
                previous_pid=previous.pid,
                returncode=previous.returncode,
                restarts=self._restarts,
                url=server.url,
            )
        self._server = server
        self._changed.set()
        self._changed = anyio.Event()


@asynccontextmanager
async def run_supervised_nats_server(
    config: NatsServerConfig,
    *,
    data_dir: Path,
    restarts_max: int = RESTARTS_MAX,
    restart_window_s: float = RESTART_WINDOW_S,
) -> AsyncIterator[SupervisedNatsServer]:
    """Run a nats-server for the duration of the block, restarting it whenever it dies.

    Yields once the first server is ready. Each restart uses the same data dir and the config in
    force (the first server's ports, the last reload's users). On exit the server is stopped and
    no other is started. Exceptions raised by the block propagate unchanged.

    Raises:
        NatsServerNotFoundError, NatsServerStartError (NatsPortInUseError among them): the first
            server did not start, as ``run_nats_server`` raises them.
        ExceptionGroup[NatsServerRestartsExhaustedError]: the server kept exiting; the block is
            cancelled first.
    """
    supervisor = SupervisedNatsServer(
        config=config,
        data_dir=data_dir,
        restarts_max=restarts_max,
        restart_window_s=restart_window_s,
    )
    failure: Exception | None = None
    async with anyio.create_task_group() as task_group:
        try:
            await task_group.start(supervisor._supervise)
            yield supervisor
        except Exception as exc:
            # Re-raised below, outside the task group, which would wrap it in a group.
            failure = exc
        finally:
            task_group.cancel_scope.cancel()
    if failure is not None:
        raise failure
