"""Would a trained linear head beat the shipped top-k example matcher? Model accuracy on the validation sets.

Trains a logistic regression on MiniLM embeddings + rule hits (+ character n-grams, which carry the non-English
cues MiniLM-L6 cannot read) over the training data, and prints label and model accuracy (the workshop catalog's
four model groups) on both validation sets beside the shipped combined detector. Test sets are read only
with --test (measure a final candidate once, and record every such measurement in docs/router.md).

    python benchmarks/bench_routing_probe.py [--test]   # needs scikit-learn (installed with sentence-transformers)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from lokal.embeddings.onnx import load_onnx_minilm
from lokal.router.catalog import load_catalog
from lokal.router.evaluate import Labeled, read_labeled, score_models
from lokal.router.intents import (
    CombinedDetector,
    FitParams,
    RuleDetector,
    SemanticDetector,
    load_intent_spec,
    shipped_data_path,
)

TRAIN = ["labeled-fit.jsonl", "labeled-train-v3.jsonl"]
VALIDATION = ["labeled-heldout.jsonl", "labeled-validation-v3.jsonl"]
TEST = ["labeled-heldout-v2.jsonl", "labeled-heldout-v3.jsonl"]
CATALOG = load_catalog(shipped_data_path("workshop-router.yaml"))


def scores(pred: list[str], data: list[Labeled], intents: list[str]) -> str:
    """Label / model accuracy, the model counted as `route eval` counts it (the workshop catalog's policy)."""
    label = np.mean([p == r.intent for p, r in zip(pred, data, strict=True)])
    return f"{label:.3f} / {score_models(CATALOG, data, pred, intents).accuracy:.3f}"


def main() -> None:
    spec = load_intent_spec()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_onnx_minilm(Path(tmp))
        rules = RuleDetector(spec)
        intents = spec.intents
        chars = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2**18, alternate_sign=False)

        def features(prompts: list[str]) -> csr_matrix:
            emb = np.asarray(encoder.encode(prompts, batch_size=16))
            hits = np.array([[float(i in found) for i in intents] for found in map(rules.hits, prompts)])
            return hstack([csr_matrix(emb), csr_matrix(hits), chars.transform(prompts)]).tocsr()

        train = [Labeled(e, i) for i, ex in spec.examples.items() for e in ex]
        train += [r for n in TRAIN for r in read_labeled(shipped_data_path(n))]
        head = LogisticRegression(C=4.0, max_iter=3000).fit(
            features([r.prompt for r in train]), [r.intent for r in train]
        )
        shipped = CombinedDetector(rules, SemanticDetector(spec, encoder, FitParams.load(None)))
        print(f"trained on {len(train)} prompts; label / model accuracy")
        print(f"{'set':32} {'shipped combined':>18} {'linear head':>14}")
        for name in VALIDATION + (TEST if "--test" in sys.argv[1:] else []):
            data = read_labeled(shipped_data_path(name))
            mine = [shipped.detect(r.prompt).intent for r in data]
            probe = list(head.predict(features([r.prompt for r in data])))
            print(f"{name:32} {scores(mine, data, intents):>18} {scores(probe, data, intents):>14}")


if __name__ == "__main__":
    main()
