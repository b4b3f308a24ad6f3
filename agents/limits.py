"""Every bound the workers keep, in one place, with its unit in its name.

A worker is a long-running process fed by other processes it does not control, so every buffer,
map, window and retry loop here has a ceiling. Nothing here does I/O.
"""

from typing import Final

# NATS subscriptions: what nats-py may buffer for one subscription before it drops messages and
# reports a slow consumer (the loops are fast, so reaching these means something is wrong).
subscription_pending_msgs_max: Final = 4096
subscription_pending_bytes_max: Final = 8 * 1024 * 1024
# What nats-py buffers for publishing while the connection is down. Kept small: prices and
# signals are dropped while disconnected (stale ones are worse than none), and requests are
# retried by the client anyway (``protocols.client``, which also owns the waits between attempts).
publish_pending_bytes_max: Final = 1024 * 1024

# Work a worker runs beside its subscription loops (executions, verifications, reports).
tasks_in_flight_max: Final = 64

# Requests to the exchange: attempts with the same request_id, then give up.
request_attempts_max: Final = 20
request_timeout_ms_max: Final = 60_000

# Intervals, so that a typo cannot make a loop spin or sleep for a year.
interval_ms_min: Final = 10
interval_ms_max: Final = 3_600_000
shutdown_grace_ms_max: Final = 120_000
drain_timeout_s: Final = 5.0

# Memory held by the roles' pure logic.
assets_max: Final = 256
price_history_per_asset_max: Final = 512
momentum_window_prices_max: Final = 1000
tracked_tasks_max: Final = 1024
tracked_proposals_max: Final = 256
positions_max: Final = 256
handled_ids_max: Final = 4096

# Inputs from files and from the wire.
csv_bytes_max: Final = 64 * 1024 * 1024
csv_rows_max: Final = 1_000_000
credentials_bytes_max: Final = 64 * 1024
report_chars_max: Final = 4096
arbitration_batch_max: Final = 50

# Prices and sizes on the wire: at most 6 decimal places, like amounts (docs/economy.md, "Money").
decimals_max: Final = 6
