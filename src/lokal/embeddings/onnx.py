"""all-MiniLM-L6-v2 on onnxruntime, one thread: the encoder of single short queries (``query``).

Why not the shared torch embedder: routing encodes one short prompt per request, where torch's thread pool
costs more than the maths. On the shared 2-core dev box (load average ~5.6) a single-prompt encode took
75 ms p50 / 730 ms p95 with torch's default 2 threads, 16 / 21 ms with 1 thread, and 8.4 / 10.9 ms here
(benchmarks/bench_routing.py), without touching torch's process-wide thread setting, which the server's
/v1/embeddings shares.

The ONNX file is exported once from the offline MiniLM weights (needs torch, transformers and onnx) into
``$LOKAL_HOME/router/minilm-l6-v2.onnx``; later runs need only onnxruntime and tokenizers. Vectors match
sentence-transformers' (mean pooling, L2-normalised): cosine > 0.9999 (tested).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lokal.embeddings.minilm import MINILM_DIM, minilm_path
from lokal.errors import EngineUnavailable

log = logging.getLogger(__name__)

ONNX_NAME = "minilm-l6-v2.onnx"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_minilm(source: Path, dest: Path) -> Path:
    """Write ``dest`` (the transformer body; pooling is done in numpy) from the weights in ``source``."""
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise EngineUnavailable(f"exporting MiniLM to ONNX needs torch and transformers ({exc.name})") from None

    model = AutoModel.from_pretrained(str(source)).eval()

    class Body(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    dummy = torch.ones(1, 8, dtype=torch.long)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".{os.getpid()}.tmp")
    axes = {n: {0: "batch", 1: "seq"} for n in (*_INPUTS, "last_hidden_state")}
    try:
        with warnings.catch_warnings():
            # The tracer's notes (legacy exporter, tensor-to-bool) concern generality this fixed graph lacks;
            # the parity test checks the result against sentence-transformers instead.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Body(model),
                (dummy, dummy, torch.zeros_like(dummy)),
                str(tmp),
                input_names=list(_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:  # missing `onnx`, or an exporter change: the torch encoder still works
        tmp.unlink(missing_ok=True)
        raise EngineUnavailable(f"could not export MiniLM to ONNX: {exc}") from None
    tmp.replace(dest)  # atomic: a concurrent reader never sees half a file
    return dest


class OnnxMiniLM:
    """An ``Encoder``: unit float32 vectors, one row per text, as the torch embedder gives."""

    name = "onnxruntime"

    def __init__(self, model_file: Path, tokenizer_file: Path, threads: int = 1, max_length: int = 256) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EngineUnavailable(f"the ONNX router encoder needs {exc.name}") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Spinning threads steal the CPU that llama.cpp and other requests need between our short calls.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
        self._tok = Tokenizer.from_file(str(tokenizer_file))
        self._tok.enable_truncation(max_length)
        self._max_length = max_length
        self._lock = threading.Lock()  # the tokenizer's padding state is per instance
        self.dim = MINILM_DIM

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            with self._lock:
                self._tok.enable_padding()
                encs = self._tok.encode_batch(chunk)
            ids = np.array([e.ids for e in encs], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
            hidden = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            m = mask[..., None].astype(np.float32)
            vec = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            out.append(vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None))
        return np.concatenate(out).astype(np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        # Counted whole, as the torch embedder counts: encode() truncates to what the model reads.
        with self._lock:
            self._tok.no_truncation()
            self._tok.no_padding()
            try:
                return sum(len(e.ids) for e in self._tok.encode_batch(list(texts)))
            finally:
                self._tok.enable_truncation(self._max_length)


def load_onnx_minilm(cache_dir: Path) -> OnnxMiniLM:
    """The cached ONNX encoder, exporting it first if needed. Raises EngineUnavailable when it cannot."""
    source = minilm_path()
    model_file = cache_dir / ONNX_NAME
    if not model_file.is_file():
        log.info("exporting MiniLM to %s (once)", model_file)
        export_minilm(source, model_file)
    return OnnxMiniLM(model_file, source / "tokenizer.json")
