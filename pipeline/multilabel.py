"""Multi-label mode (`labels.mode: multi`): sigmoid probabilities per label, per-label thresholds tuned on
validation, the predicted label sets, and their metrics (scikit-learn) next to the primary-label ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_curve
from sklearn.metrics import precision_recall_fscore_support as prfs
from sklearn.preprocessing import MultiLabelBinarizer

from pipeline.metrics import classification_metrics, report_text
from pipeline.uncertainty import bootstrap_intervals, label_set_intervals

DEFAULT_THRESHOLD = 0.5  # for a label that validation has no positive of


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Element-wise logistic function of logits divided by a temperature."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / temperature))


def label_sets(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Every row's applicable labels: its `labels` list, or `[label]` where it has none."""
    return [list(r.get("labels") or [r["label"]]) for r in rows]


def multi_hot(sets: Sequence[Sequence[str]], names: Sequence[str]) -> np.ndarray:
    """An indicator matrix (rows x labels, in label-set order) of label lists."""
    return MultiLabelBinarizer(classes=list(names)).fit_transform(sets).astype(np.int64)


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Per label, the probability cut-off that maximises that label's F1 on these rows (validation, never test).

    A label with no positive row keeps 0.5. Of equally good cut-offs the highest is kept (fewer false positives),
    moved halfway down to the next lower validation probability, so that it sits between the scores it separates.
    """
    out = {}
    for j, name in enumerate(names):
        if not y_true[:, j].any():
            out[name] = DEFAULT_THRESHOLD
            continue
        precision, recall, cuts = precision_recall_curve(y_true[:, j], probs[:, j])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]
        lower = cuts[best - 1] if best > 0 else 0.0
        out[name] = float((cuts[best] + lower) / 2)
    return out


def threshold_vector(thresholds: dict[str, float] | None, names: Sequence[str]) -> np.ndarray:
    """Thresholds in label-set order (0.5 where none is given)."""
    return np.asarray([(thresholds or {}).get(n, DEFAULT_THRESHOLD) for n in names], dtype=np.float64)


def predict_multi_hot(probs: np.ndarray, thresholds: dict[str, float] | None, names: Sequence[str]) -> np.ndarray:
    """Labels at or above their threshold, and always the most probable one (every article has a primary)."""
    pred = (probs >= threshold_vector(thresholds, names)).astype(np.int64)
    if len(probs):
        pred[np.arange(len(probs)), probs.argmax(axis=1)] = 1
    return pred


def predicted_sets(probs: np.ndarray, thresholds: dict[str, float] | None, names: Sequence[str]) -> list[list[str]]:
    """Per row the predicted labels: the primary (argmax) first, then the others by falling probability."""
    pred = predict_multi_hot(probs, thresholds, names)
    return [[names[j] for j in np.argsort(-p, kind="stable") if on[j]] for p, on in zip(probs, pred, strict=True)]


def multilabel_metrics(y: np.ndarray, y_true: np.ndarray, probs: np.ndarray, thresholds: dict[str, float] | None,
                       names: Sequence[str]) -> dict[str, Any]:
    """The primary-label metrics under single mode's keys (argmax against `label`; ECE of the top label's sigmoid
    probability, the predictor's `confidence`; log loss of the probabilities scaled to sum to one), plus the
    label-set metrics: micro/macro F1, subset accuracy, Hamming loss, per label."""
    metrics = classification_metrics(y, probs, list(names))
    pred = predict_multi_hot(probs, thresholds, names)
    empty = not len(y)
    zeros = np.zeros(len(names))
    p, r, f, s = (zeros, zeros, zeros, zeros) if empty else prfs(y_true, pred, average=None, zero_division=0)
    metrics.update({
        "multilabel_micro_f1": 0.0 if empty else float(f1_score(y_true, pred, average="micro", zero_division=0)),
        "multilabel_macro_f1": 0.0 if empty else float(f1_score(y_true, pred, average="macro", zero_division=0)),
        "subset_accuracy": 0.0 if empty else float(accuracy_score(y_true, pred)),
        "hamming_loss": 0.0 if empty else float(hamming_loss(y_true, pred)),
        "labels_per_doc": {"true": float(y_true.sum(1).mean()) if not empty else 0.0,
                           "predicted": float(pred.sum(1).mean()) if not empty else 0.0},
        "per_label": {n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
                          "threshold": float(threshold_vector(thresholds, names)[i])} for i, n in enumerate(names)},
    })
    return metrics


def multilabel_report(y: np.ndarray, y_true: np.ndarray, probs: np.ndarray, thresholds: dict[str, float] | None,
                      names: Sequence[str]) -> str:
    """The primary-label text report, then sklearn's report over label sets."""
    from sklearn.metrics import classification_report

    sets = classification_report(y_true, predict_multi_hot(probs, thresholds, names), target_names=list(names),
                                 digits=3, zero_division=0) if len(y) else ""
    return f"primary label (argmax)\n{report_text(y, probs, list(names))}\nall labels (thresholds)\n{sets}"


def calibrated_multilabel(probs_at: dict[str, Any], y: dict[str, np.ndarray], y_true: dict[str, np.ndarray],
                          names: Sequence[str]) -> tuple[dict[str, Any], dict[str, float], dict[str, np.ndarray]]:
    """Thresholds tuned on validation (never test), then every split scored with them.

    `probs_at[split]()` gives the split's per-label probabilities. No temperature is fitted: the thresholds are
    the calibration that decides labels. Returns the metrics per split, the thresholds and the probabilities.
    """
    probs = {split: np.asarray(fn(), dtype=np.float64) for split, fn in probs_at.items()}
    thresholds = tune_thresholds(y_true["validation"], probs["validation"], names)
    metrics = {split: multilabel_metrics(y[split], y_true[split], probs[split], thresholds, names) for split in probs}
    for m in metrics.values():
        m["ece_uncalibrated"] = m["ece"]
    if "test" in metrics:  # the primary label's intervals, and those of the label-set F1s
        metrics["test"]["intervals"] = bootstrap_intervals(y["test"], probs["test"].argmax(axis=1), list(names)) | \
            label_set_intervals(y_true["test"], predict_multi_hot(probs["test"], thresholds, names))
    return metrics, thresholds, probs
