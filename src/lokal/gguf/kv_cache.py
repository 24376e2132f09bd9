"""How much memory a GGUF model's KV cache takes, from the file's metadata alone."""

from __future__ import annotations


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
