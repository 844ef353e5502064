"""Evaluate a saved model (transformer or baseline) on a labelled file, alone or against a second model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.artifacts import METRICS_FILE, read_model_config, write_evaluation
from pipeline.data import load_labelled
from pipeline.errors import ModelError
from pipeline.labels import LabelMap
from pipeline.scoring import load_scorer
from pipeline.uncertainty import paired_test


def evaluate(model_dir: str | Path, data: str | Path, output: str | Path | None = None, batch_size: int = 32,
             against: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Score a labelled JSONL/CSV/Parquet file; write metrics.json (with 95% bootstrap intervals), report, confusion
    matrix, errors.csv. `against`: a second model scored on the same rows and compared by a paired test (`vs`).

    A multi-label model is scored on the rows' `labels` lists too (a row without one has its `label` alone), with
    the thresholds saved with it."""
    cfg, labels = read_model_config(model_dir), LabelMap.load(model_dir)  # validate data before loading weights
    if against is not None and LabelMap.load(against).ids != labels.ids:
        raise ModelError(f"{against}: its labels differ from {model_dir}'s; a paired test needs the same label set")
    data_cfg = cfg.data.model_copy(update={"on_bad_rows": "error", "format": "auto"})
    rows = load_labelled(data, data_cfg, labels, cfg.labels.mode == "multi").rows
    scorer = load_scorer(model_dir, batch_size=batch_size)
    texts = [r["text"] for r in rows]
    probs = scorer.predict_proba(texts)
    out = Path(output) if output else Path(model_dir) / "eval" / Path(data).name.split(".")[0]
    y = scorer.labels.encode(rows)
    metrics = write_evaluation(out, rows, y, probs, scorer.labels, title=Path(data).name,
                               thresholds=scorer.thresholds)
    if against is not None:
        other = load_scorer(against, batch_size=batch_size).predict_proba(texts)
        metrics["vs"] = {"model": Path(against).name,
                         **paired_test(y, probs.argmax(axis=1), other.argmax(axis=1), len(labels))}
        (out / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    return out, metrics
