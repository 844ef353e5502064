"""Accuracy on real Arabic news: TF-IDF baseline (with k-fold spread) and the fine-tuned e5-small, on CPU.

    python benchmarks/accuracy.py security     # ../shared/data/security-news (7 labels, 1,751 articles): the recipe
    python benchmarks/accuracy.py ant          # ../shared/data/ant-topics (6 labels, 24,320 articles)

Every run is logged to MLflow (sqlite:///mlflow.db); results go to benchmarks/results/<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
E5 = ["configs/exp/e5_small.yaml", "configs/exp/cpu.yaml"]
DATASETS: dict[str, dict[str, Any]] = {
    # the real-data recipe of recipe.py (baseline, lead model, e5-small fine-tune, their ensemble) on the fixed split
    "security": {"file": SHARED / "security-news/labelled.jsonl", "configs": ["configs/exp/security_news.yaml"],
                 "recipe": True},
    "ant": {"file": SHARED / "ant-topics/ant_multisource.jsonl.gz", "configs": ["configs/exp/ant_topics.yaml"],
            # the transformer on a stratified subset sized for about an hour on 2 CPU cores
            "train_overrides": ["train.epochs=2", "train.early_stopping_patience=null"], "subset": 3000},
}


def cross_validate(cfg: Any, folds: int = 5) -> dict[str, Any]:
    """k-fold macro-F1 of the baseline on all prepared rows: per fold (mean and sd), and pooled over the
    out-of-fold predictions of every article with its 95% bootstrap interval."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    from pipeline.baseline import build
    from pipeline.data import SPLITS, load_split
    from pipeline.uncertainty import bootstrap_intervals

    rows = [r for s in SPLITS for r in load_split(cfg, s)]
    x, y = np.array([r["text"] for r in rows], dtype=object), np.array([r["label"] for r in rows])
    scores, oof = [], np.empty(len(y), dtype=object)
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=cfg.train.seed).split(x, y):
        pipe = build(cfg.baseline, 2.0, len(tr), cfg.train.seed).fit(list(x[tr]), y[tr])
        oof[te] = pipe.predict(list(x[te]))
        scores.append(f1_score(y[te], oof[te], average="macro"))
    labels = sorted(set(y))
    index = {lb: i for i, lb in enumerate(labels)}
    truth, pred = np.array([index[v] for v in y]), np.array([index[v] for v in oof])
    return {"folds": folds, "rows": len(y), "macro_f1_mean": float(np.mean(scores)),
            "macro_f1_std": float(np.std(scores)), "macro_f1": [round(float(s), 4) for s in scores],
            "pooled_macro_f1": round(float(f1_score(truth, pred, average="macro")), 4),
            "pooled_intervals": bootstrap_intervals(truth, pred, labels)}


def subset_file(cfg: Any, n: int) -> Path:
    """A stratified subset of the prepared training split (validation and test stay whole)."""
    from sklearn.model_selection import train_test_split

    from pipeline.data import load_split
    from pipeline.readers import write_jsonl

    train = load_split(cfg, "train")
    keep, _ = train_test_split(train, train_size=min(n, len(train) - 1), stratify=[r["label"] for r in train],
                               random_state=cfg.train.seed)
    return write_jsonl(RESULTS / "work" / f"{cfg.data.name}-train-{n}.jsonl", keep)


def settings(cfg: Any) -> str:
    """The fine-tuning recipe in one line, for the results table."""
    m, t = cfg.model, cfg.train
    return (f"{Path(m.name_or_path).name}, {m.pooling} pooling, {m.long_text} {m.max_length} tokens, "
            f"{t.epochs:g} epochs at lr {t.learning_rate:g} (head {t.head_learning_rate or t.learning_rate:g}), "
            f"class weights {t.class_weights}, linear probe first: {t.linear_probe}")


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test figures worth publishing."""
    test = metrics["test"]
    return {k: round(test[k], 4) for k in ("accuracy", "macro_f1", "weighted_f1", "ece")} | {
        "per_class_f1": {k: round(v["f1"], 4) for k, v in test["per_class"].items()},
        "intervals": test.get("intervals"), "vs_baseline": test.get("vs_baseline"),
        "train_seconds": metrics.get("train_seconds")}


def main() -> None:
    """Prepare, baseline, cross-validate, fine-tune; write the results JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=list(DATASETS))
    ap.add_argument("--skip-transformer", action="store_true")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for the fine-tuned run")
    args = ap.parse_args()
    spec = DATASETS[args.dataset]
    if not spec["file"].is_file():
        print(f"skipped: {spec['file']} is absent (benchmarks read real data from ../shared/data)")
        return
    from pipeline.baseline import train_baseline
    from pipeline.config import load_config
    from pipeline.data import REPORT_FILE, prepare
    from pipeline.train import train

    files = [ROOT / "configs/base.yaml", *(ROOT / c for c in spec["configs"])]
    cfg = load_config(files)
    out = prepare(cfg)
    started = time.time()
    result: dict[str, Any] = {"dataset": args.dataset, "data_report": json.loads((out / REPORT_FILE).read_text()),
                              "machine": f"{platform.machine()}, 2 CPU cores (no GPU)"}
    result["data_report"].pop("lengths", None)
    base_metrics = train_baseline(cfg).metrics
    result["baseline"] = summary(base_metrics) | {"C": base_metrics["baseline"]["C"]}
    result["baseline_cv"] = cross_validate(cfg)
    print("baseline", json.dumps(result["baseline"]), json.dumps(result["baseline_cv"]), flush=True)
    if spec.get("recipe"):
        result |= recipe(args.overrides, fine_tune=not args.skip_transformer)
    elif not args.skip_transformer:
        tuned_cfg = load_config([*files, *(ROOT / c for c in E5)], [
            f"tracking.run_name={cfg.data.name}-e5-small", *spec["train_overrides"], *args.overrides])
        if spec.get("subset"):
            tuned_cfg = _reuse_splits(tuned_cfg, cfg, subset_file(cfg, spec["subset"]))
        run = train(tuned_cfg)
        result["fine_tuned"] = summary(run.metrics) | {"run": run.model_dir.name, "subset": spec.get("subset"),
                                                       "settings": settings(tuned_cfg)}
        print("fine-tuned", json.dumps(result["fine_tuned"]), flush=True)
    result["wall_seconds"] = round(time.time() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.dataset}.json").write_text(json.dumps(result, ensure_ascii=False, indent=2))


def recipe(overrides: list[str], fine_tune: bool) -> dict[str, Any]:
    """recipe.py's models on the config's own split (the baseline is the one just trained): their test figures,
    each compared with the baseline on the same articles; the ensemble's combiner."""
    from recipe import VERSION, run_recipe

    from pipeline.artifacts import read_model_config

    out: dict[str, Any] = {"recipe": VERSION}

    def report(kind: str, run: Any) -> None:
        if kind == "baseline":
            return
        out[kind] = summary(run.metrics) | {"run": run.model_dir.name}
        if kind == "fine_tuned":
            out[kind]["settings"] = settings(read_model_config(run.model_dir))
        if kind == "ensemble":
            out[kind]["combiner"] = run.metrics["ensemble"]["combiner"]
        print(kind.replace("_", "-"), json.dumps(out[kind]), flush=True)

    run_recipe([], overrides, fine_tune=fine_tune, report=report)
    return out


def _reuse_splits(tuned: Any, full: Any, subset: Path) -> Any:
    """Train on the subset, validate and test on the full prepared splits (written under a new name)."""
    import shutil

    from pipeline.data import processed_dir

    name = f"{full.data.name}-subset"
    target = Path(full.data.processed_dir) / name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(subset, target / "train.jsonl")
    for split in ("validation", "test"):
        shutil.copy(processed_dir(full) / f"{split}.jsonl", target / f"{split}.jsonl")
    data = tuned.data.model_copy(update={"name": name})
    return tuned.model_copy(update={"data": data, "tracking": tuned.tracking.model_copy(
        update={"experiment": full.data.name})})


if __name__ == "__main__":
    main()
