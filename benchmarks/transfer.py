"""Transfer to other outlets: train without one source of the security corpus, test on it (leave-source-out).

    python benchmarks/transfer.py                         # the TF-IDF baseline, every source left out in turn
    python benchmarks/transfer.py --sources "Jawhara FM" BBC --fine-tune  # + e5-small and the ensemble (~20 min each)

Each left-out source is its own prepared dataset (`data.split.files`: train and validation drawn from the other
outlets, test = the left-out one), trained and logged to MLflow (sqlite:///mlflow.db) like any run. The test
figures carry 95% bootstrap intervals. Each run also trains the TF-IDF model of the title and lead; with --fine-tune
the e5-small fine-tune and the recipe's ensemble (combiner chosen on the validation slice of the other outlets) are
each compared with the baseline on the same articles by a paired bootstrap and McNemar, and every model's validation
and test probabilities are saved (work/transfer/SOURCE/probs.npz, as cv_recipe.py's folds). Models stay out of the
model registry. Results go to benchmarks/results/security-transfer.json; a row names the recipe version it ran.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "security-news" / "labelled.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "work" / "transfer"


def split_files(rows: list[dict[str, Any]], source: str, seed: int = 42) -> dict[str, Path]:
    """Train and validation (stratified 10%) from the other outlets, test from `source`."""
    from sklearn.model_selection import train_test_split

    from pipeline.readers import write_jsonl

    rest = [r for r in rows if r["source"] != source]
    train, val = train_test_split(rest, test_size=0.1, stratify=[r["label"] for r in rest], random_state=seed)
    out = WORK / source.replace(" ", "_")
    parts = {"train": train, "validation": val, "test": [r for r in rows if r["source"] == source]}
    return {name: write_jsonl(out / f"{name}.jsonl", part) for name, part in parts.items()}


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """Test macro-F1 and accuracy with their intervals, and per-label F1.

    Macro-F1 averages the labels present in the left-out source's truth or predictions (scikit-learn's default,
    and the definition of the bootstrap interval): an outlet without recruitment news has no recruitment F1.
    """
    import numpy as np

    test = metrics["test"]
    cm = np.asarray(test["confusion_matrix"])
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    f1 = np.array([v["f1"] for v in test["per_class"].values()])
    return {"n": test["n"], "macro_f1": round(float(f1[present].mean()), 4),
            "macro_f1_all_labels": round(test["macro_f1"], 4), "accuracy": round(test["accuracy"], 4),
            "macro_f1_ci": test["intervals"].get("macro_f1"),
            "per_class_f1": {k: round(v["f1"], 4) for k, v in test["per_class"].items() if v["support"]},
            "support": {k: v["support"] for k, v in test["per_class"].items()}}


def leave_out(rows: list[dict[str, Any]], source: str, fine_tune: bool, overrides: list[str]) -> dict[str, Any]:
    """Baseline (and the fine-tune and the ensemble) trained without `source`, tested on it."""
    from recipe import VERSION, run_recipe, split_data

    out: dict[str, Any] = {"source": source} | ({"recipe": VERSION} if fine_tune else {})

    def report(kind: str, run: Any) -> None:
        test = run.metrics["test"]
        out[kind] = figures(run.metrics) | ({} if kind == "baseline" else {"vs_baseline": test.get("vs_baseline")}) \
            | ({"combiner": run.metrics["ensemble"]["combiner"]} if kind == "ensemble" else {})
        print(source, kind.replace("_", "-"), json.dumps(out[kind]), flush=True)

    data = split_data(f"security-news-without-{source.replace(' ', '_')}", split_files(rows, source), WORK)
    cfg, runs = run_recipe([*data, "tracking.registered_model=null"], overrides, fine_tune=fine_tune, report=report)
    if fine_tune:  # every model's validation and test probabilities: a combiner can be studied without training
        from cv_recipe import predictions

        probs = WORK / source.replace(" ", "_") / "probs.npz"
        predictions(cfg, {kind: run.model_dir for kind, run in runs.items()}, probs)
    return out


def main() -> None:
    """Leave each chosen source out in turn; write the results JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", nargs="*", help="sources to leave out (default: every source)")
    ap.add_argument("--fine-tune", action="store_true",
                    help="also fine-tune e5-small (cpu.yaml: 4 epochs) and stack it with the baseline per source")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for the fine-tuned runs")
    args = ap.parse_args()
    if not CORPUS.is_file():
        print(f"skipped: {CORPUS} is absent (benchmarks read real data from ../shared/data)")
        return
    from pipeline.readers import read_jsonl

    rows = read_jsonl(CORPUS)
    sources = args.sources or sorted({r["source"] for r in rows})
    started = time.time()
    results = [leave_out(rows, s, args.fine_tune, args.overrides) for s in sources]
    path = RESULTS / "security-transfer.json"
    previous = {r["source"]: r for r in json.loads(path.read_text())["sources"]} if path.is_file() else {}
    previous.update({r["source"]: r for r in results})
    path.write_text(json.dumps({"corpus": str(CORPUS.relative_to(ROOT.parent)), "rows": len(rows),
                                "sources": list(previous.values()), "wall_seconds": round(time.time() - started, 1)},
                               ensure_ascii=False, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
