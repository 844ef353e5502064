"""The recipe on the security corpus's fixed split with repeated training seeds: how much of its lead over the
baseline is the fine-tune's seed.

The split (data.split.seed 42) and the baseline stay fixed; each seed fine-tunes e5-small again (train.seed: weight
init of the head, dropout, batch order) and stacks it with the baseline as recipe.py does. Each finished seed is
saved to benchmarks/results/security-seeds.json and skipped on a rerun, so the job (about 20 min a seed on 2 cores)
runs in sittings.

    python benchmarks/seeds.py                 # seeds 42, 1, 2
    python benchmarks/seeds.py --seeds 42 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "security-seeds.json"
KINDS = ("fine_tuned", "ensemble")


def figures(run: Any, with_combiner: bool = False) -> dict[str, Any]:
    """What one seed's model scored on test (accuracy.py's summary: figures, intervals, the test against the
    baseline) and, for the ensemble, the members validation chose."""
    from accuracy import summary

    out = summary(run.metrics)
    if with_combiner:
        out["combiner"] = run.metrics["ensemble"]["combiner"]
    return out


def summarize(seeds: dict[str, dict[str, Any]], baseline: dict[str, Any]) -> dict[str, Any]:
    """Mean ± sd over seeds of each model's macro-F1, of its gain over the baseline and of its weakest label's F1;
    how many seeds beat the baseline at p < 0.05 (paired bootstrap)."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        rows = [s[kind] for s in seeds.values() if kind in s]
        if not rows:
            continue
        gains = [r["vs_baseline"]["macro_f1_diff"] for r in rows]
        labels = list(rows[0]["per_class_f1"])
        per_label = {lb: statistics.fmean(r["per_class_f1"][lb] for r in rows) for lb in labels}
        out[kind] = {"seeds": len(rows),
                     "macro_f1_mean": round(statistics.fmean(r["macro_f1"] for r in rows), 4),
                     "macro_f1_std": round(statistics.stdev(r["macro_f1"] for r in rows), 4) if len(rows) > 1 else 0.0,
                     "gain_mean": round(statistics.fmean(gains), 4),
                     "gain_std": round(statistics.stdev(gains), 4) if len(gains) > 1 else 0.0,
                     "gain_min": round(min(gains), 4), "gain_max": round(max(gains), 4),
                     "significant": sum(r["vs_baseline"]["p_bootstrap"] < 0.05 for r in rows),
                     "per_class_f1_mean": {lb: round(v, 4) for lb, v in per_label.items()},
                     "weakest_label": min(per_label, key=per_label.get)}
    out["baseline_macro_f1"] = baseline["macro_f1"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    ap.add_argument("overrides", nargs="*", help="extra config overrides for the fine-tune")
    args = ap.parse_args()
    data_dir = ROOT.parent / "shared" / "data" / "security-news"
    if not data_dir.is_dir():
        print(f"skipped: {data_dir} is absent (the corpus is read from ../shared/data)")
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from recipe import VERSION, run_recipe

    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result: dict[str, Any] = saved if saved.get("version") == VERSION else {"version": VERSION, "seeds": {}}
    for seed in args.seeds:
        if str(seed) in result["seeds"]:
            print(f"seed {seed}: done before, skipped", flush=True)
            continue
        started, row = time.time(), {}

        def report(kind: str, run: Any, row: dict[str, Any] = row, seed: int = seed) -> None:
            if kind == "baseline":
                result["baseline"] = figures(run)
            elif kind in KINDS:
                row[kind] = figures(run, with_combiner=kind == "ensemble")
                print(f"seed {seed} {kind}", json.dumps(row[kind]), flush=True)

        tuned = [f"train.seed={seed}", f"tracking.run_name=security-news-e5-small-seed{seed}", *args.overrides]
        run_recipe(["tracking.registered_model=null"], tuned, report=report)
        result["seeds"][str(seed)] = row | {"wall_seconds": round(time.time() - started)}
        result["summary"] = summarize(result["seeds"], result["baseline"])
        RESULTS.write_text(json.dumps(result, ensure_ascii=False, indent=2))
    print(json.dumps(result.get("summary"), indent=2))


if __name__ == "__main__":
    main()
