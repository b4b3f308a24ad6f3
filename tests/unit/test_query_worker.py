"""The query process's frames: requests in, ``Exchange.query``'s envelopes out, byte for byte, until
its input ends. Driven through in-memory streams; the real process is exercised by
tests/integration/test_daemon_query_pool.py."""

import io

import pytest

from exchange.core.config import EconomyConfig
from exchange.core.machine import Exchange
from exchange.daemon.query_worker import READY, REPLY_HEADER, request_frame, serve
from protocols.registry import QUERY_DECODERS

GAMES = [
    b'{"game":{"values":{"scout":3,"analyst":5,"executor":1},'
    b'"synergies":[{"members":["scout","analyst"],"bonus":4}]}}',
    b'{"game":{"values":{'
    + b",".join(b'"p%d":%d' % (index, index) for index in range(40))
    + b'}},"permutations":500,"seed":7}',
    b'{"game":{"values":{"a":1},"players":["a"]}}',
]


def _replies(output: bytes) -> list[bytes]:
    assert output.startswith(READY)
    replies, offset = [], len(READY)
    while offset < len(output):
        (length,) = REPLY_HEADER.unpack_from(output, offset)
        offset += REPLY_HEADER.size
        replies.append(output[offset : offset + length])
        offset += length
    assert offset == len(output)
    return replies


def test_each_request_gets_exchange_query_s_bytes_in_order() -> None:
    source = io.BytesIO(b"".join(request_frame("shapley", body) for body in GAMES))
    sink = io.BytesIO()
    serve(source, sink)
    exchange = Exchange(EconomyConfig())
    expected = [exchange.query(QUERY_DECODERS["shapley"].decode(body)) for body in GAMES]
    assert _replies(sink.getvalue()) == expected
    assert b'"code":"invalid_message"' in expected[2]


def test_it_refuses_to_answer_a_query_that_reads_state() -> None:
    source = io.BytesIO(request_frame("balance", b'{"agent":"zero"}'))
    with pytest.raises(AssertionError, match="reads the ledger"):
        serve(source, io.BytesIO())
