"""The upstream models: OpenAI-compatible base URLs (a provider, vLLM, Ollama, llama.cpp's
server), reached through one pooled ``aiohttp.ClientSession``. A model goes to the first upstream
whose ``/v1/models`` lists it (asked once at start), else to the first upstream.
"""

import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import aiohttp
import structlog

log = structlog.get_logger("exchange.gateway")

# What a failed upstream call raises: aiohttp's own errors, and TimeoutError for its timeouts.
UPSTREAM_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError)


@dataclass(slots=True)
class Upstream:
    base_url: str  # ending in /v1
    api_key: str | None = None
    models: set[str] = field(default_factory=set)
    # The HTTP proxy to reach it through, from the environment (HTTPS_PROXY, NO_PROXY...) read
    # once at start: aiohttp reads it per request in a worker thread when left to do so.
    proxy: str | None = None

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
    return Upstream(base_url=url, api_key=key or None, proxy=env_proxy(url))


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url``, as curl and httpx would choose it."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.netloc):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class Upstreams:
    def __init__(self, upstreams: list[Upstream], session: aiohttp.ClientSession) -> None:
        assert upstreams, "at least one upstream"
        self.all = upstreams
        self.session = session

    async def discover(self) -> None:
        """Asks each upstream which models it serves (one that does not answer serves the
        models no other lists)."""
        for upstream in self.all:
            try:
                async with self.session.get(
                    upstream.url("/models"),
                    headers=upstream.headers(),
                    proxy=upstream.proxy,
                    raise_for_status=True,
                ) as response:
                    listed = await response.json(content_type=None)
                upstream.models = {m["id"] for m in listed.get("data", [])}
            except (
                aiohttp.ClientError,
                TimeoutError,
                ValueError,
                KeyError,
                TypeError,
                AttributeError,
            ) as exc:
                log.warning(
                    "gateway_upstream_models_unknown", upstream=upstream.base_url, error=repr(exc)
                )

    def for_model(self, model: str) -> Upstream:
        for upstream in self.all:
            if model in upstream.models:
                return upstream
        return self.all[0]

    def models(self) -> list[str]:
        return sorted({m for u in self.all for m in u.models})
