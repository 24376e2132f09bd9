"""llama.cpp through llama-cpp-python, in-process: the embedded default engine (GGUF, CPU, GPU offload)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import EngineInfo, GenerationEvent, GenerationRequest, Usage, token_budget
from lokal.engines.chat_prompt import LlamaTokenizer, prompt_tokens
from lokal.engines.textstream import TextStream
from lokal.errors import EngineError, EngineUnavailable, InvalidRequest

INSTALL_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir llama-cpp-python==0.3.36'
    "  (the native build crashes on quantized models on some AVX-512 CPUs)"
)
MAX_CONTEXT = int(os.environ.get("LOKAL_MAX_CONTEXT", "8192"))  # KV cache grows with it; most chats fit
# One sampling recipe for the single-stream and the batched engine, so a seed means the same thing in both.
TOP_K = 40
MIN_P = 0.05
# A prompt is read in chunks sized to take about this long each, so a cancel (client gone, forced unload) is
# seen between two chunks well within a second, on any machine and model, while chunks stay large enough that
# reading the prompt costs about what one big decode would.
PREFILL_SECONDS = float(os.environ.get("LOKAL_PREFILL_SECONDS", "0.25"))


class PrefillPacer:
    """Picks how many prompt tokens the next decode takes, from the time recent decodes took per token.

    Per-token cost varies with the model, the machine, its load and the position in the context (attention
    grows with it), so a fixed chunk is either slow to cancel on a big model or wasteful on a small one."""

    def __init__(self, seconds: float = PREFILL_SECONDS, *, first: int = 64, least: int = 16, most: int = 512):
        self.seconds = seconds
        self.first = first
        self.least = least
        self.most = most
        self._per_token: float | None = None

    def size(self) -> int:
        if self._per_token is None:
            return min(self.first, self.most)
        return int(max(self.least, min(self.most, self.seconds / max(self._per_token, 1e-9))))

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


def gguf_kv_bytes(meta: dict[str, str], n_ctx: int) -> int:
    """f16 KV cache size from GGUF metadata: 2 (K and V) x layers x ctx x kv_heads x head_dim x 2 bytes."""
    arch = meta.get("general.architecture", "llama")
    try:
        layers = int(meta[f"{arch}.block_count"])
        heads = int(meta[f"{arch}.attention.head_count"])
        kv = int(meta.get(f"{arch}.attention.head_count_kv", heads))
        emb = int(meta[f"{arch}.embedding_length"])
        hd = int(meta.get(f"{arch}.attention.key_length", emb // heads))
    except (KeyError, ValueError, ZeroDivisionError):
        return 0
    return 2 * layers * n_ctx * kv * hd * 2


class LlamaCppEngine:
    def __init__(self, *, n_threads: int | None = None, n_gpu_layers: int = 0, n_ctx: int | None = None) -> None:
        self.info = EngineInfo()
        self._n_threads = n_threads
        self._n_gpu_layers = n_gpu_layers
        self._n_ctx = n_ctx
        self._llm: Any = None
        self._model: Any = None  # llama_cpp._internals.LlamaModel: tokenizer and metadata, shared by every mode
        self._meta: dict[str, str] = {}
        self._formatter: Callable[..., Any] | None = None
        self._bos_text = "\0"
        self._spec: ModelSpec | None = None
        self._json_grammar: Any = None
        self._pacer = PrefillPacer()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        llama_cpp = import_llama_cpp()
        if path is None or not path.exists():
            raise EngineError(f"model file for {variant.id} is missing: {path}")
        t0 = time.perf_counter()
        n_ctx = self._n_ctx or min(spec.context_length, MAX_CONTEXT)
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
            extra={"synthetic": meta.get("lokal.synthetic") == "true", "gpu_layers": gpu_layers},
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
        self._formatter = self._make_formatter(spec)

    def unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
        self._llm = None
        self._model = None

    def _make_formatter(self, spec: ModelSpec) -> Callable[..., Any]:
        """The GGUF's own Jinja chat template when it has one, else the catalog's template family."""
        from llama_cpp import llama_chat_format as lcf

        model = self._model
        template = self._meta.get("tokenizer.chat_template")
        if template:
            eos = model.detokenize([model.token_eos()], special=True).decode("utf-8", "replace")
            bos = model.detokenize([model.token_bos()], special=True).decode("utf-8", "replace")
            return lcf.Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos, stop_token_ids=[model.token_eos()]
            )
        family = (spec.chat_template or "chatml").replace("-", "_")
        fmt = getattr(lcf, f"format_{family}", None)
        if fmt is None:
            raise EngineError(f"unknown chat template family {spec.chat_template!r} for {spec.alias}")
        return fmt

    # -- prompts -----------------------------------------------------------------------------------------------
    def _prompt(self, req: GenerationRequest) -> tuple[list[int], list[str]]:
        """Token ids of the prompt and the template's own stop strings."""
        model, formatter = self._model, self._formatter
        if model is None or formatter is None:
            raise EngineError("model is not loaded")
        if req.messages is None:
            return model.tokenize((req.prompt or "").encode("utf-8"), add_bos=True, special=False), []
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        result = formatter(messages=messages)
        stop = result.stop
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        # Only the template's markup becomes control tokens; a message's "<|im_start|>" stays text.
        tokens = prompt_tokens(
            result.prompt,
            messages,
            lambda ms: str(formatter(messages=ms).prompt),
            LlamaTokenizer(model),
            bos_text=self._bos_text,
        )
        return tokens, stops

    def count_tokens(self, req: GenerationRequest) -> int:
        return len(self._prompt(req)[0])

    def budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        return token_budget(self.info.context_length, prompt_tokens, max_tokens)

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        llm = self._llm
        if llm is None:
            raise EngineError("model is not loaded")
        if self._spec is not None and self._spec.task == "embeddings":
            raise InvalidRequest(f"{self._spec.alias} is an embeddings model; use /v1/embeddings")
        tokens, template_stops = self._prompt(req)
        max_tokens = self.budget(len(tokens), req.max_tokens)
        grammar = self._grammar() if req.json_mode else None
        llama_cpp = import_llama_cpp()
        # No seed means a fresh random one, not whatever seed the previous request left behind.
        llm.set_seed(req.seed if req.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        stream = TextStream([*req.stop, *template_stops])
        vocab = llm._model.vocab
        n_out = 0
        finish: str = "length"
        if not self._prefill(llm, tokens, cancel):
            yield GenerationEvent(finish_reason="cancelled", usage=Usage(len(tokens), 0))
            return
        gen = llm.generate(
            tokens,
            top_k=TOP_K if req.temperature > 0 else 1,
            top_p=req.top_p,
            min_p=MIN_P,
            temp=req.temperature,
            repeat_penalty=1.0,
            grammar=grammar,
        )
        try:
            for tok in gen:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if not req.ignore_eos and llama_cpp.llama_vocab_is_eog(vocab, tok):
                    finish = "stop"
                    break
                n_out += 1
                delta = stream.feed(llm.detokenize([tok]))
                if stream.stopped:
                    finish = "stop"
                    if delta:
                        yield GenerationEvent(text=delta)
                    break
                if delta:
                    yield GenerationEvent(text=delta)
                if n_out >= max_tokens:
                    break
        finally:
            gen.close()
        tail = stream.flush()
        if tail:
            yield GenerationEvent(text=tail)
        yield GenerationEvent(finish_reason=finish, usage=Usage(len(tokens), n_out))  # type: ignore[arg-type]

    def _prefill(self, llm: Any, tokens: list[int], cancel: threading.Event) -> bool:
        """Read all but the last prompt token into the KV cache in paced chunks, checking `cancel` between them;
        False when cancelled. Llama.generate would read the whole prompt in one uninterruptible call; after this
        it finds the prompt cached but for its last token (its own prefix match), and decodes only that one."""
        if getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
            return not cancel.is_set()  # no partial cache removal: leave the prompt to generate, as before
        head = tokens[:-1]
        cached = llm._input_ids  # the tokens in the cache now, from the previous request
        keep = 0
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
            chunk = head[pos : pos + self._pacer.size()]
            t0 = time.perf_counter()
            llm.eval(chunk)
            self._pacer.record(len(chunk), time.perf_counter() - t0)
            pos += len(chunk)
        return not cancel.is_set()

    def _grammar(self) -> Any:
        if self._json_grammar is None:
            from llama_cpp import llama_grammar

            self._json_grammar = llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
        return self._json_grammar

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._llm is None:
            raise EngineError("model is not loaded")
        if self._spec is None or self._spec.task != "embeddings":
            alias = self._spec.alias if self._spec else "this model"
            raise InvalidRequest(f"{alias} is not an embeddings model; try all-minilm-l6-v2", param="model")
        return [list(map(float, self._llm.embed(t))) for t in texts]
