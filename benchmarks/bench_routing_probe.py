"""Would a trained linear head beat the shipped top-k example matcher? Model accuracy on the validation sets.

Trains a logistic regression on MiniLM embeddings + rule hits (+ character n-grams, which carry the non-English
cues MiniLM-L6 cannot read) over the training data, and prints label and model accuracy (the workshop catalog's
four model groups) on both validation sets beside the shipped combined detector. Test sets are read only
with --test (measure a final candidate once, and record every such measurement in docs/router.md).

    python benchmarks/bench_routing_probe.py [--test]   # needs scikit-learn (installed with sentence-transformers)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, hstack, vstack
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from lokal.embeddings.onnx import load_onnx_minilm
from lokal.router.intents import CombinedDetector, FitParams, RuleDetector, SemanticDetector, load_intent_spec

DATA = Path(__file__).resolve().parents[1] / "src" / "lokal" / "router" / "data"
TRAIN = ["labeled-fit.jsonl", "labeled-train-v3.jsonl"]
VALIDATION = ["labeled-heldout.jsonl", "labeled-validation-v3.jsonl"]
TEST = ["labeled-heldout-v2.jsonl", "labeled-heldout-v3.jsonl"]
# The workshop catalog (data/workshop-router.yaml) serves these groups with one model each.
GROUP = {"code": 0, "refactor": 0, "general": 1, "summarize": 1, "classification": 1, "translation": 2, "reasoning": 3}


def rows(name: str) -> list[tuple[str, str]]:
    out = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            out.append((str(d["prompt"]), str(d["intent"])))
    return out


def scores(pred: list[str], gold: list[str]) -> str:
    label = np.mean([p == g for p, g in zip(pred, gold, strict=True)])
    model = np.mean([GROUP[p] == GROUP[g] for p, g in zip(pred, gold, strict=True)])
    return f"{label:.3f} / {model:.3f}"


def main() -> None:
    spec = load_intent_spec()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_onnx_minilm(Path(tmp))
        rules = RuleDetector(spec)
        intents = spec.intents
        chars = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2**18, alternate_sign=False)

        def features(prompts: list[str]) -> csr_matrix:
            emb = np.asarray(encoder.encode(prompts, batch_size=16))
            hits = np.array([[float(i in rules.hits(p)) for i in intents] for p in prompts])
            return hstack([csr_matrix(emb), csr_matrix(hits), chars.transform(prompts)]).tocsr()

        train = [(e, i) for i, ex in spec.examples.items() for e in ex] + [r for n in TRAIN for r in rows(n)]
        head = LogisticRegression(C=4.0, max_iter=3000).fit(
            vstack([features([p for p, _ in train])]), [i for _, i in train]
        )
        shipped = CombinedDetector(rules, SemanticDetector(spec, encoder, FitParams.load(None)))
        print(f"trained on {len(train)} prompts; label / model accuracy")
        print(f"{'set':32} {'shipped combined':>18} {'linear head':>14}")
        for name in VALIDATION + (TEST if "--test" in sys.argv[1:] else []):
            data = rows(name)
            gold = [i for _, i in data]
            mine = [shipped.detect(p).intent for p, _ in data]
            probe = list(head.predict(features([p for p, _ in data])))
            print(f"{name:32} {scores(mine, gold):>18} {scores(probe, gold):>14}")


if __name__ == "__main__":
    main()
