"""`pipeline audit-labels`: likely label errors in a prepared corpus, found with out-of-fold TF-IDF probabilities and
cleanlab's confident learning.

Every prepared row (train, validation and test: a wrong label anywhere misleads training or scoring) gets a
probability from a baseline that never saw it: stratified k-fold, seeded by `train.seed`, each fold a fresh
`baseline.build` with the config's baseline section. C is picked once from `baseline.C` the way `pipeline baseline`
picks it (fit on train, best validation macro-F1); one temperature fitted on the out-of-fold logits makes the
probabilities comparable across folds (and gives the SVM's margins a probability scale). cleanlab then flags the
rows whose given label the out-of-fold model contradicts (`find_label_issues`, pruned by noise rate) and ranks them
by label quality (`get_label_quality_scores`, self-confidence: the probability of the given label, low = likely
wrong). `--model transformer` swaps the baseline for k fine-tunes of the configured backbone
(`audit_transformer.py`); the ranking is the same.
"""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.baseline import build, full_logits, select
from pipeline.config import Config
from pipeline.data import SPLITS, load_split
from pipeline.errors import ConfigError
from pipeline.jobs import exclusive
from pipeline.labels import LabelMap, load_labels
from pipeline.metrics import classification_metrics, fit_temperature, softmax
from pipeline.tracking import Tracker, run_tags

KIND = "audit"
ISSUES_CSV = "label_issues.csv"
AUDIT_JSON = "audit.json"
COLUMNS = ("rank", "id", "split", "given_label", "suggested_label", "score", "p_given", "p_suggested", "lead")
RANKED_BY = "self_confidence"  # cleanlab's ranking and score method: the out-of-fold probability of the given label
FILTER_BY = "prune_by_noise_rate"  # cleanlab's default: how many rows of each (given, true) pair to flag
LEAD_CHARS = 200
# (config, label set, rows, folds) -> out-of-fold probabilities (rows x labels), and what produced them
OutOfFold = Callable[[Config, LabelMap, list[dict[str, Any]], int], tuple[np.ndarray, dict[str, Any]]]


@dataclass
class AuditResult:
    """What an audit wrote: the output directory, the summary (`audit.json`) and the flagged rows, worst first."""

    output: Path
    summary: dict[str, Any]
    issues: list[dict[str, Any]]
    run_id: str | None = None


def audit_dir(cfg: Config) -> Path:
    """The default output directory: `<output_dir>/<data.name>-label-audit`."""
    return Path(cfg.output_dir) / f"{cfg.data.name}-label-audit"


def audit_labels(cfg: Config, folds: int = 5, output: str | Path | None = None,
                 oof: OutOfFold | None = None) -> AuditResult:
    """Audit every prepared row's label; write `label_issues.csv` and `audit.json`, log both as an `audit` run.

    `oof` gives the out-of-fold probabilities: the TF-IDF baseline by default (`tfidf_out_of_fold`).
    """
    oof = oof or tfidf_out_of_fold
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    rows = [{**r, "_split": s} for s in SPLITS for r in load_split(cfg, s)]  # a clear error before any fit
    if len(rows) < folds:
        raise ConfigError(f"--folds {folds} is more than the {len(rows)} prepared rows")
    tracker = Tracker(cfg)  # connects first: an unreachable server fails before anything is written
    out = Path(output) if output else audit_dir(cfg)
    labels = load_labels(cfg.labels)
    family = "tfidf" if oof is tfidf_out_of_fold else "transformer"
    with exclusive(out, "output directory"), \
            tracker.run(f"{cfg.data.name}-label-audit", KIND, run_tags(cfg, list(labels.ids), family),
                        params={"audit.folds": folds, "audit.model": family, "audit.ranked_by": RANKED_BY,
                                "audit.filter_by": FILTER_BY}):
        started = time.time()
        probs, model = oof(cfg, labels, rows, folds)
        y = labels.encode(rows)
        issues = rank_issues(rows, y, probs, labels)
        scores = classification_metrics(y, probs, list(labels.ids))
        summary = {
            "dataset": cfg.data.name, "rows_audited": len(rows), "folds": folds, "seed": cfg.train.seed,
            "model": model,
            "cleanlab": {"filter_by": FILTER_BY, "ranked_by": RANKED_BY},
            "issues_flagged": len(issues),
            "issues_by_label": {lb: Counter(i["given_label"] for i in issues)[lb] for lb in labels.ids},
            "issues_by_split": {s: Counter(i["split"] for i in issues)[s] for s in SPLITS},
            "oof_macro_f1": scores["macro_f1"], "oof_accuracy": scores["accuracy"],
            "seconds": round(time.time() - started, 1),
        }
        write_outputs(out, summary, issues)
        tracker.log_metrics({"rows_audited": len(rows), "issues_flagged": len(issues),
                             "oof_macro_f1": scores["macro_f1"], "oof_accuracy": scores["accuracy"],
                             **({"baseline_C": model["C"]} if "C" in model else {}),
                             **{f"issues_{lb}": n for lb, n in summary["issues_by_label"].items()}})
        tracker.log_files([out / ISSUES_CSV, out / AUDIT_JSON])
        return AuditResult(out, summary, issues, tracker.run_id)


def tfidf_out_of_fold(cfg: Config, labels: LabelMap, rows: list[dict[str, Any]],
                      folds: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Out-of-fold probabilities of the TF-IDF baseline at one C from the config's grid."""
    c = pick_c(cfg, labels)
    probs, temperature = out_of_fold(cfg, labels, rows, folds, c)
    return probs, {"kind": "tfidf", "classifier": cfg.baseline.classifier, "C": c, "temperature": temperature}


def fold_splits(cfg: Config, y: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold (fit, held-out) indices, seeded by `train.seed`.

    A label with fewer rows than folds only warns: its rows are still scored, by folds that lack it.
    """
    from sklearn.model_selection import StratifiedKFold

    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.train.seed)
    strata = y if np.bincount(y).max() >= folds else np.zeros(len(y), dtype=int)
    return list(kfold.split(np.zeros(len(y)), strata))


def pick_c(cfg: Config, labels: LabelMap) -> float:
    """C from the config's grid, chosen on the prepared train/validation split as `pipeline baseline` does."""
    if len(cfg.baseline.C) == 1:
        return cfg.baseline.C[0]
    train, val = load_split(cfg, "train"), load_split(cfg, "validation")
    if not train or not val:
        return cfg.baseline.C[0]
    return select(cfg, labels, train, val)[1]["C"]


def out_of_fold(cfg: Config, labels: LabelMap, rows: list[dict[str, Any]], folds: int,
                c: float) -> tuple[np.ndarray, float]:
    """Each row's label probabilities from a baseline fitted on the other folds, at one fitted temperature."""
    y = labels.encode(rows)
    texts = np.asarray([r["text"] for r in rows], dtype=object)
    logits = np.zeros((len(rows), len(labels)))
    for fit_idx, held_idx in fold_splits(cfg, y, folds):
        pipe = build(cfg.baseline, c, len(fit_idx), cfg.train.seed).fit(list(texts[fit_idx]), y[fit_idx])
        logits[held_idx] = full_logits(pipe, list(texts[held_idx]), len(labels))
    temperature = fit_temperature(lambda t: softmax(logits, t), y)
    return softmax(logits, temperature), temperature


def rank_issues(rows: list[dict[str, Any]], y: np.ndarray, probs: np.ndarray,
                labels: LabelMap) -> list[dict[str, Any]]:
    """cleanlab's flagged rows, most likely wrong first, as rows of `label_issues.csv`.

    Only the labels present in the corpus are passed to cleanlab (it expects every class to occur), the
    probabilities renormalised over them.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    present = np.unique(y)
    if len(present) < 2:
        return []
    local = np.searchsorted(present, y)
    p = probs[:, present] / probs[:, present].sum(axis=1, keepdims=True)
    flagged = find_label_issues(labels=local, pred_probs=p, filter_by=FILTER_BY, return_indices_ranked_by=RANKED_BY)
    scores = get_label_quality_scores(local, p, method=RANKED_BY)
    out = []
    for rank, i in enumerate(flagged, start=1):
        best = int(p[i].argmax())
        out.append({"rank": rank, "id": rows[i].get("id", ""), "split": rows[i]["_split"],
                    "given_label": labels.ids[y[i]], "suggested_label": labels.ids[present[best]],
                    "score": round(float(scores[i]), 4), "p_given": round(float(p[i, local[i]]), 4),
                    "p_suggested": round(float(p[i, best]), 4), "lead": lead(rows[i]["text"])})
    return out


def lead(text: str) -> str:
    """The first ~200 characters of a text on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= LEAD_CHARS else flat[:LEAD_CHARS].rstrip() + "…"


def write_outputs(out: Path, summary: dict[str, Any], issues: list[dict[str, Any]]) -> None:
    """`label_issues.csv` (UTF-8) and `audit.json`, each written whole before it replaces the old."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{ISSUES_CSV}.tmp"
    with tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(issues)
    tmp.replace(out / ISSUES_CSV)
    tmp = out / f".{AUDIT_JSON}.tmp"
    tmp.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(out / AUDIT_JSON)
