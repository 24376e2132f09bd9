"""ONNX Runtime GenAI (the engine Foundry Local runs), in-process, on a folder made by its model builder.

A model folder holds genai_config.json, model.onnx (+ .data) and the Hugging Face tokenizer files; Foundry
Local's folders add inference_model.json with a PromptTemplate. CPU by default; the CUDA execution provider
when the variant's device is "cuda" (needs the `onnxruntime-genai-cuda` wheel, not `onnxruntime-genai`).

This engine runs one request at a time, each on its own Generator (GeneratorRun); the server loads the batched
one (ortgenai_batch), which runs several at once through GenAI's own og.Engine and this path beside it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lokal.catalog.spec import ModelSpec, Variant
from lokal.config import DEFAULT_MAX_CONTEXT
from lokal.engines.base import (
    ChatMessage,
    EngineInfo,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    Usage,
    token_budget,
)
from lokal.engines.chat_prompt import SpecialTextTokenizer, prompt_tokens
from lokal.engines.chat_render import ChatRenderer, openai_message
from lokal.engines.logprobs import LogprobReader
from lokal.engines.textstream import TokenStream
from lokal.errors import EngineError, EngineUnavailable, InvalidRequest
from lokal.hardware import default_threads
from lokal.runtime.engines import install_hint

log = logging.getLogger(__name__)

INSTALL_HINT = install_hint("onnx")  # the registry writes each install command once
TOP_K = 40  # same as the llama.cpp engine, so the two engines sample alike
PENALTY_LAST_N = 64  # presence/frequency penalties look at the last 64 tokens, as on llama.cpp
MIN_P_CUT = 1e4  # what min_p takes off a cut token's logit: no probability left beside any token it keeps
# Compact separators: with free whitespace a weak model can pad with blanks until max_tokens.
JSON_OBJECT_SCHEMA = json.dumps({"type": "object", "x-guidance": {"whitespace_flexible": False}})


def import_ortgenai() -> Any:
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise EngineUnavailable(f"onnxruntime-genai is not installed: {INSTALL_HINT}") from exc
    return onnxruntime_genai


# -- chat templates ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """Foundry Local's inference_model.json shape: one pattern per role around `{Content}`.

    `prompt` formats the final user turn and ends with the assistant's header, ready for generation.
    """

    system: str
    user: str
    assistant: str
    prompt: str | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PromptTemplate:
        user = str(raw.get("user") or "{Content}")
        return cls(
            system=str(raw.get("system") or user),
            user=user,
            assistant=str(raw.get("assistant") or "{Content}"),
            prompt=str(raw["prompt"]) if raw.get("prompt") else None,
        )

    @property
    def end_marker(self) -> str:
        """What closes an assistant turn (e.g. "<|end|>"): a stop for generation."""
        return self.assistant.split("{Content}", 1)[-1].strip()

    def render(self, messages: Sequence[ChatMessage]) -> str:
        parts: list[str] = []
        for i, m in enumerate(messages):
            last = i == len(messages) - 1
            if last and m.role == "user" and self.prompt:
                parts.append(self.prompt.replace("{Content}", m.content))
                return "".join(parts)
            pattern = {"system": self.system, "assistant": self.assistant}.get(m.role, self.user)
            parts.append(pattern.replace("{Content}", m.content))
        parts.append(self.assistant.split("{Content}", 1)[0])  # the assistant header opens the reply
        return "".join(parts)


def _turns(system: str, user: str, assistant: str, gen: str) -> PromptTemplate:
    return PromptTemplate(system=system, user=user, assistant=assistant, prompt=user + gen)


# Used only when the model folder has neither a tokenizer chat template nor Foundry's inference_model.json.
FAMILY_TEMPLATES: dict[str, PromptTemplate] = {
    "chatml": _turns(
        "<|im_start|>system\n{Content}<|im_end|>\n",
        "<|im_start|>user\n{Content}<|im_end|>\n",
        "<|im_start|>assistant\n{Content}<|im_end|>\n",
        "<|im_start|>assistant\n",
    ),
    "phi3": _turns(
        "<|system|>\n{Content}<|end|>\n",
        "<|user|>\n{Content}<|end|>\n",
        "<|assistant|>\n{Content}<|end|>\n",
        "<|assistant|>\n",
    ),
    "phi4": _turns(
        "<|system|>{Content}<|end|>",
        "<|user|>{Content}<|end|>",
        "<|assistant|>{Content}<|end|>",
        "<|assistant|>",
    ),
    "llama3": _turns(
        "<|start_header_id|>system<|end_header_id|>\n\n{Content}<|eot_id|>",
        "<|start_header_id|>user<|end_header_id|>\n\n{Content}<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n{Content}<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "gemma": _turns(
        "<start_of_turn>user\n{Content}<end_of_turn>\n",
        "<start_of_turn>user\n{Content}<end_of_turn>\n",
        "<start_of_turn>model\n{Content}<end_of_turn>\n",
        "<start_of_turn>model\n",
    ),
}


def foundry_template(folder: Path) -> PromptTemplate | None:
    path = folder / "inference_model.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8")).get("PromptTemplate")
    except (OSError, ValueError, AttributeError):
        log.warning("ignoring unreadable %s", path)
        return None
    return PromptTemplate.from_mapping(raw) if isinstance(raw, Mapping) else None


def model_folder(path: Path) -> Path:
    """The folder holding genai_config.json; a catalog path may name the folder or a file in it."""
    folder = path if path.is_dir() else path.parent
    if not (folder / "genai_config.json").is_file():
        raise EngineError(f"{folder} is not an ONNX GenAI model folder (no genai_config.json)")
    return folder


def kv_cache_bytes(config: Mapping[str, Any], n_ctx: int, dtype_bytes: int) -> int:
    """K and V for every layer at full length: the share-buffer KV cache ONNX GenAI allocates up front."""
    dec = config.get("model", {}).get("decoder", {})
    try:
        layers = int(dec["num_hidden_layers"])
        kv_heads = int(dec.get("num_key_value_heads", dec["num_attention_heads"]))
        head = int(dec.get("head_size") or int(dec["hidden_size"]) // int(dec["num_attention_heads"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0
    return 2 * layers * n_ctx * kv_heads * head * dtype_bytes


def _wants_tools(req: GenerationRequest) -> bool:
    return bool(req.tools) or any(m.role == "tool" or m.tool_calls for m in req.messages or ())


def _token_text(value: Any) -> str:
    """A tokenizer_config.json special token: a string, or {"content": ...}."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def tool_renderer(spec: ModelSpec, folder: Path, bos: str) -> ChatRenderer | None:
    """lokal's renderer for tool conversations: the folder's own Jinja template (chat_template.jinja or
    tokenizer_config.json), else the catalog family's built-in one; None when neither can show tools."""
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if not isinstance(config, dict):
        config = {}
    jinja = folder / "chat_template.jinja"
    source = jinja.read_text(encoding="utf-8") if jinja.is_file() else config.get("chat_template")
    if not isinstance(source, str) or not source.strip():
        source = None
    if source is None and not spec.chat_template:
        return None  # nothing says which prompt format the model was trained on
    try:
        return ChatRenderer(source, spec.chat_template, bos=bos, eos=_token_text(config.get("eos_token")))
    except ValueError:
        return None


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- what GenAI's search options lack ------------------------------------------------------------------------
def guidance(req: GenerationRequest) -> tuple[str, str, str] | None:
    """(kind, data, request field) of the constraint GenAI's guidance enforces from the first token, or None.

    An explicit grammar beats JSON mode, as on llama.cpp. A lazy grammar (tool_choice "auto": free text until a
    trigger word, then the call's grammar) is left out: guidance cannot start a grammar mid-answer, so the answer
    stays free and lokal's tool-call parser reads any call out of the text, as vLLM's auto tool choice does.
    "required" and named functions are constrained from the first token."""
    if req.grammar and not req.grammar_triggers:
        from lokal.engines.gbnf_lark import gbnf_to_lark

        return "lark_grammar", gbnf_to_lark(req.grammar), "grammar"
    if req.json_mode:
        return "json_schema", JSON_OBJECT_SCHEMA, "response_format"
    return None


def refusal(req: GenerationRequest, exc: RuntimeError) -> InvalidRequest | EngineError:
    """What onnxruntime-genai's refusal of a request means: guidance compiles the grammar when the request
    starts, so a grammar error there is the client's (400); anything else is the engine's."""
    if req.grammar and "grammar" in str(exc).lower():
        return InvalidRequest(f"the grammar was refused by ONNX Runtime GenAI: {exc}", param="grammar")
    return EngineError(f"onnxruntime-genai rejected the request: {exc}")


class LogitsEdit:
    """logit_bias, presence/frequency penalties and min_p, applied to each step's logits before GenAI's own
    search (repetition penalty, temperature, top-k/top-p, guidance) reads them: the llama.cpp engine's order."""

    def __init__(self, req: GenerationRequest, n_vocab: int) -> None:
        # Added as on llama.cpp: -100 is a ban in practice, and never leaves guidance without a token to allow.
        self._bias = np.zeros(n_vocab, dtype=np.float32)
        for token, value in req.logit_bias.items():
            self._bias[token] = value
        self._has_bias = bool(req.logit_bias)
        self._presence = req.presence_penalty
        self._frequency = req.frequency_penalty
        self._window: deque[int] = deque(maxlen=PENALTY_LAST_N)
        self._counts = np.zeros(n_vocab, dtype=np.float32)
        self._n_vocab = n_vocab
        # Tokens less likely than min_p times the best are cut (before temperature, as llama.cpp does).
        self._min_logit_gap = math.log(req.min_p) if req.min_p and req.temperature > 0 else None

    @classmethod
    def needed(cls, req: GenerationRequest) -> bool:
        return bool(req.logit_bias or req.presence_penalty or req.frequency_penalty or req.min_p)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        if len(logits) != self._n_vocab:  # a model whose logits are wider than its stated vocabulary
            self._bias, self._counts = _fit(self._bias, len(logits)), _fit(self._counts, len(logits))
            self._n_vocab = len(logits)
        out = logits + self._bias if self._has_bias else logits.copy()
        if self._window and (self._presence or self._frequency):
            out -= self._counts * self._frequency + (self._counts > 0) * self._presence
        if self._min_logit_gap is not None:
            # Pushed far down rather than to -inf: guidance masks after this, and must keep some token to allow.
            out[out < out.max() + self._min_logit_gap] -= MIN_P_CUT
        return out

    def accept(self, token: int) -> None:
        if len(self._window) == self._window.maxlen:
            self._counts[self._window[0]] -= 1
        self._window.append(token)
        self._counts[token] += 1


def _fit(values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=values.dtype)
    out[: min(n, len(values))] = values[:n]
    return out


# -- the engine ----------------------------------------------------------------------------------------------
class OrtGenAIEngine:
    def __init__(
        self, *, n_threads: int | None = None, n_ctx: int | None = None, max_context: int = DEFAULT_MAX_CONTEXT
    ) -> None:
        self.info = EngineInfo()
        self._n_threads = n_threads
        self._n_ctx = n_ctx
        self._max_context = max_context  # the KV buffer is sized to prompt + budget, up to this
        self._og: Any = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._spec: ModelSpec | None = None
        self._template: PromptTemplate | None = None  # None: the tokenizer's own chat template
        self._stop_ids: frozenset[int] = frozenset()
        self._eos_ids: frozenset[int] = frozenset()
        self._bos_id: int | None = None
        self._text_tok: SpecialTextTokenizer | None = None  # chat prompts: message text tokenized as text
        self._n_vocab = 0
        self._logprobs: LogprobReader | None = None
        self._renderer: ChatRenderer | None = None  # tools and tool turns (None: tools are refused)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def load(self, spec: ModelSpec, variant: Variant, path: Path | None) -> None:
        og = import_ortgenai()
        if path is None or not path.exists():
            raise EngineError(f"model folder for {variant.id} is missing: {path}")
        folder = model_folder(path)
        t0 = time.perf_counter()
        try:
            config = og.Config(str(folder))
            provider = self._set_provider(og, config, variant)
            threads = self._n_threads or default_threads()
            overlay = {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}
            config.overlay(json.dumps(overlay))
            self._model = og.Model(config)
            self._tokenizer = og.Tokenizer(self._model)
        except RuntimeError as exc:
            raise EngineError(f"onnxruntime-genai could not load {folder}: {exc}") from exc
        self._og = og
        self._spec = spec
        genai_config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        model_ctx = int(genai_config.get("model", {}).get("context_length") or spec.context_length)
        n_ctx = self._n_ctx or min(model_ctx, spec.context_length, self._max_context)
        try:
            self._template = self._pick_template(spec, folder)
        except EngineError:
            self.unload()
            raise
        self._eos_ids = frozenset(int(t) for t in self._tokenizer.eos_token_ids)
        bos = int(self._tokenizer.bos_token_id)
        self._bos_id = bos if bos >= 0 else None
        self._text_tok = SpecialTextTokenizer.from_folder(self._tokenizer.encode, folder, self._bos_id)
        self._stop_ids = self._eos_ids | self._marker_ids()
        bos_text = self._text_tok.bos_text
        self._renderer = renderer = tool_renderer(spec, folder, "" if bos_text == "\0" else bos_text)
        self._n_vocab = int(genai_config.get("model", {}).get("vocab_size") or 0)
        tokenizer = self._tokenizer
        self._logprobs = LogprobReader(
            lambda token: str(tokenizer.decode(np.array([token], dtype=np.int32))).encode("utf-8"), self._n_vocab
        )
        dtype_bytes = 4 if provider == "cpu" else 2  # the model builder keeps fp32 activations on CPU only
        self.info = EngineInfo(
            memory_bytes=folder_bytes(folder) + kv_cache_bytes(genai_config, n_ctx, dtype_bytes),
            load_seconds=time.perf_counter() - t0,
            context_length=n_ctx,
            extra={
                "synthetic": spec.synthetic,
                "provider": provider,
                "model_type": str(self._model.type),
                # The tool-call family serving reads answers with; None: serving refuses tools by name.
                "tool_format": renderer.tool_family if renderer is not None and renderer.supports_tools else None,
                "chat_template": "tokenizer" if self._template is None else "prompt-template",
            },
        )

    @staticmethod
    def _set_provider(og: Any, config: Any, variant: Variant) -> str:
        """CPU unless the variant asks for CUDA; NPU folders keep the provider their genai_config names."""
        if variant.device == "cpu":
            config.clear_providers()
            return "cpu"
        if variant.device == "cuda":
            if not og.is_cuda_available():
                raise EngineUnavailable(
                    f"{variant.id} needs CUDA, which this onnxruntime-genai build lacks: "
                    "pip uninstall onnxruntime-genai && pip install onnxruntime-genai-cuda"
                )
            config.clear_providers()
            config.append_provider("cuda")
            return "cuda"
        return variant.device

    def _pick_template(self, spec: ModelSpec, folder: Path) -> PromptTemplate | None:
        """The tokenizer's own Jinja template, else Foundry's PromptTemplate, else the catalog's family."""
        if hasattr(self._tokenizer, "apply_chat_template"):
            try:
                self._tokenizer.apply_chat_template(
                    json.dumps([{"role": "user", "content": "hi"}]), add_generation_prompt=True
                )
                return None
            except RuntimeError:  # "Empty chat template": the folder ships none
                pass
        found = foundry_template(folder)
        if found is not None:
            return found
        family = (spec.chat_template or "chatml").replace("-", "").replace("_", "")
        if family in FAMILY_TEMPLATES:
            return FAMILY_TEMPLATES[family]
        raise EngineError(
            f"{folder} has no chat template and lokal does not know the family {spec.chat_template!r}; "
            "add a chat_template to tokenizer_config.json or an inference_model.json PromptTemplate"
        )

    def _marker_ids(self) -> frozenset[int]:
        """A fallback template's end-of-turn token, when the tokenizer has it as a single token."""
        if self._template is None or not self._template.end_marker:
            return frozenset()
        tid = int(self._tokenizer.to_token_id(self._template.end_marker))
        return frozenset({tid}) if tid >= 0 else frozenset()

    def unload(self) -> None:
        self._tokenizer = None
        self._model = None  # the native session is freed when the last reference goes

    # -- prompts ---------------------------------------------------------------------------------------------
    def prompt_text(self, req: GenerationRequest) -> str:
        if req.messages is None:
            return req.prompt or ""
        return self._render([{"role": m.role, "content": m.content} for m in req.messages])

    def _render(self, messages: list[dict[str, Any]]) -> str:
        if self._template is not None:
            return self._template.render([ChatMessage(m["role"], m["content"]) for m in messages])
        return str(self._tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True))

    def _prompt(self, req: GenerationRequest) -> list[int]:
        return self._prompt_and_stops(req)[0]

    def _prompt_and_stops(self, req: GenerationRequest) -> tuple[list[int], list[str]]:
        """The prompt's tokens, and the stop strings of the template that rendered it (tool conversations)."""
        if self._tokenizer is None or self._text_tok is None:
            raise EngineError("model is not loaded")
        if req.messages is None:
            ids = [int(t) for t in self._tokenizer.encode(req.prompt or "")]
            # A prompt that writes the BOS text itself must not get a second BOS token from encode.
            if self._bos_id is not None and len(ids) > 1 and ids[0] == ids[1] == self._bos_id:
                ids = ids[1:]
            return ids, []
        tok = self._text_tok
        if _wants_tools(req):
            return self._tool_prompt(req)
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        # Only the template's markup becomes special tokens; a message's "<|im_start|>" stays text.
        return prompt_tokens(self._render(messages), messages, self._render, tok, bos_text=tok.bos_text), []

    def _tool_prompt(self, req: GenerationRequest) -> tuple[list[int], list[str]]:
        """Tools and tool turns go through lokal's renderer (the folder's Jinja template when it shows tools, else
        lokal's template of the same prompt format), as on llama.cpp: GenAI's own template call would drop the
        calls of earlier assistant turns."""
        renderer, tok = self._renderer, self._text_tok
        assert req.messages is not None and tok is not None
        if renderer is None or not renderer.supports_tools:
            alias = self._spec.alias if self._spec else "this model"
            raise InvalidRequest(
                f"{alias}'s chat template has no tool calling lokal can render; send the request without tools "
                "and tool messages",
                param="tools" if req.tools else "messages",
            )
        messages = [openai_message(m) for m in req.messages]
        tools = list(req.tools)
        prompt, stops = renderer.render(messages, tools)
        tokens = prompt_tokens(prompt, messages, lambda ms: renderer.render(ms, tools)[0], tok, bos_text=tok.bos_text)
        return tokens, stops

    def count_tokens(self, req: GenerationRequest) -> int:
        return len(self._prompt(req))

    def budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        return token_budget(self.info.context_length, prompt_tokens, max_tokens)

    def check(self, req: GenerationRequest) -> None:
        """Refuse, before anything runs, what this engine cannot honour (naming the field and the model)."""
        alias = self._spec.alias if self._spec else "this model"
        for token in req.logit_bias:
            if not 0 <= token < self._n_vocab:
                raise InvalidRequest(
                    f"logit_bias names token {token}, but {alias}'s vocabulary has ids 0-{self._n_vocab - 1}",
                    param="logit_bias",
                )

    def _params(self, req: GenerationRequest, total: int) -> Any:
        params = self._og.GeneratorParams(self._model)
        options: dict[str, Any] = {"max_length": total, "batch_size": 1}
        if req.ignore_eos:
            options["min_length"] = total  # GenAI masks EOS until min_length
        if req.temperature > 0:
            top_k = TOP_K if req.top_k is None else (req.top_k or self._n_vocab)  # 0: no cut
            options.update(do_sample=True, temperature=req.temperature, top_p=req.top_p, top_k=top_k)
        else:
            options.update(do_sample=False)
        if req.repeat_penalty != 1.0:
            # GenAI's (Hugging Face's) penalty reads the whole sequence, where llama.cpp reads the last 64 tokens.
            options["repetition_penalty"] = req.repeat_penalty
        if req.seed is not None:
            # GenAI takes an int32 seed and rejects anything wider; OpenAI clients send up to int64.
            options["random_seed"] = req.seed if -(2**31) <= req.seed < 2**31 else req.seed & 0x7FFFFFFF
        params.set_search_options(**options)
        guide = guidance(req)
        if guide is not None:
            self._guide(params, *guide)
        return params

    def _guide(self, params: Any, kind: str, data: str, param: str) -> None:
        try:
            params.set_guidance(kind, data)
        except (RuntimeError, AttributeError) as exc:
            alias = self._spec.alias if self._spec else "this model"
            raise InvalidRequest(
                f"{alias} runs on an onnxruntime-genai without guidance (constrained output): {exc}", param=param
            ) from exc

    # -- generation ------------------------------------------------------------------------------------------
    def stops(self, req: GenerationRequest) -> list[str]:
        """The request's stop strings and the fallback template's end-of-turn marker."""
        marker = self._template.end_marker if self._template else ""
        return [*req.stop, *([marker] if marker else [])]

    def stop_ids(self, req: GenerationRequest) -> frozenset[int]:
        return frozenset() if req.ignore_eos else self._stop_ids

    def prepare(self, req: GenerationRequest) -> tuple[list[int], int, list[str]]:
        """Checks, then the prompt's tokens, the generation budget and the stop strings: what every path does
        before it runs."""
        if self._model is None:
            raise EngineError("model is not loaded")
        if self._spec is not None and self._spec.task == "embeddings":
            raise InvalidRequest(f"{self._spec.alias} is an embeddings model; use /v1/embeddings")
        self.check(req)
        tokens, template_stops = self._prompt_and_stops(req)
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="messages")
        stops = self.stops(req) + [s for s in template_stops if s not in req.stop]
        return tokens, self.budget(len(tokens), req.max_tokens), stops

    def start(self, req: GenerationRequest) -> GeneratorRun:
        """One request on its own Generator, its prompt read: the one-at-a-time path."""
        tokens, max_tokens, stops = self.prepare(req)
        params = self._params(req, len(tokens) + max_tokens)
        try:
            generator = self._og.Generator(self._model, params)
        except RuntimeError as exc:
            raise refusal(req, exc) from exc
        try:
            generator.append_tokens(tokens)
        except RuntimeError as exc:
            raise refusal(req, exc) from exc
        return GeneratorRun(
            generator=generator,
            detok=self._tokenizer.create_stream(),
            stream=TokenStream(stops),
            stop_ids=self.stop_ids(req),
            prompt_tokens=len(tokens),
            max_tokens=max_tokens,
            edit=LogitsEdit(req, self._n_vocab) if LogitsEdit.needed(req) else None,
            reader=self._logprobs if req.logprobs is not None else None,
            top_logprobs=req.logprobs or 0,
        )

    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        run = self.start(req)
        try:
            while not run.done:
                if cancel.is_set():
                    run.cancel()
                yield from run.advance()
        finally:
            run.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        alias = self._spec.alias if self._spec else "this model"
        raise InvalidRequest(f"{alias} runs on ONNX GenAI, which serves chat only; try all-minilm-l6-v2", param="model")


class GeneratorRun:
    """One request decoding on its own Generator, a token per `advance`: OrtGenAIEngine.generate runs it to the
    end, the batched engine advances it once per step beside its batch (ortgenai_batch)."""

    def __init__(
        self,
        *,
        generator: Any,
        detok: Any,
        stream: TokenStream,
        stop_ids: frozenset[int],
        prompt_tokens: int,
        max_tokens: int,
        edit: LogitsEdit | None,
        reader: LogprobReader | None,
        top_logprobs: int,
    ) -> None:
        self._generator: Any = generator
        self._detok = detok
        self._stream = stream
        self._stop_ids = stop_ids
        self._edit = edit
        self._reader = reader
        self._top = top_logprobs
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.n_out = 0
        self.finish: FinishReason | None = None
        self._ended = False  # the final events were handed out

    @property
    def done(self) -> bool:
        return self._ended

    def cancel(self) -> None:
        if self.finish is None:
            self.finish = "cancelled"

    def advance(self) -> list[GenerationEvent]:
        """The next token's events; after the last one, the tail and the finish event."""
        if self._ended:
            return []
        events: list[GenerationEvent] = []
        if self.finish is None:
            if self.n_out >= self.max_tokens or self._generator.is_done():
                self.finish = "length"
            else:
                try:
                    ev = self._next_token()
                except RuntimeError as exc:
                    self.close()
                    raise EngineError(f"onnxruntime-genai failed while generating: {exc}") from exc
                if ev is not None:
                    events.append(ev)
                if self.finish is None and self.n_out >= self.max_tokens:
                    self.finish = "length"
            if self.finish is None:
                return events
        tail = self._stream.flush()
        if tail is not None:
            events.append(tail)
        events.append(GenerationEvent(finish_reason=self.finish, usage=Usage(self.prompt_tokens, self.n_out)))
        self._ended = True
        self.close()
        return events

    def _next_token(self) -> GenerationEvent | None:
        generator, edit, reader = self._generator, self._edit, self._reader
        raw = None
        if edit is not None or reader is not None:
            # The logits of this step, before GenAI's search; it samples from what set_logits leaves.
            logits = generator.get_logits()
            raw = logits.reshape(-1)
            if edit is not None:
                generator.set_logits(edit.apply(raw).reshape(logits.shape))
        generator.generate_next_token()
        tok = int(generator.get_next_tokens()[0])
        if edit is not None:
            edit.accept(tok)
        if tok in self._stop_ids:
            self.finish = "stop"
            return None
        self.n_out += 1
        data = self._detok.decode(tok).encode("utf-8")
        if reader is not None and raw is not None:
            ev = self._stream.feed(data, *reader.from_logits(raw, tok, self._top))
        else:
            ev = self._stream.feed(data)
        if self._stream.stopped:
            self.finish = "stop"
        return ev

    def close(self) -> None:
        self._generator = None  # frees this request's KV buffer now rather than at the next collection
