"""TF-IDF (character and word n-grams) + a linear model: the bar every transformer run must beat."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from pipeline.artifacts import (
    BASELINE_FILE,
    FIT_SPLITS,
    Scorer,
    load_baseline,
    model_dir,
    read_info,
    run_name,
    save_baseline,
)
from pipeline.config import BaselineConfig, Config
from pipeline.data import SPLITS, load_split, splits_sha256
from pipeline.jobs import exclusive
from pipeline.labels import LabelMap, load_labels
from pipeline.metrics import calibrated_metrics, classification_metrics, softmax
from pipeline.runs import RunResult, finish_run
from pipeline.tracking import Tracker, run_tags
from pipeline.uncertainty import paired_test

KIND = "baseline"


def build(cfg: BaselineConfig, c: float, n_docs: int, seed: int) -> Pipeline:
    """TF-IDF union (char_wb + word n-grams, sublinear tf) feeding a class-weighted linear model."""
    min_df = cfg.min_df if n_docs >= 200 else 1  # tiny corpora have no repeated rare n-grams
    features = FeatureUnion([
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=cfg.char_ngrams, sublinear_tf=True,
                                 min_df=min_df, max_features=cfg.max_features)),
        ("word", TfidfVectorizer(analyzer="word", ngram_range=cfg.word_ngrams, sublinear_tf=True,
                                 min_df=min_df, max_features=cfg.max_features, token_pattern=r"(?u)\b\w+\b")),
    ])
    weight = "balanced" if cfg.class_weight == "balanced" else None
    clf = (LogisticRegression(C=c, class_weight=weight, max_iter=3000, random_state=seed)
           if cfg.classifier == "logreg" else LinearSVC(C=c, class_weight=weight, random_state=seed))
    return Pipeline([("tfidf", features), ("clf", clf)])


def logits(pipe: Pipeline, texts: list[str]) -> np.ndarray:
    """Scores whose softmax is the model's probability: log-probabilities or SVM margins."""
    if hasattr(pipe, "predict_proba"):
        return np.log(np.clip(pipe.predict_proba(texts), 1e-12, 1.0))
    return np.asarray(pipe.decision_function(texts), dtype=float)


def full_logits(pipe: Pipeline, texts: list[str], n_labels: int) -> np.ndarray:
    """Logits over the whole label set, even for labels absent from training."""
    raw = logits(pipe, texts)
    out = np.full((len(texts), n_labels), -1e4)
    out[:, pipe.classes_] = raw if raw.ndim == 2 else np.stack([-raw, raw], axis=1)
    return out


def select(cfg: Config, labels: LabelMap, train: list[dict], val: list[dict]) -> tuple[Pipeline, dict[str, Any]]:
    """Fit one model per C and keep the best by validation macro-F1."""
    x_tr, y_tr, y_val = [r["text"] for r in train], labels.encode(train), labels.encode(val)
    best, trials = None, []
    for c in cfg.baseline.C:
        pipe = build(cfg.baseline, c, len(train), cfg.train.seed).fit(x_tr, y_tr)
        probs = softmax(full_logits(pipe, [r["text"] for r in val], len(labels)))
        f1 = classification_metrics(y_val, probs, list(labels.ids))["macro_f1"]
        trials.append({"C": c, "val_macro_f1": f1})
        if best is None or f1 > best[1]:
            best = (pipe, f1, c)
    return best[0], {"C": best[2], "grid": trials}


def train_baseline(cfg: Config) -> RunResult:
    """Fit, calibrate and evaluate the baseline on the prepared splits; write a model directory, log the run."""
    tracker = Tracker(cfg)  # connects first: an unreachable server fails before anything is written
    out = model_dir(cfg, KIND)
    with exclusive(out, "model directory"):
        return _train_baseline(cfg, tracker, out)


def _train_baseline(cfg: Config, tracker: Tracker, out: Path) -> RunResult:
    labels = load_labels(cfg.labels)
    splits = {s: load_split(cfg, s) for s in SPLITS}
    with tracker.run(run_name(cfg, KIND), "baseline", run_tags(cfg, list(labels.ids), "tfidf")):
        started = time.time()
        pipe, chosen = select(cfg, labels, splits["train"], splits["validation"])
        scored = {s: full_logits(pipe, [r["text"] for r in splits[s]], len(labels)) for s in ("validation", "test")}
        metrics, temp, probs = calibrated_metrics({s: partial(softmax, lg) for s, lg in scored.items()},
                                                  {s: labels.encode(splits[s]) for s in scored}, list(labels.ids))
        metrics["baseline"] = chosen
        metrics["train_seconds"] = round(time.time() - started, 1)
        tracker.log_metrics({"baseline_C": chosen["C"]})
        return finish_run(tracker, out, kind=KIND, cfg=cfg, labels=labels, metrics=metrics,
                          temperature=temp, save_weights=partial(save_baseline, pipe), test_rows=splits["test"],
                          test_probs=probs["test"],
                          extra={BASELINE_FILE: {"kind": "tfidf", "classifier": cfg.baseline.classifier, **chosen}})


class BaselineScorer(Scorer):
    """A saved baseline ready for inference."""

    kind = KIND

    def __init__(self, directory: str | Path) -> None:
        super().__init__(directory)
        self.pipe = load_baseline(directory)

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities for normalised texts, and their word counts."""
        if not texts:
            return np.zeros((0, len(self.labels))), np.zeros(0, dtype=int)
        probs = softmax(full_logits(self.pipe, texts, len(self.labels)), self.temperature)
        return probs, np.asarray([len(t.split()) for t in texts])


def against_baseline(cfg: Config, rows: list[dict[str, Any]], probs: np.ndarray) -> dict[str, Any] | None:
    """A model's test predictions against this config's baseline on the same articles (paired bootstrap, McNemar);
    None when no baseline learned from the same train and validation splits (compared by their sha256)."""
    directory = model_dir(cfg, KIND)
    if not (directory / "model_info.json").is_file() or \
            read_info(directory).get("fit_sha256") != splits_sha256(cfg, FIT_SPLITS):
        return None
    scorer = BaselineScorer(directory)
    base = scorer.score([r["text"] for r in rows])[0]  # prepared rows are normalised already
    paired = paired_test(scorer.labels.encode(rows), probs.argmax(axis=1), base.argmax(axis=1), len(scorer.labels))
    return {"baseline": directory.name, **paired}
