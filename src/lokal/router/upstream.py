"""One chat call to one OpenAI-compatible endpoint, with errors sorted into retry / fall back / give up."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai

from lokal.router.catalog import Endpoint

# Parameters forwarded to the upstream; the router owns model selection and streaming.
FORWARDED_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
)
# What apps and agents send beyond sampling (issue 12): forwarded as they came, and never answered from the
# router's text cache, which keeps content only.
STRUCTURED_PARAMS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "n",
)
# llama.cpp/vLLM extensions the openai client has no argument for: they travel in the body as they are.
EXTENSION_PARAMS = ("top_k", "min_p", "repeat_penalty", "repetition_penalty")


@dataclass(frozen=True, slots=True)
class ChatResult:
    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    usage_estimated: bool = False
    # The upstream's whole answer when it holds more than text (tool calls, logprobs, several choices).
    raw: Mapping[str, Any] | None = None


class CallFailed(Exception):
    """``retryable``: the same model may answer if asked again (5xx, 429, connection reset).
    ``cool``: the model should rest a while (server-side trouble, not a bad request)."""

    def __init__(self, message: str, *, retryable: bool, cool: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.cool = cool
        self.status = status


def estimate_tokens(text: str) -> int:
    # ~4 characters per token for English under BPE tokenizers; only used when an upstream reports no usage.
    return max(1, len(text) // 4) if text else 0


class UpstreamClients:
    """One official OpenAI client per endpoint (connection pools are reused across calls)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], openai.OpenAI] = {}
        self._lock = threading.Lock()

    def client(self, endpoint: Endpoint) -> openai.OpenAI:
        key = (endpoint.base_url, endpoint.api_key())
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                # Retries belong to the router (it also knows the fallbacks), not to the client.
                c = openai.OpenAI(base_url=endpoint.base_url, api_key=key[1], max_retries=0)
                self._clients[key] = c
            return c

    def chat(
        self,
        endpoint: Endpoint,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        timeout_s: float,
    ) -> ChatResult:
        kwargs: dict[str, Any] = {
            k: params[k] for k in (*FORWARDED_PARAMS, *STRUCTURED_PARAMS) if params.get(k) is not None
        }
        extension = {k: params[k] for k in EXTENSION_PARAMS if params.get(k) is not None}
        if extension:
            kwargs["extra_body"] = extension
        try:
            resp = self.client(endpoint).chat.completions.create(
                model=model,
                messages=[dict(m) for m in messages],  # type: ignore[misc]
                timeout=timeout_s,
                **kwargs,
            )
        except openai.APITimeoutError:
            raise CallFailed(f"timed out after {timeout_s:g}s", retryable=False, cool=True) from None
        except openai.APIConnectionError as exc:
            raise CallFailed(f"connection failed: {exc}", retryable=True, cool=True) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            server_side = status >= 500 or status == 429
            raise CallFailed(
                f"HTTP {status}: {_error_message(exc)}",
                retryable=server_side,
                cool=server_side,
                status=status,
            ) from None
        if not resp.choices:
            raise CallFailed("the upstream returned no choices", retryable=True, cool=True)
        choice = resp.choices[0]
        content = choice.message.content or ""
        structured = len(resp.choices) > 1 or bool(choice.message.tool_calls) or choice.logprobs is not None
        raw = resp.model_dump(mode="json", exclude_none=True) if structured else None
        if resp.usage is not None:
            return ChatResult(
                content, resp.usage.prompt_tokens, resp.usage.completion_tokens, choice.finish_reason, raw=raw
            )
        prompt_text = " ".join(str(m.get("content") or "") for m in messages)
        return ChatResult(
            content, estimate_tokens(prompt_text), estimate_tokens(content), choice.finish_reason, True, raw=raw
        )

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc.message)
