"""A small OpenAI-compatible HTTP server on 127.0.0.1 whose models succeed, fail or stall on request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeOpenAI:
    """An OpenAI-compatible server whose models behave as told, and which remembers every call.

    ``behaviour[model]``: "ok" (default), "fail" (HTTP 500), "busy" (429), "slow" (sleeps ``slow_s``),
    "flaky" (500 for the first ``flaky_failures`` calls, then ok), "cut" (a stream that stops after its first
    two words, without a finish or [DONE]). ``replies[model]`` overrides the answer; otherwise it is
    "[model] <last user message>", so a test can see who answered. A request with ``stream`` gets SSE, one
    word per chunk, ``itl_s`` apart.
    """

    behaviour: dict[str, str] = field(default_factory=dict)
    replies: dict[str, str | Callable[[list[dict[str, Any]]], str]] = field(default_factory=dict)
    loaded: list[str] | None = None  # served at /openai/loadedmodels when not None
    api_key: str | None = None
    slow_s: float = 3.0
    itl_s: float = 0.0
    flaky_failures: int = 1
    calls: list[dict[str, Any]] = field(default_factory=list)
    probes: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def models_called(self) -> list[str]:
        return [c["model"] for c in self.calls]

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if fake.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {fake.api_key}":
                    return True
                self._send(401, {"error": {"message": "bad key", "type": "authentication_error"}})
                return False

            def do_GET(self) -> None:
                if self.path == "/openai/loadedmodels" and fake.loaded is not None:
                    fake.probes += 1
                    self._send(200, fake.loaded)
                elif self.path == "/v1/models":
                    names = sorted(set(fake.behaviour) | set(fake.replies))
                    self._send(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self._authorized():
                    return
                model = str(body.get("model"))
                n_before = sum(1 for c in fake.calls if c["model"] == model)
                fake.calls.append({"model": model, "body": body, "at": time.monotonic()})
                how = fake.behaviour.get(model, "ok")
                if how == "fail" or (how == "flaky" and n_before < fake.flaky_failures):
                    self._send(500, {"error": {"message": f"{model} exploded", "type": "server_error"}})
                    return
                if how == "busy":
                    self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}})
                    return
                if how == "slow":
                    time.sleep(fake.slow_s)
                messages = body.get("messages", [])
                user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
                reply = fake.replies.get(model)
                text = reply(messages) if callable(reply) else reply if reply is not None else f"[{model}] {user}"
                words = sum(len(str(m.get("content", "")).split()) for m in messages)
                usage = {
                    "prompt_tokens": words,
                    "completion_tokens": len(text.split()),
                    "total_tokens": words + len(text.split()),
                }
                if body.get("stream"):
                    self._stream(
                        model,
                        text,
                        usage if (body.get("stream_options") or {}).get("include_usage") else None,
                        how == "cut",
                    )
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": usage,
                    },
                )

            def _stream(self, model: str, text: str, usage: dict[str, int] | None, cut: bool) -> None:
                # HTTP/1.0: the body ends when the connection closes, so a cut stream is an early close.
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()

                def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
                    choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
                    body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}
                    self.wfile.write(b"data: " + json.dumps({**body, "choices": choices, **extra}).encode() + b"\n\n")
                    self.wfile.flush()

                chunk({"role": "assistant", "content": ""})
                words = text.split(" ")
                for i, w in enumerate(words):
                    if cut and i == 2:
                        return
                    if i and fake.itl_s:
                        time.sleep(fake.itl_s)
                    chunk({"content": w + (" " if i < len(words) - 1 else "")})
                chunk({}, "stop")
                if usage is not None:
                    chunk({}, usage=usage)
                self.wfile.write(b"data: [DONE]\n\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
