"""The measuring client: one chat request, timed with perf_counter at each protocol step.

httpx streaming with our own SSE line parsing (rather than an SDK) so a timestamp is taken the moment a line
arrives, before any JSON decoding, and the per-request overhead stays small enough that the client is never
the bottleneck (see benchmarks/bench_client_overhead.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import httpx

from lokal.bench.metrics import RequestRecord, TokenSource
from lokal.bench.prompts import Prompt

# Status codes that will not change on retry: stop sending this model more requests.
FATAL_STATUS = frozenset({401, 403, 404})


class TokenCounter(Protocol):
    def __call__(self, text: str) -> int: ...


def load_tokenizer(name_or_path: str) -> TokenCounter:
    """A Hugging Face `tokenizers` tokenizer from a tokenizer.json path or a hub name (cached)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(name_or_path) if Path(name_or_path).is_file() else Tokenizer.from_pretrained(name_or_path)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return count


@dataclass(frozen=True, slots=True)
class RequestParams:
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int | None = None
    stream: bool = True
    ignore_eos: bool = False
    logprobs: bool = False
    extra_body: dict[str, Any] = field(default_factory=dict)


def api_root(endpoint: str) -> str:
    """`http://host:port/v1` -> `http://host:port` (where lokal serves /lokal/ps)."""
    e = endpoint.rstrip("/")
    return e[: -len("/v1")] if e.endswith("/v1") else e


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return str(data)[:300]


class BenchClient:
    """An OpenAI-compatible chat client that returns a `RequestRecord` for every call, never raising."""

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 300.0,
        max_connections: int = 1000,
        tokenizer: TokenCounter | None = None,
    ) -> None:
        headers = {"content-type": "application/json", "accept": "text/event-stream, application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.endpoint = endpoint.rstrip("/")
        self._url = f"{self.endpoint}/chat/completions"
        self.timeout_s = timeout_s
        self._count = tokenizer
        # Set once the endpoint refused `logprobs` (lokal does until it computes them): later requests drop the
        # field, and callers can say "the endpoint gives no logprobs" instead of never firing a confidence rule.
        self.logprobs_refused = False
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> BenchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def get_json(self, url: str, timeout_s: float = 5.0) -> Any:
        resp = await self._http.get(url, timeout=timeout_s)
        resp.raise_for_status()
        return resp.json()

    def _payload(self, model: str, prompt: Prompt, p: RequestParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": list(prompt.messages),
            "max_tokens": prompt.max_tokens or p.max_tokens,
            "temperature": p.temperature,
            "stream": p.stream,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stream:
            body["stream_options"] = {"include_usage": True}
        if p.ignore_eos:
            body["ignore_eos"] = True
        if p.logprobs:
            body["logprobs"] = True
        body.update(p.extra_body)
        return body

    async def chat(
        self,
        model: str,
        prompt: Prompt,
        params: RequestParams,
        *,
        round_index: int = 0,
        t0: float | None = None,
        keep_output: bool = False,
    ) -> RequestRecord:
        t_start = time.perf_counter()
        rec = RequestRecord(
            model=model,
            prompt_id=prompt.id,
            round=round_index,
            stream=params.stream,
            start_s=t_start - (t0 if t0 is not None else t_start),
        )
        parts: list[str] = []
        if params.logprobs and self.logprobs_refused:
            params = replace(params, logprobs=False)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._exchange(rec, model, prompt, params, t_start, parts)
                if params.logprobs and rec.error_kind == "http_400" and "logprobs" in (rec.error or ""):
                    self.logprobs_refused = True
                    params = replace(params, logprobs=False)
                    rec.status_code, rec.error_kind, rec.error = None, None, None
                    await self._exchange(rec, model, prompt, params, t_start, parts)
        except TimeoutError:
            rec.ok, rec.error_kind, rec.error = (
                False,
                "timeout",
                f"no complete answer within {self.timeout_s:g}s",
            )
        except httpx.ConnectError as exc:
            rec.ok, rec.error_kind, rec.error = False, "connect", f"cannot connect: {exc}"
        except httpx.HTTPError as exc:
            rec.ok, rec.error_kind, rec.error = False, "http", f"{type(exc).__name__}: {exc}"
        except ValueError as exc:  # malformed JSON from the server
            rec.ok, rec.error_kind, rec.error = False, "protocol", f"bad response: {exc}"
        if rec.e2e_s is None:
            rec.e2e_s = time.perf_counter() - t_start
        text = "".join(parts)
        rec.output_chars = len(text)
        if rec.ok:
            self._fill_tokens(rec, prompt, text)
        if keep_output:
            rec.output = text
        return rec

    async def _exchange(
        self,
        rec: RequestRecord,
        model: str,
        prompt: Prompt,
        p: RequestParams,
        t_start: float,
        parts: list[str],
    ) -> None:
        request = self._http.build_request("POST", self._url, content=json.dumps(self._payload(model, prompt, p)))
        t_prepared = time.perf_counter()
        rec.phase_prepare_s = t_prepared - t_start
        resp = await self._http.send(request, stream=True)
        t_headers = time.perf_counter()
        rec.phase_send_s = t_headers - t_prepared
        rec.status_code = resp.status_code
        try:
            if resp.status_code >= 400:
                body = await resp.aread()
                rec.error_kind = f"http_{resp.status_code}"
                rec.error = f"HTTP {resp.status_code}: {_error_message(body)}"
                return
            if p.stream and resp.headers.get("content-type", "").startswith("text/event-stream"):
                await self._read_stream(rec, resp, t_start, t_headers, parts)
            else:
                body = await resp.aread()
                t_end = time.perf_counter()
                rec.e2e_s = t_end - t_start
                rec.phase_completion_s = t_end - t_headers
                self._read_body(rec, json.loads(body), parts)
        finally:
            await resp.aclose()

    async def _read_stream(
        self, rec: RequestRecord, resp: httpx.Response, t_start: float, t_headers: float, parts: list[str]
    ) -> None:
        t_first: float | None = None
        t_last = 0.0
        logprobs: list[float] = []
        itl = rec.itl_s
        async for line in resp.aiter_lines():
            now = time.perf_counter()  # before decoding: the arrival time is what we measure
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                err = chunk["error"]
                rec.error_kind = "stream_error"
                rec.error = str(err.get("message", err) if isinstance(err, dict) else err)
                return
            usage = chunk.get("usage")
            if usage:
                rec.prompt_tokens = usage.get("prompt_tokens")
                rec.completion_tokens = usage.get("completion_tokens")
            for choice in (chunk.get("choices") or ())[:1]:
                delta = choice.get("delta") or {}
                text = delta.get("content") or delta.get("reasoning_content") or ""
                if text:
                    if t_first is None:
                        t_first = now
                    else:
                        itl.append(now - t_last)
                    t_last = now
                    parts.append(text)
                    rec.content_chunks += 1
                if choice.get("finish_reason"):
                    rec.finish_reason = choice["finish_reason"]
                lp = choice.get("logprobs")
                if lp and lp.get("content"):
                    logprobs.extend(float(t["logprob"]) for t in lp["content"] if t.get("logprob") is not None)
        t_end = time.perf_counter()
        rec.e2e_s = t_end - t_start
        if t_first is not None:
            rec.ttft_s = t_first - t_start
            rec.phase_first_token_s = t_first - t_headers
            rec.phase_completion_s = t_end - t_first
        else:
            rec.phase_first_token_s = t_end - t_headers
            rec.phase_completion_s = 0.0
        if logprobs:
            rec.mean_logprob = sum(logprobs) / len(logprobs)
        rec.ok = True
        if rec.prompt_tokens is not None or rec.completion_tokens is not None:
            rec.prompt_token_source = rec.completion_token_source = "usage"

    def _read_body(self, rec: RequestRecord, data: dict[str, Any], parts: list[str]) -> None:
        if "error" in data:
            rec.error_kind, rec.error = "api_error", _error_message(json.dumps(data).encode())
            return
        choice = (data.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        parts.append(message.get("content") or "")
        rec.finish_reason = choice.get("finish_reason")
        usage = data.get("usage") or {}
        if usage:
            rec.prompt_tokens = usage.get("prompt_tokens")
            rec.completion_tokens = usage.get("completion_tokens")
            rec.prompt_token_source = rec.completion_token_source = "usage"
        lp = choice.get("logprobs")
        if lp and lp.get("content"):
            vals = [float(t["logprob"]) for t in lp["content"] if t.get("logprob") is not None]
            rec.mean_logprob = sum(vals) / len(vals) if vals else None
        rec.ok = True

    def _fill_tokens(self, rec: RequestRecord, prompt: Prompt, text: str) -> None:
        """Counts the server did not give: tokenizer when configured, else a labelled estimate."""
        if rec.completion_tokens is None:
            source: TokenSource
            if self._count is not None:
                rec.completion_tokens, source = self._count(text), "tokenizer"
            elif rec.stream and rec.content_chunks:
                rec.completion_tokens, source = (
                    rec.content_chunks,
                    "chunks",
                )  # servers send ~1 token per chunk
            else:
                rec.completion_tokens, source = round(len(text) / 4), "chars/4"
            rec.completion_token_source = source
        if rec.prompt_tokens is None:
            if self._count is not None:
                rec.prompt_tokens, rec.prompt_token_source = self._count(prompt.text), "tokenizer"
            else:
                rec.prompt_tokens, rec.prompt_token_source = round(len(prompt.text) / 4), "chars/4"
