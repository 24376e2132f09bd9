"""A scripted OpenAI-compatible server with known timing: proves the bench's numbers, measures its overhead.

It waits exactly `ttft_s` before the first token and `itl_s` between tokens (against absolute deadlines, so
sleep error does not accumulate), sends one token per SSE chunk, counts prompt tokens as whitespace-separated
words, and records what a load test needs checked: arrival times and the most requests in flight at once.

    with ScriptedServer(Script(ttft_s=0.05, itl_s=0.01, tokens=20)) as srv:
        run_bench(BenchConfig(models=[ModelEntry(name="m")], endpoint=srv.base_url))

Run standalone (for benchmarks in a separate process), from the repository root:
`python -m tests.support.scripted --port 8011`.

It also fails on command, for failover tests: `Script(status=500)`, `Script(status=429, retry_after=2)`,
`Script(die_after=3)` (the connection closes after 3 tokens, no [DONE]), `Script(stall_after=3)` (it stops
sending). A running server switches behaviour with `server.script = Script(...)` (new requests only);
`server.kill()` cuts every stream in flight and closes the port, `server.restart()` listens on it again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass(frozen=True, slots=True)
class Script:
    ttft_s: float = 0.0  # from the request's arrival (after any capacity queue) to the first token
    itl_s: float = 0.0
    tokens: int = 16  # capped by the request's max_tokens
    reply: str | None = None  # fixed text, one word per token; otherwise "w0 w1 ..."
    usage: bool = True  # honour stream_options.include_usage
    logprob: float | None = None  # per-token logprob to report when the request asks for logprobs
    status: int = 200  # answer every request with this HTTP error instead
    memory_bytes: int = 100_000_000  # what /lokal/ps reports for this model
    load_seconds: float = 0.5
    synthetic: bool | None = None  # what its model card (and /lokal/ps) says; None = says nothing, like non-lokal
    # Failure modes, for failover tests (a refused connection needs no script: a closed port, see
    # tests.support.server.free_port).
    retry_after: int | None = None  # Retry-After header on a `status` answer (429, 503)
    die_after: int | None = None  # close the connection after this many tokens, without [DONE]
    stall_after: int | None = None  # stop sending after this many tokens, connection left open


@dataclass(slots=True)
class ServerStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: list[float] = field(default_factory=list)  # perf_counter at arrival, in arrival order
    peers: list[int] = field(default_factory=list)  # the client's port per request: one per kept-alive connection
    models: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    # Per request, in arrival order: perf_counter when each token's chunk was handed to the transport. The
    # ground truth a client-side measurement is checked against (same clock: the server runs in-process).
    writes: list[list[float]] = field(default_factory=list)

    def reset(self) -> None:
        self.requests = self.in_flight = self.max_in_flight = 0
        self.arrivals.clear()
        self.peers.clear()
        self.models.clear()
        self.bodies.clear()
        self.writes.clear()


class _ScriptedDeath(Exception):
    """Raised inside a stream to make uvicorn drop the connection mid-body, the way a crashed upstream does."""


class _QuietDeaths(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _ScriptedDeath)


logging.getLogger("uvicorn.error").addFilter(_QuietDeaths())


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


def _words(script: Script, n: int) -> list[str]:
    if script.reply is not None:
        words = script.reply.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)][:n]
    return [f"w{i} " for i in range(n)]


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": "model", "code": code}},
        status_code=status,
    )


def build_app(
    scripts: dict[str, Script] | None = None,
    *,
    default: Script | None = None,
    max_parallel: int | None = None,
    serve_ps: bool = False,
    stats: ServerStats | None = None,
) -> tuple[Starlette, ServerStats]:
    """`scripts` maps model names to behaviour; other names get `default`, or 404 when `default` is None.
    `app.state.default` and `app.state.scripts` may be replaced while it runs; `app.state.cut = True` ends every
    stream in flight at its next token."""
    scripts = dict(scripts or {})
    st = stats or ServerStats()
    capacity = asyncio.Semaphore(max_parallel) if max_parallel else None
    state: Any = None  # the app's state, bound below

    def lookup(model: str) -> Script | None:
        current: dict[str, Script] = state.scripts
        default: Script | None = state.default
        return current.get(model, default)

    async def chat(request: Request) -> Response:
        arrived = time.perf_counter()
        body = await request.json()
        st.requests += 1
        st.arrivals.append(arrived)
        st.peers.append(request.client.port if request.client else 0)
        st.models.append(str(body.get("model")))
        st.bodies.append(body)
        writes: list[float] = []
        st.writes.append(writes)
        script = lookup(str(body.get("model")))
        if script is None:
            return _error(404, f"model {body.get('model')!r} not found", "model_not_found")
        if script.status != 200:
            response = _error(script.status, "scripted failure", "scripted")
            if script.retry_after is not None:
                response.headers["Retry-After"] = str(script.retry_after)
            return response
        n = min(script.tokens, int(body.get("max_tokens") or script.tokens))
        words = _words(script, n)
        usage = {
            "prompt_tokens": _prompt_tokens(body),
            "completion_tokens": len(words),
            "total_tokens": _prompt_tokens(body) + len(words),
        }
        want_logprobs = bool(body.get("logprobs")) and script.logprob is not None
        created = int(time.time())

        async def wait_until(t: float) -> None:
            delay = t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

        async def generate() -> AsyncIterator[bytes]:
            # Counted in flight from arrival to last byte, including time queued for capacity.
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            try:
                start = arrived  # the script's clock starts when the request arrives, not when we got to it
                if capacity is not None:
                    await capacity.acquire()
                    start = max(arrived, time.perf_counter())
                try:
                    for i, word in enumerate(words):
                        if i == script.stall_after:
                            await asyncio.sleep(3600)  # until the client gives up and disconnects
                        if i == script.die_after:
                            raise _ScriptedDeath
                        await wait_until(start + script.ttft_s + i * script.itl_s)
                        if state.cut:
                            raise _ScriptedDeath
                        choice: dict[str, Any] = {
                            "index": 0,
                            "delta": {"content": word},
                            "finish_reason": None,
                        }
                        if want_logprobs:
                            choice["logprobs"] = {"content": [{"token": word, "logprob": script.logprob}]}
                        chunk = _sse(
                            {
                                "id": "cmpl-1",
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": body["model"],
                                "choices": [choice],
                            }
                        )
                        writes.append(time.perf_counter())
                        yield chunk
                    yield _sse(
                        {
                            "id": "cmpl-1",
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": body["model"],
                            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                        }
                    )
                    if script.usage and (body.get("stream_options") or {}).get("include_usage"):
                        yield _sse(
                            {
                                "id": "cmpl-1",
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": body["model"],
                                "choices": [],
                                "usage": usage,
                            }
                        )
                    yield b"data: [DONE]\n\n"
                finally:
                    if capacity is not None:
                        capacity.release()
            finally:
                st.in_flight -= 1

        if body.get("stream"):
            return StreamingResponse(generate(), media_type="text/event-stream")
        text_parts: list[str] = []
        async for raw in generate():
            if raw.startswith(b"data: {"):
                for c in json.loads(raw[6:]).get("choices", []):
                    text_parts.append(c.get("delta", {}).get("content") or "")
        message: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(text_parts)},
            "finish_reason": "length",
        }
        if want_logprobs:
            message["logprobs"] = {"content": [{"token": w, "logprob": script.logprob} for w in words]}
        payload: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [message],
        }
        if script.usage:
            payload["usage"] = usage
        return JSONResponse(payload)

    def card(name: str, script: Script) -> dict[str, Any]:
        out: dict[str, Any] = {"id": name, "object": "model"}
        if script.synthetic is not None:
            out["lokal"] = {"synthetic": script.synthetic}
        return out

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [card(m, s) for m, s in scripts.items()]})

    async def model(request: Request) -> Response:
        name = request.path_params["model_id"]
        script = lookup(name)
        if script is None:
            return _error(404, f"model {name!r} not found", "model_not_found")
        return JSONResponse(card(name, script))

    async def ps(request: Request) -> Response:
        return JSONResponse(
            {
                "server_rss_bytes": 123_456_789,
                "models": [
                    {
                        "alias": m,
                        "id": f"{m}:1",
                        "memory_bytes": s.memory_bytes,
                        "load_seconds": s.load_seconds,
                        "ttl_left": 600,
                        "queue_depth": 0,
                        **({"synthetic": s.synthetic} if s.synthetic is not None else {}),
                    }
                    for m, s in scripts.items()
                ],
            }
        )

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/v1/models/{model_id:path}", model),
    ]
    if serve_ps:
        routes.append(Route("/lokal/ps", ps))
    app = Starlette(routes=routes)
    app.state.scripts = scripts
    app.state.default = default
    app.state.cut = False
    state = app.state
    return app, st


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class ScriptedServer:
    """The scripted app served by uvicorn on 127.0.0.1 (ephemeral port) in a background thread."""

    def __init__(
        self,
        default: Script | None = None,
        scripts: dict[str, Script] | None = None,
        *,
        max_parallel: int | None = None,
        serve_ps: bool = False,
        port: int = 0,
    ) -> None:
        self.app, self.stats = build_app(scripts, default=default, max_parallel=max_parallel, serve_ps=serve_ps)
        self.port = port
        self._make_server()

    def _make_server(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="scripted-openai-server", daemon=True)

    @property
    def script(self) -> Script | None:
        """What requests for models without a script of their own get; set it to change what new ones get."""
        current: Script | None = self.app.state.default
        return current

    @script.setter
    def script(self, value: Script | None) -> None:
        self.app.state.default = value

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> ScriptedServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("scripted server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def kill(self) -> None:
        """Like a crashed upstream: every stream in flight is cut at its next token, then the port is closed."""
        self.app.state.cut = True
        self._server.force_exit = True
        self.stop()

    def restart(self) -> ScriptedServer:
        """Listen again on the same port (after kill() or stop()), streams no longer cut."""
        self.app.state.cut = False
        self._make_server()
        return self.start()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft", type=float, default=0.0)
    ap.add_argument("--itl", type=float, default=0.0)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--max-parallel", type=int, default=None, help="requests served at once; the rest queue")
    ap.add_argument("--status", type=int, default=200, help="answer every request with this HTTP status")
    ap.add_argument("--die-after", type=int, default=None, help="drop the connection after this many tokens")
    ap.add_argument("--stall-after", type=int, default=None, help="stop sending after this many tokens")
    args = ap.parse_args()
    script = Script(
        ttft_s=args.ttft,
        itl_s=args.itl,
        tokens=args.tokens,
        status=args.status,
        die_after=args.die_after,
        stall_after=args.stall_after,
    )
    app, _ = build_app(default=script, max_parallel=args.max_parallel)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off", access_log=False)


if __name__ == "__main__":
    main()
