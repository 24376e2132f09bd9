"""A plain numpy forward pass of lokal.onnxgen's decoder, from the same seeded weights: what the ONNX graph's
logits must equal. Written from the model definitions (Llama / Qwen2 in transformers), not from the graph."""

from __future__ import annotations

import numpy as np

from lokal.gguf.synthetic import ModelShape
from lokal.onnxgen import int4
from lokal.onnxgen.weights import RMS_EPS, embedding, layer_weights, lm_head, rotary_caches

Cache = list[tuple[np.ndarray, np.ndarray]]  # per layer: keys, values [kv_heads, seq, head_size]


def _rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS)  # norm weights are ones


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [seq, heads, head_size]; the rotate-half form: the first half pairs with the second."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


class Reference:
    def __init__(self, shape: ModelShape, precision: str, seed: int = 0) -> None:
        self.shape, self.precision, self.seed = shape, precision, seed
        self.cos, self.sin = rotary_caches(shape)
        self.emb = embedding(seed, shape).astype(np.float64)
        self.layers = [layer_weights(seed, shape, i) for i in range(shape.n_layer)]
        head = self.emb.T.astype(np.float32) if shape.tied_embeddings else lm_head(seed, shape)
        # A tied fp32 head reads the embedding itself; otherwise it is a projection like the others.
        self.head = self.emb.T if shape.tied_embeddings and precision == "fp32" else self._w(head)

    def _w(self, w: np.ndarray) -> np.ndarray:
        if self.precision == "int4":
            w = int4.dequantize(*int4.quantize(w), w.shape[0])
        return w.astype(np.float64)

    def forward(self, ids: list[int], cache: Cache | None = None) -> tuple[np.ndarray, Cache]:
        """Logits [len(ids), n_vocab] for `ids` following the cached positions, and the grown cache."""
        sh = self.shape
        hd, nh, nkv = sh.head_size, sh.n_head, sh.n_head_kv
        past = 0 if not cache else cache[0][0].shape[1]
        n = len(ids)
        pos = np.arange(past, past + n)
        cos, sin = self.cos[pos].astype(np.float64), self.sin[pos].astype(np.float64)
        h = self.emb[ids]
        out: Cache = []
        for i, w in enumerate(self.layers):
            p = f"layers.{i}"
            x = _rms(h)
            qkv = x @ self._w(w[f"{p}.attn.qkv_proj"])
            if sh.qkv_bias:
                qkv = qkv + w[f"{p}.attn.qkv_proj.bias"]
            q = qkv[:, : nh * hd].reshape(n, nh, hd)
            k = qkv[:, nh * hd : (nh + nkv) * hd].reshape(n, nkv, hd)
            v = qkv[:, (nh + nkv) * hd :].reshape(n, nkv, hd)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            keys, values = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
            if cache:
                keys = np.concatenate([cache[i][0], keys], axis=1)
                values = np.concatenate([cache[i][1], values], axis=1)
            out.append((keys, values))
            total = keys.shape[1]
            causal = np.arange(total)[None, :] > pos[:, None]  # [n, total]: later positions are hidden
            attn = np.empty((n, nh, hd))
            for head in range(nh):
                g = head // (nh // nkv)
                scores = q[:, head, :] @ keys[g].T / np.sqrt(hd)
                scores[causal] = -np.inf
                scores = np.exp(scores - scores.max(axis=1, keepdims=True))
                attn[:, head, :] = (scores / scores.sum(axis=1, keepdims=True)) @ values[g]
            h = h + attn.reshape(n, nh * hd) @ self._w(w[f"{p}.attn.o_proj"])
            x = _rms(h)
            gate, up = x @ self._w(w[f"{p}.mlp.gate_proj"]), x @ self._w(w[f"{p}.mlp.up_proj"])
            h = h + (gate / (1 + np.exp(-gate)) * up) @ self._w(w[f"{p}.mlp.down_proj"])
        return _rms(h) @ self.head, out
