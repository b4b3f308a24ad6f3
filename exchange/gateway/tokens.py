"""How many tokens a request may use, before it is sent: pure arithmetic on its JSON body.

No tokenizer is downloaded (none may be fetched at run time, and tiktoken would): the prompt is
bounded from above by its UTF-8 length in bytes, since every token of a byte-level BPE vocabulary
(GPT, Llama, Qwen, Mistral...) covers at least one byte, plus a per-message allowance for the
chat template's special tokens. The bound is conservative (often 3-4x the real count); the hold
is released down to the upstream's reported usage at settle, so it costs only headroom in the
agent's limits for the seconds a request runs, never money.
"""

from typing import Any, Final

from exchange.errors import ExchangeError

# The completion tokens held for a request that names no max_tokens (and sent upstream as its
# max_tokens, so that the hold bounds the answer); `exchange gateway serve --default-max-tokens`.
DEFAULT_MAX_TOKENS: Final = 1024
# Chat-template tokens per message (role markers, separators) and per request (the assistant's
# opening); real templates use 3-4 and 3.
PER_MESSAGE_TOKENS: Final = 8
PER_REQUEST_TOKENS: Final = 8


class RequestError(ExchangeError, ValueError):
    """The body is not a request the gateway can bound (the message says what is wrong)."""


def _text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string inside ``value`` (content parts, tool calls, names)."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_bytes(v) for v in value.values())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return len(str(value))
    return 0


def prompt_bound(kind: str, body: dict[str, Any]) -> int:
    """An upper bound on the prompt tokens of a chat, completion or embedding request."""
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list")
        tools = _text_bytes(body.get("tools", [])) + _text_bytes(body.get("functions", []))
        return (
            sum(_text_bytes(m) + PER_MESSAGE_TOKENS for m in messages) + tools + PER_REQUEST_TOKENS
        )
    if kind == "completion":
        if "prompt" not in body:
            raise RequestError("prompt is required")
        return _text_bytes(body["prompt"]) + PER_REQUEST_TOKENS
    if kind == "embedding":
        if "input" not in body:
            raise RequestError("input is required")
        tokens = body["input"]
        # Pre-tokenized input (lists of ints) counts one token per int.
        if isinstance(tokens, list) and tokens and all(isinstance(t, int) for t in tokens):
            return len(tokens)
        if isinstance(tokens, list) and tokens and all(isinstance(t, list) for t in tokens):
            return sum(len(t) for t in tokens)
        return _text_bytes(tokens) + PER_REQUEST_TOKENS
    raise AssertionError(kind)


def completion_bound(kind: str, body: dict[str, Any], default_max_tokens: int) -> int:
    """The completion tokens to hold: the request's max_tokens (or max_completion_tokens) times
    ``n`` choices, or ``default_max_tokens`` when it names none (the gateway then sends that
    max_tokens upstream, so the hold bounds the answer). Embeddings complete nothing."""
    if kind == "embedding":
        return 0
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        limit = default_max_tokens
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise RequestError("max_tokens must be a positive integer")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise RequestError("n must be an integer from 1 to 128")
    return limit * n
