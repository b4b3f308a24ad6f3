"""Every bound and default of the daemon shell, in one place, with its unit in its name.

Owns: numbers only. Must not: import anything of the project but the protocol's published bounds
(which it takes, never restates), read the environment or do I/O. ``Settings`` (settings.py)
takes its defaults from here; tests and the bench override them there.

Not here, by design (docs/daemon.md, "Where bounds live"): the protocol's bounds (protocols/),
the ledger's rule constants (exchange/core/, beside their rule), the journal's own bounds
(exchange/journal/limits.py, which these stay within: tests/unit/test_bounds.py checks it), and
the embedded nats-server manager's timeouts and restart policy (natsserver.py and
natssupervisor.py, whose tests patch them there).
"""

from typing import Final

from protocols.nesting import MESSAGE_DEPTH_MAX

# A command or query body above this is refused with ``message_too_large`` before it is decoded.
# NATS's own max_payload (1 MiB) stays above it, so the exchange, not the server, answers.
message_bytes_max: Final = 64 * 1024
# Arrays and objects nested deeper than this in a body are refused with ``invalid_message`` before
# it is decoded (protocols/nesting.py says why): the protocol's bound, which agents apply too.
message_depth_max: Final = MESSAGE_DEPTH_MAX

# The inbound queue between the NATS subscription callbacks and the batcher. Not 0 (the style's
# default) because a full queue must answer ``overloaded`` at once: a small buffer absorbs the
# bursts of a few hundred requests in flight (measured with bench/transfers.py at 256 in flight).
inbound_queue_size_max: Final = 4096
# Commands (and queries) applied and journaled as one batch, one SQLite transaction. Batches
# grow by themselves under load: what arrives while one batch is being fsynced is the next one.
batch_size_max: Final = 1024

# NATS subscription buffers (per subscription, inside nats-py).
subscription_pending_msgs_max: Final = 65_536
subscription_pending_bytes_max: Final = 64 * 1024 * 1024
# The same for the service-discovery subscription ($SRV.*): its requests are tiny and rare.
control_pending_msgs_max: Final = 1024
control_pending_bytes_max: Final = 1024 * 1024

# Queries that read no ledger state (``shapley``) run in separate processes, off the writer
# (exchange/daemon/query_pool.py); their size bounds are in exchange/core/stateless_queries.py.
# One process by default: on the 2-core machine it was measured on (bench/query_isolation.py),
# the other core is left to the event loop and nats-server, which the transfers need.
query_processes_max: Final = 1
# Queries waiting for a process beyond those running; more are refused ``overloaded`` at once.
# Small, since each may take up to ``query_time_s_max``: the last waits a few of those.
query_queue_size_max: Final = 8
# A query running longer than this is stopped (its process killed) and answered
# ``query_timed_out``. The largest query within the size bounds takes ~0.3 s of one core here.
query_time_s_max: Final = 2.0
# The query processes' niceness: the event loop and nats-server get a contested core first.
query_process_niceness: Final = 10

# Agents whose last heartbeat the exchange remembers (in memory; the longest silent goes first).
liveness_agents_max: Final = 10_000

# Timers dropped for one command before it is refused as internal_error (each drop is a rebuild).
failures_per_command_max: Final = 8
# Ticks sent for one due time before the timer loop gives up on it (a core that fires nothing for
# a due timer would otherwise make every Tick journal nothing, forever).
ticks_per_due_max: Final = 1000

# The Prometheus endpoint (``--metrics-port``): a request's head, and the time to receive it.
metrics_request_bytes_max: Final = 8 * 1024
metrics_request_timeout_s: Final = 5.0

# A subject is logged up to this many characters (subjects come from peers).
subject_log_chars_max: Final = 200

# A snapshot every this many journaled commands, and one at every clean shutdown. Taking one
# serialises the whole state on the event loop (about 200 ms at 100k remembered request ids),
# and a restart replays at most this many entries (about 30 us each).
snapshot_every_commands: Final = 50_000

# How often the journal's high-water mark (journal.hwm) is brought up to the committed head. Each
# write costs two fsyncs in a worker thread, so never per batch; a loss of WAL frames committed
# within this long before a crash cannot be told from a crash (docs/daemon.md#durability).
high_water_interval_s: Final = 1.0

# Shutdown: how long draining subscriptions and finishing in-flight batches may take.
drain_timeout_s: Final = 10.0
# Connecting to NATS at startup.
connect_timeout_s: Final = 5.0

# The default port of the embedded nats-server (NATS's own default).
nats_port_default: Final = 4222

# The jetstream backend's leader lease (lease.py): how long a leader that stopped renewing keeps
# it. A takeover takes about this long after the leader dies, plus the catch-up; shorter means
# faster failover but more renewals (four per TTL) and more false takeovers on a slow network
# (which are safe: the stream fences the deposed leader).
lease_ttl_s_default: Final = 2.0
# How often a standby tries to take a free lease.
lease_poll_s: Final = 0.2
