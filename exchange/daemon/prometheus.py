"""A Prometheus text endpoint (``exchange up --metrics-port P``): ledger, journal and bus counters
and the swarm health metrics, for the monitoring operators already run.

Owns: ``render_metrics`` (pure: state in, exposition text out) and ``serve_metrics`` (a minimal
HTTP/1.1 responder for ``GET /metrics`` on loopback by default). Must not: change any state, or
block the loop for long (a scrape reads in-memory counters only; no journal, no digest).
"""

from collections.abc import Callable, Iterable
from typing import Final

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus

from exchange.core.machine import Exchange
from exchange.core.swarm_metrics import evaluate
from exchange.daemon import limits
from exchange.daemon.discovery import EndpointCounters
from exchange.daemon.liveness import LastHeartbeat
from protocols.amounts import MICRO_PER_TOKEN
from protocols.units import NS_PER_S

log = structlog.get_logger()

_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_STATUSES: Final = ("ok", "watch", "warning", "no_data")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value}" for labels, value in samples]
    return lines


def _directions(bus: dict[str, int], unit: str) -> list[tuple[str, float]]:
    return [(f'{{direction="{d}"}}', bus.get(f"{d}_{unit}", 0)) for d in ("in", "out")]


def render_metrics(
    exchange: Exchange,
    *,
    durable_seq: int,
    batches_committed: int,
    endpoints: Iterable[EndpointCounters],
    bus: dict[str, int],
    heartbeats: Iterable[LastHeartbeat] = (),
    wall_ns: int = 0,
) -> str:
    """The exposition text for one scrape (``wall_ns``: now, to age the heartbeats)."""
    ledger = exchange.ledger
    book = ledger.book
    endpoints = list(endpoints)
    lines: list[str] = []
    lines += _family(
        "exchange_commands_applied_total",
        "counter",
        "Commands applied (refusals included).",
        [("", book.seq)],
    )
    lines += _family(
        "exchange_journal_durable_seq",
        "gauge",
        "Last journal entry committed to disk.",
        [("", durable_seq)],
    )
    lines += _family(
        "exchange_batches_committed_total",
        "counter",
        "Journal batches committed (one fsync each).",
        [("", batches_committed)],
    )
    lines += _family("exchange_agents", "gauge", "Registered agents.", [("", len(ledger.agents))])
    lines += _family("exchange_open_holds", "gauge", "Open holds.", [("", len(ledger.open_holds))])
    lines += _family(
        "exchange_supply_tokens",
        "gauge",
        "Tokens minted and not spent.",
        [("", book.supply_micro() / MICRO_PER_TOKEN)],
    )
    lines += _family(
        "exchange_balance_tokens",
        "gauge",
        "Balance of each account, system accounts included.",
        [
            (f'{{account="{_escape(account)}"}}', balance / MICRO_PER_TOKEN)
            for account, balance in sorted(book.balances.items())
        ],
    )
    for field, text in (
        ("requests", "Requests answered on each endpoint."),
        ("errors", "Refusals sent on each endpoint."),
    ):
        lines += _family(
            f"exchange_endpoint_{field}_total",
            "counter",
            text,
            [(f'{{endpoint="{_escape(e.name)}"}}', getattr(e, field)) for e in endpoints],
        )
    lines += _family(
        "exchange_endpoint_processing_seconds_total",
        "counter",
        "Time from receipt to reply, summed, on each endpoint.",
        [
            (f'{{endpoint="{_escape(e.name)}"}}', e.processing_ns_total / NS_PER_S)
            for e in endpoints
        ],
    )
    lines += _family(
        "exchange_nats_messages_total",
        "counter",
        "Messages through the exchange's connection.",
        _directions(bus, "msgs"),
    )
    lines += _family(
        "exchange_nats_bytes_total",
        "counter",
        "Bytes through the exchange's connection.",
        _directions(bus, "bytes"),
    )
    lines += _family(
        "exchange_nats_reconnects_total",
        "counter",
        "Reconnections to NATS.",
        [("", bus.get("reconnects", 0))],
    )
    readings = evaluate(exchange.metric_inputs())
    lines += _family(
        "exchange_swarm_metric",
        "gauge",
        "Swarm health metrics of docs/economy.md (absent: no data).",
        [(f'{{name="{m.name}"}}', m.value) for m in readings if m.value is not None],
    )
    lines += _family(
        "exchange_swarm_metric_status",
        "gauge",
        "1 for each metric's current status.",
        [
            (f'{{name="{m.name}",status="{s}"}}', 1 if m.status == s else 0)
            for m in readings
            for s in _STATUSES
        ],
    )
    lines += _family(
        "exchange_agent_heartbeat_age_seconds",
        "gauge",
        "Seconds since each agent's last heartbeat reached the exchange (since its start).",
        [
            (
                f'{{agent="{_escape(beat.agent)}",role="{_escape(beat.role)}"}}',
                max(0, wall_ns - beat.received_wall_ns) / NS_PER_S,
            )
            for beat in heartbeats
        ],
    )
    return "\n".join(lines) + "\n"


async def serve_metrics(
    host: str,
    port: int,
    render: Callable[[], str],
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answers ``GET /metrics`` until cancelled; reports the bound port when listening."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound_port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    log.info("metrics_listening", host=host, port=bound_port)
    task_status.started(bound_port)

    async def answer(stream: SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(limits.metrics_request_timeout_s):
                head = b""
                while b"\r\n\r\n" not in head and len(head) < limits.metrics_request_bytes_max:
                    try:
                        head += await stream.receive(limits.metrics_request_bytes_max)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                request_line = head.split(b"\r\n", 1)[0].split()
                if len(request_line) >= 2 and request_line[:2] == [b"GET", b"/metrics"]:
                    status, content_type, body = "200 OK", _CONTENT_TYPE, render().encode()
                else:
                    status, content_type, body = "404 Not Found", "text/plain", b"try /metrics\n"
                header = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                ).encode()
                try:
                    await stream.send(header + body)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return

    async with listener:
        await listener.serve(answer)
