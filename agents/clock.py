"""Time formats on the wire: integers with their unit in the name, or RFC 3339 strings (``*_at``).

Pure: the runtime reads the clocks (``WorkerContext.now_ns``/``monotonic_ms``) and passes values in.
"""

from datetime import UTC, datetime, timedelta
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
NS_PER_MS: Final = 1_000_000


def rfc3339(at_ns: int) -> str:
    """``at_ns`` (nanoseconds since the epoch) as an RFC 3339 UTC time with microseconds."""
    moment = _EPOCH + timedelta(microseconds=at_ns // 1000)
    return moment.isoformat().replace("+00:00", "Z")
