"""The daemon shell: NATS, anyio, structlog, clock and config around the pure core."""
