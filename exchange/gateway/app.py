"""The gateway's HTTP API: the OpenAI-compatible routes agents already call, each metered.

A thin shell: a request's agent comes from its API key (``keys``), its worst case from its body
(``tokens``), admission from the exchange (``meter``: a hold, or a refusal made an OpenAI-style
error), the answer from an upstream (``upstreams``), and the charge from the upstream's reported
usage. Every admitted request ends in exactly one settle or release, whatever happens to the
upstream call or the client (a stream cut short settles what it delivered, under a shielded
scope).
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import anyio
import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from exchange.gateway.keys import KeyRing
from exchange.gateway.meter import Meter
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
        self, keys: KeyRing, meter: Meter, upstreams: Upstreams, *, default_max_tokens: int
    ) -> None:
        self.keys = keys
        self.meter = meter
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
            held = await self.meter.authorize(agent, model, prompt, completion)
        except ExchangeUnavailableError as exc:
            return openai_error(503, "exchange_unavailable", f"the exchange did not answer: {exc}")
        if isinstance(held, r.ErrorBody):
            return refusal_response(held)
        upstream = self.upstreams.for_model(model)
        auth_id = held.authorization_id
        try:
            response = await self.upstreams.session.post(
                upstream.url(path),
                data=msgspec.json.encode(body),
                headers={"content-type": "application/json", **upstream.headers()},
                proxy=upstream.proxy,
            )
        except BaseException as exc:
            return await self._upstream_failed(exc, auth_id, "upstream call failed")
        if response.status >= 400 or not stream:
            try:
                content = await response.read()
            except BaseException as exc:
                return await self._upstream_failed(exc, auth_id, "upstream read failed", response)
            response.release()
            return await self._answer(response, content, auth_id, prompt, completion)
        return StreamingResponse(
            self._stream(response, auth_id, prompt, wants_usage),
            status_code=response.status,
            media_type="text/event-stream",
        )

    async def _upstream_failed(
        self,
        exc: BaseException,
        auth_id: str,
        reason: str,
        response: aiohttp.ClientResponse | None = None,
    ) -> Response:
        """Releases the hold of a request whose upstream call or read failed (shielded); an HTTP
        failure becomes a 502, anything else (a cancellation) is raised again."""
        with anyio.CancelScope(shield=True):
            if response is not None:
                response.close()
            await self._release(auth_id, f"{reason}: {exc!r}")
        if isinstance(exc, UPSTREAM_ERRORS):
            return openai_error(502, "upstream_unavailable", f"upstream failed: {exc!r}")
        raise exc

    async def _answer(
        self,
        response: aiohttp.ClientResponse,
        content: bytes,
        auth_id: str,
        prompt: int,
        completion: int,
    ) -> Response:
        headers = {"content-type": response.headers.get("content-type", "application/json")}
        if response.status >= 400:
            await self._release(auth_id, f"upstream answered {response.status}")
            return Response(content, status_code=response.status, headers=headers)
        try:
            usage = usage_of(msgspec.json.decode(content))
        except (msgspec.DecodeError, RecursionError):
            usage = None
        if usage is None:
            # An answer without usage is charged its worst case (documented): the exchange must
            # not take an unmeasured answer as free.
            usage = Usage(prompt, completion)
        await self._settle(auth_id, usage)
        return Response(content, status_code=response.status, headers=headers)

    async def _stream(
        self, response: aiohttp.ClientResponse, auth_id: str, prompt: int, wants_usage: bool
    ) -> AsyncIterator[bytes]:
        """Passes the upstream's events through, reading each for content and usage.

        At the stream's end: settles by the reported usage, else by the prompt bound and one
        token per content chunk. Cut short (the client went away, the upstream failed): settles
        the chunks already handed to the client the same way, so that dropping the connection
        before the usage chunk does not make an answer free; releases if none was."""
        usage: Usage | None = None
        delivered = 0
        finished = False
        try:
            async for raw in response.content:
                line = raw.decode(errors="replace").rstrip("\r\n")
                content = False
                if line.startswith("data: ") and line != "data: [DONE]":
                    try:
                        event = msgspec.json.decode(line[6:])
                    except (msgspec.DecodeError, RecursionError):
                        event = None
                    if isinstance(event, dict):
                        if (reported := usage_of(event)) is not None:
                            usage = reported
                            if not wants_usage and not event.get("choices"):
                                continue  # the usage chunk the client did not ask for
                        content = any(
                            (choice.get("delta") or {}).get("content") or choice.get("text")
                            for choice in event.get("choices") or ()
                            if isinstance(choice, dict)
                        )
                yield (line + "\n").encode()
                delivered += content
            finished = True
        finally:
            with anyio.CancelScope(shield=True):
                if finished:
                    response.release()  # the connection goes back to the pool
                else:
                    response.close()
                if finished or usage is not None or delivered:
                    await self._settle(auth_id, usage or Usage(prompt, delivered))
                else:
                    await self._release(auth_id, "stream cancelled or failed before any content")

    async def _settle(self, auth_id: str, usage: Usage) -> None:
        try:
            await self.meter.settle(auth_id, usage.prompt_tokens, usage.completion_tokens)
        except ExchangeUnavailableError as exc:
            # The hold stays open and expires (voided): logged so the operator can see it.
            log.error("gateway_settle_failed", authorization_id=auth_id, error=str(exc))

    async def _release(self, auth_id: str, reason: str) -> None:
        try:
            await self.meter.release(auth_id, reason)
        except ExchangeUnavailableError as exc:
            log.error("gateway_release_failed", authorization_id=auth_id, error=str(exc))
