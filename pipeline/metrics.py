"""Classification metrics (scikit-learn), calibration error, temperature fitting, and plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, log_loss
from sklearn.metrics import precision_recall_fscore_support as prfs

from pipeline.uncertainty import bootstrap_intervals


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE: mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    if len(y_true) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def _renormalised(probs: np.ndarray) -> np.ndarray:
    clipped = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """accuracy, macro/weighted F1, ECE, log loss, per-class precision/recall/F1/support, confusion matrix."""
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    ids = list(range(len(labels)))
    p, r, f, s = prfs(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(probs, y_true),
        "log_loss": float(log_loss(y_true, _renormalised(probs), labels=ids)) if len(y_true) else 0.0,
        "n": len(y_true),
        "per_class": {lb: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, lb in enumerate(labels)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def report_text(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> str:
    """sklearn's per-class text report."""
    return classification_report(y_true, probs.argmax(axis=1), labels=list(range(len(labels))),
                                 target_names=labels, digits=3, zero_division=0)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits divided by a temperature."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs_fn: Callable[[float], np.ndarray], y_true: np.ndarray) -> float:
    """Temperature minimising validation NLL; `probs_fn(T)` returns document probabilities at T."""
    from scipy.optimize import minimize_scalar

    if len(y_true) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        probs = probs_fn(float(np.exp(log_t)))
        return float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1)).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def calibrated_metrics(probs_at: dict[str, Callable[[float], np.ndarray]], y: dict[str, np.ndarray],
                       labels: list[str], calibrate: bool = True,
                       ) -> tuple[dict[str, Any], float, dict[str, np.ndarray]]:
    """Fit a temperature on validation (never on test), then score every split at it.

    `probs_at[split](T)` gives the split's document probabilities at temperature T. Returns the metrics per split
    (with `ece_uncalibrated`, the ECE at T = 1, and on test the bootstrap `intervals`), the temperature, and the
    calibrated probabilities.
    """
    temp = fit_temperature(probs_at["validation"], y["validation"]) if calibrate else 1.0
    metrics, probs = {}, {}
    for split, probs_fn in probs_at.items():
        probs[split] = probs_fn(temp)
        metrics[split] = classification_metrics(y[split], probs[split], labels)
        metrics[split]["ece_uncalibrated"] = expected_calibration_error(probs_fn(1.0), np.asarray(y[split]))
    if "test" in probs:
        metrics["test"]["intervals"] = bootstrap_intervals(y["test"], probs["test"].argmax(axis=1), labels)
    return metrics, temp, probs


def plot_confusion(matrix: list[list[int]], labels: list[str], path: str | Path, title: str = "") -> Path:
    """Counts and row-normalised confusion matrices side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.9 * len(labels) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), constrained_layout=True)
    for ax, data, name, fmt in ((axes[0], cm, "counts", "{:.0f}"), (axes[1], norm, "row-normalised", "{:.2f}")):
        ax.imshow(data, cmap="Blues", vmin=0, vmax=data.max() or 1)
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true",
               title=f"{title} ({name})".strip())
        ax.set_xticklabels(labels, rotation=45, ha="right")
        ax.set_yticklabels(labels)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center",
                        color="white" if data[i, j] > 0.6 * (data.max() or 1) else "black", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_drift(profile: dict[str, Any], report: dict[str, Any], path: str | Path) -> Path:
    """A drift report as one panel per dimension, training (or test split) against the dump; flagged ones in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = report["dimensions"]
    words, conf = profile["length"]["words"], profile["confidence"]
    labels, quality = list(profile["label_priors"]), dims["quality"]
    panels = {
        "labels": (list(profile["label_priors"].values()), list(dims["labels"]["dump_shares"].values()), labels),
        "length": (*_as_shares(words["counts"], dims["length"]["dump_word_counts"]),
                   [f"<{e:g} words" for e in words["edges"][1:]]),
        "quality": (list(quality["train"].values()), list(quality["dump"].values()), list(quality["dump"])),
        "vocabulary": ([dims["vocabulary"]["test_novelty"]], [dims["vocabulary"]["dump_novelty"]], ["unseen tokens"]),
        "confidence": (*_as_shares(conf["counts"], dims["confidence"]["dump_counts"]),
                       [f"{e:.1f}-" for e in conf["edges"][:-1]]),
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.2), constrained_layout=True)
    for ax, (name, (ref, dump, ticks)) in zip(axes, panels.items(), strict=True):
        pos = np.arange(len(ref))
        if name == "length":  # the occupied octaves only
            used = np.flatnonzero(np.asarray(ref) + np.asarray(dump))
            keep = slice(max(used.min() - 1, 0), used.max() + 2) if used.size else slice(0, 1)
            pos, ref, dump, ticks = pos[keep], ref[keep], dump[keep], ticks[keep]
        ax.bar(pos - 0.2, ref, width=0.4, label="test split" if name == "vocabulary" else "training")
        ax.bar(pos + 0.2, dump, width=0.4, label="dump")
        ax.set_xticks(pos, ticks, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.15 * max(0.01, *ref, *dump))
        ax.set_xlim(pos.min() - 0.8, pos.max() + 0.8)
        ax.set_ylabel("share", fontsize=8)
        dim = dims[name]
        ax.set_title(f"{name}: {dim['statistic']:.3g} (threshold {dim['threshold']:g})",
                     color="red" if dim["flagged"] else "black", fontsize=10)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def _as_shares(ref: list[int], dump: list[int]) -> tuple[np.ndarray, np.ndarray]:
    r, d = np.asarray(ref, dtype=float), np.asarray(dump, dtype=float)
    return r / max(r.sum(), 1.0), d / max(d.sum(), 1.0)
