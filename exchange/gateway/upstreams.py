"""The upstream models: OpenAI-compatible base URLs (a provider, vLLM, Ollama, llama.cpp's
server), reached through pooled ``httpx.AsyncClient``s. A model goes to the first upstream whose
``/v1/models`` lists it (asked once at start), else to the first upstream.

Requests take the clients in turn. One client's pool does work quadratic in its connections on
every request (httpcore 1.0 counts its idle connections by scanning them all, for each one), which
at 32 in flight cost more CPU than the rest of the gateway; several smaller pools keep each scan
short.
"""

from dataclasses import dataclass, field

import httpx
import structlog

log = structlog.get_logger("exchange.gateway")


@dataclass(slots=True)
class Upstream:
    base_url: str  # ending in /v1
    api_key: str | None = None
    models: set[str] = field(default_factory=set)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        return {} if self.api_key is None else {"authorization": f"Bearer {self.api_key}"}


def parse_upstream(spec: str) -> Upstream:
    """``URL`` or ``URL#KEY``: the base URL (``/v1`` added if it has no path) and its API key."""
    url, _, key = spec.partition("#")
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"an upstream is an http(s) base URL, got {spec!r}")
    if url.count("/") == 2:
        url += "/v1"
    return Upstream(base_url=url, api_key=key or None)


class Upstreams:
    def __init__(self, upstreams: list[Upstream], clients: list[httpx.AsyncClient]) -> None:
        assert upstreams, "at least one upstream"
        assert clients, "at least one client"
        self.all = upstreams
        self.clients = clients
        self._turn = 0

    def client(self) -> httpx.AsyncClient:
        """The next client, in turn."""
        self._turn = (self._turn + 1) % len(self.clients)
        return self.clients[self._turn]

    async def discover(self) -> None:
        """Asks each upstream which models it serves (one that does not answer serves the
        models no other lists)."""
        for upstream in self.all:
            try:
                response = await self.client().get(
                    upstream.url("/models"), headers=upstream.headers()
                )
                response.raise_for_status()
                upstream.models = {m["id"] for m in response.json().get("data", [])}
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "gateway_upstream_models_unknown", upstream=upstream.base_url, error=str(exc)
                )

    def for_model(self, model: str) -> Upstream:
        for upstream in self.all:
            if model in upstream.models:
                return upstream
        return self.all[0]

    def models(self) -> list[str]:
        return sorted({m for u in self.all for m in u.models})
