"""The Prometheus endpoint (``exchange up --metrics-port P [--metrics-host H]``): the ledger's,
journal's and bus's counters, per-endpoint latency histograms, refusals by code, spend by agent and
model, the auctions, the swarm health metrics, ``exchange_build_info`` and the process metrics.

Owns: ``ExchangeMetrics`` (one ``prometheus_client`` registry per running exchange: the metrics
recorded as things happen, and ``ExchangeCollector``, which reads the exchange's state at scrape
time) and ``serve_metrics`` (an HTTP/1.1 responder on the event loop that hands each request to
``prometheus_client``'s WSGI app, so content negotiation, gzip and ``?name[]=`` filters are the
library's). Must not: change any state, or block the loop for long (a scrape reads in-memory
state only; no journal, no digest).

Why on the event loop and not ``prometheus_client.start_http_server``: that server answers in its
own threads, and a scrape there would read the ledger's dicts while the loop mutates them. Here a
scrape runs between two messages, sees one consistent state, and a stop leaves no thread behind.
"""

import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exchange.core.machine import Exchange
from exchange.core.swarm_metrics import evaluate
from exchange.daemon import limits
from exchange.daemon.discovery import EndpointCounters
from exchange.daemon.liveness import LastHeartbeat
from exchange.journal import Entry
from protocols.amounts import MICRO_PER_TOKEN
from protocols.ids import is_agent_id
from protocols.units import NS_PER_S

log = structlog.get_logger()

_STATUSES: Final = ("ok", "watch", "warning", "no_data")
_LLM_ACCOUNT_PREFIX: Final = "@llm."
METRICS_PATH: Final = "/metrics"
# From 100 µs (a reply out of one small batch) to 10 s (a query near its time limit).
LATENCY_BUCKETS_S: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(frozen=True, slots=True)
class ScrapeSources:
    """What a scrape reads besides the exchange, each read at scrape time."""

    durable_seq: Callable[[], int]
    batches_committed: Callable[[], int]
    bus: Callable[[], dict[str, int]]
    heartbeats: Callable[[], Iterable[LastHeartbeat]]
    wall_ns: Callable[[], int]


class ExchangeCollector(Collector):
    """The metrics read from the exchange's state at each scrape (gauges, and counters the ledger
    or the pipeline already keeps)."""

    def __init__(
        self, exchange: Exchange, endpoints: Sequence[EndpointCounters], sources: ScrapeSources
    ) -> None:
        self._exchange = exchange
        self._endpoints = endpoints
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._ledger()
        yield from self._endpoint_totals()
        yield from self._bus()
        yield from self._auctions()
        yield from self._swarm()
        yield from self._heartbeats()

    def _ledger(self) -> Iterator[Metric]:
        ledger = self._exchange.ledger
        book = ledger.book
        yield CounterMetricFamily(
            "exchange_commands_applied", "Commands applied (refusals included).", value=book.seq
        )
        yield GaugeMetricFamily(
            "exchange_journal_durable_seq",
            "Last journal entry committed to disk.",
            value=self._sources.durable_seq(),
        )
        yield CounterMetricFamily(
            "exchange_batches_committed",
            "Journal batches committed (one fsync each).",
            value=self._sources.batches_committed(),
        )
        yield GaugeMetricFamily("exchange_agents", "Registered agents.", value=len(ledger.agents))
        yield GaugeMetricFamily("exchange_open_holds", "Open holds.", value=len(ledger.open_holds))
        yield GaugeMetricFamily(
            "exchange_supply_tokens",
            "Tokens minted and not spent.",
            value=book.supply_micro() / MICRO_PER_TOKEN,
        )
        balances = GaugeMetricFamily(
            "exchange_balance_tokens",
            "Balance of each account, system accounts included.",
            labels=["account"],
        )
        for account, balance in sorted(book.balances.items()):
            balances.add_metric([account], balance / MICRO_PER_TOKEN)
        yield balances
        spent = CounterMetricFamily(
            "exchange_agent_spent_tokens",
            "Tokens each agent has spent on inference since the journal began.",
            labels=["agent"],
        )
        for agent_id, agent in sorted(ledger.agents.items()):
            spent.add_metric([agent_id], agent.spent_micro / MICRO_PER_TOKEN)
        yield spent

    def _endpoint_totals(self) -> Iterator[Metric]:
        for field, text in (
            ("requests", "Requests answered on each endpoint."),
            ("errors", "Refusals sent on each endpoint."),
        ):
            family = CounterMetricFamily(f"exchange_endpoint_{field}", text, labels=["endpoint"])
            for counters in self._endpoints:
                family.add_metric([counters.name], getattr(counters, field))
            yield family

    def _bus(self) -> Iterator[Metric]:
        bus = self._sources.bus()
        for unit, text in (("messages", "Messages"), ("bytes", "Bytes")):
            family = CounterMetricFamily(
                f"exchange_nats_{unit}",
                f"{text} through the exchange's connection.",
                labels=["direction"],
            )
            key = "msgs" if unit == "messages" else unit
            for direction in ("in", "out"):
                family.add_metric([direction], bus.get(f"{direction}_{key}", 0))
            yield family
        yield CounterMetricFamily(
            "exchange_nats_reconnects", "Reconnections to NATS.", value=bus.get("reconnects", 0)
        )

    def _auctions(self) -> Iterator[Metric]:
        market = self._exchange.market
        by_state: dict[str, int] = {}
        bids_open = 0
        for task in market.tasks.values():
            by_state[task.state] = by_state.get(task.state, 0) + 1
            if task.state == "open":
                bids_open += len(task.bids)
        tasks = GaugeMetricFamily(
            "exchange_tasks", "Tasks (auctions) kept, by state.", labels=["state"]
        )
        for state, count in sorted(by_state.items()):
            tasks.add_metric([state], count)
        yield tasks
        yield GaugeMetricFamily(
            "exchange_open_task_bids", "Bids on the tasks whose window is open.", value=bids_open
        )
        yield CounterMetricFamily(
            "exchange_tasks_forgotten",
            "Finished tasks no longer kept (the oldest, past the retention limit).",
            value=market.forgotten.finished,
        )

    def _swarm(self) -> Iterator[Metric]:
        readings = evaluate(self._exchange.metric_inputs())
        values = GaugeMetricFamily(
            "exchange_swarm_metric",
            "Swarm health metrics of docs/economy.md (absent: no data).",
            labels=["name"],
        )
        statuses = GaugeMetricFamily(
            "exchange_swarm_metric_status",
            "1 for each metric's current status.",
            labels=["name", "status"],
        )
        for reading in readings:
            if reading.value is not None:
                values.add_metric([reading.name], reading.value)
            for status in _STATUSES:
                statuses.add_metric([reading.name, status], 1 if reading.status == status else 0)
        yield values
        yield statuses

    def _heartbeats(self) -> Iterator[Metric]:
        wall_ns = self._sources.wall_ns()
        ages = GaugeMetricFamily(
            "exchange_agent_heartbeat_age_seconds",
            "Seconds since each agent's last heartbeat reached the exchange (since its start).",
            labels=["agent", "role"],
        )
        for beat in self._sources.heartbeats():
            ages.add_metric(
                [beat.agent, beat.role], max(0, wall_ns - beat.received_wall_ns) / NS_PER_S
            )
        yield ages


class ExchangeMetrics:
    """One running exchange's registry: what is recorded as it happens (latency, refusals, spend)
    plus ``ExchangeCollector`` once ``watch`` is called. Mutated only on the event loop."""

    def __init__(self, *, version: str, service_id: str) -> None:
        # auto_describe: each collector is listed under its names, so `?name[]=` finds them all.
        self.registry = CollectorRegistry(auto_describe=True)
        self._latency = Histogram(
            "exchange_endpoint_latency_seconds",
            "Time from receipt to reply on each endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._refusals = Counter(
            "exchange_refusals",
            "Refusals sent, by endpoint and error code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self._llm_spent = Counter(
            "exchange_llm_spent_tokens",
            "Tokens paid for inference since the exchange started, by agent and model.",
            ["agent", "model"],
            registry=self.registry,
        )
        Info("exchange_build", "The exchange's version.", registry=self.registry).info(
            {
                "version": version,
                "service_id": service_id,
                "python_version": platform.python_version(),
            }
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def watch(
        self, exchange: Exchange, endpoints: Sequence[EndpointCounters], sources: ScrapeSources
    ) -> None:
        """Adds the state read at scrape time, and records every reply of ``endpoints``."""
        self.registry.register(ExchangeCollector(exchange, endpoints, sources))
        for counters in endpoints:
            counters.on_record = self._recorder(counters.name)

    def _recorder(self, endpoint: str) -> Callable[[int, str | None], None]:
        # The label lookups happen once here, not per reply: per reply it is one observe().
        observe = self._latency.labels(endpoint=endpoint).observe
        refusals = self._refusals

        def record(elapsed_ns: int, code: str | None) -> None:
            observe(elapsed_ns / NS_PER_S)
            if code is not None:
                refusals.labels(endpoint=endpoint, code=code).inc()

        return record

    def count_spend(self, exchange: Exchange, entries: Sequence[Entry]) -> None:
        """Counts the inference payments (postings to ``@llm.<model>``) of committed entries.

        A settled authorization pays from escrow: its agent is the holder of the hold named in
        the posting's memo.
        """
        holds = exchange.ledger.holds
        for entry in entries:
            for posting in entry.postings:
                if not posting.credit_account.startswith(_LLM_ACCOUNT_PREFIX):
                    continue
                agent = posting.debit_account
                if not is_agent_id(agent):
                    hold = holds.get(posting.memo)
                    agent = hold.account if hold is not None else entry.sender
                model = posting.credit_account.removeprefix(_LLM_ACCOUNT_PREFIX)
                self._llm_spent.labels(agent=agent, model=model).inc(
                    posting.amount_micro / MICRO_PER_TOKEN
                )


def _environ(method: str, target: str, headers: dict[str, str]) -> dict[str, object]:
    path, _, query = target.partition("?")
    environ: dict[str, object] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote(path),
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    for name in ("accept", "accept-encoding"):
        if name in headers:
            environ["HTTP_" + name.upper().replace("-", "_")] = headers[name]
    return environ


def respond(registry: CollectorRegistry, head: bytes) -> bytes:
    """The whole HTTP response to a request's head (pure apart from reading the registry).

    ``GET``/``HEAD /metrics[?name[]=...]``: the exposition (``HEAD``: its headers only); another
    path: 404; another method: prometheus_client's answer (405, or 200 to ``OPTIONS``).
    """
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0].split()
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if len(request_line) < 2:
        return _response("400 Bad Request", [("Content-Type", "text/plain")], b"bad request\n")
    method, target = request_line[0], request_line[1]
    if target.partition("?")[0] != METRICS_PATH:
        return _response("404 Not Found", [("Content-Type", "text/plain")], b"try /metrics\n")
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        started.append((status, response_headers))

    app = make_wsgi_app(registry)
    # HEAD is GET without the body (RFC 9110 9.3.2); the WSGI app itself answers HEAD with 405.
    as_method = "GET" if method == "HEAD" else method
    body = b"".join(app(_environ(as_method, target, headers), start_response))
    status, response_headers = started[0]
    return _response(status, response_headers, body, send_body=method != "HEAD")


def _response(
    status: str, headers: list[tuple[str, str]], body: bytes, *, send_body: bool = True
) -> bytes:
    header = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    header += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return header.encode("latin-1") + (body if send_body else b"")


async def serve_metrics(
    host: str,
    port: int,
    registry: CollectorRegistry,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answers ``GET``/``HEAD /metrics`` until cancelled; reports the bound port when listening."""
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
                response = respond(registry, head.partition(b"\r\n\r\n")[0])
                try:
                    await stream.send(response)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return

    async with listener:
        await listener.serve(answer)
