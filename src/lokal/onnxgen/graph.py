"""The decoder graph: a Llama/Qwen2 model in the operators ONNX Runtime GenAI's CPU builds use.

Embedding Gather; per layer SimplifiedLayerNormalization (the residual add fused in
SkipSimplifiedLayerNormalization after the first), one fused q/k/v projection (+ bias for Qwen2),
com.microsoft.GroupQueryAttention with the rotary embedding applied inside (cos/sin caches) and the KV cache as
past/present tensors [batch, kv_heads, seq, head_size], o_proj, SwiGLU MLP, final norm, lm_head. Projections are
MatMul (fp32) or MatMulNBits (int4, lokal.onnxgen.int4); the embedding stays fp32 in both.

Inputs and outputs carry the names genai_config.json maps (lokal.onnxgen.folder): input_ids, attention_mask,
past_key_values.N.key/value -> logits, present.N.key/value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper

from lokal.gguf.synthetic import ModelShape
from lokal.onnxgen import int4
from lokal.onnxgen.weights import RMS_EPS, embedding, layer_weights, lm_head, rotary_caches

PRECISIONS = ("fp32", "int4")
OPSET = 21
MS = "com.microsoft"


class Sink(Protocol):
    """Where initializers go: inline in the proto, or appended to the external data file."""

    def __call__(self, name: str, array: np.ndarray) -> TensorProto: ...


def past_names(i: int) -> tuple[str, str]:
    return f"past_key_values.{i}.key", f"past_key_values.{i}.value"


def present_names(i: int) -> tuple[str, str]:
    return f"present.{i}.key", f"present.{i}.value"


@dataclass(frozen=True, slots=True)
class Packed:
    """A [K, N] weight packed by int4.quantize."""

    packed: np.ndarray
    scales: np.ndarray
    dims: tuple[int, int]

    @classmethod
    def of(cls, w: np.ndarray) -> Packed:
        packed, scales = int4.quantize(w)
        return cls(packed, scales, (w.shape[0], w.shape[1]))


class _Builder:
    def __init__(self, shape: ModelShape, precision: str, sink: Sink, accuracy_level: int) -> None:
        self.shape, self.precision, self.sink, self.accuracy = shape, precision, sink, accuracy_level
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.sink(name, array))
        return name

    def node(
        self, op: str, inputs: list[str], outputs: list[str] | int = 1, domain: str = "", **attrs: Any
    ) -> list[str]:
        name = f"/{op}_{len(self.nodes)}"
        outs = [f"{name}/out{j}" for j in range(outputs)] if isinstance(outputs, int) else outputs
        self.nodes.append(helper.make_node(op, inputs, outs, name, None, domain, **attrs))
        return outs

    def linear(
        self,
        x: str,
        name: str,
        w: np.ndarray | Packed,
        bias: np.ndarray | None = None,
        out: str | None = None,
    ) -> str:
        """y = x @ w (+ bias), w [K, N] as floats or already packed for int4."""
        outputs: list[str] | int = [out] if out and bias is None else 1
        if self.precision == "int4":
            q = w if isinstance(w, Packed) else Packed.of(w)
            packed, scales, (k, n) = q.packed, q.scales, q.dims
            [y] = self.node(
                "MatMulNBits",
                [x, self.init(f"{name}.qweight", packed), self.init(f"{name}.scales", scales)],
                outputs,
                domain=MS,
                K=k,
                N=n,
                bits=4,
                block_size=int4.BLOCK,
                accuracy_level=self.accuracy,
            )
        else:
            assert isinstance(w, np.ndarray)  # fp32 models hold no packed weights
            [y] = self.node("MatMul", [x, self.init(f"{name}.weight", w)], outputs)
        if bias is not None:
            [y] = self.node("Add", [y, self.init(f"{name}.bias", bias)], [out] if out else 1)
        return y


def build(
    shape: ModelShape,
    precision: str,
    sink: Sink,
    *,
    seed: int = 0,
    accuracy_level: int = 4,
    last_logits: bool = False,
    progress: Callable[[str], None] | None = None,
) -> onnx.ModelProto:
    """The ModelProto; weights are drawn one tensor at a time and handed to `sink` at once, so a 7B-shaped
    model never holds more than one layer's floats in memory.

    `last_logits`: the head reads only each row's last position (logits [batch, 1, vocab]), the builder's
    `prune_lm_head`; a prompt of S tokens otherwise pays S vocabulary-wide products (151,936 wide for qwen2.5).
    Off by default, as in the builder and the published builds: onnxruntime-genai 0.18's `og.Engine` (lokal's
    batched path) fails on such a graph (ENGINE_EXECUTION_FAILURE); its Generator reads it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    note = progress or (lambda _msg: None)
    b = _Builder(shape, precision, sink, accuracy_level)
    hd = shape.head_size
    one = b.init("const.one", np.array([1], np.int64))
    [summed] = b.node("ReduceSum", ["attention_mask", one], keepdims=0)
    [last] = b.node("Sub", [summed, one])
    # GroupQueryAttention wants each row's last position (its length - 1) and the total length, as int32.
    [seqlens_k] = b.node("Cast", [last], to=TensorProto.INT32)
    [mask_shape] = b.node("Shape", ["attention_mask"])
    [total] = b.node("Gather", [mask_shape, b.init("const.index1", np.array(1, np.int64))], axis=0)
    [total_len] = b.node("Cast", [total], to=TensorProto.INT32)
    cos, sin = rotary_caches(shape)
    cos_name, sin_name = b.init("cos_cache", cos), b.init("sin_cache", sin)

    note(f"embeddings ({shape.n_vocab} x {shape.n_embd}, fp32)")
    emb = embedding(seed, shape)
    [hidden] = b.node("Gather", [b.init("embed_tokens.weight", emb), "input_ids"], axis=0)
    # A tied int4 head is quantized now, so the float embedding need not be kept until the end.
    tied_head = Packed.of(emb.T) if shape.tied_embeddings and precision == "int4" else None
    del emb

    residual = hidden
    ln0 = b.init("layers.0.input_layernorm", np.ones(shape.n_embd, np.float32))
    [x] = b.node("SimplifiedLayerNormalization", [hidden, ln0], epsilon=RMS_EPS, axis=-1, stash_type=1)
    step = max(1, shape.n_layer // 4)
    for i in range(shape.n_layer):
        w = layer_weights(seed, shape, i)
        p = f"layers.{i}"
        qkv = b.linear(x, f"{p}.attn.qkv_proj", w[f"{p}.attn.qkv_proj"], w.get(f"{p}.attn.qkv_proj.bias"))
        [attn, _, _] = b.node(
            "GroupQueryAttention",
            [qkv, "", "", *past_names(i), seqlens_k, total_len, cos_name, sin_name],
            [f"/{p}/attn/out", *present_names(i)],
            domain=MS,
            num_heads=shape.n_head,
            kv_num_heads=shape.n_head_kv,
            scale=1.0 / math.sqrt(hd),
            do_rotary=1,
            rotary_interleaved=0,
            local_window_size=-1,
        )
        o = b.linear(attn, f"{p}.attn.o_proj", w[f"{p}.attn.o_proj"])
        [x, _, _, residual] = b.node(
            "SkipSimplifiedLayerNormalization",
            [residual, o, b.init(f"{p}.post_attention_layernorm", np.ones(shape.n_embd, np.float32))],
            [f"/{p}/post_ln/out", "", "", f"/{p}/post_ln/sum"],
            domain=MS,
            epsilon=RMS_EPS,
        )
        gate = b.linear(x, f"{p}.mlp.gate_proj", w[f"{p}.mlp.gate_proj"])
        up = b.linear(x, f"{p}.mlp.up_proj", w[f"{p}.mlp.up_proj"])
        [sig] = b.node("Sigmoid", [gate])
        [silu] = b.node("Mul", [gate, sig])
        [act] = b.node("Mul", [silu, up])
        down = b.linear(act, f"{p}.mlp.down_proj", w[f"{p}.mlp.down_proj"])
        nxt = f"layers.{i + 1}.input_layernorm" if i + 1 < shape.n_layer else "norm"
        norm = b.init(nxt, np.ones(shape.n_embd, np.float32))
        [x, _, _, residual] = b.node(
            "SkipSimplifiedLayerNormalization",
            [residual, down, norm],
            [f"/{p}/next_ln/out", "", "", f"/{p}/next_ln/sum"],
            domain=MS,
            epsilon=RMS_EPS,
        )
        del w
        if (i + 1) % step == 0 or i + 1 == shape.n_layer:
            note(f"layer {i + 1}/{shape.n_layer}")
    # The last norm's residual sum has no consumer: drop that output.
    b.nodes[-1].output[3] = ""
    while b.nodes[-1].output[-1] == "":
        b.nodes[-1].output.pop()

    note(f"lm_head ({'tied' if shape.tied_embeddings else 'untied'}, {precision})")
    if last_logits:
        [row] = b.node("Gather", [x, b.init("const.last", np.array(-1, np.int64))], axis=1)
        [x] = b.node("Unsqueeze", [row, one])
    if shape.tied_embeddings and precision == "fp32":
        # The embedding itself, read transposed: one copy on disk and in memory.
        b.node("FusedMatMul", [x, "embed_tokens.weight"], ["logits"], domain=MS, transB=1)
    elif tied_head is not None:
        b.linear(x, "lm_head", tied_head, out="logits")
    else:
        b.linear(x, "lm_head", lm_head(seed, shape), out="logits")
    del tied_head

    kv_dims: list[str | int] = ["batch_size", shape.n_head_kv, "past_sequence_length", hd]
    present_dims: list[str | int] = ["batch_size", shape.n_head_kv, "total_sequence_length", hd]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
    ]
    outputs = [
        helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["batch_size", 1 if last_logits else "sequence_length", shape.n_vocab]
        )
    ]
    for i in range(shape.n_layer):
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_dims) for n in past_names(i)]
        outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, present_dims) for n in present_names(i)]
    graph = helper.make_graph(b.nodes, "lokal-synthetic-decoder", inputs, outputs, initializer=b.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
        producer_name="lokal.onnxgen",
        ir_version=10,
    )
    return model
