"""Any OpenAI-compatible upstream (vLLM, Ollama, Foundry Local, a cloud deployment) as an engine.

This is how lokal reaches past one machine: the catalog names the upstream, lokal keeps the API, queueing,
metrics and routing in front of it, and the distributed engine does the heavy lifting.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import (
    ChatMessage,
    EngineInfo,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    Usage,
)
from lokal.errors import EngineError, InvalidRequest, UpstreamError

FINISH_REASONS: frozenset[str] = frozenset({"stop", "length", "tool_calls"})
OWN_FIELDS = frozenset({"model", "stream", "stream_options", "messages", "prompt"})


class RemoteEngine:
    def __init__(self, timeout: float = 300.0) -> None:
        self.info = EngineInfo()
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._model = ""
        self._alias = ""
        self._base = ""

    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        if not variant.base_url:
            raise EngineError(f"remote variant {variant.id} has no base_url")
        t0 = time.perf_counter()
        headers = {}
        key = os.environ.get(variant.api_key_env) if variant.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._base = variant.base_url.rstrip("/")
        self._model = variant.upstream_model or spec.alias
        self._alias = spec.alias
        self._client = httpx.Client(
            base_url=self._base, headers=headers, timeout=httpx.Timeout(self._timeout, connect=10.0)
        )
        self.info = EngineInfo(
            load_seconds=time.perf_counter() - t0,
            context_length=spec.context_length,
            extra={"upstream": self._base},
        )

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def count_tokens(self, req: GenerationRequest) -> int:
        text = "\n".join(m.content for m in req.messages or ()) if req.messages else (req.prompt or "")
        return max(1, len(text) // 4)  # the upstream owns the tokenizer; this is only an estimate

    def _payload(self, req: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The upstream request: every sampling field the API (or the llama.cpp/vLLM extensions) has a name for,
        then the client's own OpenAI fields from `passthrough`, as they came."""
        chat = req.messages is not None
        if req.grammar and "response_format" not in req.passthrough:
            # A grammar lokal built (a tool_choice constraint) has no OpenAI field: the upstream would ignore it.
            raise InvalidRequest(
                f"{self._alias} is served by an upstream API, which takes no GBNF grammar; send the request's "
                "own response_format or tool_choice instead",
                param="grammar",
            )
        body: dict[str, Any] = {
            "model": self._model,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.stop:
            body["stop"] = list(req.stop)
        if req.seed is not None:
            body["seed"] = req.seed
        if req.json_mode:
            body["response_format"] = {"type": "json_object"}
        if req.presence_penalty:
            body["presence_penalty"] = req.presence_penalty
        if req.frequency_penalty:
            body["frequency_penalty"] = req.frequency_penalty
        if req.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in req.logit_bias.items()}
        # Extensions only when asked for: an upstream that does not know them then never sees them.
        if req.top_k is not None:
            body["top_k"] = req.top_k
        if req.min_p is not None:
            body["min_p"] = req.min_p
        if req.repeat_penalty != 1.0:
            body["repeat_penalty"] = req.repeat_penalty  # llama.cpp's name
            body["repetition_penalty"] = req.repeat_penalty  # vLLM's
        if req.logprobs is not None:
            if chat:
                body["logprobs"] = True
                body["top_logprobs"] = req.logprobs
            else:
                body["logprobs"] = req.logprobs  # the completions API's own form: how many alternatives
        if req.tools:
            body["tools"] = [dict(t) for t in req.tools]
        # The client's own fields, except those that say how lokal talks to the upstream.
        body.update({k: v for k, v in req.passthrough.items() if k not in OWN_FIELDS})
        if req.messages is not None:
            body["messages"] = [_wire_message(m) for m in req.messages]
            return "/chat/completions", body
        body["prompt"] = req.prompt or ""
        return "/completions", body

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        if self._client is None:
            raise EngineError("remote engine is not loaded")
        path, body = self._payload(req)
        finish: FinishReason = "stop"
        usage: Usage | None = None
        n_chunks = 0
        try:
            with self._client.stream("POST", path, json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise UpstreamError(f"upstream {self._base} answered {resp.status_code}: {_message(resp)}")
                for line in resp.iter_lines():
                    if cancel.is_set():
                        finish = "cancelled"
                        break
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        raise UpstreamError(f"upstream {self._base} failed mid-stream: {_error_text(chunk)}")
                    if chunk.get("usage"):
                        u = chunk["usage"]
                        usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
                    for choice in chunk.get("choices") or ():
                        if choice.get("index", 0) != 0:  # serving fans n out as separate requests
                            continue
                        event = _event(choice)
                        if event is not None:
                            n_chunks += 1
                            yield event
                        reason = choice.get("finish_reason")
                        if reason:
                            finish = reason if reason in FINISH_REASONS else "stop"  # content_filter and such
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream {self._base} failed: {type(exc).__name__}: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not JSON, or not a chunk's shape
            raise UpstreamError(f"upstream {self._base} sent a chunk lokal cannot read: {exc}") from exc
        yield GenerationEvent(finish_reason=finish, usage=usage or Usage(0, n_chunks))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._client is None:
            raise EngineError("remote engine is not loaded")
        try:
            resp = self._client.post("/embeddings", json={"model": self._model, "input": list(texts)})
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream {self._base} failed: {exc}") from exc
        if resp.status_code >= 400:
            raise UpstreamError(f"upstream {self._base} answered {resp.status_code}: {_message(resp)}")
        return [list(map(float, d["embedding"])) for d in resp.json()["data"]]


def _message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
        return str(err.get("message", err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        return resp.text[:200]


def _wire_message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
        if not m.content:
            out["content"] = None  # OpenAI's shape for an assistant turn that only called tools
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def _event(choice: dict[str, Any]) -> GenerationEvent | None:
    """One streamed choice as an engine event: text, tool-call pieces and logprobs; None when it has none."""
    delta = choice.get("delta") or {}
    text = delta.get("content") or choice.get("text") or ""
    calls = tuple(_tool_call(c) for c in delta.get("tool_calls") or ())
    logprobs = _logprobs(choice.get("logprobs"))
    if not (text or calls or logprobs):
        return None
    return GenerationEvent(text=text, tool_calls=calls, logprobs=logprobs)


def _tool_call(raw: dict[str, Any]) -> ToolCallDelta:
    fn = raw.get("function") or {}
    return ToolCallDelta(
        index=int(raw.get("index", 0)),
        id=raw.get("id") or None,
        name=fn.get("name") or None,
        arguments=fn.get("arguments") or "",
    )


def _logprobs(raw: Any) -> tuple[TokenLogprob, ...]:
    """Chat's `logprobs.content` entries, or the completions API's parallel arrays."""
    if not isinstance(raw, dict):
        return ()
    if raw.get("content") is not None:
        return tuple(
            TokenLogprob(
                e["token"],
                float(e["logprob"]),
                _bytes(e),
                tuple(TopLogprob(t["token"], float(t["logprob"]), _bytes(t)) for t in e.get("top_logprobs") or ()),
            )
            for e in raw["content"]
        )
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    return tuple(
        TokenLogprob(
            tok,
            float(lp),
            tuple(tok.encode("utf-8")),
            tuple(TopLogprob(t, float(v), tuple(t.encode("utf-8"))) for t, v in (top or {}).items()),
        )
        for tok, lp, top in zip(tokens, values, tops, strict=False)
        if lp is not None
    )


def _bytes(entry: dict[str, Any]) -> tuple[int, ...]:
    raw = entry.get("bytes")
    return tuple(int(b) for b in raw) if raw is not None else tuple(str(entry["token"]).encode("utf-8"))


def _error_text(chunk: dict[str, Any]) -> str:
    err = chunk["error"]
    return str(err.get("message", err)) if isinstance(err, dict) else str(err)
