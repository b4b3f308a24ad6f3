"""The dashboard's web server: a thin ASGI shell around the Hub.

Owns: the routes. ``/`` the page and ``/static/*`` its script and style (package data: no CDN, no
internet); ``/api/view`` the current document as JSON; ``/api/events`` the same document as a
text/event-stream, sent whole on connect and again after each change (at most
``stream_sends_per_s_max`` a second, a comment every ``keepalive_s`` when nothing changes). And
``serve``: uvicorn in the caller's task group, on a socket bound before it starts (so the address
is known, and connectable, at once), with the caller's signal handling left alone.

Must not: hold state beyond the Hub, or decide what the page shows.
"""

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from exchange.dashboard.hub import Hub
from exchange.listen import listening_socket, url_of

__all__ = ["STATIC_DIR", "bind", "build_app", "serve"]

STATIC_DIR: Final = Path(__file__).parent / "static"
stream_sends_per_s_max: Final = 4
keepalive_s: Final = 15.0
# Open event streams are closed this long after a stop is asked for.
shutdown_grace_s: Final = 1


def build_app(hub: Hub) -> Starlette:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def view(request: Request) -> Response:
        return Response(hub.document()[1], media_type="application/json")

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _stream(hub),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/view", view),
            Route("/api/events", events),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ]
    )


async def _stream(hub: Hub) -> AsyncIterator[bytes]:
    """The document now, then after every change; a disconnect cancels this at an await."""
    sent = -1
    while True:
        if hub.version > sent:
            sent, document = hub.document()
            yield b"data: " + document + b"\n\n"
            # Bounds the rate for a busy bus: changes within this interval go in the next send.
            await anyio.sleep(1 / stream_sends_per_s_max)
            continue
        with anyio.move_on_after(keepalive_s):
            await hub.wait_beyond(sent)
            continue
        yield b": keepalive\n\n"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``port`` 0: a free one). Raises OSError (address in use...)."""
    return listening_socket(host, port, backlog=128)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the task group that runs it owns the signals."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    hub: Hub, sock: socket.socket, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serves the dashboard on ``sock`` until cancelled; ``task_status`` gets its URL.

    On cancellation uvicorn is asked to stop (``should_exit``) and given ``shutdown_grace_s`` to
    close the open streams; it runs shielded until then, so its sockets are closed, not dropped.
    """
    config = uvicorn.Config(
        build_app(hub),
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=shutdown_grace_s,
    )
    server = _Server(config)
    done = anyio.Event()
    shield = anyio.CancelScope(shield=True)

    async def run() -> None:
        try:
            with shield:
                await server.serve([sock])
        finally:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        task_status.started(url_of(sock))
        try:
            await done.wait()
        finally:
            server.should_exit = True
            with anyio.move_on_after(shutdown_grace_s + 5, shield=True):
                await done.wait()
            shield.cancel()
