"""The random weights of a synthetic decoder: every tensor drawn from its own seeded stream, so any one can be
drawn again by name (the tests' numpy reference forward pass uses the very weights the graph holds).

std 0.08 rather than a trained model's ~0.02: with near-uniform logits every sampled token would look alike;
wider weights make the noise varied. Norm weights are all ones, as a freshly initialised model's are.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from lokal.gguf.synthetic import ModelShape

STD = 0.08
RMS_EPS = 1e-6


def draw(seed: int, name: str, dims: tuple[int, ...], std: float = STD) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = rng.standard_normal(dims, dtype=np.float32)
    out *= std
    return out


@dataclass(frozen=True, slots=True)
class Dims:
    """The matrix sizes of one shape (y = x @ W, W [in, out])."""

    shape: ModelShape

    @property
    def q(self) -> int:
        return self.shape.n_head * self.shape.head_size

    @property
    def kv(self) -> int:
        return self.shape.n_head_kv * self.shape.head_size

    @property
    def qkv(self) -> int:
        return self.q + 2 * self.kv


def layer_weights(seed: int, shape: ModelShape, i: int) -> dict[str, np.ndarray]:
    """Layer i's projection weights, keyed by the names the graph gives them (its norm weights are ones)."""
    d, e, p = Dims(shape), shape.n_embd, f"layers.{i}"
    out = {
        f"{p}.attn.qkv_proj": draw(seed, f"{p}.attn.qkv_proj", (e, d.qkv)),
        f"{p}.attn.o_proj": draw(seed, f"{p}.attn.o_proj", (d.q, e)),
        f"{p}.mlp.gate_proj": draw(seed, f"{p}.mlp.gate_proj", (e, shape.n_ff)),
        f"{p}.mlp.up_proj": draw(seed, f"{p}.mlp.up_proj", (e, shape.n_ff)),
        f"{p}.mlp.down_proj": draw(seed, f"{p}.mlp.down_proj", (shape.n_ff, e)),
    }
    if shape.qkv_bias:
        out[f"{p}.attn.qkv_proj.bias"] = draw(seed, f"{p}.attn.qkv_proj.bias", (d.qkv,))
    return out


def embedding(seed: int, shape: ModelShape) -> np.ndarray:
    return draw(seed, "embed_tokens", (shape.n_vocab, shape.n_embd))


def lm_head(seed: int, shape: ModelShape) -> np.ndarray:
    """The untied output projection [n_embd, n_vocab] (a tied model uses the embedding transposed)."""
    return draw(seed, "lm_head", (shape.n_embd, shape.n_vocab))


def rotary_caches(shape: ModelShape) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [n_ctx, head_size/2] of the Llama/Qwen2 rotary embedding (halves rotated, not pairs)."""
    hd = shape.head_size
    inv_freq = 1.0 / (shape.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    angles = np.outer(np.arange(shape.n_ctx, dtype=np.float64), inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
