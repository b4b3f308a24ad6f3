"""What every test shares: logging configured by one test never leaks into the next.

A CLI run in-process may configure structlog for its process (its level, its processors); a later
test that captures logs with ``structlog.testing.capture_logs`` would then miss events below that
level. So each test starts from the configuration the session had, and gets it back after.
"""

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
