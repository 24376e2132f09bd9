"""The ONNX decoder computes what a Llama / Qwen2 decoder computes: its logits, over a prompt and then one
more step from the returned KV cache, equal a numpy forward pass of the same weights (tests/onnxgen/reference)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from lokal.gguf.synthetic import SHAPES, ModelShape
from lokal.onnxgen.folder import MODEL_FILE, write_model_files
from lokal.onnxgen.graph import past_names, present_names
from tests.onnxgen.reference import Reference

# Qwen2-like: q/k/v bias, tied embeddings, rope_theta 1e6. Llama-like: no bias, untied, 4 query heads per KV
# head, head_dim wider than n_embd / n_head (gemma-2's layout) to catch a head-size mix-up.
QWEN2 = ModelShape(2, 64, 4, 2, 96, 300, 256, qkv_bias=True, rope_theta=1e6)
LLAMA = ModelShape(3, 64, 8, 2, 128, 320, 256, head_dim=16, tied_embeddings=False)
PROMPT = [1, 40, 41, 42, 97, 60, 61, 2, 1, 70]


def _session(
    tmp_path: Path, shape: ModelShape, precision: str, accuracy_level: int, *, last_logits: bool = False
) -> ort.InferenceSession:
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_model_files(tmp_path, shape, precision, seed=7, accuracy_level=accuracy_level, last_logits=last_logits)
    return ort.InferenceSession(str(tmp_path / MODEL_FILE), providers=["CPUExecutionProvider"])


def _run(
    sess: ort.InferenceSession, shape: ModelShape, ids: list[int], past: list[np.ndarray] | None, total: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([ids], np.int64),
        "attention_mask": np.ones((1, total), np.int64),
    }
    empty = np.zeros((1, shape.n_head_kv, 0, shape.head_size), np.float32)
    for i in range(shape.n_layer):
        k, v = past_names(i)
        feeds[k], feeds[v] = (past[2 * i], past[2 * i + 1]) if past else (empty, empty)
    names = ["logits"] + [n for i in range(shape.n_layer) for n in present_names(i)]
    logits, *present = sess.run(names, feeds)
    return logits[0], present


@pytest.mark.parametrize(
    ("shape", "precision", "accuracy_level", "tol"),
    [
        (QWEN2, "fp32", 0, 2e-4),
        (LLAMA, "fp32", 0, 2e-4),
        # MatMulNBits on float activations computes with exactly the dequantized weights.
        (QWEN2, "int4", 0, 2e-4),
        (LLAMA, "int4", 0, 2e-4),
    ],
    ids=["qwen2-fp32", "llama-fp32", "qwen2-int4", "llama-int4"],
)
def test_logits_match_the_numpy_reference(
    tmp_path: Path, shape: ModelShape, precision: str, accuracy_level: int, tol: float
) -> None:
    sess = _session(tmp_path, shape, precision, accuracy_level)
    ref = Reference(shape, precision, seed=7)
    logits, present = _run(sess, shape, PROMPT, None, len(PROMPT))
    want, cache = ref.forward(PROMPT)
    scale = np.abs(want).max()
    assert logits.shape == (len(PROMPT), shape.n_vocab)
    np.testing.assert_allclose(logits, want, atol=tol * scale, rtol=0)
    # The cache holds rotated keys: the same as the reference's for every layer.
    for i, (keys, values) in enumerate(cache):
        np.testing.assert_allclose(present[2 * i][0], keys, atol=1e-4 * np.abs(keys).max())
        np.testing.assert_allclose(present[2 * i + 1][0], values, atol=1e-4 * np.abs(values).max())

    step, _ = _run(sess, shape, [55], present, len(PROMPT) + 1)
    want_step, _ = ref.forward([55], cache)
    np.testing.assert_allclose(step, want_step, atol=tol * scale, rtol=0)
    assert np.std(want_step) > 0.1, "logits this flat would make every sampled token alike"


def test_int4_at_the_cpu_builds_accuracy_level_stays_close(tmp_path: Path) -> None:
    """accuracy_level 4 (int8 activations, the default written) is approximate: same ranking at the top."""
    shape = SHAPES["tiny"]
    sess = _session(tmp_path, shape, "int4", 4)
    logits, _ = _run(sess, shape, PROMPT, None, len(PROMPT))
    want, _ = Reference(shape, "int4", seed=7).forward(PROMPT)
    assert np.abs(logits - want).max() < 0.05 * np.abs(want).max()
    assert (logits.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.8


def test_tied_fp32_keeps_one_copy_of_the_embedding(tmp_path: Path) -> None:
    import onnx

    write_model_files(tmp_path, replace(QWEN2, tied_embeddings=True), "fp32")
    names = [t.name for t in onnx.load(str(tmp_path / MODEL_FILE)).graph.initializer]
    assert "embed_tokens.weight" in names and not any(n.startswith("lm_head") for n in names)


def test_served_graphs_compute_only_the_last_positions_logits(tmp_path: Path) -> None:
    every = _session(tmp_path / "every", QWEN2, "fp32", 0)
    last = _session(tmp_path / "last", QWEN2, "fp32", 0, last_logits=True)
    want, _ = _run(every, QWEN2, PROMPT, None, len(PROMPT))
    got, present = _run(last, QWEN2, PROMPT, None, len(PROMPT))
    assert got.shape == (1, QWEN2.n_vocab)
    np.testing.assert_allclose(got[0], want[-1], atol=1e-5, rtol=0)
    step, _ = _run(last, QWEN2, [5], present, len(PROMPT) + 1)  # decode steps read from the pruned graph too
    assert step.shape == (1, QWEN2.n_vocab)
