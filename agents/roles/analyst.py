"""Analyst: writes a short report on each awarded task, paying for the inference on the exchange.

For every ``every_nth`` award with a winner (``swarm.task.*.award``) it:
1. authorizes the estimated inference (``exchange.cmd.<id>.llm.authorize`` with ``estimate_tokens``
   and the model, or the agent's preferred model for ``analysis`` when none is given): the hold
   is checked against the agent's limits;
2. writes the report with a ``ReportModel``. ``SimulatedModel`` (the default) is deterministic for
   a seed: canned analyst prose filled with the task's facts, its token count taken from the text
   length (about four characters per token). The text is simulated, the cost is real;
3. settles with the tokens actually used (``llm.settle``), which posts the cost and frees the
   rest of the hold, and writes the report to ``--reports-dir`` when one is given.

A refusal (a rate limit, the reserve) skips the report; with ``retry_after_s`` it also pauses
reports until then. Request ids come from the task id, so a retried authorization or settlement
is applied once.

With ``--gateway URL`` (and its key in ``--gateway-key`` or ``$EXCHANGE_GATEWAY_KEY``) the analyst
does not report its own tokens: it asks the metering gateway (docs/gateway.md) for the report
with the standard ``openai`` client, and the gateway admits it against a quota, forwards it and
charges the model's reported usage. A 402 or 429 from it skips the report as a refusal would
(429: paused for its ``retry_after``). Needs the ``openai`` package
(``pip install 'agent-exchange[gateway]'``).
"""

import argparse
import math
import os
import random
import re
from pathlib import Path
from typing import Final, Protocol

import anyio
import msgspec
from nats.aio.msg import Msg

from agents import limits
from agents.bounded import BoundedSet
from agents.errors import ConfigError
from agents.roles.base import BuiltRole, RoleSpec
from agents.runtime import WorkerContext
from protocols import subjects
from protocols.client_errors import RefusedError
from protocols.commands import LlmAuthorize, LlmSettle
from protocols.results import AuthorizationResult, SettlementResult
from protocols.swarm import TaskAward
from protocols.units import MS_PER_S

# About four characters per token, the usual rule of thumb for English text.
CHARS_PER_TOKEN: Final = 4
TASK_TYPE: Final = "analysis"
GATEWAY_KEY_ENV: Final = "EXCHANGE_GATEWAY_KEY"
# protocols.ids.ModelName: model names carry dots (llama3.2, qwen2.5-coder).
_MODEL_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_award_decoder: Final = msgspec.json.Decoder(TaskAward)

_OPENINGS: Final = (
    "Task {task_id} went to {winner} at {cost} tokens.",
    "{winner} won task {task_id}, bidding {cost} tokens.",
    "Auction {task_id} closed with {winner} on top at {cost} tokens.",
)
_FIELDS: Final = (
    "{bidders} agents bid; the best score was {best_score} and the runner-up scored {runner_up}.",
    "The field had {bidders} bids, scored from {runner_up} up to {best_score}.",
)
_VIEWS: Final = (
    "Competition kept the price well under the budget, a healthy sign for the market.",
    "The winning margin was thin, so small changes in cost or speed decide these auctions.",
    "Speed mattered as much as price here; faster executors should bid more aggressively.",
    "Confidence carried real weight in the score, rewarding executors with a clean record.",
)
_CLOSINGS: Final = (
    "Recommendation: keep the bid window short and watch the fill quality.",
    "Recommendation: verify the fill against the oracle before releasing the escrow.",
    "Recommendation: no change to the manager's settings is needed.",
)


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    tokens: int


class ReportModel(Protocol):
    """Writes text for a prompt and says how many inference tokens that took."""

    def complete(self, prompt: str, facts: dict[str, str]) -> Completion: ...


def count_tokens(text: str) -> int:
    """Inference tokens for ``text``: one per ``CHARS_PER_TOKEN`` characters, at least one."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


class SimulatedModel:
    """A deterministic stand-in for an LLM. Pure apart from its seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def complete(self, prompt: str, facts: dict[str, str]) -> Completion:
        parts = [
            self._rng.choice(_OPENINGS),
            self._rng.choice(_FIELDS),
            self._rng.choice(_VIEWS),
            self._rng.choice(_CLOSINGS),
        ]
        text = " ".join(parts).format(**facts)[: limits.report_chars_max]
        # Reading the prompt costs tokens too, as with any hosted model.
        return Completion(text=text, tokens=count_tokens(prompt) + count_tokens(text))


def facts_of(award: TaskAward) -> dict[str, str]:
    """What a report on ``award`` can say, as text."""
    scores = sorted((bid.score for bid in award.bids), key=float, reverse=True)
    return {
        "task_id": award.task_id,
        "winner": award.winner or "nobody",
        "cost": award.cost or "0",
        "bidders": str(len(award.bids)),
        "best_score": scores[0] if scores else "n/a",
        "runner_up": scores[1] if len(scores) > 1 else "n/a",
    }


def prompt_of(award: TaskAward) -> str:
    bids = "; ".join(
        f"{bid.bidder} cost {bid.cost} time {bid.time_ms} ms confidence {bid.confidence} "
        f"score {bid.score}"
        for bid in award.bids
    )
    return (
        f"Write a short analyst note on Contract Net task {award.task_id} of {award.manager}, "
        f"awarded to {award.winner} at {award.cost}. Bids: {bids}."
    )


class AnalystOptions(msgspec.Struct, frozen=True, kw_only=True):
    model: str | None = None
    estimate_tokens: int = 800
    every_nth: int = 1
    reports_dir: Path | None = None
    gateway_url: str | None = None
    gateway_key: str | None = None


class AnalystWorker:
    def __init__(self, options: AnalystOptions, model: ReportModel) -> None:
        self._options = options
        self._model = model
        self._seen = 0
        self._reported: BoundedSet[str] = BoundedSet(limits.handled_ids_max)
        self._paused_until_ms = 0

    async def setup(self, ctx: WorkerContext) -> None:
        async def on_award(msg: Msg) -> None:
            award = ctx.decode(_award_decoder, msg)
            if award is None or award.winner is None or award.task_id in self._reported:
                return
            self._seen += 1
            if self._seen % self._options.every_nth:
                return
            if ctx.monotonic_ms() < self._paused_until_ms:
                ctx.log.info("report_skipped", task_id=award.task_id, reason="paused")
                return
            self._reported.add(award.task_id)
            await ctx.spawn(lambda: self._report(ctx, award), name=f"report:{award.task_id}")

        await ctx.subscribe(subjects.task_award("*"), on_award)

    async def _report(self, ctx: WorkerContext, award: TaskAward) -> None:
        if self._options.gateway_url is not None:
            await self._report_via_gateway(ctx, award)
            return
        authorize = LlmAuthorize(
            request_id=f"authorize:{award.task_id}",
            task_type=TASK_TYPE,
            tokens=self._options.estimate_tokens,
            model=self._options.model,
        )
        try:
            held = await ctx.bus.command("llm.authorize", authorize, AuthorizationResult)
        except RefusedError as exc:
            if exc.error.retry_after_s:
                self._paused_until_ms = ctx.monotonic_ms() + exc.error.retry_after_s * MS_PER_S
            ctx.log.warning(
                "report_skipped",
                task_id=award.task_id,
                code=exc.code,
                retry_after_s=exc.error.retry_after_s,
            )
            return
        completion = self._model.complete(prompt_of(award), facts_of(award))
        settle = LlmSettle(
            request_id=f"settle:{award.task_id}",
            authorization_id=held.authorization_id,
            tokens=completion.tokens,
        )
        try:
            settled = await ctx.bus.command("llm.settle", settle, SettlementResult)
        except RefusedError as exc:
            # The hold expires on its own and is voided; nothing is paid for this report.
            ctx.log.warning("report_unpaid", task_id=award.task_id, code=exc.code)
            return
        if self._options.reports_dir is not None:
            await self._write(award.task_id, completion.text)
        ctx.log.info(
            "report_written",
            task_id=award.task_id,
            model=settled.model,
            tokens=settled.tokens,
            cost=settled.cost,
            balance=settled.balance,
            report=completion.text,
        )

    async def _report_via_gateway(self, ctx: WorkerContext, award: TaskAward) -> None:
        """The report from a model behind the metering gateway, which pays for it."""
        import openai  # only in gateway mode: the analyst works without the package

        options = self._options
        assert options.gateway_url is not None and options.model is not None
        client = openai.AsyncOpenAI(
            base_url=options.gateway_url, api_key=options.gateway_key, max_retries=0
        )
        try:
            reply = await client.chat.completions.create(
                model=options.model,
                messages=[
                    {"role": "system", "content": "You are a terse market analyst."},
                    {"role": "user", "content": prompt_of(award)},
                ],
                max_tokens=options.estimate_tokens,
            )
        except openai.APIStatusError as exc:
            error = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
            retry_after_s = error.get("retry_after") if isinstance(error, dict) else None
            if isinstance(retry_after_s, int) and retry_after_s > 0:
                self._paused_until_ms = ctx.monotonic_ms() + retry_after_s * MS_PER_S
            ctx.log.warning(
                "report_skipped",
                task_id=award.task_id,
                status=exc.status_code,
                code=error.get("code") if isinstance(error, dict) else None,
                retry_after_s=retry_after_s,
            )
            return
        except openai.APIConnectionError as exc:
            ctx.log.warning("report_skipped", task_id=award.task_id, error=str(exc))
            return
        finally:
            await client.close()
        text = (reply.choices[0].message.content or "")[: limits.report_chars_max]
        if options.reports_dir is not None:
            await self._write(award.task_id, text)
        usage = reply.usage
        ctx.log.info(
            "report_written",
            task_id=award.task_id,
            model=reply.model,
            tokens=None if usage is None else usage.total_tokens,
            metered_by="gateway",
            report=text,
        )

    async def _write(self, task_id: str, text: str) -> None:
        assert self._options.reports_dir is not None
        path = anyio.Path(self._options.reports_dir) / f"{task_id}.md"
        await path.write_text(f"# {task_id}\n\n{text}\n", encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="model to pay for (default: the agent's preference for analysis)"
    )
    parser.add_argument(
        "--estimate-tokens",
        type=int,
        default=800,
        help="inference tokens to authorize per report (default: %(default)s)",
    )
    parser.add_argument(
        "--every-nth", type=int, default=1, help="report on every Nth award (default: %(default)s)"
    )
    parser.add_argument("--reports-dir", type=Path, help="also write reports here, one per task")
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="ask the metering gateway (an OpenAI-compatible .../v1 URL) for reports instead of "
        "paying self-reported tokens; needs --model and a key",
    )
    parser.add_argument(
        "--gateway-key",
        help="the gateway key (exchange gateway key AGENT); default: $EXCHANGE_GATEWAY_KEY",
    )


def _parse_model(text: str) -> str:
    """Raises ConfigError unless ``text`` is a model name (``protocols.ids.ModelName``)."""
    if not _MODEL_RE.match(text):
        raise ConfigError(f"model must be 1-64 characters of A-Z a-z 0-9 _ . : -, got {text!r}")
    return text


def options_from_args(args: argparse.Namespace) -> AnalystOptions:
    """Raises ConfigError for bad options."""
    if not 1 <= args.estimate_tokens <= 100_000_000:
        raise ConfigError(f"estimate_tokens must be 1..100000000, got {args.estimate_tokens}")
    if not 1 <= args.every_nth <= 1_000_000:
        raise ConfigError(f"every_nth must be 1..1000000, got {args.every_nth}")
    if args.reports_dir is not None and not args.reports_dir.is_dir():
        raise ConfigError(f"--reports-dir {args.reports_dir} is not a directory")
    key = args.gateway_key or os.environ.get(GATEWAY_KEY_ENV)
    if args.gateway is not None:
        if args.model is None:
            raise ConfigError("--gateway needs --model: the gateway prices a named model")
        if not key:
            raise ConfigError(f"--gateway needs a key: --gateway-key or ${GATEWAY_KEY_ENV}")
        if not args.gateway.startswith(("http://", "https://")):
            raise ConfigError(f"--gateway is an http(s) URL, got {args.gateway!r}")
    return AnalystOptions(
        model=None if args.model is None else _parse_model(args.model),
        estimate_tokens=args.estimate_tokens,
        every_nth=args.every_nth,
        reports_dir=args.reports_dir,
        gateway_url=args.gateway,
        gateway_key=key if args.gateway is not None else None,
    )


def build(args: argparse.Namespace, rng: random.Random) -> BuiltRole:
    return BuiltRole(worker=AnalystWorker(options_from_args(args), SimulatedModel(rng)))


ROLE: Final = RoleSpec(
    name="analyst",
    summary="write a report on each awarded task, paying for LLM inference on the exchange",
    exchange_role="analyst",
    add_arguments=add_arguments,
    build=build,
)
