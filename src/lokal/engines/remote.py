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
from lokal.engines.base import EngineInfo, GenerationEvent, GenerationRequest, Usage
from lokal.errors import EngineError, UpstreamError


class RemoteEngine:
    def __init__(self, timeout: float = 300.0) -> None:
        self.info = EngineInfo()
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._model = ""
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
        if req.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in req.messages]
            return "/chat/completions", body
        body["prompt"] = req.prompt or ""
        return "/completions", body

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        if self._client is None:
            raise EngineError("remote engine is not loaded")
        path, body = self._payload(req)
        finish: str = "stop"
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
                    if chunk.get("usage"):
                        u = chunk["usage"]
                        usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
                    for choice in chunk.get("choices", []):
                        text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                        if text:
                            n_chunks += 1
                            yield GenerationEvent(text=text)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream {self._base} failed: {type(exc).__name__}: {exc}") from exc
        yield GenerationEvent(finish_reason=finish, usage=usage or Usage(0, n_chunks))  # type: ignore[arg-type]

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
