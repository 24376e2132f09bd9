"""Symmetric 4-bit block quantization in the layout of ONNX Runtime's MatMulNBits contrib op.

For Y = X @ W with W of shape [K, N], MatMulNBits takes B as uint8 [N, K/block, block/2]: each output column's
weights cut into blocks of `block` along K, two weights a byte (the even one in the low nibble), one float
scale per block, laid out [N * K/block]. Without a zero-point input the op subtracts 8, so a stored nibble q
means (q - 8) * scale. K is zero-padded up to a whole block (zeros quantize to exactly 8, i.e. 0).
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
ZERO = 8  # MatMulNBits' default zero point for 4 bits
CHUNK_VALUES = 1 << 22  # floats quantized at once


def blocks(k: int, block: int = BLOCK) -> int:
    return -(-k // block)


def quantize(w: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """W [K, N] float -> (packed uint8 [N, K/block, block/2], scales float32 [N * K/block])."""
    k, n = w.shape
    kb = blocks(k, block)
    packed = np.empty((n, kb, block // 2), dtype=np.uint8)
    scales = np.empty((n, kb), dtype=np.float32)
    # A few columns at a time: the float temporaries of a whole 150k-token head would be gigabytes.
    step = max(1, CHUNK_VALUES // (kb * block))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        packed[lo:hi], scales[lo:hi] = _quantize_columns(w[:, lo:hi], kb, block)
    return packed, scales.reshape(-1)


def _quantize_columns(w: np.ndarray, kb: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    k, n = w.shape
    flat = np.zeros((n, kb * block), dtype=np.float32)
    flat[:, :k] = w.T
    cols = flat.reshape(n, kb, block)
    # Scale by the block's largest magnitude over 7 so it lands on a code (-7..7); -8 stays unused, which
    # keeps the quantization symmetric around zero.
    scales = np.abs(cols).max(axis=2) / 7.0
    scales[scales == 0] = 1.0
    q = np.rint(cols / scales[:, :, None]) + ZERO
    q = np.clip(q, 0, 15).astype(np.uint8)
    return q[:, :, 0::2] | (q[:, :, 1::2] << 4), scales


def dequantize(packed: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """The W [K, N] MatMulNBits computes with: what `quantize` stored."""
    n, kb, half = packed.shape
    q = np.empty((n, kb, half * 2), dtype=np.float32)
    q[:, :, 0::2] = packed & 0x0F
    q[:, :, 1::2] = packed >> 4
    w = (q - ZERO) * scales.reshape(n, kb, 1)
    return np.ascontiguousarray(w.reshape(n, kb * half * 2)[:, :k].T)
