"""The one logging configuration (protocols/logs.py): configure it onto an in-memory stream, log,
and read back what a process of the exchange or a worker would write to stderr."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from agents import cli as agent_cli
from protocols.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # configure_logging changes process-wide state: structlog's defaults and the root logger.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_a_stream_that_is_not_a_terminal_gets_one_json_object_per_line() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    structlog.get_logger().info("batch_committed", entries=3)
    structlog.get_logger().info("snapshot_written", seq=7)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "batch_committed" and first["entries"] == 3
    assert first["level"] == "info" and first["timestamp"].endswith("Z")
    assert second["event"] == "snapshot_written"


def test_console_format_writes_key_value_lines() -> None:
    stream = io.StringIO()
    configure_logging(log_format="console", stream=stream)
    structlog.get_logger().warning("nats_server_restarted", restarts=2)
    line = stream.getvalue()
    assert "nats_server_restarted" in line and "restarts=2" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_the_level_filters_and_is_read_in_any_case() -> None:
    stream = io.StringIO()
    configure_logging(level="WARNING", stream=stream)
    structlog.get_logger().info("worker_starting")
    structlog.get_logger().warning("open_mode_connection")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == [
        "open_mode_connection"
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"level": "verbose"}, "log level must be one of"), ({"log_format": "xml"}, "log format")],
)
def test_an_unknown_level_or_format_is_refused(arguments: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        configure_logging(**arguments)  # type: ignore[arg-type]


def test_workers_configure_through_the_same_function() -> None:
    assert agent_cli.configure_logging is configure_logging
