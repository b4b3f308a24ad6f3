"""A query process: answers stateless queries (``exchange.core.stateless_queries``) read from stdin.

Run by ``QueryPool`` as ``python -m exchange.daemon.query_worker NICENESS``; nothing else should
start it. Owns: the frames on its stdin and stdout, and nothing else.

- request: a header ``>HI`` (the verb's length, the body's length), the verb (ASCII), the body
  (the query's JSON, as the client sent it; the daemon has already decoded it once and checked
  its size);
- reply: a header ``>I`` (the reply's length), then the reply: the envelope ``Exchange.query``
  would return, byte for byte.

Its lifetime is its parent's: it exits at the end of its stdin (the pool closes it on a clean
stop, and the kernel closes it when the daemon dies), or is killed by the pool when a query runs
over its time bound. It ignores SIGINT, which a terminal sends to the daemon's whole process
group, so that a Ctrl-C reaches the daemon, which then stops it in order. It lowers its own
priority (``NICENESS``): the daemon's event loop and nats-server then get a busy core first.
Must not: read or write anything but its stdin and stdout, or answer a query that reads state.
"""

import os
import signal
import struct
import sys
from typing import BinaryIO, Final

from exchange.core import stateless_queries
from protocols.registry import QUERY_DECODERS

REQUEST_HEADER: Final = struct.Struct(">HI")
REPLY_HEADER: Final = struct.Struct(">I")
# Written once the imports are done: the pool starts the time bound of a query only after it.
READY: Final = b"R"


def request_frame(verb: str, body: bytes) -> bytes:
    encoded = verb.encode("ascii")
    return REQUEST_HEADER.pack(len(encoded), len(body)) + encoded + body


def _read_exactly(stream: BinaryIO, count: int) -> bytes | None:
    """``count`` bytes, or None at the end of the stream before the first of them."""
    data = stream.read(count)
    if not data:
        return None
    assert len(data) == count, f"the stream ended inside a frame ({len(data)} of {count} bytes)"
    return data


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """Answers one request frame after another until ``source`` ends."""
    sink.write(READY)
    sink.flush()
    while (header := _read_exactly(source, REQUEST_HEADER.size)) is not None:
        verb_length, body_length = REQUEST_HEADER.unpack(header)
        assert verb_length > 0, "a request frame names its verb"
        payload = _read_exactly(source, verb_length + body_length)
        assert payload is not None, "the stream ended after a frame's header"
        verb, body = payload[:verb_length].decode("ascii"), payload[verb_length:]
        query = QUERY_DECODERS[verb].decode(body)
        assert stateless_queries.is_stateless(query), f"{verb} reads the ledger's state"
        reply = stateless_queries.answer(query)
        sink.write(REPLY_HEADER.pack(len(reply)) + reply)
        sink.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    niceness = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if niceness > 0:
        os.nice(niceness)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
