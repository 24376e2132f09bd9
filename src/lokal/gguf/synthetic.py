"""Random-weight GGUF files with the exact shape of real models.

Decode speed and memory depend on shape and quantization, not on weight values, so these files let users plan
capacity and benchmark without downloading anything. Their text is noise, and every place that shows them says
so. The test suite's tiny model comes from this same writer, so the tests exercise it too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

SYNTHETIC_KEY = "lokal.synthetic"
WRITER_QUANTS = ("f32", "f16", "q8_0", "q4_0")  # the gguf package writes these itself
# The k-quants and the rest of llama.cpp's formats come from llama.cpp's own quantizer over an f16 file (the
# catalog's default is q4_k_m, which the gguf package cannot write). i-quants are left out: they want an
# importance matrix, which random weights cannot give.
LLAMA_QUANTS = (
    "q2_k",
    "q3_k_s",
    "q3_k_m",
    "q3_k_l",
    "q4_1",
    "q4_k_s",
    "q4_k_m",
    "q5_0",
    "q5_1",
    "q5_k_s",
    "q5_k_m",
    "q6_k",
)
QUANTS = WRITER_QUANTS + LLAMA_QUANTS

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template_for(like: str) -> str:
    """The Jinja template a synthetic model of `like` carries: lokal's template for the prompt format of the
    catalog model of that alias, so prompts (tools included) take the real model's shape. Aliases the catalog
    does not know ("tiny", "custom") get chatml with tools, which renders plain chats as CHATML_TEMPLATE does."""
    from lokal.catalog.catalog import builtin_specs
    from lokal.toolcalls.templates import TEMPLATES, prompt_format

    family = next((s.chat_template for s in builtin_specs() if s.alias == like), None)
    return TEMPLATES[prompt_format(family) or "chatml"]


@dataclass(frozen=True, slots=True)
class ModelShape:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx: int = 4096
    head_dim: int | None = None  # when it is not n_embd / n_head (gemma-2)
    tied_embeddings: bool = True
    qkv_bias: bool = False  # qwen2 family
    rope_theta: float = 10000.0

    @property
    def head_size(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    @property
    def parameters(self) -> int:
        hd = self.head_size
        attn = self.n_embd * hd * (2 * self.n_head + 2 * self.n_head_kv)
        ffn = 3 * self.n_embd * self.n_ff
        emb = self.n_vocab * self.n_embd * (1 if self.tied_embeddings else 2)
        return self.n_layer * (attn + ffn + 2 * self.n_embd) + emb + self.n_embd


# Published config.json figures of the real models.
SHAPES: dict[str, ModelShape] = {
    "qwen2.5-0.5b": ModelShape(24, 896, 14, 2, 4864, 151936, 32768, qkv_bias=True, rope_theta=1e6),
    "qwen2.5-coder-0.5b": ModelShape(24, 896, 14, 2, 4864, 151936, 32768, qkv_bias=True, rope_theta=1e6),
    "qwen2.5-1.5b": ModelShape(28, 1536, 12, 2, 8960, 151936, 32768, qkv_bias=True, rope_theta=1e6),
    "qwen2.5-7b": ModelShape(
        28, 3584, 28, 4, 18944, 152064, 32768, tied_embeddings=False, qkv_bias=True, rope_theta=1e6
    ),
    "phi-3.5-mini": ModelShape(32, 3072, 32, 32, 8192, 32064, 131072, tied_embeddings=False),
    "phi-4-mini": ModelShape(32, 3072, 24, 8, 8192, 200064, 131072),
    "deepseek-coder-1.3b": ModelShape(24, 2048, 16, 16, 5504, 32256, 16384, tied_embeddings=False),
    "mistral-7b": ModelShape(32, 4096, 32, 8, 14336, 32768, 32768, tied_embeddings=False, rope_theta=1e6),
    "gemma-2-2b": ModelShape(26, 2304, 8, 4, 9216, 256000, 8192, head_dim=256),
    # Small enough for tests: ~0.5 MB in f32, a few ms per token.
    "tiny": ModelShape(2, 64, 4, 2, 128, 320, 2048),
}

UNSUPPORTED = {
    "gpt-oss-20b": "gpt-oss-20b is a mixture-of-experts model; synth writes dense decoder shapes only",
}


def shape_for(like: str) -> ModelShape:
    if like in UNSUPPORTED:
        raise ValueError(UNSUPPORTED[like])
    try:
        return SHAPES[like]
    except KeyError:
        raise ValueError(f"no known shape for {like!r}; known: {', '.join(sorted(SHAPES))}") from None


def _pieces() -> Iterator[str]:
    letters = string.ascii_lowercase
    for n in itertools.count(1):
        for combo in itertools.product(letters, repeat=n):
            word = "".join(combo)
            yield "\u2581" + word
            yield word


def _vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """SentencePiece-style vocabulary: specials, the 256 byte tokens, chat markers, then filler pieces."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [2, 3, 3]  # unknown, control, control
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256  # byte
    tokens += ["<|im_start|>", "<|im_end|>"]
    types += [3, 3]
    need = n_vocab - len(tokens)
    if need < 0:
        raise ValueError(f"vocabulary of {n_vocab} is too small (minimum {len(tokens)})")
    tokens += list(itertools.islice(_pieces(), need))
    types += [1] * need
    scores = [0.0] * 261 + [-float(i) for i in range(need)]
    return tokens, scores, types


EOS_ID = 260  # <|im_end|>: ends a chat turn


def _random(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= scale
    return out


def write_gguf(
    path: Path,
    shape: ModelShape,
    quant: str = "f16",
    *,
    like: str = "custom",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a llama-architecture GGUF with random weights. Writes to a temp name, then renames atomically."""
    import gguf

    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {', '.join(QUANTS)}")
    if quant in LLAMA_QUANTS:
        return _write_with_llama_quantizer(path, shape, quant, like=like, seed=seed, progress=progress)
    qtype = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
        "q4_0": gguf.GGMLQuantizationType.Q4_0,
    }[quant]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    w = gguf.GGUFWriter(str(tmp), "llama")
    try:
        _write(w, qtype, shape, like, np.random.default_rng(seed), progress)
        os.replace(tmp, path)
    except BaseException:  # an error, Ctrl-C or a full disk: leave no half-written .part behind
        with contextlib.suppress(Exception):
            w.close()
        tmp.unlink(missing_ok=True)
        raise
    if progress:
        progress(shape.n_layer + 2, shape.n_layer + 2)
    return path


def _write_with_llama_quantizer(
    path: Path,
    shape: ModelShape,
    quant: str,
    *,
    like: str,
    seed: int,
    progress: Callable[[int, int], None] | None,
) -> Path:
    """An f16 file first (same seed: the same weights), then llama.cpp's quantizer into `quant`.

    The quantizer runs in a child process: it writes a line per tensor (and a warning for each row width a
    k-quant cannot take, as for the real model's file) straight to the process's stdout/stderr, which a server
    must not lose for the minute it takes; the child's output is shown only if it fails."""
    from lokal.engines.llamacpp import import_llama_cpp

    import_llama_cpp()  # EngineUnavailable, naming the install command, without llama-cpp-python
    f16 = path.with_name(path.name + ".f16.part")
    tmp = path.with_name(path.name + ".part")
    try:
        write_gguf(f16, shape, "f16", like=like, seed=seed, progress=progress)
        done = subprocess.run(
            [sys.executable, "-c", _QUANTIZE, str(f16), str(tmp), quant.upper(), str(os.cpu_count() or 1)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not tmp.is_file():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"llama.cpp could not quantize the synthetic model to {quant}: {tail}")
        os.replace(tmp, path)
    finally:
        f16.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


_QUANTIZE = """
import ctypes, sys
import llama_cpp as lc
src, dst, ftype, threads = sys.argv[1:]
params = lc.llama_model_quantize_default_params()
params.ftype = getattr(lc, "LLAMA_FTYPE_MOSTLY_" + ftype)
params.nthread = int(threads)
sys.exit(lc.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
"""


def _write(
    w: Any,
    qtype: Any,
    shape: ModelShape,
    like: str,
    rng: np.random.Generator,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Metadata, vocabulary and random tensors into the open writer `w` (a gguf.GGUFWriter)."""
    import gguf

    w.add_name(f"synthetic-{like}")
    w.add_bool(SYNTHETIC_KEY, True)
    w.add_string(SYNTHETIC_KEY + ".like", like)
    w.add_context_length(shape.n_ctx)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    if shape.head_dim:
        w.add_key_length(shape.head_dim)
        w.add_value_length(shape.head_dim)
    w.add_rope_dimension_count(shape.head_size)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(int(qtype))
    tokens, scores, types = _vocab(shape.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(EOS_ID)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(chat_template_for(like))

    d, hd = shape.n_embd, shape.head_size
    init = 1.0 / np.sqrt(d)

    def add(name: str, arr: np.ndarray, quantize: bool = True) -> None:
        if quantize and qtype not in (gguf.GGMLQuantizationType.F32,):
            if qtype == gguf.GGMLQuantizationType.F16:
                w.add_tensor(name, arr.astype(np.float16))
            else:
                w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)

    steps = shape.n_layer + 2
    add("token_embd.weight", _random(rng, (shape.n_vocab, d), 1.0))
    add("output_norm.weight", np.ones(d, dtype=np.float32), quantize=False)
    # Zero the specials, bytes and EOS in the output projection: greedy decoding then only picks word pieces,
    # so outputs have a fixed length (benchmarks need that) and are readable noise rather than broken UTF-8.
    out = _random(rng, (shape.n_vocab, d), init * 4)
    out[: EOS_ID + 1] = 0.0
    add("output.weight", out)
    if progress:
        progress(1, steps)
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", np.ones(d, dtype=np.float32), quantize=False)
        add(p + "attn_q.weight", _random(rng, (shape.n_head * hd, d), init))
        add(p + "attn_k.weight", _random(rng, (shape.n_head_kv * hd, d), init))
        add(p + "attn_v.weight", _random(rng, (shape.n_head_kv * hd, d), init))
        if shape.qkv_bias:
            add(p + "attn_q.bias", np.zeros(shape.n_head * hd, dtype=np.float32), quantize=False)
            add(p + "attn_k.bias", np.zeros(shape.n_head_kv * hd, dtype=np.float32), quantize=False)
            add(p + "attn_v.bias", np.zeros(shape.n_head_kv * hd, dtype=np.float32), quantize=False)
        add(p + "attn_output.weight", _random(rng, (d, shape.n_head * hd), init))
        add(p + "ffn_norm.weight", np.ones(d, dtype=np.float32), quantize=False)
        add(p + "ffn_gate.weight", _random(rng, (shape.n_ff, d), init))
        add(p + "ffn_up.weight", _random(rng, (shape.n_ff, d), init))
        add(p + "ffn_down.weight", _random(rng, (d, shape.n_ff), 1.0 / np.sqrt(shape.n_ff)))
        if progress:
            progress(i + 2, steps)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def is_synthetic(path: Path) -> bool:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return SYNTHETIC_KEY in reader.fields


def with_context(shape: ModelShape, n_ctx: int) -> ModelShape:
    return replace(shape, n_ctx=n_ctx)
