"""The real-data recipe on split files a benchmark wrote: the TF-IDF baseline, the e5-small fine-tune (CPU settings,
4 epochs) and their ensemble (each member's log-probabilities shifted by count-matched label offsets fitted on
validation, configs/exp/security_news.yaml; then the unweighted mean of the subset with the best calibrated log-loss
on validation), each trained and logged to MLflow like any run; beside them, for comparison, a TF-IDF model of the
title and lead (`baseline.lead_words`, what annotators label from), which measured no help as a third member. Shared by
cv_recipe.py (one fold) and transfer.py (one left-out source), so both measure the same recipe. A run finished on
the same splits with the same settings is reused, and a fine-tune that was stopped continues from its last complete
checkpoint written with the same settings, so a stopped benchmark resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "configs/base.yaml", ROOT / "configs/exp/security_news.yaml"]
E5 = [ROOT / "configs/exp/e5_small.yaml", ROOT / "configs/exp/cpu.yaml"]
LEAD_WORDS = 80  # the title and the first sentences: what the annotators read (../shared/data/README.md)
VERSION = ("5: baseline + e5-small, count-matched label offsets on each, unweighted mean of the subset best on "
           "validation log-loss; lead-80 TF-IDF beside")


def finished(cfg: Any, kind: str) -> Any | None:
    """The run of this kind that a stopped job already finished with the same model and training settings on the
    same splits, as a RunResult; else None."""
    from pipeline.artifacts import fitted_here, read_json, read_model_config
    from pipeline.checkpoints import learning_settings
    from pipeline.runs import RunResult

    directory = fitted_here(cfg, kind)
    if directory is None:
        return None
    saved = read_model_config(directory)
    if (learning_settings(saved), saved.baseline) != (learning_settings(cfg), cfg.baseline):
        return None
    return RunResult(directory, read_json(directory / "metrics.json"))


def split_data(name: str, files: dict[str, Path], work: Path) -> list[str]:
    """Config overrides that make the train/validation/test `files` dataset `name`, prepared under `work`."""
    return [f"data.name={name}", f"data.processed_dir={work / 'processed'}", "data.min_per_class=1",
            *(f"data.split.files.{s}={p}" for s, p in files.items())]


def run_recipe(data: list[str], overrides: list[str], fine_tune: bool = True,
               report: Callable[[str, Any], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Prepare the dataset the security config with the `data` overrides names (the config's own split when empty;
    `split_data` for split files), train the baseline, the lead model and, with `fine_tune`, the fine-tune
    (`overrides` on top) and the ensemble of the baseline and the fine-tune. `report(kind, run)` hears of each model
    as it is done (kinds: baseline, lead, fine_tuned, ensemble). Returns the baseline's config and the runs by kind."""
    from pipeline.baseline import train_baseline
    from pipeline.config import load_config
    from pipeline.data import prepare

    cfg = load_config(CONFIGS, data)
    prepare(cfg)
    runs: dict[str, Any] = {}

    def done(kind: str, run: Any) -> None:
        runs[kind] = run
        if report is not None:
            report(kind, run)

    done("baseline", finished(cfg, "baseline") or train_baseline(cfg))
    lead_cfg = load_config(CONFIGS, [*data, f"baseline.lead_words={LEAD_WORDS}"])
    done("lead", finished(lead_cfg, "baseline") or train_baseline(lead_cfg))
    if fine_tune:
        from pipeline.checkpoints import resumable
        from pipeline.ensemble import fit_ensemble
        from pipeline.train import train

        tuned_cfg = load_config([*CONFIGS, *E5], [*data, f"tracking.run_name={cfg.data.name}-e5-small", *overrides])
        if resumable(tuned_cfg):  # a fine-tune the stopped job had under way continues from its last checkpoint
            tuned_cfg = tuned_cfg.model_copy(update={"train": tuned_cfg.train.model_copy(update={"resume": True})})
        done("fine_tuned", finished(tuned_cfg, "transformer") or train(tuned_cfg))
        done("ensemble", fit_ensemble(tuned_cfg, [runs[k].model_dir for k in ("baseline", "fine_tuned")]))
    return cfg, runs
