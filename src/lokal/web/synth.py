"""A random-weight model in the layout transformers.js loads in the browser, written offline.

The folder holds config.json, generation_config.json, tokenizer.json, tokenizer_config.json and
onnx/model.onnx (fp32) or onnx/model_q4.onnx (int4 weights), the layout of the onnx-community builds. The
graph comes from onnxruntime-genai's own model builder over a random-weight transformers model, so it has
the inputs and outputs transformers.js expects (input_ids, attention_mask, past_key_values.N.key/value ->
logits, present.N.key/value) and the same operators as the published builds.

The tokenizer is lokal.onnxgen.tokenizer's byte-level BPE: any token id decodes to readable text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lokal.config import child_env
from lokal.gguf.synthetic import ModelShape
from lokal.onnxgen.tokenizer import SPECIALS, tokenizer_config, tokenizer_json

# Web dtype -> (onnxruntime-genai builder precision, file name transformers.js asks for with that dtype).
WEB_DTYPES: dict[str, tuple[str, str]] = {"fp32": ("fp32", "model.onnx"), "q4": ("int4", "model_q4.onnx")}
MAX_INLINE_BYTES = 1_900_000_000  # protobuf's 2 GiB limit: above it the weights go to model*.onnx_data
WEB_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def _hf_config(shape: ModelShape, eos: int, bos: int, pad: int) -> dict[str, Any]:
    arch, model_type = ("Qwen2ForCausalLM", "qwen2") if shape.qkv_bias else ("LlamaForCausalLM", "llama")
    config: dict[str, Any] = {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": shape.n_vocab,
        "hidden_size": shape.n_embd,
        "intermediate_size": shape.n_ff,
        "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head,
        "num_key_value_heads": shape.n_head_kv,
        "head_dim": shape.head_size,
        "max_position_embeddings": shape.n_ctx,
        "rope_theta": shape.rope_theta,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": shape.tied_embeddings,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
    }
    if model_type == "qwen2":
        config["use_sliding_window"] = False
    return config


def write_hf_model(directory: Path, shape: ModelShape, seed: int = 0) -> dict[str, Any]:
    """A random-weight Hugging Face checkpoint (safetensors, config, tokenizer) of `shape`; needs torch and
    transformers. The input of the ONNX builder here, and what vLLM serves in benchmarks/bench_gpu.py."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tok = tokenizer_json(shape.n_vocab)
    (directory / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    ids = {t: i for i, t in enumerate(SPECIALS)}
    config = _hf_config(shape, eos=ids["<|im_end|>"], bos=ids["<|im_start|>"], pad=ids["<|endoftext|>"])
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(shape.n_ctx), indent=2))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory))
    with torch.no_grad():  # default init gives near-uniform logits; wider weights make the noise varied
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(directory)
    return config


def write_web_model(
    folder: Path,
    shape: ModelShape,
    dtype: str = "fp32",
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Writes the transformers.js folder at `folder` (atomically: built beside it, then renamed)."""
    if dtype not in WEB_DTYPES:
        raise ValueError(f"web dtype must be one of {', '.join(WEB_DTYPES)}, not {dtype!r}")
    precision, onnx_name = WEB_DTYPES[dtype]
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        hf = work / "hf"
        note = progress or (lambda _msg: None)
        note("random weights")
        config = write_hf_model(hf, shape, seed)
        note("ONNX graph (onnxruntime-genai builder)")
        built = work / "built"
        env = child_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(built),
               "-p", precision, "-e", "cpu", "-c", str(work / "cache"),
               # A shared int4 embedding is GatherBlockQuantized, which the bundled ORT Web cannot run.
               "--extra_options", "shared_embeddings=false"]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=False)
        if done.returncode != 0 or not (built / "model.onnx").is_file():
            raise RuntimeError(f"onnxruntime-genai model builder failed ({done.returncode}):\n{done.stderr[-3000:]}")
        out = work / "out"
        (out / "onnx").mkdir(parents=True)
        external = _save_onnx(built / "model.onnx", out / "onnx" / onnx_name)
        if external:
            config["transformers.js_config"] = {"use_external_data_format": True}
        (out / "config.json").write_text(json.dumps(config, indent=2))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy2(hf / name, out / name)
        generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                      "pad_token_id": config["pad_token_id"], "do_sample": True, "temperature": 0.7}  # fmt: skip
        (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        out.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _save_onnx(source: Path, target: Path) -> bool:
    """Re-saves the builder's graph under transformers.js's file name; True when the weights are external."""
    import onnx

    model = onnx.load(str(source), load_external_data=True)
    # Newer builders write GroupQueryAttention with trailing empty optional inputs (position_ids, attention_bias,
    # head_sink) that the bundled ONNX Runtime Web's schema does not have yet; empty means absent, so drop them.
    for node in model.graph.node:
        while node.input and node.input[-1] == "":
            node.input.pop()
    if model.ByteSize() < MAX_INLINE_BYTES:
        onnx.save_model(model, str(target))
        return False
    # transformers.js fetches `<file>_data` next to the graph, the onnx-community naming.
    onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=target.name + "_data")  # fmt: skip
    return True


def web_files(folder: Path) -> list[Path]:
    """The files of a web model folder, relative to it (what the page may fetch)."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def missing_files(folder: Path) -> list[str]:
    """What a transformers.js folder lacks: the four JSON files and at least one onnx/model*.onnx."""
    missing = [name for name in WEB_FILES if not (folder / name).is_file()]
    if not any((folder / "onnx").glob("model*.onnx")):
        missing.append("onnx/model*.onnx")
    return missing
