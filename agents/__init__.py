"""Worker processes of the swarm: oracle, scout, treasury (and arbiter), executor, risk, analyst.

Each worker is a separate process with one role that speaks only the public protocol
(``protocols/``) over NATS, with the agent's own credentials. Nothing here imports ``exchange``
(a test checks this), so a worker can run on any host, against any exchange that keeps the
protocol.

Modules:
- ``cli``: ``python -m agents ROLE --id ID ...``; ``main(argv)`` is also what ``exchange agent``
  delegates to.
- ``runtime``: connection, heartbeat, the task group that owns every loop, graceful shutdown.
- ``bus``: typed requests (same request_id across retries), queries and publishes.
- ``config``, ``limits``, ``errors``, ``messages``, ``logs``: values, bounds, exceptions, bodies
  not in ``protocols``, and the one structlog configuration.
- ``prices``, ``bounded``, ``clock``: pure helpers the roles share.
- ``demo``: the roster of the Contract Net auction demo (pure data for the orchestrator).
- ``roles/``: one module per role; its decisions are pure classes tested without NATS.
"""

__all__: list[str] = []
