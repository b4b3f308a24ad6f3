"""Time formats on the wire: integers with their unit in the name, or RFC 3339 strings (``*_at``).

Pure: the runtime reads the clocks (``WorkerContext.now_ns``/``monotonic_ms``) and passes values in.
"""

from datetime import UTC, datetime, timedelta
from typing import Final

from protocols.units import NS_PER_US

__all__ = ["rfc3339"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(at_ns: int) -> str:
    """``at_ns`` (nanoseconds since the epoch) as an RFC 3339 UTC time with microseconds."""
    moment = _EPOCH + timedelta(microseconds=at_ns // NS_PER_US)
    return moment.isoformat().replace("+00:00", "Z")
