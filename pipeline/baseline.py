"""TF-IDF (character and word n-grams) + a linear model: the bar every transformer run must beat.

In multi-label mode (`labels.mode: multi`) the same linear model runs one-vs-rest, one binary model per label: its
decision values are per-label log-odds, whose sigmoid is the label's probability; the primary label is their argmax.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from pipeline.artifacts import (
    BASELINE_FILE,
    Scorer,
    fitted_here,
    load_baseline,
    model_dir,
    run_name,
    save_baseline,
)
from pipeline.config import BaselineConfig, Config
from pipeline.data import SPLITS, load_split
from pipeline.jobs import exclusive
from pipeline.labels import LabelMap, load_labels
from pipeline.metrics import calibrated_metrics, classification_metrics, softmax
from pipeline.multilabel import calibrated_multilabel, label_sets, multi_hot, sigmoid
from pipeline.runs import RunResult, finish_run
from pipeline.tracking import Tracker, run_tags
from pipeline.uncertainty import paired_test

KIND = "baseline"


def leads(texts: list[str], words: int) -> list[str]:
    """The first `words` words of each text: the title and the lead, from which annotators label."""
    return [" ".join(t.split()[:words]) for t in texts]


def build(cfg: BaselineConfig, c: float, n_docs: int, seed: int, multi: bool = False) -> Pipeline:
    """TF-IDF union (char_wb + word n-grams, sublinear tf) feeding a class-weighted linear model (one-vs-rest,
    one binary model per label, in multi-label mode); with `lead_words`, of the title and lead only (a step of the
    pipeline, so that every scorer of the saved model reads the same words)."""
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
    lead = [("lead", FunctionTransformer(leads, kw_args={"words": cfg.lead_words}))] if cfg.lead_words else []
    return Pipeline([*lead, ("tfidf", features), ("clf", OneVsRestClassifier(clf) if multi else clf)])


def multi_logits(pipe: Pipeline, texts: list[str]) -> np.ndarray:
    """Per-label log-odds (SVM margins) of a one-vs-rest model; a label that training never (always) saw is
    impossible (certain)."""
    out = np.asarray(pipe.decision_function(texts), dtype=float).reshape(len(texts), -1)
    for j, est in enumerate(pipe.named_steps["clf"].estimators_):
        if not hasattr(est, "coef_"):  # sklearn's constant predictor for a label without both classes
            out[:, j] = 1e4 if np.ravel(est.y_)[0] else -1e4
    return out


def logits(pipe: Pipeline, texts: list[str]) -> np.ndarray:
    """Scores whose softmax is the model's probability: log-probabilities or SVM margins."""
    if hasattr(pipe, "predict_proba"):
        return np.log(np.clip(pipe.predict_proba(texts), 1e-12, 1.0))
    return np.asarray(pipe.decision_function(texts), dtype=float)


def full_logits(pipe: Pipeline, texts: list[str], n_labels: int) -> np.ndarray:
    """Logits over the whole label set, even for labels absent from training (per-label log-odds for a
    one-vs-rest model)."""
    if isinstance(pipe.named_steps["clf"], OneVsRestClassifier):
        return multi_logits(pipe, texts)
    raw = logits(pipe, texts)
    out = np.full((len(texts), n_labels), -1e4)
    out[:, pipe.classes_] = raw if raw.ndim == 2 else np.stack([-raw, raw], axis=1)
    return out


def select(cfg: Config, labels: LabelMap, train: list[dict], val: list[dict]) -> tuple[Pipeline, dict[str, Any]]:
    """Fit one model per C and keep the best by validation macro-F1 (of the primary label, in multi-label mode)."""
    multi = cfg.labels.mode == "multi"
    x_tr, y_tr, y_val = [r["text"] for r in train], labels.encode(train), labels.encode(val)
    if multi:
        y_tr = multi_hot(label_sets(train), labels.ids)
    best, trials = None, []
    for c in cfg.baseline.C:
        pipe = build(cfg.baseline, c, len(train), cfg.train.seed, multi).fit(x_tr, y_tr)
        lg = full_logits(pipe, [r["text"] for r in val], len(labels))
        probs = sigmoid(lg) if multi else softmax(lg)
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
        y = {s: labels.encode(splits[s]) for s in scored}
        thresholds = None
        if cfg.labels.mode == "multi":  # no temperature: per-label thresholds, tuned on validation, decide
            y_true = {s: multi_hot(label_sets(splits[s]), labels.ids) for s in scored}
            metrics, thresholds, probs = calibrated_multilabel({s: partial(sigmoid, lg) for s, lg in scored.items()},
                                                               y, y_true, list(labels.ids))
            temp = 1.0
        else:
            metrics, temp, probs = calibrated_metrics({s: partial(softmax, lg) for s, lg in scored.items()}, y,
                                                      list(labels.ids))
        metrics["baseline"] = chosen
        metrics["train_seconds"] = round(time.time() - started, 1)
        tracker.log_metrics({"baseline_C": chosen["C"]})
        return finish_run(tracker, out, kind=KIND, cfg=cfg, labels=labels, metrics=metrics,
                          temperature=temp, save_weights=partial(save_baseline, pipe), test_rows=splits["test"],
                          test_probs=probs["test"], thresholds=thresholds,
                          extra={BASELINE_FILE: {"kind": "tfidf", "classifier": cfg.baseline.classifier, **chosen}})


class BaselineScorer(Scorer):
    """A saved baseline ready for inference."""

    kind = KIND

    def __init__(self, directory: str | Path) -> None:
        super().__init__(directory)
        self.pipe = load_baseline(directory)

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities (per-label sigmoid ones for a multi-label model) for normalised texts, and
        their word counts."""
        if not texts:
            return np.zeros((0, len(self.labels))), np.zeros(0, dtype=int)
        lg = full_logits(self.pipe, texts, len(self.labels))
        probs = sigmoid(lg, self.temperature) if self.multi else softmax(lg, self.temperature)
        return probs, np.asarray([len(t.split()) for t in texts])


def against_baseline(cfg: Config, rows: list[dict[str, Any]], probs: np.ndarray) -> dict[str, Any] | None:
    """A model's test predictions against this config's baseline on the same articles (paired bootstrap, McNemar);
    None when no baseline learned from the same train and validation splits (compared by their sha256)."""
    directory = fitted_here(cfg, KIND)
    if directory is None:
        return None
    scorer = BaselineScorer(directory)
    base = scorer.score([r["text"] for r in rows])[0]  # prepared rows are normalised already
    paired = paired_test(scorer.labels.encode(rows), probs.argmax(axis=1), base.argmax(axis=1), len(scorer.labels))
    return {"baseline": directory.name, **paired}
