"""The end of every training run, whatever the model kind: write the model directory, evaluate, log."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import CHECKPOINTS, write_evaluation, write_model_dir
from pipeline.config import Config
from pipeline.jobs import on_disk_fault
from pipeline.labels import LabelMap
from pipeline.profiles import write_profile
from pipeline.tracking import Tracker


@dataclass
class RunResult:
    """What a training run produced."""

    model_dir: Path
    metrics: dict[str, Any]
    run_id: str | None = None


def finish_run(tracker: Tracker, out: Path, *, kind: str, cfg: Config, labels: LabelMap, metrics: dict[str, Any],
               temperature: float, save_weights: Callable[[Path], None], test_rows: list[dict[str, Any]],
               test_probs: np.ndarray, extra: dict[str, Any] | None = None,
               thresholds: dict[str, float] | None = None) -> RunResult:
    """Write the model directory, its test evaluation and training profile; drop finished checkpoints; log it all.

    A full or read-only disk stops it with one line saying what is complete: the checkpoints stay until the model
    directory is written, and a store that fails later leaves that directory whole.
    """
    def incomplete() -> tuple[str, bool]:
        kept = (out / CHECKPOINTS).is_dir()
        return ("it is incomplete and the run is FAILED; free space, then run again"
                f"{' with --resume: the checkpoints are kept' if kept else ''}", kept)

    with on_disk_fault(f"writing the model directory {out}", incomplete):
        write_model_dir(out, kind=kind, cfg=cfg, labels=labels, metrics=metrics, temperature=temperature,
                        save_weights=save_weights, extra=extra, run_id=tracker.run_id, thresholds=thresholds)
        write_evaluation(out, test_rows, labels.encode(test_rows), test_probs, labels, metrics_file=False,
                         thresholds=thresholds)
        write_profile(out, kind=kind, cfg=cfg, labels=labels, test_rows=test_rows, test_probs=test_probs)
    if not cfg.train.keep_checkpoints:  # the model is written: nothing left to resume
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    with on_disk_fault("logging the run to MLflow", f"the model directory {out} is complete and usable; free space "
                       "in the tracking store before the next run"):
        tracker.log_final(metrics, list(labels.ids))
        tracker.log_dir(out)
        tracker.log_model(out, exclude=(CHECKPOINTS,))  # kept checkpoints stay local, never in the store
    return RunResult(model_dir=out, metrics=metrics, run_id=tracker.run_id)
