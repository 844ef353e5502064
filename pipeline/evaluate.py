"""Evaluate a saved model (transformer or baseline) on a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import Scorer, read_model_config, write_evaluation
from pipeline.baseline import BaselineScorer, is_baseline_dir
from pipeline.data import load_labelled
from pipeline.labels import LabelMap


def load_scorer(directory: str | Path, device: str = "auto", batch_size: int = 32) -> Scorer:
    """Any model directory this pipeline writes, ready to score raw texts."""
    if is_baseline_dir(directory):
        return BaselineScorer(directory)
    from pipeline.model import TransformerScorer  # torch only when a transformer is asked for

    return TransformerScorer(directory, device=device, batch_size=batch_size)


def evaluate(model_dir: str | Path, data: str | Path, output: str | Path | None = None,
             batch_size: int = 32) -> tuple[Path, dict[str, Any]]:
    """Score a labelled JSONL/CSV/Parquet file; write metrics.json, report, confusion matrix, errors.csv."""
    cfg, labels = read_model_config(model_dir), LabelMap.load(model_dir)  # validate data before loading weights
    data_cfg = cfg.data.model_copy(update={"on_bad_rows": "error", "format": "auto"})
    rows = load_labelled(data, data_cfg, labels).rows
    scorer = load_scorer(model_dir, batch_size=batch_size)
    probs = scorer.predict_proba([r["text"] for r in rows])
    y = np.asarray([scorer.labels.label2id[r["label"]] for r in rows], dtype=int)
    out = Path(output) if output else Path(model_dir) / "eval" / Path(data).name.split(".")[0]
    metrics = write_evaluation(out, rows, y, probs, scorer.labels, title=Path(data).name)
    return out, metrics
