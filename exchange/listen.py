"""The listening socket of the project's HTTP servers (the dashboard, the gateway, the fake
upstream): one place for the options that decide their latency.

Must not: start a server; uvicorn takes the socket from here.
"""

import socket


def listening_socket(
    host: str, port: int, *, backlog: int = 1024, reuse_port: bool = False
) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` (``port`` 0: a free one).

    Made with ``proto=IPPROTO_TCP``, not 0: asyncio sets TCP_NODELAY only on sockets that say
    they are TCP, and accepted sockets inherit it. Without it a keep-alive client waits for a
    delayed ACK (40 ms) on every response written in two parts. ``reuse_port``: SO_REUSEPORT, so
    that several sockets (of several processes) listen on one port and the kernel spreads the
    connections over them (Linux). Raises OSError (address in use, a bad host, no SO_REUSEPORT).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError("this system has no SO_REUSEPORT (several workers need Linux)")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket, path: str = "/") -> str:
    """The http URL of a listening socket, an IPv6 address in brackets: ``http://[::1]:8400/``."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"
