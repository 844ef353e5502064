"""The real-data recipe on split files a benchmark wrote: the TF-IDF baseline, the e5-small fine-tune (CPU settings,
4 epochs) and their stacked ensemble, each trained and logged to MLflow like any run. Shared by cv_recipe.py (one
fold) and transfer.py (one left-out source), so both measure the same recipe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "configs/base.yaml", ROOT / "configs/exp/security_news.yaml"]
E5 = [ROOT / "configs/exp/e5_small.yaml", ROOT / "configs/exp/cpu.yaml"]


def run_recipe(name: str, files: dict[str, Path], work: Path, overrides: list[str], fine_tune: bool = True,
               extra: tuple[str, ...] = (), report: Callable[[str, Any], None] | None = None,
               ) -> tuple[Any, dict[str, Any]]:
    """Prepare the train/validation/test `files` as dataset `name` (under `work`), train the baseline and, with
    `fine_tune`, the fine-tune (`overrides` on top) and their ensemble. `report(kind, run)` hears of each model as
    it is done (kinds: baseline, fine_tuned, ensemble). Returns the baseline's config and the runs by kind."""
    from pipeline.baseline import train_baseline
    from pipeline.config import load_config
    from pipeline.data import prepare

    common = [f"data.name={name}", f"data.processed_dir={work / 'processed'}", "data.min_per_class=1", *extra,
              *(f"data.split.files.{s}={p}" for s, p in files.items())]
    cfg = load_config(CONFIGS, common)
    prepare(cfg)
    runs: dict[str, Any] = {}

    def done(kind: str, run: Any) -> None:
        runs[kind] = run
        if report is not None:
            report(kind, run)

    done("baseline", train_baseline(cfg))
    if fine_tune:
        from pipeline.ensemble import fit_ensemble
        from pipeline.train import train

        tuned_cfg = load_config([*CONFIGS, *E5], [*common, f"tracking.run_name={name}-e5-small", *overrides])
        done("fine_tuned", train(tuned_cfg))
        done("ensemble", fit_ensemble(tuned_cfg, [runs["baseline"].model_dir, runs["fine_tuned"].model_dir]))
    return cfg, runs
