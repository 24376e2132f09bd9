"""llama.cpp through llama-cpp-python, in-process: the embedded default engine (GGUF, CPU, GPU offload)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import DEFAULT_MAX_CONTEXT, DEFAULT_PREFILL_SECONDS
from lokal.engines.base import EngineInfo, GenerationEvent, GenerationRequest, Usage, token_budget
from lokal.engines.chat_prompt import LlamaTokenizer, prompt_tokens
from lokal.engines.chat_render import ChatRenderer, openai_message
from lokal.engines.llama_sampling import GrammarCache, RequestSampler, Vocabulary
from lokal.engines.logprobs import LogprobReader
from lokal.engines.textstream import TokenStream
from lokal.errors import EngineError, EngineUnavailable, InvalidRequest
from lokal.gguf.kv_cache import gguf_kv_bytes
from lokal.runtime.engines import install_hint

INSTALL_HINT = install_hint("llamacpp")  # the registry writes each install command once
# A prompt is read in chunks of about Settings.prefill_seconds each (LOKAL_PREFILL_SECONDS; config.py says why).
# A prompt with the batch to itself paces its chunks to this instead: no stream waits on it, only a cancel does.
# Chunks of ~16 tokens (0.25 s on 2 cores for the 0.5b) read a 1k-token prompt 15% slower than 64 (measured with
# llama_cpp's own eval: 16.0 s vs 13.9 s), which is where lokal trailed llama-server on prompt-heavy loads.
SOLO_PREFILL_SECONDS = 0.75


class PrefillPacer:
    """Picks how many prompt tokens the next decode takes, from the time recent decodes took per token.

    Per-token cost varies with the model, the machine, its load and the position in the context (attention
    grows with it), so a fixed chunk is either slow to cancel on a big model or wasteful on a small one."""

    def __init__(
        self,
        seconds: float = DEFAULT_PREFILL_SECONDS,
        *,
        solo_seconds: float = SOLO_PREFILL_SECONDS,
        first: int = 64,
        least: int = 16,
        most: int = 512,
    ):
        self.seconds = seconds
        self.solo_seconds = max(solo_seconds, seconds)
        self.first = first
        self.least = least
        self.most = most
        self._per_token: float | None = None

    def size(self, *, solo: bool = False) -> int:
        """Tokens for the next chunk; `solo`: no other sequence is decoding in this step."""
        if self._per_token is None:
            return min(self.first, self.most)
        target = self.solo_seconds if solo else self.seconds
        return int(max(self.least, min(self.most, target / max(self._per_token, 1e-9))))

    def record(self, tokens: int, seconds: float) -> None:
        if tokens < self.least:  # a decode of a few tokens is mostly fixed overhead: it says nothing per token
            return
        per = seconds / tokens
        self._per_token = per if self._per_token is None else (self._per_token + per) / 2


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable(f"llama-cpp-python is not installed: {INSTALL_HINT}") from exc
    return llama_cpp


class LlamaCppEngine:
    def __init__(
        self,
        *,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_ctx: int | None = None,
        max_context: int = DEFAULT_MAX_CONTEXT,
        prefill_seconds: float = DEFAULT_PREFILL_SECONDS,
    ) -> None:
        self.info = EngineInfo()
        self._n_threads = n_threads
        self._n_gpu_layers = n_gpu_layers
        self._n_ctx = n_ctx
        self._max_context = max_context  # the cap on the model's context when n_ctx does not fix it
        self._llm: Any = None
        self._model: Any = None  # llama_cpp._internals.LlamaModel: tokenizer and metadata, shared by every mode
        self._meta: dict[str, str] = {}
        self._renderer: ChatRenderer | None = None
        self._bos_text = "\0"
        self._spec: ModelSpec | None = None
        self._grammars: GrammarCache | None = None
        self._vocabulary: Vocabulary | None = None
        self._logprobs: LogprobReader | None = None
        self._n_vocab = 0
        self._pacer = PrefillPacer(prefill_seconds)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        llama_cpp = import_llama_cpp()
        if path is None or not path.exists():
            raise EngineError(f"model file for {variant.id} is missing: {path}")
        t0 = time.perf_counter()
        n_ctx = self._n_ctx or min(spec.context_length, self._max_context)
        gpu_layers = self._n_gpu_layers if variant.device == "cpu" else -1
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=self._n_threads,
                n_threads_batch=self._n_threads,  # prompt reading too (None: llama-cpp-python's default)
                n_gpu_layers=gpu_layers,
                embedding=spec.task == "embeddings",
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp could not load {path.name}: {exc}") from exc
        self._attach(spec, self._llm._model, dict(self._llm.metadata))
        meta = self._meta
        self.info = EngineInfo(
            memory_bytes=path.stat().st_size + gguf_kv_bytes(meta, n_ctx),
            load_seconds=time.perf_counter() - t0,
            context_length=n_ctx,
            extra={"synthetic": meta.get("lokal.synthetic") == "true", "gpu_layers": gpu_layers, **self.prompt_facts()},
        )
        if spec.task == "embeddings":
            self.info.extra["dimensions"] = int(self._llm.n_embd())

    def _attach(self, spec: ModelSpec, model: Any, meta: dict[str, str]) -> None:
        """Tokenizer, metadata and chat template of a loaded model: what every mode needs to build prompts."""
        self._spec = spec
        self._model = model
        self._meta = meta
        bos = model.detokenize([model.token_bos()], special=True).decode("utf-8", "replace")
        self._bos_text = bos or "\0"
        self._renderer = self._make_renderer(spec)
        self._n_vocab = int(model.n_vocab())
        self._vocabulary = Vocabulary(model)
        self._grammars = GrammarCache(model.vocab)
        self._logprobs = LogprobReader(lambda token: bytes(model.detokenize([token])), self._n_vocab)

    def unload(self) -> None:
        if self._grammars is not None:
            self._grammars.close()
            self._grammars = None
        if self._llm is not None:
            self._llm.close()
        self._llm = None
        self._model = None

    def _make_renderer(self, spec: ModelSpec) -> ChatRenderer:
        """The GGUF's own Jinja chat template when it has one, else the catalog's template family; lokal's
        template of the same prompt format when a request holds tools the model's own template cannot show."""
        model = self._model
        eos = model.detokenize([model.token_eos()], special=True).decode("utf-8", "replace")
        bos = model.detokenize([model.token_bos()], special=True).decode("utf-8", "replace")
        try:
            return ChatRenderer(self._meta.get("tokenizer.chat_template") or None, spec.chat_template, bos=bos, eos=eos)
        except ValueError as exc:
            raise EngineError(f"{spec.alias}: {exc}") from exc

    def prompt_facts(self) -> dict[str, object]:
        """For EngineInfo.extra: the tool-call format serving reads answers with (None: tools are refused)."""
        renderer = self._renderer
        return {"tool_format": renderer.tool_family if renderer is not None and renderer.supports_tools else None}

    # -- prompts -----------------------------------------------------------------------------------------------
    def _prompt(self, req: GenerationRequest) -> tuple[list[int], list[str]]:
        """Token ids of the prompt and the template's own stop strings."""
        model, renderer = self._model, self._renderer
        if model is None or renderer is None:
            raise EngineError("model is not loaded")
        if req.messages is None:
            return model.tokenize((req.prompt or "").encode("utf-8"), add_bos=True, special=False), []
        messages = [openai_message(m) for m in req.messages]
        tools = list(req.tools)
        prompt, stops = renderer.render(messages, tools)
        # Only the template's markup becomes control tokens; a message's "<|im_start|>" stays text.
        tokens = prompt_tokens(
            prompt,
            messages,
            lambda ms: renderer.render(ms, tools)[0],
            LlamaTokenizer(model),
            bos_text=self._bos_text,
        )
        return tokens, stops

    def count_tokens(self, req: GenerationRequest) -> int:
        return len(self._prompt(req)[0])

    def budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        return token_budget(self.info.context_length, prompt_tokens, max_tokens)

    # -- generation --------------------------------------------------------------------------------------------
    def _sampler(self, req: GenerationRequest) -> RequestSampler:
        """The sampler for `req` (the same in both engines); the caller closes it."""
        if self._vocabulary is None or self._grammars is None:
            raise EngineError("model is not loaded")
        from llama_cpp.llama_grammar import JSON_GBNF

        return RequestSampler(req, vocab=self._vocabulary, grammars=self._grammars, json_gbnf=JSON_GBNF)

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        llm = self._llm
        if llm is None:
            raise EngineError("model is not loaded")
        if self._spec is not None and self._spec.task == "embeddings":
            raise InvalidRequest(f"{self._spec.alias} is an embeddings model; use /v1/embeddings")
        tokens, template_stops = self._prompt(req)
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="messages")
        max_tokens = self.budget(len(tokens), req.max_tokens)
        sampler = self._sampler(req)  # a bad grammar or logit_bias fails here, before the prompt is read
        try:
            yield from self._decode(llm, req, tokens, template_stops, max_tokens, sampler, cancel)
        finally:
            sampler.close()

    def _decode(
        self,
        llm: Any,
        req: GenerationRequest,
        tokens: list[int],
        template_stops: list[str],
        max_tokens: int,
        sampler: RequestSampler,
        cancel: threading.Event,
    ) -> Iterator[GenerationEvent]:
        """Read the prompt, then sample and decode one token at a time with lokal's own sampler chain (the one
        the batched engine uses, which Llama.generate cannot express: logit bias, lazy grammars, logprobs)."""
        llama_cpp = import_llama_cpp()
        if not self._prefill(llm, tokens, cancel):
            yield GenerationEvent(finish_reason="cancelled", usage=Usage(len(tokens), 0))
            return
        llm.eval(tokens[llm.n_tokens :])  # the prompt's last token: its logits give the first sample
        ctx, vocab, reader = llm._ctx.ctx, self._model.vocab, self._logprobs
        stream = TokenStream([*req.stop, *template_stops])
        n_out = 0
        finish: str = "length"
        while True:
            if cancel.is_set():
                finish = "cancelled"
                break
            tok = sampler.sample(ctx, -1)
            if not req.ignore_eos and llama_cpp.llama_vocab_is_eog(vocab, tok):
                finish = "stop"
                break
            n_out += 1
            piece = self._model.detokenize([tok], special=bool(req.tools))
            if req.logprobs is not None and reader is not None:
                ev = stream.feed(piece, *reader.read(ctx, -1, tok, req.logprobs))
            else:
                ev = stream.feed(piece)
            if ev is not None:
                yield ev
            if stream.stopped:
                finish = "stop"
                break
            if n_out >= max_tokens:
                break
            llm.eval([tok])
        tail = stream.flush()
        if tail is not None:
            yield tail
        yield GenerationEvent(finish_reason=finish, usage=Usage(len(tokens), n_out))  # type: ignore[arg-type]

    def _prefill(self, llm: Any, tokens: list[int], cancel: threading.Event) -> bool:
        """Read all but the last prompt token into the KV cache in paced chunks, checking `cancel` between them;
        False when cancelled. The part of the prompt the previous request left in the cache is kept."""
        head = tokens[:-1]
        keep = 0
        # A recurrent state cannot be cut back to a prefix: such models read the whole prompt again.
        if not (getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False)):
            cached = llm._input_ids  # the tokens in the cache now, from the previous request
            for a, b in zip(cached, head, strict=False):
                if a != b:
                    break
                keep += 1
        if keep == 0:
            llm.reset()
        else:
            llm.n_tokens = keep  # eval removes the cache from here on before it decodes
        pos = keep
        while pos < len(head):
            if cancel.is_set():
                return False
            chunk = head[pos : pos + self._pacer.size(solo=True)]
            t0 = time.perf_counter()
            llm.eval(chunk)
            self._pacer.record(len(chunk), time.perf_counter() - t0)
            pos += len(chunk)
        return not cancel.is_set()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._llm is None:
            raise EngineError("model is not loaded")
        if self._spec is None or self._spec.task != "embeddings":
            alias = self._spec.alias if self._spec else "this model"
            raise InvalidRequest(f"{alias} is not an embeddings model; try all-minilm-l6-v2", param="model")
        return [list(map(float, self._llm.embed(t))) for t in texts]
