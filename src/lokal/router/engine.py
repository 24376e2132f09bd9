"""Builds the intent detectors once, lazily: the rules cost nothing, the semantic ones need MiniLM loaded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from lokal.embeddings import Encoder
from lokal.embeddings.query import query_encoder
from lokal.errors import EngineUnavailable
from lokal.router.catalog import DetectorMode
from lokal.router.intents import (
    CombinedDetector,
    FitParams,
    IntentResult,
    IntentSpec,
    RuleDetector,
    SemanticDetector,
    load_intent_spec,
)

log = logging.getLogger(__name__)


class IntentEngine:
    """Detects intents with the mode asked for; without the embedding extra, semantic modes use the rules."""

    def __init__(
        self,
        home: Path | None = None,
        *,
        spec: IntentSpec | None = None,
        fit: FitParams | None = None,
        encoder_factory: Callable[[], Encoder] | None = None,
    ) -> None:
        self.home = home
        self.spec = spec or load_intent_spec(_user_intents(home))
        self.fit = fit if fit is not None else FitParams.load(home)
        self.rules = RuleDetector(self.spec)
        self._encoder_factory = encoder_factory or (lambda: query_encoder(home))
        self._semantic: SemanticDetector | None = None
        self._combined: CombinedDetector | None = None
        self._unavailable: str | None = None
        self._lock = threading.Lock()

    @property
    def encoder_name(self) -> str:
        """ "onnxruntime", "torch", or "" before the semantic detector is built."""
        if self._semantic is None:
            return ""
        return str(getattr(self._semantic.encoder, "name", "torch"))

    @property
    def semantic_available(self) -> bool:
        return self._unavailable is None

    def warm(self) -> bool:
        """Load the embedder and encode the examples now (10-15 s on first use) rather than on a request."""
        return self._ensure_semantic() is not None

    def _ensure_semantic(self) -> SemanticDetector | None:
        if self._semantic is not None or self._unavailable is not None:
            return self._semantic
        with self._lock:
            if self._semantic is None and self._unavailable is None:
                try:
                    cache = self.home / "router" if self.home is not None else None
                    sem = SemanticDetector(self.spec, self._encoder_factory(), self.fit, cache_dir=cache)
                except EngineUnavailable as exc:
                    self._unavailable = exc.message
                    log.warning("semantic intent detection unavailable, using rules: %s", exc.message)
                    return None
                self._combined = CombinedDetector(self.rules, sem)
                self._semantic = sem
        return self._semantic

    def detectors(self) -> tuple[RuleDetector, SemanticDetector, CombinedDetector] | None:
        """All three detectors (loading MiniLM if needed), or None without the embedding extra."""
        sem = self._ensure_semantic()
        if sem is None or self._combined is None:
            return None
        return self.rules, sem, self._combined

    def detect(self, prompt: str, mode: DetectorMode) -> IntentResult:
        if mode == "rules":
            return self.rules.detect(prompt)
        sem = self._ensure_semantic()
        if sem is None:
            return self.rules.detect(prompt)
        if mode == "semantic":
            return sem.detect(prompt)
        assert self._combined is not None
        return self._combined.detect(prompt)


def _user_intents(home: Path | None) -> Path | None:
    if home is None:
        return None
    p = home / "router" / "intents.yaml"
    return p if p.is_file() else None
