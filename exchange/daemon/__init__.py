"""The daemon shell: NATS, anyio, structlog, clock and config around the pure core.

Modules, in the order a command meets them:
- ``app``: the composition root, ``run_exchange(settings, task_status=...)``; startup and shutdown.
- ``settings`` / ``limits``: what a run is told, and every bound with its unit in its name.
- ``natsserver``: the embedded nats-server (config, users, permissions, pid file, reload).
- ``creds`` / ``endpoint``: the files of a data directory that clients read.
- ``routes``: the routing table, subject and body to a command, a query or a refusal.
- ``service``: the subscription callbacks, the wire-level refusals, ``$SRV.*``, publishing.
- ``batcher``: the ordered path, batch → apply → journal → reply → events; timers.
- ``recovery``: the economy config of a journal, genesis, replay with checked replies.
- ``clock``, ``events``, ``discovery``, ``logs``, ``errors``.
"""
