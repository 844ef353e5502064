"""The demo's comparison on several seeded splits of the sample corpus: TF-IDF baseline vs fine-tuned e5-small.

    python benchmarks/sample_splits.py                 # splits with seeds 42 (the demo's), 1, 2, 3, 4
    python benchmarks/sample_splits.py --seeds 42 7    # any seeds
    python benchmarks/sample_splits.py --name w256 model.max_length=256   # another recipe, by overrides

One test split of the sample holds about 64 articles, so one article moves macro-F1 by ~0.015; this repeats
`configs/demo.yaml` (same recipe, same training seed) on other stratified splits and pools the paired errors.
Runs are logged to MLflow (experiment sample-splits); results go to benchmarks/results/sample_splits.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEMO = ROOT / "configs" / "demo.yaml"


def wrong_ids(model_dir: Path) -> set[str]:
    """Ids of the test articles a model got wrong (its errors.csv)."""
    with (model_dir / "errors.csv").open(encoding="utf-8") as fh:
        return {row["id"] for row in csv.DictReader(fh)}


def one_split(seed: int, keep: bool, overrides: list[str], tag: str) -> dict[str, Any]:
    """Prepare the split with `seed`, fit the baseline and fine-tune; their test and validation figures."""
    from pipeline.baseline import train_baseline
    from pipeline.config import load_config
    from pipeline.data import prepare
    from pipeline.train import train

    cfg = load_config([DEMO], [f"data.name=sample-split{seed}", f"data.split.seed={seed}",
                               "tracking.experiment=sample-splits", "tracking.registered_model=null",
                               f"tracking.run_name=sample-split{seed}-e5-small{tag}", "output_dir=models/sample-splits",
                               *overrides])
    prepare(cfg)
    baseline = train_baseline(cfg)
    base_dir, base = baseline.model_dir, baseline.metrics
    started = time.time()
    run = train(cfg)
    minutes = (time.time() - started) / 60
    base_wrong, tuned_wrong = wrong_ids(base_dir), wrong_ids(run.model_dir)
    result = {"seed": seed, "test_size": int(run.metrics["test"]["n"]), "train_minutes": round(minutes, 1),
              "baseline": {s: round(base[s]["macro_f1"], 4) for s in ("validation", "test")},
              "fine_tuned": {s: round(run.metrics[s]["macro_f1"], 4) for s in ("validation", "test")},
              "baseline_errors": len(base_wrong), "fine_tuned_errors": len(tuned_wrong),
              "only_baseline_wrong": len(base_wrong - tuned_wrong),
              "only_fine_tuned_wrong": len(tuned_wrong - base_wrong)}
    if not keep:  # ~0.5 GB a fine-tuned model; the MLflow run keeps the metrics
        shutil.rmtree(run.model_dir, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return result


def pooled(splits: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of test macro-F1, wins, and an exact McNemar test on the pooled disagreements."""
    from scipy.stats import binomtest

    base = np.array([s["baseline"]["test"] for s in splits])
    tuned = np.array([s["fine_tuned"]["test"] for s in splits])
    b = sum(s["only_baseline_wrong"] for s in splits)
    t = sum(s["only_fine_tuned_wrong"] for s in splits)
    return {"baseline_mean": round(float(base.mean()), 4), "baseline_std": round(float(base.std()), 4),
            "fine_tuned_mean": round(float(tuned.mean()), 4), "fine_tuned_std": round(float(tuned.std()), 4),
            "fine_tuned_wins": int((tuned > base).sum()), "ties": int((tuned == base).sum()),
            "baseline_wins": int((tuned < base).sum()), "only_baseline_wrong": b, "only_fine_tuned_wrong": t,
            "mcnemar_p": round(float(binomtest(b, b + t).pvalue), 4) if b + t else 1.0}


def main() -> None:
    """Run every split, then write the results JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3, 4])
    ap.add_argument("--keep-models", action="store_true", help="keep the fine-tuned model directories")
    ap.add_argument("--name", default="", help="a variant's name: results go to sample_splits-NAME.json")
    ap.add_argument("overrides", nargs="*", help="config overrides on top of configs/demo.yaml")
    args = ap.parse_args()
    tag = f"-{args.name}" if args.name else ""
    started = time.time()
    splits = [one_split(seed, args.keep_models, args.overrides, tag) for seed in args.seeds]
    result = {"config": str(DEMO.relative_to(ROOT)), "overrides": args.overrides, "splits": splits,
              "pooled": pooled(splits), "wall_seconds": round(time.time() - started, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sample_splits{tag}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["pooled"]))


if __name__ == "__main__":
    main()
