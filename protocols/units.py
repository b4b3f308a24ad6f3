"""Time units: the factors between the units that names end in (``_ns``, ``_us``, ``_ms``, ``_s``).

Owns: every conversion factor between time units, for the core, the shell, the CLI, the
simulation, the workers and the tests alike. It lives in ``protocols`` because the wire names its
times by unit (``at_ns``, ``deadline_ms``, ``timeout_s``) and because ``agents`` may import only
``protocols``; a second copy anywhere else is a bug to remove, not a convenience. Must not: hold
anything but these integer constants (no clocks, no formatting, no imports).

Multiply by ``A_PER_B`` to turn a count of B into a count of A: ``timeout_s * NS_PER_S`` is
nanoseconds, ``elapsed_ns // NS_PER_MS`` whole milliseconds, ``interval_ms / MS_PER_S`` seconds
as a float.
"""

from typing import Final

__all__ = [
    "HOURS_PER_DAY",
    "MS_PER_HOUR",
    "MS_PER_S",
    "NS_PER_HOUR",
    "NS_PER_MS",
    "NS_PER_S",
    "NS_PER_US",
    "S_PER_DAY",
    "S_PER_HOUR",
    "US_PER_S",
]

NS_PER_US: Final = 1_000
NS_PER_MS: Final = 1_000_000
NS_PER_S: Final = 1_000_000_000
US_PER_S: Final = 1_000_000
MS_PER_S: Final = 1_000
S_PER_HOUR: Final = 3_600
HOURS_PER_DAY: Final = 24
S_PER_DAY: Final = HOURS_PER_DAY * S_PER_HOUR
MS_PER_HOUR: Final = S_PER_HOUR * MS_PER_S
NS_PER_HOUR: Final = S_PER_HOUR * NS_PER_S
