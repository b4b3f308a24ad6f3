"""The gateway's admission against quotas (exchange/gateway/quotas.py), against the exchange's
real core in-process: the commands the gateway would send over NATS are applied to an
``Exchange`` as the daemon applies them, and their replies decoded as the gateway decodes them.
"""

import json
from decimal import Decimal
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from core_support import Harness

from exchange.core.config import parse_config
from exchange.core.metering import metered_cost_micro
from exchange.gateway.quotas import Admission, Quota, QuotaBook, Ticket
from protocols import commands as c
from protocols import queries as q
from protocols import results as r
from protocols.client_errors import ExchangeUnavailableError
from protocols.ids import ADMIN, GATEWAY

pytestmark = pytest.mark.anyio

PRICED = parse_config("[models]\ngpt-x = { input = 2.5, output = 10 }\n")
PRICE_IN, PRICE_OUT = 2_500_000, 10_000_000  # micro-tokens per 1,000


class CoreMeter:
    """The gateway's exchange side over a real core: ``gateway.quota`` and
    ``gateway.quota_settle`` applied in order, as the daemon would, at the harness's clock."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.asks = 0
        self.settles: list[dict[str, Any]] = []
        self.unanswered = 0  # the next N settles are lost on the way (the exchange is away)

    async def quota(
        self, agent: str, model: str, *, requests: int, tokens: int, min_tokens: int, admit_s: int
    ) -> r.GatewayQuotaResult | r.ErrorBody:
        self.asks += 1
        await anyio.lowlevel.checkpoint()  # a round trip: others run meanwhile
        envelope = self._send(
            c.GatewayQuota,
            agent=agent,
            model=model,
            requests=requests,
            tokens=tokens,
            min_tokens=min_tokens,
            admit_s=admit_s,
        )
        if envelope["ok"]:
            return msgspec.convert(envelope["result"], r.GatewayQuotaResult)
        return msgspec.convert(envelope["error"], r.ErrorBody)

    async def quota_settle(self, quota_id: str, usage: list[tuple[int, int]]) -> None:
        await anyio.lowlevel.checkpoint()
        if self.unanswered:
            self.unanswered -= 1
            raise ExchangeUnavailableError("no exchange answered", attempts=1)
        envelope = self._send(
            c.GatewayQuotaSettle, quota_id=quota_id, usage=[list(u) for u in usage]
        )
        assert envelope["ok"], envelope
        self.settles.append(envelope["result"])

    def _send(self, kind: type[c.Command], **fields: Any) -> dict[str, Any]:
        outcome = self.h.send(GATEWAY, kind, **fields)
        envelope: dict[str, Any] = json.loads(outcome.reply)
        return envelope


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def quota(**fields: Any) -> Quota:
    values: dict[str, Any] = {
        "quota_id": "gq-1",
        "agent": "zero",
        "model": "gpt-x",
        "requests_granted": 3,
        "requests_left": 3,
        "tokens_left": 300,
        "money_left_micro": 10**9,
        "input_micro_per_1k": PRICE_IN,
        "output_micro_per_1k": PRICE_OUT,
        "admit_until_s": 10.0,
        "last_admit_s": 0.0,
    }
    return Quota(**(values | fields))


def test_a_quota_admits_within_its_requests_tokens_money_and_deadline() -> None:
    q = quota()
    assert q.take(50, 50, now_s=1.0) and q.take(50, 50, now_s=1.0)
    assert not q.take(60, 50, now_s=1.0)  # 110 tokens, 100 left
    assert q.take(50, 50, now_s=1.0)
    assert not q.take(1, 1, now_s=1.0)  # no request left
    assert (q.requests_left, q.tokens_left, q.in_flight) == (0, 0, 3)
    cheap = quota(money_left_micro=metered_cost_micro(PRICE_IN, PRICE_OUT, 10, 10))
    assert cheap.take(10, 10, now_s=1.0)
    assert not cheap.take(1, 0, now_s=1.0)  # its money is spent
    late = quota()
    assert not late.take(1, 1, now_s=10.0)  # the admission period is over
    closed = quota(closed=True)
    assert not closed.take(1, 1, now_s=1.0)


def test_a_quota_is_settled_once_closed_and_its_last_request_finished() -> None:
    book = QuotaBook(idle_close_s=0.05)
    busy, idle, late = quota(quota_id="busy"), quota(quota_id="idle"), quota(quota_id="late")
    for each in (busy, idle, late):
        book.add(each)
    assert busy.take(1, 1, now_s=1.0) and busy.take(1, 1, now_s=1.0) and busy.take(1, 1, 1.0)
    assert idle.take(1, 1, now_s=1.0)
    Ticket(idle).finish(1, 1)
    assert late.take(1, 1, now_s=1.0)
    # Used up, but two requests still in flight: closed, not settled yet.
    assert [each.quota_id for each in book.settleable(now_s=1.01)] == []
    assert busy.closed and not idle.closed
    # Idle for 50 ms with nothing in flight: settled.
    assert [each.quota_id for each in book.settleable(now_s=1.05)] == ["idle"]
    for _ in range(3):
        busy.finish(5, 5)
    late.finish(2, 2)
    assert sorted(each.quota_id for each in book.settleable(now_s=1.06)) == ["busy", "late"]
    assert list(book) == []
    assert busy.usage == [(5, 5)] * 3


def test_a_ticket_is_finished_exactly_once() -> None:
    q = quota()
    assert q.take(1, 1, now_s=1.0)
    ticket = Ticket(q)
    ticket.finish(1, 0)
    with pytest.raises(AssertionError):
        ticket.finish(1, 0)


async def test_concurrent_requests_share_one_ask_and_are_charged_their_usage_exactly() -> None:
    h = Harness(PRICED)
    meter, clock = CoreMeter(h), Clock()
    admission = Admission(meter, clock=clock)
    before = h.balance("zero")
    tickets: list[Ticket | r.ErrorBody] = []

    async def one() -> None:
        tickets.append(await admission.admit("zero", "gpt-x", 40, 16))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(one)
    assert all(isinstance(t, Ticket) for t in tickets)
    # The first request asked for itself alone (no other had arrived); the 49 that came
    # meanwhile waited, and the next ask, sized by them, admitted every one: two asks, not 50.
    assert meter.asks == 2
    usages = [(10 + i % 7, i % 16) for i in range(50)]
    for ticket, (prompt, completion) in zip(tickets, usages, strict=True):
        assert isinstance(ticket, Ticket)
        ticket.finish(prompt, completion)
    clock.now_s += 1.0
    await admission.settle_due()
    assert [settled["requests"] for settled in meter.settles] == [1, 49]
    charged = sum(metered_cost_micro(PRICE_IN, PRICE_OUT, p, c) for p, c in usages)
    assert h.balance("zero") == before - Decimal(charged).scaleb(-6)
    assert h.ex.ledger.open_holds == {}
    h.ex.check_invariants()


async def test_requests_per_minute_admit_exactly_the_limit_however_many_arrive() -> None:
    h = Harness(PRICED)
    h.ok(ADMIN, c.SetLimits, agent="zero", limits=c.LimitsSpec(), rates=c.RatesSpec(rpm=100))
    meter, clock = CoreMeter(h), Clock()
    admission = Admission(meter, clock=clock)
    answers: list[Ticket | r.ErrorBody] = []

    async def one() -> None:
        answers.append(await admission.admit("zero", "gpt-x", 40, 16))

    async with anyio.create_task_group() as tg:
        for _ in range(300):
            tg.start_soon(one)
    admitted = [a for a in answers if isinstance(a, Ticket)]
    refused = [a for a in answers if isinstance(a, r.ErrorBody)]
    assert len(admitted) == 100
    assert {e.code for e in refused} == {"rate_limited_rpm"}
    for ticket in admitted:
        ticket.finish(40, 16)
    clock.now_s += 1.0
    await admission.settle_due()
    assert h.query(q.LimitsQuery(agent="zero"))["rates"]["requests_used"] == 100
    assert h.ex.ledger.open_holds == {}


async def test_money_short_of_a_full_quota_admits_only_what_it_can_hold() -> None:
    h = Harness(PRICED)
    balance = h.balance("lambda")
    worst = Decimal(metered_cost_micro(PRICE_IN, PRICE_OUT, 40, 16)).scaleb(-6)
    reserve = balance - 3 * worst
    h.ok(ADMIN, c.SetLimits, agent="lambda", limits=c.LimitsSpec(reserve=reserve))
    admission = Admission(CoreMeter(h), clock=Clock())
    answers = [await admission.admit("lambda", "gpt-x", 40, 16) for _ in range(5)]
    assert 1 <= sum(isinstance(a, Ticket) for a in answers) <= 3
    refused = [a for a in answers if isinstance(a, r.ErrorBody)]
    assert refused and refused[0].code == "reserve_would_be_breached"


async def test_a_settle_the_exchange_does_not_answer_is_sent_again() -> None:
    h = Harness(PRICED)
    meter, clock = CoreMeter(h), Clock()
    admission = Admission(meter, clock=clock)
    ticket = await admission.admit("zero", "gpt-x", 40, 16)
    assert isinstance(ticket, Ticket)
    ticket.finish(30, 5)
    meter.unanswered = 1
    clock.now_s += 1.0
    await admission.settle_due()
    assert meter.settles == [] and h.ex.ledger.open_holds != {}
    await admission.settle_due()
    assert len(meter.settles) == 1 and h.ex.ledger.open_holds == {}


async def test_drain_settles_every_open_quota_at_shutdown() -> None:
    h = Harness(PRICED)
    meter = CoreMeter(h)
    admission = Admission(meter, clock=Clock())
    for agent in ("zero", "spark"):
        ticket = await admission.admit(agent, "gpt-x", 40, 16)
        assert isinstance(ticket, Ticket)
        ticket.finish(40, 16)
    # Still inside their admission period and not idle: only a shutdown closes them.
    await admission.drain(timeout_s=5)
    assert len(meter.settles) == 2 and h.ex.ledger.open_holds == {}
