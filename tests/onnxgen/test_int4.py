"""lokal.onnxgen.int4 packs weights the way ONNX Runtime's MatMulNBits reads them."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lokal.onnxgen import int4


def _matmul_nbits(x: np.ndarray, packed: np.ndarray, scales: np.ndarray, k: int, n: int) -> np.ndarray:
    node = helper.make_node(
        "MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=int4.BLOCK
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        initializer=[numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scales, "s")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)], ir_version=10
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"x": x})[0]


@pytest.mark.parametrize(("k", "n"), [(64, 24), (80, 7)], ids=["whole-blocks", "padded-k"])
def test_matmul_nbits_computes_with_the_dequantized_weights(k: int, n: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal((3, k)).astype(np.float32)
    packed, scales = int4.quantize(w)
    assert packed.shape == (n, int4.blocks(k), int4.BLOCK // 2) and scales.shape == (n * int4.blocks(k),)
    dequantized = int4.dequantize(packed, scales, k)
    np.testing.assert_allclose(_matmul_nbits(x, packed, scales, k, n), x @ dequantized, rtol=1e-4, atol=1e-4)
    # 4 bits a weight: each within half a step of its block's scale.
    step = np.repeat(scales.reshape(n, -1), int4.BLOCK, axis=1)[:, :k].T
    assert np.all(np.abs(dequantized - w) <= step / 2 + 1e-6)


def test_a_zero_block_stays_zero() -> None:
    w = np.zeros((32, 2), np.float32)
    w[:, 1] = 1.0
    packed, scales = int4.quantize(w)
    np.testing.assert_array_equal(int4.dequantize(packed, scales, 32), w)


def test_quantizing_a_few_columns_at_a_time_gives_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    w = np.random.default_rng(1).standard_normal((96, 50)).astype(np.float32)
    whole = int4.quantize(w)
    monkeypatch.setattr(int4, "CHUNK_VALUES", 96 * 3)  # three columns a chunk, the last one shorter
    chunked = int4.quantize(w)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])
