"""Evaluate a saved model (transformer or baseline) on a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import read_model_config, write_evaluation
from pipeline.data import load_labelled
from pipeline.labels import LabelMap
from pipeline.scoring import load_scorer


def evaluate(model_dir: str | Path, data: str | Path, output: str | Path | None = None,
             batch_size: int = 32) -> tuple[Path, dict[str, Any]]:
    """Score a labelled JSONL/CSV/Parquet file; write metrics.json, report, confusion matrix, errors.csv.

    A multi-label model is scored on the rows' `labels` lists too (a row without one has its `label` alone), with
    the thresholds saved with it."""
    cfg, labels = read_model_config(model_dir), LabelMap.load(model_dir)  # validate data before loading weights
    data_cfg = cfg.data.model_copy(update={"on_bad_rows": "error", "format": "auto"})
    rows = load_labelled(data, data_cfg, labels, cfg.labels.mode == "multi").rows
    scorer = load_scorer(model_dir, batch_size=batch_size)
    probs = scorer.predict_proba([r["text"] for r in rows])
    out = Path(output) if output else Path(model_dir) / "eval" / Path(data).name.split(".")[0]
    metrics = write_evaluation(out, rows, scorer.labels.encode(rows), probs, scorer.labels, title=Path(data).name,
                               thresholds=scorer.thresholds)
    return out, metrics
