"""`pipeline audit-labels --model transformer`: out-of-fold probabilities from k fine-tunes of the configured backbone.

Each fold is an ordinary `train(cfg)` run on the other folds (a stratified `data.split.validation` share of them
picks the best epoch and the temperature), written into a temporary processed and output directory, untracked,
and scored on its held-out fold; its model directory is removed before the next fold starts.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audit import fold_splits
from pipeline.config import Config
from pipeline.data import BOILERPLATE_FILE, processed_dir
from pipeline.labels import LabelMap
from pipeline.model import TransformerScorer
from pipeline.readers import write_jsonl
from pipeline.train import train


def transformer_out_of_fold(cfg: Config, labels: LabelMap, rows: list[dict[str, Any]],
                            folds: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Each row's calibrated probabilities from a model fine-tuned without its fold."""
    y = labels.encode(rows)
    probs = np.zeros((len(rows), len(labels)))
    fold_val_f1 = []
    with tempfile.TemporaryDirectory(prefix="audit-folds-") as tmp:
        for k, (fit_idx, held_idx) in enumerate(fold_splits(cfg, y, folds)):
            fold_cfg = _fold_config(cfg, Path(tmp) / f"fold{k}")
            fit, val = _inner_split(cfg, fit_idx, y)
            _write_fold(cfg, fold_cfg, {"train": [rows[i] for i in fit], "validation": [rows[i] for i in val],
                                        "test": [rows[i] for i in held_idx]})
            result = train(fold_cfg)
            fold_val_f1.append(round(result.metrics["validation"]["macro_f1"], 4))
            scorer = TransformerScorer(result.model_dir, batch_size=cfg.train.eval_batch_size)
            probs[held_idx] = scorer.score([rows[i]["text"] for i in held_idx])[0]
            del scorer
            shutil.rmtree(Path(tmp) / f"fold{k}", ignore_errors=True)  # a backbone's weights per fold add up
    return probs, {"kind": "transformer", "backbone": cfg.model.name_or_path, "epochs": cfg.train.epochs,
                   "long_text": cfg.model.long_text, "max_length": cfg.model.max_length,
                   "fold_val_macro_f1": fold_val_f1}


def _fold_config(cfg: Config, root: Path) -> Config:
    """The config of one fold's run: its splits and model under `root`, no tracking, nothing to resume."""
    return cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"processed_dir": str(root / "processed")}),
        "output_dir": str(root / "models"),
        "tracking": cfg.tracking.model_copy(update={"enabled": False}),
        "train": cfg.train.model_copy(update={"resume": False, "keep_checkpoints": False}),
    })


def _inner_split(cfg: Config, fit_idx: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fold's training rows and a stratified validation share of them (plain random where a label is rare)."""
    from sklearn.model_selection import train_test_split

    share = cfg.data.split.validation or 0.15
    try:
        return train_test_split(fit_idx, test_size=share, random_state=cfg.train.seed, stratify=y[fit_idx])
    except ValueError:  # a label with a single row in these folds, or more labels than validation rows
        return train_test_split(fit_idx, test_size=share, random_state=cfg.train.seed)


def _write_fold(cfg: Config, fold_cfg: Config, splits: dict[str, list[dict[str, Any]]]) -> None:
    """The fold's prepared splits, and the boilerplate lines `prepare` learnt (saved with each fold's model)."""
    out = processed_dir(fold_cfg)
    for name, part in splits.items():
        write_jsonl(out / f"{name}.jsonl", [{k: v for k, v in r.items() if k != "_split"} for r in part])
    if (processed_dir(cfg) / BOILERPLATE_FILE).is_file():
        shutil.copy(processed_dir(cfg) / BOILERPLATE_FILE, out / BOILERPLATE_FILE)
