"""`lokal.Client`: chat, stream and embed with lokal's models, in this process or on a running server.

    with Client() as c:                          # in process: resolve, load once, generate
        print(c.chat("qwen2.5-0.5b", "Say hi", temperature=0))
    with Client.connect() as c:                  # the same calls over HTTP (LOKAL_BASE_URL, else host:port)
        for piece in c.stream("qwen2.5-0.5b", [{"role": "user", "content": "Say hi"}]):
            print(piece, end="")

Both transports take the same options (the OpenAI chat fields: max_tokens, temperature, top_p, stop, seed,
...), validated the same way, and raise the same lokal.errors types: a server's error answer is turned back
into the class it came from, and a server that cannot be reached is an UpstreamError. Nothing is downloaded
implicitly: a model that is not here raises ModelNotDownloaded with the command that gets it.

Importing this module imports no HTTP client, engine or catalog; each transport imports what it needs when
it is made. A Client is not thread-safe: one call at a time (a local engine has no queue in front of it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from lokal import errors
from lokal.errors import InvalidRequest, LokalError, UpstreamError

if TYPE_CHECKING:
    import httpx

    from lokal.catalog.cache import Cache
    from lokal.catalog.catalog import Catalog
    from lokal.catalog.spec import ModelSpec
    from lokal.config import Settings
    from lokal.engines.base import Engine, GenerationRequest

Messages = str | Sequence[Mapping[str, Any]]  # a str is one user message
DEFAULT_TIMEOUT_S = 600.0  # a long answer on a CPU takes minutes; a dead server is seen at connect (5 s)
# The Client returns text: fields whose answer is more than that (tool calls, logprobs, several choices) need
# the OpenAI API itself, and `stream` is a method of its own.
NOT_TEXT = ("stream", "stream_options", "n", "tools", "tool_choice", "parallel_tool_calls", "logprobs",
            "top_logprobs")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One catalog model as /v1/models describes it."""

    id: str  # the alias
    task: str | None = None  # "chat-completion" or "embeddings"; None when the server does not say (not lokal)
    synthetic: bool = False  # random weights: its text is noise
    cached: bool = False  # its files are here (or it is an upstream's, which has none)
    variant: str | None = None  # the variant that would serve it


class _Transport(Protocol):
    def chat(self, model: str, messages: list[dict[str, Any]], opts: dict[str, Any]) -> str: ...

    def stream(self, model: str, messages: list[dict[str, Any]], opts: dict[str, Any]) -> Iterator[str]: ...

    def embed(self, model: str, texts: list[str]) -> list[list[float]]: ...

    def models(self, include_all: bool) -> list[ModelInfo]: ...

    def model(self, name: str) -> ModelInfo: ...

    def load(self, name: str) -> ModelInfo: ...

    def close(self) -> None: ...


class Client:
    """One interface, two transports: `Client()` / `Client.local()` in process, `Client.connect()` over HTTP."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._transport: _Transport = _InProcess(settings)

    @classmethod
    def local(cls, settings: Settings | None = None) -> Client:
        """Models loaded in this process (settings: get_settings(), i.e. LOKAL_* variables)."""
        return cls(settings)

    @classmethod
    def connect(
        cls, base_url: str | None = None, *, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Client:
        """A running server: `base_url` (with or without /v1), else LOKAL_BASE_URL, else LOKAL_HOST:LOKAL_PORT;
        `api_key` defaults to LOKAL_API_KEY."""
        client = cls.__new__(cls)
        client._transport = _Http(server_root(base_url), api_key, timeout)
        return client

    def chat(self, model: str, messages: Messages, **opts: Any) -> str:
        """The answer's text (opts: OpenAI chat fields, e.g. max_tokens=64, temperature=0, seed=1)."""
        return self._transport.chat(model, _messages(messages), _text_opts(opts))

    def stream(self, model: str, messages: Messages, **opts: Any) -> Iterator[str]:
        """The answer's text as it is written; closing the iterator early stops the generation."""
        return self._transport.stream(model, _messages(messages), _text_opts(opts))

    def embed(self, model: str, texts: str | Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return self._transport.embed(model, [texts] if isinstance(texts, str) else list(texts))

    def models(self, *, include_all: bool = False) -> list[ModelInfo]:
        """The models that can answer now (downloaded); include_all: the whole catalog."""
        return self._transport.models(include_all)

    def model(self, name: str) -> ModelInfo:
        """What the catalog says of one model (alias or variant id); ModelNotFound if it has no such model."""
        return self._transport.model(name)

    def load(self, name: str) -> ModelInfo:
        """Load now rather than on the first call (in process: here; over HTTP: on the server)."""
        return self._transport.load(name)

    def close(self) -> None:
        """Unload what this process loaded, or close the connection."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def server_root(base_url: str | None = None) -> str:
    """The server's root URL (no /v1, no trailing slash): `base_url`, else LOKAL_BASE_URL, else the settings'
    host and port."""
    from lokal.config import env_value, get_settings

    url = base_url or env_value("LOKAL_BASE_URL")
    if not url:
        return get_settings().base_url
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _messages(messages: Messages) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]


def _text_opts(opts: dict[str, Any]) -> dict[str, Any]:
    for key in NOT_TEXT:
        if key in opts:
            raise InvalidRequest(f"{key} is not a Client option: the Client returns text", param=key)
    return opts


def _check_task(spec: ModelSpec, task: str) -> None:
    if spec.task == task:
        return
    if spec.task == "embeddings":
        raise InvalidRequest(f"{spec.alias} is an embeddings model; use embed()", param="model")
    raise InvalidRequest(f"{spec.alias} is not an embeddings model; try all-minilm-l6-v2", param="model")


# -- in process ------------------------------------------------------------------------------------------------


class _InProcess:
    """The runtime's load path (resolve, locate, make_engine, load) without the server: one engine per model,
    one request at a time (parallel=1: no KV cache for slots nobody uses)."""

    def __init__(self, settings: Settings | None) -> None:
        from lokal.catalog.cache import Cache
        from lokal.catalog.catalog import Catalog
        from lokal.config import get_settings

        self.settings = settings or get_settings()
        self.catalog: Catalog = Catalog.load(self.settings)
        self.cache: Cache = Cache(self.settings)
        self.engines: dict[str, tuple[ModelSpec, Engine]] = {}  # by variant id: an alias and its id share one

    def _info(self, spec: ModelSpec) -> ModelInfo:
        variant = self.catalog.best_variant(spec)
        cached = variant.is_upstream or self.cache.locate(variant) is not None
        return ModelInfo(spec.alias, spec.task, spec.synthetic, cached, variant.id)

    def _engine(self, name: str, task: str) -> Engine:
        from lokal.runtime.engines import make_engine
        from lokal.runtime.manager import not_downloaded

        spec, variant = self.catalog.resolve_runnable(name)
        _check_task(spec, task)
        held = self.engines.get(variant.id)
        if held is not None:
            return held[1]
        path = self.cache.locate(variant)
        if variant.needs_artifact and path is None:
            raise not_downloaded(spec, variant)
        engine = make_engine(variant, self.settings, parallel=1)
        # An upstream's async engine runs on a loop of its own behind the sync `generate` used here.
        engine.load(spec, variant, path)
        self.engines[variant.id] = (spec, engine)
        return engine

    def _request(self, model: str, messages: list[dict[str, Any]], opts: dict[str, Any]) -> GenerationRequest:
        # The server's own request model: the options mean here what they mean over HTTP, errors included.
        from pydantic import ValidationError

        from lokal.protocol.chat import ChatCompletionRequest
        from lokal.protocol.decode import validation_message

        try:
            body = ChatCompletionRequest.model_validate({**opts, "model": model, "messages": messages})
        except ValidationError as exc:
            message, param = validation_message(exc)
            raise InvalidRequest(message, param=param) from None
        return body.to_engine(body.requested_max_tokens)

    def chat(self, model: str, messages: list[dict[str, Any]], opts: dict[str, Any]) -> str:
        return "".join(self.stream(model, messages, opts))

    def stream(self, model: str, messages: list[dict[str, Any]], opts: dict[str, Any]) -> Iterator[str]:
        import threading

        req = self._request(model, messages, opts)
        engine = self._engine(model, "chat-completion")
        cancel = threading.Event()

        def pieces() -> Iterator[str]:
            try:
                for ev in engine.generate(req, cancel):
                    if ev.text:
                        yield ev.text
            finally:
                cancel.set()  # closed early: the engine stops at its next token

        return pieces()

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        if not texts:
            raise InvalidRequest("input must not be empty", param="input")
        return self._engine(model, "embeddings").embed(texts)

    def models(self, include_all: bool) -> list[ModelInfo]:
        infos = (self._info(spec) for spec in self.catalog.specs())
        return [i for i in infos if include_all or i.cached]

    def model(self, name: str) -> ModelInfo:
        return self._info(self.catalog.resolve(name)[0])

    def load(self, name: str) -> ModelInfo:
        spec, _ = self.catalog.resolve_runnable(name)
        self._engine(name, spec.task)
        return self._info(spec)

    def close(self) -> None:
        engines, self.engines = self.engines, {}
        for _, engine in engines.values():
            engine.unload()


# -- over HTTP ---------------------------------------------------------------------------------------------------


def _error_classes() -> dict[str, type[LokalError]]:
    found: dict[str, type[LokalError]] = {}
    stack: list[type[LokalError]] = [LokalError]
    while stack:
        cls = stack.pop()
        own = cls.__dict__.get("code")  # a subclass without a code of its own is not what that code names
        if isinstance(own, str):
            found.setdefault(own, cls)
        stack.extend(cls.__subclasses__())
    return found


# Errors without a code of their own, by HTTP status.
_BY_STATUS: dict[int, type[LokalError]] = {
    400: InvalidRequest,
    401: errors.AuthenticationError,
    403: errors.Forbidden,
    404: errors.NotFound,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    503: errors.Overloaded,
}


def error_from(status: int, body: Any, retry_after: str | None = None) -> LokalError:
    """The lokal error a server's error body names (its `code`, else its HTTP status)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return UpstreamError(f"HTTP {status}: {str(body)[:200]}")
    message, code, param = str(err.get("message") or f"HTTP {status}"), err.get("code"), err.get("param")
    cls = _error_classes().get(str(code)) or _BY_STATUS.get(status, UpstreamError)
    if issubclass(cls, errors.Overloaded):
        seconds = int(retry_after) if retry_after is not None and retry_after.isdigit() else 1
        return cls(message, retry_after=seconds)
    return cls(message, param=param if isinstance(param, str) else None)


class _Http:
    """/v1/chat/completions (SSE when streamed), /v1/embeddings and /v1/models of a running server."""

    def __init__(self, root: str, api_key: str | None, timeout: float) -> None:
        import httpx

        from lokal.config import get_settings

        self.root = root
        key = api_key or get_settings().api_key
        self.http = httpx.Client(
            base_url=root,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    def _failed(self, exc: httpx.HTTPError) -> UpstreamError:
        import httpx

        if isinstance(exc, httpx.ConnectError):
            return UpstreamError(f"no lokal server at {self.root}; start one with `lokal serve`")
        return UpstreamError(f"{self.root}: {exc or type(exc).__name__}")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            raise error_from(resp.status_code, resp.text if body is None else body, resp.headers.get("retry-after"))
        if body is None:
            raise UpstreamError(f"{self.root}{path} answered with something that is not JSON: {resp.text[:200]!r}")
        return body

    def chat(self, model: str, messages: list[dict[str, Any]], opts: dict[str, Any]) -> str:
        body = self._json("POST", "/v1/chat/completions", json={**opts, "model": model, "messages": messages})
        return str(body["choices"][0]["message"].get("content") or "")

    def stream(self, model: str, messages: list[dict[str, Any]], opts: dict[str, Any]) -> Iterator[str]:
        import httpx

        body = {**opts, "model": model, "messages": messages, "stream": True}
        try:
            with self.http.stream("POST", "/v1/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    try:
                        answer = resp.json()
                    except ValueError:
                        answer = resp.text
                    raise error_from(resp.status_code, answer, resp.headers.get("retry-after"))
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators and ": keep-alive" comments
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:  # the server's failure after the stream began
                        raise error_from(500, chunk)
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        body = self._json("POST", "/v1/embeddings", json={"model": model, "input": texts})
        rows = sorted(body["data"], key=lambda d: int(d["index"]))
        return [[float(x) for x in row["embedding"]] for row in rows]

    def models(self, include_all: bool) -> list[ModelInfo]:
        cards = self._json("GET", "/v1/models", params={"all": "true"} if include_all else None)
        return [_card(c) for c in cards.get("data") or () if isinstance(c, dict)]

    def model(self, name: str) -> ModelInfo:
        return _card(self._json("GET", f"/v1/models/{quote(name, safe='')}"))

    def load(self, name: str) -> ModelInfo:
        self._json("POST", f"/lokal/models/{quote(name, safe='')}/load")
        return self.model(name)

    def close(self) -> None:
        self.http.close()


def _card(card: Mapping[str, Any]) -> ModelInfo:
    facts = card.get("lokal")
    if not isinstance(facts, Mapping):  # another OpenAI-compatible server, or a router name
        return ModelInfo(str(card.get("id", "")))
    return ModelInfo(
        str(card.get("id", "")),
        facts.get("task"),
        facts.get("synthetic") is True,
        facts.get("cached") is True,
        facts.get("variant"),
    )


__all__ = ["Client", "ModelInfo", "error_from", "server_root"]
