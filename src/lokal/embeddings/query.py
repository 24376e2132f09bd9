"""How one short text per call is encoded (a routing prompt, a RAG question): the single-query policy.

A single sentence is too small to gain from intra-op threads, and on a busy machine a thread team waits on
itself; batches (ingest, /v1/embeddings) are where torch's threads pay.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lokal.config import Settings, get_settings
from lokal.embeddings import Encoder
from lokal.errors import EngineUnavailable

log = logging.getLogger(__name__)


def query_encoder(home: Path | None = None, settings: Settings | None = None) -> Encoder:
    """ONNX MiniLM on one thread when onnxruntime is installed (LOKAL_ROUTER_ENCODER=torch opts out), else
    the process-wide torch embedder. Both give the same vectors, so one set of thresholds serves both."""
    from lokal.embeddings.torch_st import get_embedder

    settings = settings or get_settings()
    if settings.router_encoder != "torch":
        from lokal.embeddings.onnx import load_onnx_minilm

        home = home or settings.home
        try:
            return load_onnx_minilm(home / "router")
        except EngineUnavailable as exc:
            log.info("router encoder: torch (%s)", exc.message)
    return get_embedder()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Encode one short query on one torch thread.

    Measured on a shared 2-core box: p95 of one query went from ~30 ms on one thread to ~800 ms on two. The
    setting is process-wide, so it is restored at once.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
