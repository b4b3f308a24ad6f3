"""The public contract of Agent Exchange on NATS: message Structs, subjects, error codes, amounts.

Imports only the standard library and msgspec, so any client can vendor it. Everything here is API:
change it only by adding (see ``../shared/design/PROTOCOL.md``).
"""
