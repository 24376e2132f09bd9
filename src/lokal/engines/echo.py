"""A deterministic engine that answers with the last user message: the serving, manager, routing and Foundry
paths tested in process in milliseconds, and a model for wiring a client up with nothing to download.

Like simonw/llm's llm-echo: every answer follows from the request, so a test can say exactly what comes back.
The variant's file is an optional JSON object of knobs (anything else is ignored, so any file will do):
  {"delay_s": 0.01, "memory_bytes": 1048576, "load_s": 0.0, "load_error": "..."}
delay_s between tokens (a slow model, for queues and cancellation), memory_bytes what the manager counts against
its budget, load_s how long load() takes, load_error a message load() fails with (a model that cannot load).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lokal.engines.base import (
    EngineInfo,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    TokenLogprob,
    TopLogprob,
    Usage,
    token_budget,
)
from lokal.errors import EngineError

if TYPE_CHECKING:
    from lokal.catalog.spec import ModelSpec, Variant

# A token is a word and the spaces after it: counts are easy to work out by hand in a test.
_TOKEN = re.compile(r"\s*\S+\s*|\s+")
DIMENSIONS = 16  # of embed()'s vectors
DEFAULT_MEMORY = 2**20


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


class EchoEngine:
    def __init__(self, delay_s: float = 0.0, memory_bytes: int = DEFAULT_MEMORY, load_s: float = 0.0) -> None:
        self.info = EngineInfo()
        self.delay_s = delay_s
        self.memory_bytes = memory_bytes
        self.load_s = load_s
        self._loaded = False

    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        knobs = _knobs(path)
        self.delay_s = float(knobs.get("delay_s", self.delay_s))
        self.memory_bytes = int(knobs.get("memory_bytes", self.memory_bytes))
        self.load_s = float(knobs.get("load_s", self.load_s))
        if self.load_s:
            time.sleep(self.load_s)
        if knobs.get("load_error"):
            raise EngineError(str(knobs["load_error"]))
        self.info = EngineInfo(
            memory_bytes=self.memory_bytes,
            load_seconds=self.load_s,
            context_length=spec.context_length,
            extra={"synthetic": True, "engine": "echo"},
        )
        self._loaded = True

    def _prompt(self, req: GenerationRequest) -> str:
        if req.messages is not None:
            return "".join(f"{m.role}: {m.content}\n" for m in req.messages)
        return req.prompt or ""

    def count_tokens(self, req: GenerationRequest) -> int:
        return len(tokens(self._prompt(req)))

    def answer(self, req: GenerationRequest) -> str:
        """What generate() writes before max_tokens and stop cut it: the last user turn, or the prompt."""
        if req.messages is not None:
            users = [m.content for m in req.messages if m.role == "user"]
            return users[-1] if users else ""
        return req.prompt or ""

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        if not self._loaded:
            raise EngineError("model is not loaded")
        prompt_tokens = self.count_tokens(req)
        budget = token_budget(self.info.context_length, prompt_tokens, req.max_tokens)
        pieces, finish = _cut(tokens(self.answer(req)), budget, req.stop)
        count = 0
        for piece in pieces:
            if cancel.is_set():
                finish = "cancelled"
                break
            if self.delay_s:
                time.sleep(self.delay_s)
            count += 1
            if piece:
                yield GenerationEvent(text=piece, logprobs=_certain(piece, req.logprobs))
        yield GenerationEvent(finish_reason=finish, usage=Usage(prompt_tokens, count))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors from a hash of each text: equal texts embed equal, different ones almost surely not."""
        if not self._loaded:
            raise EngineError("model is not loaded")
        out = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()
            raw = [b - 127.5 for b in digest[:DIMENSIONS]]
            norm = math.sqrt(sum(x * x for x in raw))
            out.append([x / norm for x in raw])
        return out

    def unload(self) -> None:
        self._loaded = False


def _knobs(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _cut(pieces: list[str], budget: int, stop: Sequence[str]) -> tuple[list[str], FinishReason]:
    """The tokens written: up to `budget`, and up to the first stop string (the token it ends in is generated,
    the stop string itself is not written), as an engine that holds back a possible stop would write them."""
    finish: FinishReason = "length" if len(pieces) > budget else "stop"
    kept = pieces[:budget]
    text = "".join(kept)
    found = [(i, i + len(s)) for s in stop if s and (i := text.find(s)) != -1]
    if not found:
        return kept, finish
    start, end = min(found)
    out: list[str] = []
    at = 0
    for piece in kept:
        out.append(piece[: max(0, start - at)])
        at += len(piece)
        if at >= end:
            break
    return out, "stop"


def _certain(text: str, top: int | None) -> tuple[TokenLogprob, ...]:
    """The echo is certain of every token: log probability 0, and no alternative it would have chosen."""
    if top is None:
        return ()
    data = tuple(text.encode())
    return (TokenLogprob(text, 0.0, data, (TopLogprob(text, 0.0, data),) if top else ()),)
