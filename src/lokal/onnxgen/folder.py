"""The ONNX Runtime GenAI model folder: model.onnx (+ model.onnx.data when the weights pass protobuf's 2 GiB
limit), genai_config.json, tokenizer.json and tokenizer_config.json (with a ChatML chat template).

Written atomically: built in a hidden temporary folder beside the target, then renamed over it, so a reader
sees the old folder or the whole new one, and an interrupted write leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from io import BufferedWriter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from lokal.gguf.synthetic import CHATML_TEMPLATE, ModelShape
from lokal.onnxgen import int4
from lokal.onnxgen.graph import build
from lokal.onnxgen.tokenizer import BOS_ID, EOS_ID, PAD_ID, min_vocab, tokenizer_config, tokenizer_json
from lokal.onnxgen.weights import Dims

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
MAX_INLINE_BYTES = 1_900_000_000  # protobuf's 2 GiB limit, with room for the graph itself
ALIGN = 4096  # external tensors start on a page boundary so ONNX Runtime can map them


def _matrix_bytes(k: int, n: int, precision: str) -> int:
    if precision == "int4":
        kb = int4.blocks(k)
        return n * kb * (int4.BLOCK // 2 + 4)  # packed nibbles + one float scale per block
    return 4 * k * n


def weight_bytes(shape: ModelShape, precision: str) -> int:
    """The bytes of the model's tensors, known before any is drawn (it decides inline vs external data)."""
    d, e = Dims(shape), shape.n_embd
    per_layer = sum(
        _matrix_bytes(k, n, precision)
        for k, n in ((e, d.qkv), (d.q, e), (e, shape.n_ff), (e, shape.n_ff), (shape.n_ff, e))
    )
    per_layer += 4 * (2 * e + (d.qkv if shape.qkv_bias else 0))
    emb = 4 * shape.n_vocab * e
    head = 0 if shape.tied_embeddings and precision == "fp32" else _matrix_bytes(e, shape.n_vocab, precision)
    rotary = 2 * 4 * shape.n_ctx * (shape.head_size // 2)
    return shape.n_layer * per_layer + emb + head + rotary + 4 * e


class _Inline:
    def __call__(self, name: str, array: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(array, name)


class _External:
    """Appends each large tensor to the data file as it is made; the proto keeps only its offset."""

    def __init__(self, out: BufferedWriter) -> None:
        self.out = out
        self.offset = 0

    def __call__(self, name: str, array: np.ndarray) -> TensorProto:
        if array.nbytes < ALIGN:
            return numpy_helper.from_array(array, name)
        pad = -self.offset % ALIGN
        self.out.write(b"\0" * pad)
        self.offset += pad
        data = np.ascontiguousarray(array).tobytes()
        self.out.write(data)
        tensor = TensorProto(name=name, dims=array.shape, data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", DATA_FILE), ("offset", str(self.offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.offset += len(data)
        return tensor


def genai_config(shape: ModelShape) -> dict[str, Any]:
    """What ONNX Runtime GenAI reads: the decoder's I/O names, its head layout, and greedy search defaults."""
    return {
        "model": {
            "bos_token_id": BOS_ID,
            "context_length": shape.n_ctx,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": MODEL_FILE,
                "head_size": shape.head_size,
                "hidden_size": shape.n_embd,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": shape.n_head,
                "num_hidden_layers": shape.n_layer,
                "num_key_value_heads": shape.n_head_kv,
            },
            "eos_token_id": EOS_ID,
            "pad_token_id": PAD_ID,
            "type": "qwen2" if shape.qkv_bias else "llama",
            "vocab_size": shape.n_vocab,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": shape.n_ctx,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            # The KV cache is one max_length buffer GroupQueryAttention writes into in place.
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 50,
            "top_p": 1.0,
        },
    }


def write_model_files(
    directory: Path,
    shape: ModelShape,
    precision: str,
    *,
    seed: int = 0,
    accuracy_level: int = 4,
    last_logits: bool = False,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """model.onnx (and its data file when large) into `directory`; True when the weights are external."""
    external = weight_bytes(shape, precision) > MAX_INLINE_BYTES
    if not external:
        model = build(
            shape,
            precision,
            _Inline(),
            seed=seed,
            accuracy_level=accuracy_level,
            last_logits=last_logits,
            progress=progress,
        )
        onnx.save_model(model, str(directory / MODEL_FILE))
        return False
    with open(directory / DATA_FILE, "wb") as data:
        sink = _External(data)
        model = build(
            shape, precision, sink, seed=seed, accuracy_level=accuracy_level, last_logits=last_logits, progress=progress
        )
    onnx.save_model(model, str(directory / MODEL_FILE))
    return True


def write_onnx_model(
    folder: Path,
    shape: ModelShape,
    precision: str = "int4",
    *,
    seed: int = 0,
    accuracy_level: int = 4,
    chat_template: str = CHATML_TEMPLATE,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the ONNX GenAI folder at `folder` (atomically) and return it.

    accuracy_level is MatMulNBits' compute type for int4 (4: int8 activations, what the CPU builds use;
    0: float, exact against the dequantized weights)."""
    if shape.n_vocab < min_vocab():
        raise ValueError(f"vocabulary of {shape.n_vocab} is too small (minimum {min_vocab()})")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        note = progress or (lambda _msg: None)
        external = write_model_files(
            work, shape, precision, seed=seed, accuracy_level=accuracy_level, progress=progress
        )
        note(f"{MODEL_FILE}{' + ' + DATA_FILE if external else ''}, tokenizer, genai_config.json")
        (work / "genai_config.json").write_text(json.dumps(genai_config(shape), indent=4))
        (work / "tokenizer.json").write_text(json.dumps(tokenizer_json(shape.n_vocab), ensure_ascii=False))
        config = tokenizer_config(shape.n_ctx, chat_template)
        (work / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        work.chmod(0o755)  # mkdtemp's 0700 is for the build, not for the model others read
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
