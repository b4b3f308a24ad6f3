"""The metering gateway (issue 18, docs/gateway.md): an OpenAI-compatible HTTP server in front of
one or more upstream models that holds each request's worst-case cost on the exchange before
forwarding it and settles the hold by the upstream's reported usage.

Modules: ``keys`` (per-agent API keys, hashed), ``tokens`` (the prompt-token bound and the
request's worst case, pure), ``upstreams`` (aiohttp forwarding), ``meter`` (the exchange side:
authorize, settle, release), ``app`` (the ASGI routes, a thin shell), ``fake_upstream`` (a
deterministic OpenAI-compatible server for tests, the demo and the benchmark).
"""
