"""Every bound the journal enforces, in one place.

The daemon's own batcher has tighter limits; these are the journal's last line of defence, sized so
that one batch, one entry or one snapshot can never exhaust memory or stall the commit path,
whoever opens the journal (the daemon, ``doctor``, ``export``, the benches). The daemon's bounds
stay within these (tests/unit/test_bounds.py); where each kind of bound lives is in
docs/daemon.md, "Where bounds live". Must not: import anything, or hold the daemon's tuning.
"""

from typing import Final

# One append_batch call is one SQLite transaction; larger batches hold the write lock longer.
batch_entries_max: Final = 8192
# NATS's default max_payload is 1 MiB, so a command body or reply never needs more.
body_bytes_max: Final = 1024 * 1024
reply_bytes_max: Final = 1024 * 1024
# An agent id, verb, account name or posting kind, as UTF-8 bytes.
name_bytes_max: Final = 256
# The protocol allows 4,096-character texts (up to 16 KiB of UTF-8), and a core memo may join two.
memo_bytes_max: Final = 32 * 1024
# One command can fire every timer that fell due while the exchange was down (hold expiries,
# auction closes, escrow deadlines), each with its postings: the bound is that of open holds.
postings_per_entry_max: Final = 1_000_000
# SQLite stores INTEGER as a signed 64-bit value; at_ns fits until the year 2262.
int64_max: Final = 2**63 - 1

# Snapshot at seq N = the state after entries 1..N. Older ones are kept only as a fallback.
snapshot_keep_count: Final = 3
# SQLite's default SQLITE_MAX_LENGTH is 1e9 bytes; stay well below it.
snapshot_state_bytes_max: Final = 512 * 1024 * 1024

# Rows fetched per query when streaming (iter_entries, iter_postings, export).
page_entries_default: Final = 512
page_entries_max: Final = 65536
# How long a connection waits for another connection's lock before failing.
busy_timeout_s: Final = 5.0
# After a checkpoint, SQLite truncates the WAL file down to this size.
wal_size_bytes_max: Final = 64 * 1024 * 1024
# Seqs per range read when reading entries by seq (a chunk's rows are held in memory at once).
entries_at_chunk: Final = 10_000
# The high-water mark file (journal.hwm) holds about 150 bytes; anything much larger is not a mark.
high_water_file_bytes_max: Final = 4096
