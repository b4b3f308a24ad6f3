"""Admission against quotas: the gateway admits requests without a round trip to the exchange.

The exchange grants the gateway a quota of an agent's requests to one model (``gateway.quota``:
so many requests, so many tokens, their worst-case cost held, admitted until a deadline), as a
telecom charging system grants a gateway units of credit. The gateway admits each request against
an open quota of its agent and model (``QuotaBook``, pure: it never waits and never reads the
clock), and once a quota is done (its deadline passed, its requests or tokens used up, or idle)
and its last request has finished, settles it with each request's reported usage
(``gateway.quota_settle``). ``Admission`` is the shell: it asks for a quota when none has room
(one ask at a time per agent and model; requests arriving meanwhile wait for it) and settles
the done quotas in the background.

Why quotas: a hold per request costs two durable commands on the exchange, each one round trip
and one journal commit (3 ms at p50 on the project's machine), on the path of every answer.

What stays exact: a request is admitted only within what the exchange granted (requests, tokens
and money, costed at the model's prices with the exchange's own rounding), so no window and no
balance is exceeded however many requests arrive at once; and the settlement charges each
request its own usage, so the ledger's spend equals the upstream's reported usage. What changes:
an answer's charge reaches the ledger when its quota is settled (0.25 s to about 2 s later),
and a gateway that dies with open quotas leaves them to expire (voided, their worst case kept in
the agent's minute).
"""

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

import anyio
import structlog

from exchange.core.metering import metered_cost_micro
from protocols import results as r
from protocols.amounts import micro_of_text
from protocols.client_errors import ExchangeUnavailableError

log: Final = structlog.get_logger("exchange.gateway")

Key = tuple[str, str]  # (agent, model)


@dataclass(slots=True)
class Quota:
    """One grant and what has been admitted against it (times are the gateway's monotonic s)."""

    quota_id: str
    agent: str
    model: str
    requests_granted: int
    requests_left: int
    tokens_left: int
    money_left_micro: int
    input_micro_per_1k: int
    output_micro_per_1k: int
    admit_until_s: float
    last_admit_s: float
    in_flight: int = 0
    closed: bool = False
    usage: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def granted(cls, grant: r.GatewayQuotaResult, asked_at_s: float, admit_s: float) -> "Quota":
        """From the exchange's grant. The admission deadline counts from when the gateway asked:
        the exchange stamped the grant later than that, so the gateway stops admitting no later
        than the exchange's own deadline (which its windows count from)."""
        return cls(
            quota_id=grant.quota_id,
            agent=grant.agent,
            model=grant.model,
            requests_granted=grant.requests,
            requests_left=grant.requests,
            tokens_left=grant.tokens,
            money_left_micro=micro_of_text(grant.held),
            input_micro_per_1k=micro_of_text(grant.input_per_1k),
            output_micro_per_1k=micro_of_text(grant.output_per_1k),
            admit_until_s=asked_at_s + admit_s,
            last_admit_s=asked_at_s,
        )

    def worst_cost_micro(self, prompt_tokens: int, max_tokens: int) -> int:
        return metered_cost_micro(
            self.input_micro_per_1k, self.output_micro_per_1k, prompt_tokens, max_tokens
        )

    def take(self, prompt_tokens: int, max_tokens: int, now_s: float) -> bool:
        """Admits one request of this worst case if the quota has room for it."""
        cost = self.worst_cost_micro(prompt_tokens, max_tokens)
        tokens = prompt_tokens + max_tokens
        if self.closed or now_s >= self.admit_until_s:
            return False
        if self.requests_left < 1 or tokens > self.tokens_left or cost > self.money_left_micro:
            return False
        self.requests_left -= 1
        self.tokens_left -= tokens
        self.money_left_micro -= cost
        self.in_flight += 1
        self.last_admit_s = now_s
        return True

    def finish(self, prompt_tokens: int, completion_tokens: int) -> None:
        assert self.in_flight > 0, self.quota_id
        self.in_flight -= 1
        self.usage.append((prompt_tokens, completion_tokens))


class QuotaBook:
    """The open quotas by agent and model, and those done and ready to be settled."""

    def __init__(self, *, idle_close_s: float) -> None:
        self.idle_close_s = idle_close_s
        self.open: dict[Key, list[Quota]] = {}

    def admit(
        self, agent: str, model: str, prompt: int, max_tokens: int, now_s: float
    ) -> Quota | None:
        for quota in self.open.get((agent, model), ()):
            if quota.take(prompt, max_tokens, now_s):
                return quota
        return None

    def add(self, quota: Quota) -> None:
        self.open.setdefault((quota.agent, quota.model), []).append(quota)

    def settleable(self, now_s: float) -> list[Quota]:
        """Closes the quotas whose admission is over (deadline passed, requests used up, or no
        request admitted for ``idle_close_s``) and returns, removed from the book, the closed
        ones whose requests have all finished."""
        done: list[Quota] = []
        for key, quotas in list(self.open.items()):
            for quota in quotas:
                if not quota.closed and (
                    now_s >= quota.admit_until_s
                    or quota.requests_left == 0
                    or now_s - quota.last_admit_s >= self.idle_close_s
                ):
                    quota.closed = True
            ready = [q for q in quotas if q.closed and q.in_flight == 0]
            if ready:
                done.extend(ready)
                kept = [q for q in quotas if not (q.closed and q.in_flight == 0)]
                if kept:
                    self.open[key] = kept
                else:
                    del self.open[key]
        return done

    def close_all(self) -> None:
        for quotas in self.open.values():
            for quota in quotas:
                quota.closed = True

    def __iter__(self) -> Iterator[Quota]:
        for quotas in self.open.values():
            yield from quotas


@dataclass(slots=True)
class Ticket:
    """One admitted request; ``finish`` it exactly once with what the upstream used."""

    quota: Quota
    finished: bool = False

    def finish(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Records the usage to be charged (``0, 0``: the upstream call failed)."""
        assert not self.finished, self.quota.quota_id
        self.finished = True
        self.quota.finish(prompt_tokens, completion_tokens)


class QuotaMeter(Protocol):
    """What ``Admission`` needs from the exchange (``meter.Meter``)."""

    async def quota(
        self, agent: str, model: str, *, requests: int, tokens: int, min_tokens: int, admit_s: int
    ) -> r.GatewayQuotaResult | r.ErrorBody: ...

    async def quota_settle(self, quota_id: str, usage: list[tuple[int, int]]) -> None: ...


class Admission:
    """Admits requests against quotas, asking the exchange for one when none has room."""

    def __init__(
        self,
        meter: QuotaMeter,
        *,
        admit_s: int = 2,
        idle_close_s: float = 0.25,
        settle_interval_s: float = 0.02,
        requests_max: int = 256,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.meter = meter
        self.admit_s = admit_s
        self.settle_interval_s = settle_interval_s
        self.requests_max = requests_max
        self.clock = clock
        self.book = QuotaBook(idle_close_s=idle_close_s)
        self._asking: dict[Key, anyio.Event] = {}
        self._waiting: dict[Key, int] = {}
        # Admission times of the last second per key: the demand a new quota is sized by.
        self._recent: dict[Key, deque[float]] = {}
        self._unsettled: list[Quota] = []
        # Set when a quota is granted: what an idle settle loop waits for (made by ``run``).
        self._granted: anyio.Event | None = None

    async def admit(
        self, agent: str, model: str, prompt_tokens: int, max_tokens: int
    ) -> Ticket | r.ErrorBody:
        """A ticket for one request, or the exchange's refusal of a quota for it. Raises
        ExchangeUnavailableError when the exchange does not answer."""
        key = (agent, model)
        while True:
            now_s = self.clock()
            quota = self.book.admit(agent, model, prompt_tokens, max_tokens, now_s)
            if quota is not None:
                self._count(key, now_s)
                return Ticket(quota)
            asking = self._asking.get(key)
            if asking is not None:
                self._waiting[key] = self._waiting.get(key, 0) + 1
                try:
                    await asking.wait()
                finally:
                    self._waiting[key] -= 1
                continue
            refused = await self._ask(key, prompt_tokens + max_tokens)
            if refused is not None:
                return refused

    async def _ask(self, key: Key, tokens: int) -> r.ErrorBody | None:
        """One quota for ``key``, sized by the demand; its refusal, or None once granted."""
        asking = self._asking[key] = anyio.Event()
        try:
            requests = self._demand(key)
            asked_at_s = self.clock()
            # Shielded: a grant the exchange made must reach the book even if the request that
            # asked is cancelled meanwhile, or its hold would stay open until it expires.
            with anyio.CancelScope(shield=True):
                grant = await self.meter.quota(
                    key[0],
                    key[1],
                    requests=requests,
                    tokens=requests * tokens,
                    min_tokens=tokens,
                    admit_s=self.admit_s,
                )
        finally:
            del self._asking[key]
            asking.set()
        if isinstance(grant, r.ErrorBody):
            return grant
        self.book.add(Quota.granted(grant, asked_at_s, self.admit_s))
        if self._granted is not None:
            self._granted.set()
        return None

    def _demand(self, key: Key) -> int:
        """Requests to ask for: at the rate of the last second, enough for the whole admission
        period, plus those waiting now and the one asking."""
        recent = self._recent.get(key)
        per_s = len(recent) if recent is not None else 0
        wanted = per_s * self.admit_s + self._waiting.get(key, 0) + 1
        return max(1, min(self.requests_max, wanted))

    def _count(self, key: Key, now_s: float) -> None:
        recent = self._recent.setdefault(key, deque())
        recent.append(now_s)
        while recent and recent[0] <= now_s - 1.0:
            recent.popleft()

    # ------------------------------------------------------------------------ settling

    async def settle_due(self) -> None:
        """Settles the quotas that are done; one the exchange did not answer is kept and sent
        again next time (the settle is idempotent: its request id is the quota's)."""
        self._unsettled.extend(self.book.settleable(self.clock()))
        pending, self._unsettled = self._unsettled, []
        for index, quota in enumerate(pending):
            try:
                await self.meter.quota_settle(quota.quota_id, quota.usage)
            except BaseException as exc:
                # Cancelled or unanswered: this one may or may not have landed; sent again, it
                # is answered as the first was.
                self._unsettled.extend(pending[index:])
                if not isinstance(exc, ExchangeUnavailableError):
                    raise
                log.warning(
                    "gateway_quota_settle_unanswered", quota_id=quota.quota_id, error=str(exc)
                )
                return

    async def run(self) -> None:
        """Settles done quotas every ``settle_interval_s`` until cancelled; with none open or
        unsettled, sleeps until one is granted (an idle gateway does not wake)."""
        while True:
            if not self._left():
                self._granted = anyio.Event()
                await self._granted.wait()
            await anyio.sleep(self.settle_interval_s)
            await self.settle_due()

    async def drain(self, timeout_s: float) -> None:
        """At shutdown, once no request is in flight: closes every quota and settles them all
        (up to ``timeout_s``; what is left then expires on the exchange, logged)."""
        self.book.close_all()
        with anyio.move_on_after(timeout_s):
            await self.settle_due()
            while self._left():
                await anyio.sleep(self.settle_interval_s)
                await self.settle_due()
        if left := self._left():
            log.error("gateway_quotas_unsettled", quota_ids=left)

    def _left(self) -> list[str]:
        """The quotas not settled yet: open in the book, or sent and not answered."""
        return [q.quota_id for q in self.book] + [q.quota_id for q in self._unsettled]
