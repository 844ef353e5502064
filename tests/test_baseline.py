import json

import numpy as np
import pytest

from pipeline.baseline import BaselineScorer, train_baseline
from pipeline.config import load_config
from pipeline.data import load_split, prepare


@pytest.fixture
def prepared(overrides):
    cfg = load_config(overrides=overrides)
    prepare(cfg)
    return cfg


@pytest.mark.parametrize("classifier", ["logreg", "linear_svc"])
def test_baseline_learns_and_reloads(prepared, classifier):
    cfg = prepared.model_copy(update={"baseline": prepared.baseline.model_copy(update={"classifier": classifier})})
    result = train_baseline(cfg)
    out, metrics = result.model_dir, result.metrics
    assert metrics["test"]["accuracy"] >= 0.9
    assert metrics["baseline"]["C"] in cfg.baseline.C and len(metrics["baseline"]["grid"]) == len(cfg.baseline.C)
    assert {"model.joblib", "baseline.json", "labels.json", "pipeline.yaml", "metrics.json", "calibration.json",
            "classification_report.txt", "confusion_matrix.png", "errors.csv"} <= {p.name for p in out.iterdir()}
    rows = load_split(cfg, "test")
    probs = BaselineScorer(out).predict_proba([r["text"] for r in rows])
    assert probs.shape == (len(rows), 7) and np.allclose(probs.sum(axis=1), 1)
    labels = json.loads((out / "labels.json").read_text())["ids"]
    acc = np.mean([labels[i] == r["label"] for i, r in zip(probs.argmax(1), rows, strict=True)])
    assert acc == pytest.approx(metrics["test"]["accuracy"])


def test_baseline_needs_prepared_data(overrides):
    from pipeline.errors import DataError

    with pytest.raises(DataError, match=r"train\.jsonl: not prepared; run `pipeline prepare`"):
        train_baseline(load_config(overrides=overrides))


def test_a_lead_baseline_reads_the_title_and_lead_only(prepared):
    cfg = prepared.model_copy(update={"baseline": prepared.baseline.model_copy(update={"lead_words": 12})})
    result = train_baseline(cfg)
    assert result.model_dir.name.endswith("-tfidf-logreg-lead12")  # beside the full-text model, not over it
    assert load_config(overrides=["baseline.lead_words=12"]).baseline.lead_words == 12
    scorer = BaselineScorer(result.model_dir)
    rows = load_split(cfg, "test")
    lead = [" ".join(r["text"].split()[:12]) for r in rows]
    tails = [f"{t} {' '.join(rows[(i + 1) % len(rows)]['text'].split()[12:])}" for i, t in enumerate(lead)]
    # the words after the 12th are another article's, and change nothing: the cut is part of the saved model
    assert np.allclose(scorer.predict_proba(lead), scorer.predict_proba(tails))
    full = BaselineScorer(train_baseline(prepared).model_dir)
    assert not np.allclose(full.predict_proba(lead), full.predict_proba(tails))
