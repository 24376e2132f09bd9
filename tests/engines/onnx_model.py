"""A tiny random-weight ONNX GenAI model, built offline: a 2-layer Llama made with transformers, a small
byte-level BPE tokenizer trained in code on a few sentences, then onnxruntime-genai's own model builder.

The tokenizer's alphabet is printable ASCII only, so the model's (noise) output is readable text and stop
strings can be cut from it; characters outside that alphabet are dropped when encoding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is a tiny test model for lokal.",
    "system user assistant: answer briefly and kindly.",
    "Local models run on the CPU; ONNX Runtime GenAI generates one token at a time.",
]
CONTEXT = 512


def write_hf_model(directory: Path, seed: int = 0, *, context: int = CONTEXT, **shape: int) -> Path:
    """A Hugging Face folder (config, safetensors, tokenizer with a ChatML template) the builder reads.

    `shape` overrides LlamaConfig sizes (hidden_size, num_hidden_layers, ...) for a slower, bigger model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # GPT-2's byte-to-unicode map keeps "!".."~" as themselves and writes space and newline as these two.
    alphabet = [chr(c) for c in range(0x21, 0x7F)] + ["\u0120", "\u010a"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.model_max_length = context
    fast.save_pretrained(directory)

    eos, bos = (fast.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|im_start|>"))
    assert isinstance(eos, int) and isinstance(bos, int)
    sizes = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        **shape,
    }
    config = LlamaConfig(
        vocab_size=len(fast),
        **sizes,
        max_position_embeddings=context,
        eos_token_id=eos,
        bos_token_id=bos,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def build_tiny_onnx(directory: Path, seed: int = 0, *, context: int = CONTEXT, **shape: int) -> Path:
    """The ONNX GenAI folder (genai_config.json, model.onnx, tokenizer); about 6 s on a 2-core CPU."""
    hf = write_hf_model(directory / "hf", seed, context=context, **shape)
    out = directory / "onnx"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(hf),
        "-o",
        str(out),
        "-p",
        "fp32",
        "-e",
        "cpu",
        "-c",
        str(directory / "cache"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        raise RuntimeError(f"onnxruntime-genai model builder failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return out


def onnx_entry(alias: str, folder: Path, **extra: object) -> dict[str, object]:
    """A catalog entry serving the folder with the onnx engine."""
    return {
        "alias": alias,
        "publisher": "lokal-tests",
        "license": "none",
        "context_length": CONTEXT,
        "capabilities": ["general"],
        "synthetic": True,
        "description": "tiny random-weight ONNX GenAI test model (text is noise)",
        "variants": [{"id": f"{alias}-onnx-cpu:1", "device": "cpu", "engine": "onnx", "path": str(folder)}],
        **extra,
    }
