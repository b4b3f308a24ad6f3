"""The public contract of Agent Exchange on NATS: message Structs, subjects, error codes, amounts.

The message modules import only the standard library and msgspec, so any client can vendor them
(a test checks it); ``client``, the Python request client every other part of the project uses,
also needs nats-py, anyio and structlog.
Everything here is API: change it only by adding (see ``docs/protocol-guide.md``).
"""
