"""The HTTP servers' listening socket and the URL they print for it."""

import socket

import pytest

from exchange.listen import listening_socket, url_of


def test_the_socket_says_it_is_tcp_so_accepted_sockets_get_nodelay() -> None:
    with listening_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        assert not sock.getblocking()
        port = sock.getsockname()[1]
        assert url_of(sock) == f"http://127.0.0.1:{port}/"
        assert url_of(sock, "/v1") == f"http://127.0.0.1:{port}/v1"


def test_an_ipv6_address_is_bracketed_in_the_url() -> None:
    try:
        sock = listening_socket("::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with sock:
        assert url_of(sock, "/v1") == f"http://[::1]:{sock.getsockname()[1]}/v1"
