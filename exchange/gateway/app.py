"""The gateway's HTTP API: the OpenAI-compatible routes agents already call, each metered.

A thin shell: a request's agent comes from its API key (``keys``), its worst case from its body
(``tokens``), admission from a quota the exchange granted (``quotas``: a ticket, or the
exchange's refusal made an OpenAI-style error), the answer from an upstream (``upstreams``), and
the charge from the upstream's reported usage. Every admitted request's ticket is finished
exactly once with what is to be charged, whatever happens to the upstream call or the client (a
stream cut short is charged what it delivered); its quota's settlement then charges it.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from exchange.gateway.keys import KeyRing
from exchange.gateway.quotas import Admission, Ticket
from exchange.gateway.tokens import RequestError, completion_bound, prompt_bound
from exchange.gateway.upstreams import UPSTREAM_ERRORS, Upstreams
from protocols import results as r
from protocols.client_errors import ExchangeUnavailableError
from protocols.errors import ErrorCode

log: Final = structlog.get_logger("exchange.gateway")

# The HTTP status of each refusal an agent can meet: money it lacks is 402 (Payment Required), a
# window that will reopen is 429 with Retry-After, a model it may not use 403, one the exchange
# cannot price 404.
_STATUS: Final = {
    ErrorCode.insufficient_funds: 402,
    ErrorCode.reserve_would_be_breached: 402,
    ErrorCode.burst_limit_exceeded: 402,
    ErrorCode.hourly_limit_exceeded: 429,
    ErrorCode.daily_limit_exceeded: 429,
    ErrorCode.rate_limited_rpm: 429,
    ErrorCode.rate_limited_tpm: 429,
    ErrorCode.model_not_allowed: 403,
    ErrorCode.unknown_model: 404,
    ErrorCode.unknown_agent: 401,
}
_TYPE: Final = {402: "insufficient_quota", 429: "rate_limit_error", 403: "permission_error"}


def openai_error(
    status: int, code: str, message: str, *, retry_after_s: int | None = None
) -> JSONResponse:
    """An error as OpenAI's API sends one, carrying the exchange's stable code."""
    error: dict[str, Any] = {
        "message": message,
        "type": _TYPE.get(status, "invalid_request_error"),
        "param": None,
        "code": code,
    }
    headers = {}
    if retry_after_s is not None:
        error["retry_after"] = retry_after_s
        headers["retry-after"] = str(retry_after_s)
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def refusal_response(error: r.ErrorBody) -> JSONResponse:
    status = _STATUS.get(error.code, 400)  # type: ignore[call-overload]
    return openai_error(status, error.code, error.message, retry_after_s=error.retry_after_s)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def usage_of(payload: Any) -> Usage | None:
    """The ``usage`` object of an upstream reply, if it reports one."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    if prompt < 0 or completion < 0:
        return None
    return Usage(prompt, completion)


class Gateway:
    """The routes, over a key ring, a meter and the upstreams."""

    def __init__(
        self, keys: KeyRing, admission: Admission, upstreams: Upstreams, *, default_max_tokens: int
    ) -> None:
        self.keys = keys
        self.admission = admission
        self.upstreams = upstreams
        self.default_max_tokens = default_max_tokens

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/healthz", self.health, methods=["GET"]),
            ]
        )

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    def _agent(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        return self.keys.agent_for(key.strip())

    @staticmethod
    def _no_key() -> JSONResponse:
        return openai_error(
            401,
            "invalid_api_key",
            "no valid gateway key: send Authorization: Bearer <key>, a key from "
            "`exchange gateway key AGENT` that has not been revoked",
        )

    async def models(self, request: Request) -> Response:
        if self._agent(request) is None:
            return self._no_key()
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "exchange-gateway"}
            for m in self.upstreams.models()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        return await self._metered(request, "chat", "/chat/completions")

    async def completions(self, request: Request) -> Response:
        return await self._metered(request, "completion", "/completions")

    async def embeddings(self, request: Request) -> Response:
        return await self._metered(request, "embedding", "/embeddings")

    async def _metered(self, request: Request, kind: str, path: str) -> Response:
        agent = self._agent(request)
        if agent is None:
            return self._no_key()
        try:
            body = msgspec.json.decode(await request.body())
            if not isinstance(body, dict):
                raise RequestError("the body is a JSON object")
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise RequestError("model is required")
            prompt = prompt_bound(kind, body)
            completion = completion_bound(kind, body, self.default_max_tokens)
        except (msgspec.DecodeError, RecursionError, RequestError) as exc:
            return openai_error(400, "invalid_request", f"invalid request: {exc}")
        if kind != "embedding" and "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = self.default_max_tokens
        stream = kind != "embedding" and bool(body.get("stream"))
        wants_usage = False
        if stream:
            options = body.get("stream_options") or {}
            wants_usage = bool(options.get("include_usage"))
            body["stream_options"] = {**options, "include_usage": True}
        try:
            ticket = await self.admission.admit(agent, model, prompt, completion)
        except ExchangeUnavailableError as exc:
            return openai_error(503, "exchange_unavailable", f"the exchange did not answer: {exc}")
        if isinstance(ticket, r.ErrorBody):
            return refusal_response(ticket)
        upstream = self.upstreams.for_model(model)
        try:
            response = await self.upstreams.session.post(
                upstream.url(path),
                data=msgspec.json.encode(body),
                headers={"content-type": "application/json", **upstream.headers()},
                proxy=upstream.proxy,
            )
        except BaseException as exc:
            return _upstream_failed(exc, ticket, "upstream call failed")
        if response.status >= 400 or not stream:
            try:
                content = await response.read()
            except BaseException as exc:
                return _upstream_failed(exc, ticket, "upstream read failed", response)
            response.release()
            return _answer(response, content, ticket, prompt, completion)
        return _MeteredStream(_StreamCharge(response, ticket, prompt), wants_usage)


def _upstream_failed(
    exc: BaseException,
    ticket: Ticket,
    reason: str,
    response: aiohttp.ClientResponse | None = None,
) -> Response:
    """A request whose upstream call or read failed is charged nothing (it still counts as a
    request); an HTTP failure becomes a 502, anything else (a cancellation) is raised again."""
    if response is not None:
        response.close()
    ticket.finish(0, 0)
    log.info("gateway_upstream_failed", reason=reason, error=repr(exc))
    if isinstance(exc, UPSTREAM_ERRORS):
        return openai_error(502, "upstream_unavailable", f"upstream failed: {exc!r}")
    raise exc


def _answer(
    response: aiohttp.ClientResponse,
    content: bytes,
    ticket: Ticket,
    prompt: int,
    completion: int,
) -> Response:
    headers = {"content-type": response.headers.get("content-type", "application/json")}
    if response.status >= 400:
        ticket.finish(0, 0)
        return Response(content, status_code=response.status, headers=headers)
    try:
        usage = usage_of(msgspec.json.decode(content))
    except (msgspec.DecodeError, RecursionError):
        usage = None
    if usage is None:
        # An answer without usage is charged its worst case (documented): the exchange must
        # not take an unmeasured answer as free.
        usage = Usage(prompt, completion)
    ticket.finish(usage.prompt_tokens, usage.completion_tokens)
    return Response(content, status_code=response.status, headers=headers)


@dataclass(slots=True)
class _StreamCharge:
    """What a streamed answer has delivered, and its charge once it ends, however it ends.

    Charged the reported usage if the upstream sent one, else the prompt bound and one token per
    content chunk handed to the client, so that dropping the connection before the usage chunk
    does not make an answer free; nothing if no content was delivered."""

    response: aiohttp.ClientResponse
    ticket: Ticket
    prompt: int
    usage: Usage | None = None
    delivered: int = 0
    complete: bool = False

    def end(self) -> None:
        """Idempotent: the generator's ``finally`` and the response's both call it, since a
        stream the client left before it began never runs its generator at all."""
        if self.ticket.finished:
            return
        if self.complete:
            self.response.release()  # read to the end: the connection goes back to the pool
        else:
            self.response.close()
        if self.complete or self.usage is not None or self.delivered:
            usage = self.usage or Usage(self.prompt, self.delivered)
            self.ticket.finish(usage.prompt_tokens, usage.completion_tokens)
        else:
            self.ticket.finish(0, 0)


class _MeteredStream(StreamingResponse):
    """The upstream's event stream passed through, read for content and usage on the way."""

    def __init__(self, charge: _StreamCharge, wants_usage: bool) -> None:
        super().__init__(
            _events(charge, wants_usage),
            status_code=charge.response.status,
            media_type="text/event-stream",
        )
        self.charge = charge

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.charge.end()


async def _events(charge: _StreamCharge, wants_usage: bool) -> AsyncIterator[bytes]:
    try:
        async for raw in charge.response.content:
            line = raw.decode(errors="replace").rstrip("\r\n")
            content = False
            if line.startswith("data: ") and line != "data: [DONE]":
                try:
                    event = msgspec.json.decode(line[6:])
                except (msgspec.DecodeError, RecursionError):
                    event = None
                if isinstance(event, dict):
                    if (reported := usage_of(event)) is not None:
                        charge.usage = reported
                        if not wants_usage and not event.get("choices"):
                            continue  # the usage chunk the client did not ask for
                    content = any(
                        (choice.get("delta") or {}).get("content") or choice.get("text")
                        for choice in event.get("choices") or ()
                        if isinstance(choice, dict)
                    )
            yield (line + "\n").encode()
            charge.delivered += content
        charge.complete = True
    finally:
        charge.end()
