"""Honest uncertainty: bootstrap intervals for macro-F1 and per-label F1, and paired tests between two models.

Test splits of this domain are small (a rare label has 10-20 test articles: one article moves its F1 by 0.05-0.1),
so every figure is reported with a 95% interval from scipy's BCa bootstrap over articles, and two models are
compared on the same articles by a paired bootstrap of the macro-F1 difference and an exact McNemar test.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def per_label_f1(y: np.ndarray, pred: np.ndarray, n_labels: int, axis: int = -1) -> np.ndarray:
    """F1 of each label (first axis), vectorised over resamples; NaN where a label is neither true nor predicted."""
    y, pred = np.moveaxis(np.asarray(y), axis, -1), np.moveaxis(np.asarray(pred), axis, -1)
    ids = np.arange(n_labels)[:, None]
    true, said = y[..., None, :] == ids, pred[..., None, :] == ids
    tp, support = (true & said).sum(-1), true.sum(-1) + said.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support > 0, 2 * tp / support, np.nan)
    return np.moveaxis(f1, -1, 0)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_labels: int, axis: int = -1) -> np.ndarray:
    """Macro-F1 over the labels present in the truth or the predictions (scikit-learn's default)."""
    return np.nanmean(per_label_f1(y, pred, n_labels, axis), axis=0)


def _interval(low: Any, high: Any) -> list[float]:
    return [round(float(low), 4), round(float(high), 4)]


def bootstrap_intervals(y: np.ndarray, pred: np.ndarray, labels: list[str], resamples: int = RESAMPLES,
                        seed: int = SEED) -> dict[str, Any]:
    """95% BCa bootstrap intervals (over articles) for macro-F1, accuracy and each label's F1."""
    from scipy.stats import bootstrap

    y, pred, k = np.asarray(y), np.asarray(pred), len(labels)
    if len(y) < 2 or len(np.unique(y)) < 2:
        return {}

    def interval(data: tuple[np.ndarray, ...], statistic: Any) -> Any:
        """BCa; where it is undefined (every resample equal, e.g. a perfect model), the percentile interval."""
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=resamples,
                           confidence_level=LEVEL, method="BCa", random_state=seed).confidence_interval
            if not np.all(np.isfinite(ci.low) & np.isfinite(ci.high)):
                fallback = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=resamples,
                                     confidence_level=LEVEL, method="percentile", random_state=seed)
                ci = type(ci)(np.where(np.isfinite(ci.low), ci.low, fallback.confidence_interval.low),
                              np.where(np.isfinite(ci.high), ci.high, fallback.confidence_interval.high))
        return ci

    macro = interval((y, pred), lambda a, b, axis: macro_f1(a, b, k, axis))
    acc = interval((y == pred,), lambda a, axis: a.mean(axis=axis))
    per = interval((y, pred), lambda a, b, axis: np.nan_to_num(per_label_f1(a, b, k, axis)))
    return {"level": LEVEL, "method": f"BCa bootstrap over {len(y)} articles, {resamples} resamples",
            "macro_f1": _interval(macro.low, macro.high), "accuracy": _interval(acc.low, acc.high),
            "per_class_f1": {lb: _interval(np.nan_to_num(per.low[i]), np.nan_to_num(per.high[i]))
                             for i, lb in enumerate(labels)}}


def label_set_intervals(y_true: np.ndarray, pred: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                        ) -> dict[str, list[float]]:
    """95% percentile bootstrap intervals (over articles) for multi-label micro- and macro-F1 of label sets, from
    multi-hot truth and predictions (articles x labels); a label never true nor predicted scores 0, as in
    scikit-learn with zero_division=0."""
    from scipy.stats import bootstrap

    t, p = np.asarray(y_true, dtype=bool), np.asarray(pred, dtype=bool)
    if len(t) < 2:
        return {}
    tp, wrong = (t & p).astype(np.float32), (t ^ p).astype(np.float32)

    def scores(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b = tp[idx].sum(-2), wrong[idx].sum(-2)  # per resample and label: true positives, FP + FN
        with np.errstate(invalid="ignore", divide="ignore"):
            per = np.where(2 * a + b > 0, 2 * a / (2 * a + b), 0.0)
            micro = np.nan_to_num(2 * a.sum(-1) / (2 * a + b).sum(-1))
        return micro, per.mean(-1)

    out = {}
    for k, name in enumerate(("multilabel_micro_f1", "multilabel_macro_f1")):
        res = bootstrap((np.arange(len(t)),), lambda i, axis, k=k: scores(np.asarray(i))[k], vectorized=True,
                        n_resamples=resamples, batch=200, confidence_level=LEVEL, method="percentile",
                        random_state=seed)
        out[name] = _interval(res.confidence_interval.low, res.confidence_interval.high)
    return out


def paired_test(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_labels: int,
                resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """Model A against model B on the same articles.

    `macro_f1_diff` is A - B with its 95% paired-bootstrap interval; `p_bootstrap` is the two-sided share of
    resamples on the other side of zero (the interval-inversion p-value); `p_mcnemar` is the exact McNemar test on
    the articles exactly one of the two models got right.
    """
    from scipy.stats import binomtest, bootstrap

    y, a, b = np.asarray(y), np.asarray(pred_a), np.asarray(pred_b)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"paired test on different rows: {len(y)}, {len(a)} and {len(b)}")
    diff = float(macro_f1(y, a, n_labels) - macro_f1(y, b, n_labels))
    only_a, only_b = int(((a == y) & (b != y)).sum()), int(((b == y) & (a != y)).sum())
    out: dict[str, Any] = {"n": len(y), "macro_f1_diff": round(diff, 4), "only_a_right": only_a,
                           "only_b_right": only_b,
                           "p_mcnemar": float(binomtest(only_a, only_a + only_b).pvalue) if only_a + only_b else 1.0}
    if len(y) < 2:
        return out
    with np.errstate(all="ignore"):
        res = bootstrap((y, a, b), lambda t, p, q, axis: macro_f1(t, p, n_labels, axis) - macro_f1(t, q, n_labels,
                                                                                                    axis),
                        paired=True, vectorized=True, n_resamples=resamples, confidence_level=LEVEL,
                        method="percentile", random_state=seed)
    dist = res.bootstrap_distribution
    out["macro_f1_diff_interval"] = _interval(res.confidence_interval.low, res.confidence_interval.high)
    out["p_bootstrap"] = round(float(min(1.0, 2 * min((dist <= 0).mean(), (dist >= 0).mean()))), 4)
    return out
