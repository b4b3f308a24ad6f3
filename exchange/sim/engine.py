"""The simulation engine: submits every planned commit, closed issue and LLM request to the real
``Exchange`` on a virtual clock, in time order, and tallies what the ledger decided.

Pure and deterministic: no I/O, no wall clock, no randomness of its own (plans come from
``plan``). The ledger alone decides rewards, costs and refusals: the engine never computes one,
it reads them off the outcomes' postings and replies. What it adds is the agents' reaction to a
refusal (retry smaller after a burst refusal, optionally wait out a window limit).
"""

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

import msgspec

from exchange.core.accounts import MINT
from exchange.core.machine import Exchange, Outcome
from exchange.core.swarm_metrics import SwarmMetricInputs, evaluate, gini
from exchange.sim.credit import credit_events, credit_outcome, task_outcomes
from exchange.sim.plan import (
    CommitAction,
    CreditAction,
    Event,
    IssueAction,
    RequestAction,
    plan_agent,
)
from exchange.sim.result import (
    AgentOutcome,
    HourStats,
    Metric,
    ModelUsage,
    RefusalRecord,
    SimulationResult,
)
from exchange.sim.scenario import Scenario, ScenarioError, hours_max
from protocols import commands as c
from protocols import queries as q
from protocols import results as r
from protocols import swarm as s
from protocols.amounts import micro_of_text
from protocols.errors import ErrorCode
from protocols.ids import ADMIN
from protocols.units import (
    HOURS_PER_DAY,
    NS_PER_HOUR,
    NS_PER_MS,
    NS_PER_S,
    S_PER_DAY,
    S_PER_HOUR,
)

__all__ = ["SimulationResult", "Simulator", "refusal_line", "simulate"]

# Credit verbs whose reply names what the ledger made: the placeholder's prefix, the reply's key.
_MADE_IDS: Final = {
    "stake": ("stake", "stake_id"),
    "loan.offer": ("loan", "loan_id"),
    "task.announce": ("task", "task_id"),
}
# The fields of credit commands that may name a placeholder for an id the ledger gave.
_ID_FIELDS: Final = ("stake_id", "loan_id", "task_id")

LLM_ACCOUNT_PREFIX: Final = "@llm."
# An agent's stake account (exchange.core.staking.stake_account): a slash is posted from it.
STAKE_ACCOUNT_PREFIX: Final = "@stake."
# What the ledger counts as an agent's earnings besides what ``@mint`` pays it: a task's escrow
# released to it as the executor, a referral's share of a fee (exchange/core/escrow.py).
EARNING_KINDS: Final = frozenset({"escrow.release", "referral"})
SLASH_KIND: Final = "stake.slash"
# A burst refusal is retried (smaller) this long after, like the seed's log: 23:51:34 then :35.
burst_retry_delay_s: Final = 1
# Waiting out a window limit gives up after this many tries, so a request cannot chase the
# window forever.
window_retries_max: Final = 3


# --------------------------------------------------------------------------------- replies


class _RefusalReply(msgspec.Struct, frozen=True):
    ok: bool
    error: r.ErrorBody


class _LlmReply(msgspec.Struct, frozen=True):
    ok: bool
    result: r.LlmResult


class _BalanceReply(msgspec.Struct, frozen=True):
    ok: bool
    result: r.BalanceResult


_refusal_decoder: Final = msgspec.json.Decoder(_RefusalReply)
_llm_decoder: Final = msgspec.json.Decoder(_LlmReply)
_balance_decoder: Final = msgspec.json.Decoder(_BalanceReply)


def refusal_line(clock_s: int, agent: str, body: r.ErrorBody) -> str:
    """A refusal as a log line in the seed's style: ``[23:51:34] WARN: claude: ...``.

    ``clock_s`` is Unix time in seconds; the line shows its UTC time of day.
    """
    hh, rest = divmod(clock_s % S_PER_DAY, S_PER_HOUR)
    mm, ss = divmod(rest, 60)
    limit, used, asked = body.limit, body.used, body.requested
    texts: dict[str, str] = {
        ErrorCode.burst_limit_exceeded: f"Transaction exceeds burst limit ({asked} > {limit})",
        ErrorCode.hourly_limit_exceeded: f"Hourly limit reached ({used}/{limit} used, "
        f"need {asked})",
        ErrorCode.daily_limit_exceeded: f"Daily limit reached ({used}/{limit} used, need {asked})",
        ErrorCode.reserve_would_be_breached: (
            f"Would breach emergency reserve (balance {used}, need {asked}, reserve {limit})"
        ),
        ErrorCode.insufficient_funds: f"Insufficient funds (balance {used}, need {asked})",
    }
    text = texts.get(body.code, f"{body.code}: {body.message}")
    return f"[{hh:02d}:{mm:02d}:{ss:02d}] WARN: {agent}: {text}"


# --------------------------------------------------------------------------------- the engine


@dataclass(slots=True)
class _Tally:
    """Running totals of one agent, read off the ledger's postings and replies."""

    strategy: str
    start_micro: int
    balance_micro: int
    earned_micro: int = 0
    spent_micro: int = 0
    commits: int = 0
    issues: int = 0
    requests: int = 0
    refused: int = 0
    # model -> [requests, tokens, spent_micro]
    models: dict[str, list[int]] = field(default_factory=dict)
    # Postings neither earned nor paid for inference (stakes, loans, futures, the escrow of a
    # task it hired: the credit plans), net, and summed by kind (credits positive, debits
    # negative).
    other_micro: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    # What its stakes lost to slashes: posted from @stake.<agent>, so never in its balance.
    slashed_micro: int = 0


@dataclass(slots=True)
class _HourTally:
    commits: int = 0
    issues: int = 0
    requests: int = 0
    refusals_by_code: dict[str, int] = field(default_factory=dict)
    earned_micro: int = 0
    spent_micro: int = 0


class Simulator:
    """One simulated run. Construction registers the roster (genesis) and plans every agent's
    activity; ``run`` applies the plan. ``exchange`` stays readable afterwards (for tests and
    invariant checks).

    Raises ``ScenarioError`` when the ledger refuses the scenario's own setup (genesis, limits),
    ``ValueError`` when ``hours`` is outside 1 to ``hours_max``.
    """

    def __init__(self, scenario: Scenario, *, seed: int | None = None, hours: int | None = None):
        settings = scenario.simulation
        self.scenario = scenario
        self.seed = settings.seed if seed is None else seed
        self.hours = settings.hours if hours is None else hours
        if not 1 <= self.hours <= hours_max:
            raise ValueError(f"hours: expected 1 to {hours_max}, got {self.hours}")
        self.start_ns = settings.start_unix_s * NS_PER_S
        self.end_ns = self.start_ns + self.hours * NS_PER_HOUR
        self.exchange = Exchange(scenario.economy)
        self._profiles = {profile.id: profile for profile in scenario.agents}
        self._seq = itertools.count()
        self._ran = False
        self._setup()
        order = [p.id for p in scenario.agents]
        order += [s.id for s in scenario.economy.agents if s.id not in self._profiles]
        self._tallies: dict[str, _Tally] = {}
        for agent in order:
            start_micro = micro_of_text(self._balance(agent).balance)
            profile = self._profiles.get(agent)
            self._tallies[agent] = _Tally(
                strategy="idle" if profile is None else profile.strategy,
                start_micro=start_micro,
                balance_micro=start_micro,
            )
        self._timeline: dict[str, list[tuple[int, int]]] = {
            agent: [(0, tally.balance_micro)] for agent, tally in self._tallies.items()
        }
        self._hours = [_HourTally() for _ in range(self.hours)]
        self._refusals: list[RefusalRecord] = []
        # The ids the ledger gave the credit plans' stakes, loans and tasks ("?stake-0" ->
        # "stake-1"); how the market closed each task, and what each task's executor was
        # slashed, by task id.
        self._credit_ids: dict[str, str] = {}
        self._closed_tasks: dict[str, s.TaskClosed] = {}
        self._task_slashes: dict[str, int] = {}
        self._queue = self._plan()

    # ----------------------------------------------------------------------------- setup

    def _setup(self) -> None:
        for outcome in self.exchange.genesis(now_ns=self.start_ns):
            if not outcome.ok:
                raise ScenarioError(f"the ledger refused the economy's roster: {outcome.reply!r}")
        for profile in self.scenario.agents:
            if profile.limits is None:
                continue
            outcome = self.exchange.apply(
                ADMIN,
                c.SetLimits(
                    request_id=f"limits-{profile.id}", agent=profile.id, limits=profile.limits
                ),
                now_ns=self.start_ns,
            )
            if not outcome.ok:
                raise ScenarioError(f"the ledger refused {profile.id}'s limits: {outcome.reply!r}")

    def _plan(self) -> list[Event]:
        events: list[Event] = []
        for index, profile in enumerate(self.scenario.agents):
            events += plan_agent(
                self.scenario,
                profile,
                index=index,
                seed=self.seed,
                hours=self.hours,
                start_ns=self.start_ns,
                sequence=self._seq,
            )
        # Credit plans and hourly ticks (none unless the scenario enables credit), after every
        # agent at the same instant.
        after_agents = len(self.scenario.agents)
        for at_ns, action in credit_events(
            self.scenario.credit, start_ns=self.start_ns, hours=self.hours
        ):
            events.append(Event(at_ns, after_agents, next(self._seq), action.sender, action))
        heapq.heapify(events)
        return events

    # ----------------------------------------------------------------------------- the run

    def run(self, on_hour: Callable[[int], None] | None = None) -> SimulationResult:
        """Applies the plan in time order; ``on_hour(hours_done)`` reports progress.

        Raises ``AssertionError`` if the ledger's books and the engine's tallies disagree (a bug).
        """
        assert not self._ran, "a Simulator runs once"
        self._ran = True
        hours_done = 0
        while self._queue and self._queue[0].at_ns < self.end_ns:
            event = heapq.heappop(self._queue)
            hour = (event.at_ns - self.start_ns) // NS_PER_HOUR
            while on_hour is not None and hours_done < hour:
                hours_done += 1
                on_hour(hours_done)
            self._apply(event, self._hours[hour])
        while on_hour is not None and hours_done < self.hours:
            hours_done += 1
            on_hour(hours_done)
        return self._result()

    def _apply(self, event: Event, hour: _HourTally) -> None:
        if isinstance(event.action, CreditAction):
            self._apply_credit(event, event.action, hour)
            return
        agent, action, tally = event.agent, event.action, self._tallies[event.agent]
        command: c.Command
        if isinstance(action, CommitAction):
            sender, verb = ADMIN, "commit"
            command = c.Commit(
                request_id=f"commit-{event.seq}",
                author=f"{agent}@{self.scenario.simulation.author_domain}",
                project=action.project,
                message=action.message,
                sha=action.sha,
            )
            tally.commits += 1
            hour.commits += 1
        elif isinstance(action, IssueAction):
            sender, verb = ADMIN, "issue.close"
            command = c.IssueClose(
                request_id=f"issue-{event.seq}",
                issue_id=action.issue_id,
                agent=agent,
                priority=action.priority,
                issue_type=action.issue_type,
            )
            tally.issues += 1
            hour.issues += 1
        else:
            sender, verb = agent, "llm"
            command = c.LlmRequest(
                request_id=f"llm-{event.seq}",
                task_type=action.task_type,
                tokens=action.tokens,
                model=action.model,
            )
            tally.requests += 1
            hour.requests += 1
        outcome = self.exchange.apply(sender, command, now_ns=event.at_ns)
        self._book(outcome, event.at_ns, hour)
        if not outcome.ok:
            self._refused(event, outcome, verb, hour)
        elif isinstance(action, RequestAction):
            result = _llm_decoder.decode(outcome.reply).result
            usage = tally.models.setdefault(result.model, [0, 0, 0])
            usage[0] += 1
            usage[1] += result.tokens
            usage[2] += micro_of_text(result.cost)

    def _apply_credit(self, event: Event, action: CreditAction, hour: _HourTally) -> None:
        """Sends a credit plan's command (ids filled in) or a tick; a command whose stake, loan or
        task was refused is not sent (there is nothing to unstake, accept, repay, bid on...)."""
        command = action.command
        for field_name in _ID_FIELDS:
            placeholder = getattr(command, field_name, None)
            if placeholder is not None and placeholder.startswith("?"):
                real = self._credit_ids.get(placeholder)
                if real is None:
                    return
                command = msgspec.structs.replace(command, **{field_name: real})
        outcome = self.exchange.apply(action.sender, command, now_ns=event.at_ns)
        self._book(outcome, event.at_ns, hour)
        if not outcome.ok:
            self._refused(event, outcome, action.verb, hour)
            return
        made = _MADE_IDS.get(action.verb)
        if made is not None:
            prefix, key = made
            number = command.request_id.rsplit("-", 1)[1]
            result = msgspec.json.decode(outcome.reply)["result"]
            self._credit_ids[f"?{prefix}-{number}"] = result[key]

    def _book(self, outcome: Outcome, at_ns: int, hour: _HourTally) -> None:
        """Reads earnings, spend and balances off the postings the ledger made, and how tasks
        ended off what the market announced."""
        changed: list[str] = []
        for posting in outcome.postings:
            amount = posting.amount_micro
            if posting.kind == SLASH_KIND:
                self._slashed(posting.debit, posting.memo, amount)
            debited = self._tallies.get(posting.debit)
            credited = self._tallies.get(posting.credit)
            if debited is not None:
                debited.balance_micro -= amount
                changed.append(posting.debit)
                if posting.credit.startswith(LLM_ACCOUNT_PREFIX):
                    debited.spent_micro += amount
                    hour.spent_micro += amount
                else:
                    debited.other_micro -= amount
                    debited.kinds[posting.kind] = debited.kinds.get(posting.kind, 0) - amount
            if credited is not None:
                credited.balance_micro += amount
                changed.append(posting.credit)
                if posting.debit == MINT or posting.kind in EARNING_KINDS:
                    credited.earned_micro += amount
                    hour.earned_micro += amount
                else:
                    credited.other_micro += amount
                    credited.kinds[posting.kind] = credited.kinds.get(posting.kind, 0) + amount
        offset_ms = (at_ns - self.start_ns) // NS_PER_MS
        for agent in dict.fromkeys(changed):
            self._timeline[agent].append((offset_ms, self._tallies[agent].balance_micro))
        for publication in outcome.publications:
            if isinstance(publication.payload, s.TaskClosed):
                self._closed_tasks[publication.payload.task_id] = publication.payload

    def _slashed(self, stake_account: str, memo: str, amount_micro: int) -> None:
        """A slash moves tokens from the executor's stake account to the task's manager; its memo
        is ``"<stake id> <task id>"`` (exchange/core/staking.py)."""
        owner = self._tallies.get(stake_account.removeprefix(STAKE_ACCOUNT_PREFIX))
        if owner is not None:
            owner.slashed_micro += amount_micro
        task_id = memo.rsplit(" ", 1)[-1]
        self._task_slashes[task_id] = self._task_slashes.get(task_id, 0) + amount_micro

    def _refused(self, event: Event, outcome: Outcome, verb: str, hour: _HourTally) -> None:
        body = _refusal_decoder.decode(outcome.reply).error
        self._tallies[event.agent].refused += 1
        hour.refusals_by_code[body.code] = hour.refusals_by_code.get(body.code, 0) + 1
        self._refusals.append(
            RefusalRecord(
                offset_ms=(event.at_ns - self.start_ns) // NS_PER_MS,
                agent=event.agent,
                verb=verb,
                code=body.code,
                line=refusal_line(event.at_ns // NS_PER_S, event.agent, body),
            )
        )
        action = event.action
        if isinstance(action, RequestAction):
            retry = self._retry(event.agent, action, body)
            if retry is not None:
                delay_s, again = retry
                at_ns = event.at_ns + delay_s * NS_PER_S
                heapq.heappush(
                    self._queue,
                    Event(at_ns, event.agent_index, next(self._seq), event.agent, again),
                )

    def _retry(
        self, agent: str, action: RequestAction, body: r.ErrorBody
    ) -> tuple[int, RequestAction] | None:
        """What the agent does after a refused request: (delay_s, the new request), or None."""
        profile = self._profiles[agent]
        code = body.code
        if (
            code == ErrorCode.burst_limit_exceeded
            and profile.retry_on_burst
            and action.attempt == 0
        ):
            assert body.limit is not None and body.requested is not None
            # Scale the request down to what fits under the burst limit the refusal named.
            tokens = action.tokens * micro_of_text(body.limit) // micro_of_text(body.requested)
            if tokens >= 1:
                return burst_retry_delay_s, replace(action, tokens=tokens, attempt=1)
        window_codes = (ErrorCode.hourly_limit_exceeded, ErrorCode.daily_limit_exceeded)
        if (
            code in window_codes
            and profile.wait_on_window_limit
            and body.retry_after_s is not None
            and action.attempt < window_retries_max
        ):
            return body.retry_after_s, replace(action, attempt=action.attempt + 1)
        return None

    # ----------------------------------------------------------------------------- the result

    def _balance(self, agent: str) -> r.BalanceResult:
        reply = self.exchange.query(q.BalanceQuery(agent=agent))
        return _balance_decoder.decode(reply).result

    def _result(self) -> SimulationResult:
        self.exchange.check_invariants()
        agents: list[AgentOutcome] = []
        models: list[ModelUsage] = []
        for agent, tally in self._tallies.items():
            ledger_view = self._balance(agent)
            # The engine's tallies must be exactly the ledger's: same balance, and (with no
            # rewards before the run and only genesis minting the opening) the same totals.
            assert micro_of_text(ledger_view.balance) == tally.balance_micro, (
                f"{agent}: balance differs"
            )
            assert micro_of_text(ledger_view.earned) == tally.earned_micro, (
                f"{agent}: earned differs"
            )
            assert micro_of_text(ledger_view.spent) == tally.spent_micro, f"{agent}: spent differs"
            # The day's change in balance is exactly what was earned minus what was spent, plus
            # what the credit plans moved (stakes, loans, futures; nothing without them).
            change = tally.balance_micro - tally.start_micro
            assert change == tally.earned_micro - tally.spent_micro + tally.other_micro
            assert self.scenario.credit.enabled or not tally.other_micro
            agents.append(
                AgentOutcome(
                    agent=agent,
                    strategy=tally.strategy,
                    start_micro=tally.start_micro,
                    earned_micro=tally.earned_micro,
                    spent_micro=tally.spent_micro,
                    final_micro=tally.balance_micro,
                    commits=tally.commits,
                    issues=tally.issues,
                    requests=tally.requests,
                    refused=tally.refused,
                )
            )
            models.extend(
                ModelUsage(agent=agent, model=model, requests=n, tokens=tokens, spent_micro=spent)
                for model, (n, tokens, spent) in sorted(tally.models.items())
            )
        first_hour_of_day = (self.start_ns // NS_PER_HOUR) % HOURS_PER_DAY
        hourly = [
            HourStats(
                hour=index,
                hour_of_day=(first_hour_of_day + index) % HOURS_PER_DAY,
                commits=h.commits,
                issues=h.issues,
                requests=h.requests,
                refusals=sum(h.refusals_by_code.values()),
                refusals_by_code=dict(sorted(h.refusals_by_code.items())),
                earned_micro=h.earned_micro,
                spent_micro=h.spent_micro,
            )
            for index, h in enumerate(self._hours)
        ]
        return SimulationResult(
            scenario=self.scenario.name,
            seed=self.seed,
            hours=self.hours,
            start_unix_s=self.start_ns // NS_PER_S,
            report_bands=list(self.scenario.simulation.report_bands),
            commands_applied=self.exchange.seq,
            digest=self.exchange.digest(),
            agents=agents,
            models=models,
            hourly=hourly,
            refusals=self._refusals,
            timeline=self._timeline,
            metrics=_metrics(agents, self._refusals),
            credit=[
                credit_outcome(agent, tally.kinds, tally.slashed_micro, self.exchange)
                for agent, tally in self._tallies.items()
            ]
            if self.scenario.credit.enabled
            else [],
            tasks=task_outcomes(
                self.scenario.credit.tasks,
                self._credit_ids,
                self._closed_tasks,
                self._task_slashes,
                self.exchange,
            )
            if self.scenario.credit.enabled
            else [],
        )


def _metrics(agents: list[AgentOutcome], refusals: list[RefusalRecord]) -> list[Metric]:
    """Swarm metrics the day gives data for: the Gini of earnings (docs/economy.md's thresholds),
    the Gini of final balances, and the share of LLM requests the limits refused."""
    earnings = tuple(a.earned_micro for a in agents)
    reading = next(
        m
        for m in evaluate(SwarmMetricInputs(earnings_micro_by_agent=earnings))
        if m.name == "earnings_gini"
    )
    balances_gini = gini([max(0, a.final_micro) for a in agents])
    requests = sum(a.requests for a in agents)
    llm_refusals = sum(1 for record in refusals if record.verb == "llm")
    return [
        Metric(
            name="earnings_gini",
            value=None if reading.value is None else round(reading.value, 4),
            target=reading.target,
            warning=reading.warning,
            status=reading.status,
        ),
        Metric(
            name="final_balance_gini",
            value=None if balances_gini is None else round(float(balances_gini), 4),
        ),
        Metric(
            name="llm_refusal_rate",
            value=round(llm_refusals / requests, 4) if requests else None,
        ),
    ]


def simulate(
    scenario: Scenario,
    *,
    seed: int | None = None,
    hours: int | None = None,
    on_hour: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Runs ``scenario`` (its own seed and hours unless given) and returns what happened.

    Raises ``ScenarioError`` when the ledger refuses the scenario's setup.
    """
    return Simulator(scenario, seed=seed, hours=hours).run(on_hour)
