"""Intent detection: regex rules (fast baseline), MiniLM nearest examples (semantic), and both combined.

Intent names are capability names: the policy looks for models declaring the detected intent.
The shipped rules and example utterances live in ``router/data/intents.yaml``; thresholds calibrated by
``lokal route fit`` live in ``$LOKAL_HOME/router/intents-fit.json`` (else the shipped ``data/fit.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from lokal.embeddings import Encoder

if TYPE_CHECKING:
    import numpy as np

GENERAL = "general"
FIT_FILE = "intents-fit.json"


@dataclass(frozen=True, slots=True)
class IntentResult:
    intent: str
    confidence: float  # 0..1: how sure the detector is of ``intent``
    method: str  # "rules" | "semantic" | "combined" | "preset"
    scores: Mapping[str, float] = field(default_factory=dict)
    rule_hits: tuple[str, ...] = ()


@dataclass(slots=True)
class IntentSpec:
    """Rules in priority order (the first intent whose rules match wins) and example utterances."""

    rules: dict[str, list[re.Pattern[str]]]
    examples: dict[str, list[str]]

    @property
    def intents(self) -> list[str]:
        names = list(dict.fromkeys([*self.rules, *self.examples]))
        return names if GENERAL in names else [*names, GENERAL]


def _read_intent_data(data: Mapping[str, Any]) -> IntentSpec:
    rules: dict[str, list[re.Pattern[str]]] = {}
    examples: dict[str, list[str]] = {}
    for name, body in (data.get("intents") or {}).items():
        rules[name] = [re.compile(p, re.IGNORECASE) for p in (body.get("rules") or [])]
        examples[name] = [str(x) for x in (body.get("examples") or [])]
    return IntentSpec(rules=rules, examples=examples)


def load_intent_spec(path: Path | None = None) -> IntentSpec:
    if path is not None:
        return _read_intent_data(yaml.safe_load(path.read_text(encoding="utf-8")))
    text = resources.files("lokal.router").joinpath("data/intents.yaml").read_text(encoding="utf-8")
    return _read_intent_data(yaml.safe_load(text))


def shipped_data_path(name: str) -> Path:
    return Path(str(resources.files("lokal.router").joinpath(f"data/{name}")))


class RuleDetector:
    """Regex rules as in the Foundry Local workshop: fast, transparent, brittle on paraphrases."""

    def __init__(self, spec: IntentSpec) -> None:
        self.spec = spec

    def hits(self, prompt: str) -> tuple[str, ...]:
        return tuple(name for name, pats in self.spec.rules.items() if any(p.search(prompt) for p in pats))

    def detect(self, prompt: str) -> IntentResult:
        hits = self.hits(prompt)
        if not hits:
            return IntentResult(GENERAL, 0.5, "rules")
        # One rule family matching is a strong signal; several at once means the prompt mixes intents.
        return IntentResult(hits[0], 0.9 if len(hits) == 1 else 0.6, "rules", rule_hits=hits)


@dataclass(slots=True)
class FitParams:
    """What ``lokal route fit`` learns: extra example utterances (the labeled prompts themselves),
    per-intent score thresholds, and how much a rule hit adds to a semantic score."""

    examples: dict[str, list[str]] = field(default_factory=dict)
    semantic: dict[str, float] = field(default_factory=dict)
    combined: dict[str, float] = field(default_factory=dict)
    rule_bonus: float = 0.1
    fitted_on: str = ""
    n_examples: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "examples": self.examples,
                "semantic": self.semantic,
                "combined": self.combined,
                "rule_bonus": self.rule_bonus,
                "fitted_on": self.fitted_on,
                "n_examples": self.n_examples,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_file(cls, path: Path) -> FitParams:
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            examples={k: [str(x) for x in v] for k, v in d.get("examples", {}).items()},
            semantic={k: float(v) for k, v in d.get("semantic", {}).items()},
            combined={k: float(v) for k, v in d.get("combined", {}).items()},
            rule_bonus=float(d.get("rule_bonus", 0.1)),
            fitted_on=str(d.get("fitted_on", "")),
            n_examples=int(d.get("n_examples", 0)),
        )

    @classmethod
    def load(cls, home: Path | None) -> FitParams:
        user = home / "router" / FIT_FILE if home is not None else None
        if user is not None and user.is_file():
            return cls.from_file(user)
        shipped = shipped_data_path("fit.json")
        return cls.from_file(shipped) if shipped.is_file() else cls()


def _encode_examples(encoder: Encoder, texts: list[str], cache_dir: Path | None) -> np.ndarray:
    """Example embeddings, kept on disk per (encoder, texts): a CLI run then starts without re-encoding."""
    import numpy as np

    if cache_dir is None:
        return encoder.encode(texts, batch_size=16)
    name = str(getattr(encoder, "name", "torch"))
    digest = hashlib.sha256(json.dumps([name, texts]).encode()).hexdigest()[:20]
    path = cache_dir / f"examples-{digest}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
            if cached.shape[0] == len(texts):
                return np.asarray(cached, dtype=np.float32)
        except (OSError, ValueError):
            pass
    matrix = encoder.encode(texts, batch_size=16)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, matrix)
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs the next start an encode
    return matrix


def _softmax_confidence(scores: np.ndarray, top: int, temperature: float = 0.05) -> float:
    import numpy as np

    z = (scores - scores.max()) / temperature
    p = np.exp(z)
    return float(p[top] / p.sum())


class SemanticDetector:
    """Cosine similarity of the prompt to each intent's example utterances (mean of the best k).

    The examples are encoded once; each prompt costs one MiniLM encode, memoised for repeated prompts.
    """

    def __init__(
        self,
        spec: IntentSpec,
        encoder: Encoder,
        fit: FitParams | None = None,
        *,
        top_k: int = 3,
        memo_size: int = 2048,
        cache_dir: Path | None = None,
    ) -> None:
        import numpy as np

        self.spec = spec
        self.encoder = encoder
        self.fit = fit or FitParams()
        self.top_k = top_k
        merged = {i: [*spec.examples.get(i, []), *self.fit.examples.get(i, [])] for i in spec.intents}
        self.intents = [i for i in spec.intents if merged[i]]
        texts: list[str] = []
        owners: list[int] = []
        for idx, name in enumerate(self.intents):
            texts.extend(merged[name])
            owners.extend([idx] * len(merged[name]))
        self._texts = texts
        self._matrix = _encode_examples(encoder, texts, cache_dir)
        self._owners = np.asarray(owners)
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_size = memo_size
        self._memo_lock = Lock()

    def embed(self, prompt: str) -> np.ndarray:
        with self._memo_lock:
            seen = self._memo.get(prompt)
            if seen is not None:
                self._memo.move_to_end(prompt)
                return seen
        vec: np.ndarray = self.encoder.encode([prompt])[0]
        with self._memo_lock:
            self._memo[prompt] = vec
            if len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return vec

    def prime(self, prompts: Sequence[str], batch_size: int = 16) -> None:
        """Encode many prompts in batches up front (evaluation, calibration): far cheaper than one by one."""
        todo = list(dict.fromkeys(p for p in prompts if p not in self._memo))
        if not todo:
            return
        vecs = self.encoder.encode(todo, batch_size=batch_size)
        with self._memo_lock:
            for p, v in zip(todo, vecs, strict=True):
                self._memo[p] = v
            while len(self._memo) > max(self._memo_size, len(todo)):
                self._memo.popitem(last=False)

    def scores(self, prompt: str, exclude_identical: bool = False) -> np.ndarray:
        """Per-intent score, aligned with ``self.intents``."""
        import numpy as np

        sims = self._matrix @ self.embed(prompt)
        if exclude_identical:  # calibration must not see a prompt matching itself
            for i, t in enumerate(self._texts):
                if t == prompt:
                    sims[i] = -1.0
        out = np.empty(len(self.intents), dtype=np.float32)
        for idx in range(len(self.intents)):
            s = sims[self._owners == idx]
            k = min(self.top_k, len(s))
            out[idx] = np.partition(s, len(s) - k)[len(s) - k :].mean()
        return out

    def decide(self, scores: np.ndarray, thresholds: Mapping[str, float], method: str) -> IntentResult:
        top = int(scores.argmax())
        intent = self.intents[top]
        conf = _softmax_confidence(scores, top)
        by_name = {n: round(float(s), 4) for n, s in zip(self.intents, scores, strict=True)}
        if intent != GENERAL and float(scores[top]) < thresholds.get(intent, 0.0):
            # Below its calibrated bar the best guess is not trusted: answer as a generalist would.
            return IntentResult(GENERAL, 1.0 - conf, method, by_name)
        return IntentResult(intent, conf, method, by_name)

    def detect(self, prompt: str) -> IntentResult:
        return self.decide(self.scores(prompt), self.fit.semantic, "semantic")


# Common English function words; a prompt of four or more words with almost none of them is not English.
_ENGLISH_TEXT = (
    "the this that these those to of for from with by and or not what which who how why when where does did can"
    " could should would will my you your its we our they their please write give make tell find show explain use"
    " add into than then but about here there just only some each every also have has is are it a in on at an do"
    " i be so as if up out over all any"
)
_ENGLISH_WORDS = frozenset(_ENGLISH_TEXT.split())
_WORD = re.compile(r"[^\W\d_]+")


def looks_english(prompt: str) -> bool:
    """Cheap language guess: mostly non-ASCII letters, or too few English function words, is not English.

    all-MiniLM-L6-v2 was trained on English; on other languages its similarities say little, so the combined
    detector then trusts an unambiguous rule hit (the rules carry cues in several languages) over them."""
    letters = [c for c in prompt if c.isalpha()]
    if letters and sum(ord(c) > 127 for c in letters) > 0.3 * len(letters):
        return False
    words = _WORD.findall(prompt.lower())
    if len(words) < 4:
        return True
    return sum(w in _ENGLISH_WORDS for w in words) >= 0.15 * len(words)


class CombinedDetector:
    """Semantic scores plus a fixed bonus for intents whose rules fire, with their own thresholds.

    When exactly one rule family fires and the semantic side has no specialist to offer (its answer is
    general) or cannot read the prompt (not English), the rule decides: one family alone is the rules' confident
    case (they are precise and miss paraphrases), and a wrong "general" costs a specialist prompt its model."""

    def __init__(self, rules: RuleDetector, semantic: SemanticDetector) -> None:
        self.rules = rules
        self.semantic = semantic

    def combined_scores(self, prompt: str, bonus: float, exclude_identical: bool = False) -> np.ndarray:
        scores = self.semantic.scores(prompt, exclude_identical).copy()
        hits = self.rules.hits(prompt)
        for idx, name in enumerate(self.semantic.intents):
            if name in hits:
                scores[idx] += bonus
        return scores

    def detect(self, prompt: str) -> IntentResult:
        fit = self.semantic.fit
        res = self.semantic.decide(self.combined_scores(prompt, fit.rule_bonus), fit.combined, "combined")
        hits = self.rules.hits(prompt)
        if len(hits) == 1 and hits[0] != res.intent and (res.intent == GENERAL or not looks_english(prompt)):
            return IntentResult(hits[0], max(res.confidence, 0.9), res.method, res.scores, hits)
        return IntentResult(res.intent, res.confidence, res.method, res.scores, hits)


class Detector(Protocol):
    def detect(self, prompt: str) -> IntentResult: ...
