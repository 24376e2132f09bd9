"""ONNX Runtime GenAI (the engine Foundry Local runs), in-process, on a folder made by its model builder.

A model folder holds genai_config.json, model.onnx (+ .data) and the Hugging Face tokenizer files; Foundry
Local's folders add inference_model.json with a PromptTemplate. CPU by default; the CUDA execution provider
when the variant's device is "cuda" (needs the `onnxruntime-genai-cuda` wheel, not `onnxruntime-genai`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lokal.catalog.spec import ModelSpec, Variant
from lokal.engines.base import ChatMessage, EngineInfo, GenerationEvent, GenerationRequest, Usage, token_budget
from lokal.engines.chat_prompt import SpecialTextTokenizer, prompt_tokens
from lokal.engines.logprobs import LogprobReader
from lokal.engines.textstream import TokenStream
from lokal.errors import EngineError, EngineUnavailable, InvalidRequest

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'lokal[onnx]'  (or: pip install onnxruntime-genai; for NVIDIA GPUs onnxruntime-genai-cuda)"
)
MAX_CONTEXT = int(os.environ.get("LOKAL_MAX_CONTEXT", "8192"))  # the KV buffer is sized to prompt + budget
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


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- what GenAI's search options lack ------------------------------------------------------------------------
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
    def __init__(self, *, n_threads: int | None = None, n_ctx: int | None = None) -> None:
        self.info = EngineInfo()
        self._n_threads = n_threads
        self._n_ctx = n_ctx
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
            if self._n_threads:
                overlay = {
                    "model": {"decoder": {"session_options": {"intra_op_num_threads": self._n_threads}}}
                }
                config.overlay(json.dumps(overlay))
            self._model = og.Model(config)
            self._tokenizer = og.Tokenizer(self._model)
        except RuntimeError as exc:
            raise EngineError(f"onnxruntime-genai could not load {folder}: {exc}") from exc
        self._og = og
        self._spec = spec
        genai_config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        model_ctx = int(genai_config.get("model", {}).get("context_length") or spec.context_length)
        n_ctx = self._n_ctx or min(model_ctx, spec.context_length, MAX_CONTEXT)
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
                "tool_format": None,  # its prompt path renders no tools: serving refuses them by name
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
        if self._tokenizer is None or self._text_tok is None:
            raise EngineError("model is not loaded")
        if req.messages is None:
            ids = [int(t) for t in self._tokenizer.encode(req.prompt or "")]
            # A prompt that writes the BOS text itself must not get a second BOS token from encode.
            if self._bos_id is not None and len(ids) > 1 and ids[0] == ids[1] == self._bos_id:
                ids = ids[1:]
            return ids
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        # Only the template's markup becomes special tokens; a message's "<|im_start|>" stays text.
        tok = self._text_tok
        return prompt_tokens(self._render(messages), messages, self._render, tok, bos_text=tok.bos_text)

    def count_tokens(self, req: GenerationRequest) -> int:
        return len(self._prompt(req))

    def budget(self, prompt_tokens: int, max_tokens: int | None) -> int:
        return token_budget(self.info.context_length, prompt_tokens, max_tokens)

    def check(self, req: GenerationRequest) -> None:
        """Refuse, before anything runs, what this engine cannot honour (naming the field and the model)."""
        alias = self._spec.alias if self._spec else "this model"
        if req.grammar and req.grammar_triggers:
            raise InvalidRequest(
                f"{alias} runs on ONNX Runtime GenAI, whose guidance cannot start a grammar at a trigger word, "
                "which tool_choice 'auto' needs; send tool_choice 'required' or a named function (a grammar "
                "from the first token), or use a llama.cpp model",
                param="tool_choice",
            )
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
        if req.grammar:  # an explicit grammar beats JSON mode, as on llama.cpp
            from lokal.engines.gbnf_lark import gbnf_to_lark

            self._guide(params, "lark_grammar", gbnf_to_lark(req.grammar), "grammar")
        elif req.json_mode:
            self._guide(params, "json_schema", JSON_OBJECT_SCHEMA, "response_format")
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
    def generate(self, req: GenerationRequest, cancel: threading.Event) -> Iterator[GenerationEvent]:
        if self._model is None:
            raise EngineError("model is not loaded")
        if self._spec is not None and self._spec.task == "embeddings":
            raise InvalidRequest(f"{self._spec.alias} is an embeddings model; use /v1/embeddings")
        self.check(req)
        tokens = self._prompt(req)
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="messages")
        max_tokens = self.budget(len(tokens), req.max_tokens)
        stops = [
            *req.stop,
            *([self._template.end_marker] if self._template and self._template.end_marker else []),
        ]
        params = self._params(req, len(tokens) + max_tokens)
        try:
            generator = self._og.Generator(self._model, params)
        except RuntimeError as exc:
            if req.grammar and "grammar" in str(exc).lower():  # guidance compiles the grammar here
                raise InvalidRequest(f"the grammar was refused by ONNX Runtime GenAI: {exc}", param="grammar") from exc
            raise EngineError(f"onnxruntime-genai rejected the request: {exc}") from exc
        try:
            generator.append_tokens(tokens)
        except RuntimeError as exc:
            raise EngineError(f"onnxruntime-genai rejected the request: {exc}") from exc
        detok = self._tokenizer.create_stream()
        stream = TokenStream(stops)
        stop_ids = frozenset() if req.ignore_eos else self._stop_ids
        edit = LogitsEdit(req, self._n_vocab) if LogitsEdit.needed(req) else None
        reader = self._logprobs if req.logprobs is not None else None
        n_out = 0
        finish = "length"
        try:
            while n_out < max_tokens and not generator.is_done():
                if cancel.is_set():
                    finish = "cancelled"
                    break
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
                if tok in stop_ids:
                    finish = "stop"
                    break
                n_out += 1
                data = detok.decode(tok).encode("utf-8")
                if reader is not None and raw is not None:
                    ev = stream.feed(data, *reader.from_logits(raw, tok, req.logprobs or 0))
                else:
                    ev = stream.feed(data)
                if ev is not None:
                    yield ev
                if stream.stopped:
                    finish = "stop"
                    break
        except RuntimeError as exc:
            raise EngineError(f"onnxruntime-genai failed while generating: {exc}") from exc
        finally:
            del generator  # frees this request's KV buffer now rather than at the next collection
        tail = stream.flush()
        if tail is not None:
            yield tail
        yield GenerationEvent(finish_reason=finish, usage=Usage(len(tokens), n_out))  # type: ignore[arg-type]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        alias = self._spec.alias if self._spec else "this model"
        raise InvalidRequest(
            f"{alias} runs on ONNX GenAI, which serves chat only; try all-minilm-l6-v2", param="model"
        )
