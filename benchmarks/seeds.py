"""The recipe on the security corpus's fixed split with repeated training seeds: how much of its lead over the
baseline is the fine-tune's seed.

The split (data.split.seed 42) and the baseline stay fixed; each seed fine-tunes e5-small again (train.seed: weight
init of the head, dropout, batch order) and stacks it with the baseline as recipe.py does; beside it, the mean of both
members with no subset chosen on validation, to show what that choice costs or saves. Each finished seed is
saved to benchmarks/results/security-seeds.json and skipped on a rerun, so the job (about 35 min a seed on 2 cores)
runs in sittings.

    python benchmarks/seeds.py                 # seeds 42, 1, 2
    python benchmarks/seeds.py --seeds 42 1 2 3 4
    python benchmarks/seeds.py --backbone models/pretrained/e5-small-ant-dapt   # the fine-tune from that backbone

`--backbone DIR` fine-tunes from a pretrained backbone (benchmarks/dapt.py's), which must have been pretrained with
the corpus excluded, as cv_recipe.py requires; its seeds go to their own file (security-seeds-NAME.json, NAME the
directory's name) with the backbone's pretrain.json, and a backbone pretrained again with other settings or another
outcome is refused there rather than mixed with the seeds already run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "security-seeds.json"
KINDS = ("fine_tuned", "ensemble")
RESAMPLES = 300


def tuned_name(seed: int | str, variant: str = "") -> str:
    """The fine-tune's run and model directory name for one seed (from the backbone `variant`, when named)."""
    return f"security-news-{variant or 'e5-small'}-seed{seed}"


def results_file(variant: str = "") -> Path:
    """Where the seeds of the plain recipe, or of the fine-tune from the backbone `variant`, are saved."""
    return RESULTS.with_name(f"security-seeds-{variant}.json") if variant else RESULTS


def figures(run: Any, with_combiner: bool = False) -> dict[str, Any]:
    """What one seed's model scored on test (accuracy.py's summary: figures, intervals, the test against the
    baseline) and, for the ensemble, the members validation chose."""
    from accuracy import summary

    out = summary(run.metrics)
    if with_combiner:
        out["combiner"] = run.metrics["ensemble"]["combiner"]
    return out


def mean_of_members(cfg: Any, members: list[Path]) -> dict[str, Any]:
    """What the validation choice cost or saved: the unweighted mean of every member's log-probabilities (the
    recipe's combiner with no subset chosen; with `train.ensemble_offsets: count_match`, of the members shifted by
    their offsets fitted on validation, as the recipe's), its validation and test macro-F1 and its test against the
    baseline; and how steadily each criterion tells the candidates apart on validation (`criteria`)."""
    from pipeline.baseline import against_baseline
    from pipeline.data import load_split
    from pipeline.labels import load_labels
    from pipeline.scoring import load_scorer
    from pipeline.stack import Combiner, count_offsets, shifted
    from pipeline.uncertainty import macro_f1

    labels = load_labels(cfg.labels)
    rows = {s: load_split(cfg, s) for s in ("validation", "test")}
    scorers = [load_scorer(m) for m in members]
    probs = {s: [m.score([r["text"] for r in rs])[0] for m in scorers] for s, rs in rows.items()}
    if cfg.train.ensemble_offsets == "count_match":
        offsets = [count_offsets(p, labels.encode(rows["validation"])).tolist() for p in probs["validation"]]
        probs = {s: shifted(p, offsets) for s, p in probs.items()}
    mean = Combiner("weights", weights=[1 / len(members)] * len(members))
    logits = {s: mean.logits(p) for s, p in probs.items()}
    out = {f"{s}_macro_f1": round(float(macro_f1(labels.encode(rows[s]), lg.argmax(axis=1), len(labels))), 4)
           for s, lg in logits.items()}
    criteria = criterion_stability(probs["validation"], logits["validation"], labels.encode(rows["validation"]),
                                   len(labels))
    return out | {"vs_baseline": against_baseline(cfg, rows["test"], logits["test"]), "criteria": criteria}


def criterion_stability(probs: list[np.ndarray], mean: np.ndarray, y: np.ndarray, n_labels: int,
                        resamples: int = RESAMPLES) -> dict[str, Any]:
    """On bootstrap resamples of validation (nothing from test): which candidate (each member alone, with its
    probabilities `probs`, or the mean of all, with its logits `mean`) each of the ensemble's criteria picks, and the
    mean's gain over the best member alone, mean and sd."""
    from pipeline.ensemble import CRITERIA, rank_key
    from pipeline.stack import log_probs

    names = [f"member {i}" for i in range(len(probs))] + ["mean"]
    cands = [log_probs(p) for p in probs] + [mean]
    rng = np.random.default_rng(0)
    picks: dict[str, list[str]] = {c: [] for c in CRITERIA}
    gains: dict[str, list[float]] = {c: [] for c in CRITERIA}
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        for c in CRITERIA:
            scores = [rank_key(lg[i], y[i], n_labels, c) for lg in cands]
            picks[c].append(names[int(np.argmax(scores))])
            gains[c].append(scores[-1] - max(scores[:-1]))
    return {c: {"picks": {n: picks[c].count(n) for n in names}, "resamples": resamples,
                "mean_gain": round(float(np.mean(gains[c])), 4), "mean_gain_sd": round(float(np.std(gains[c])), 4)}
            for c in CRITERIA}


def _sd(values: list[float]) -> float:
    """The sample standard deviation, 0 for a single seed."""
    return round(statistics.stdev(values), 4) if len(values) > 1 else 0.0


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
                     "macro_f1_std": _sd([r["macro_f1"] for r in rows]),
                     "gain_mean": round(statistics.fmean(gains), 4), "gain_std": _sd(gains),
                     "gain_min": round(min(gains), 4), "gain_max": round(max(gains), 4),
                     "significant": sum(r["vs_baseline"]["p_bootstrap"] < 0.05 for r in rows),
                     "per_class_f1_mean": {lb: round(v, 4) for lb, v in per_label.items()},
                     "weakest_label": min(per_label, key=per_label.get)}
    means = [s["mean_of_members"] for s in seeds.values() if s.get("mean_of_members", {}).get("vs_baseline")]
    if means:
        gains = [m["vs_baseline"]["macro_f1_diff"] for m in means]
        out["mean_of_members"] = {"seeds": len(means), "gain_mean": round(statistics.fmean(gains), 4),
                                  "gain_std": _sd(gains),
                                  "significant": sum(m["vs_baseline"]["p_bootstrap"] < 0.05 for m in means)}
    out["baseline_macro_f1"] = baseline["macro_f1"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    ap.add_argument("--backbone", type=Path, help="fine-tune from this pretrained backbone (benchmarks/dapt.py's)")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for the fine-tune")
    args = ap.parse_args()
    data_dir = ROOT.parent / "shared" / "data" / "security-news"
    if not data_dir.is_dir():
        print(f"skipped: {data_dir} is absent (the corpus is read from ../shared/data)")
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from recipe import CONFIGS, VERSION, run_recipe

    from pipeline.artifacts import model_dir
    from pipeline.config import load_config

    variant = args.backbone.name if args.backbone else ""
    path = results_file(variant)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    result: dict[str, Any] = saved if saved.get("version") == VERSION else {"version": VERSION, "seeds": {}}
    overrides = list(args.overrides)
    if args.backbone:
        from cv_recipe import same_backbone

        result["pretrain"] = same_backbone(args.backbone, result.get("pretrain") if result["seeds"] else None, path)
        overrides.append(f"model.name_or_path={args.backbone}")

    def save() -> None:
        result["summary"] = summarize(result["seeds"], result["baseline"])
        path.write_text(json.dumps(result, ensure_ascii=False, indent=2))

    cfg = load_config(CONFIGS, [])
    backfilled = False
    for seed, row in result["seeds"].items():  # seeds saved before the mean of members was measured
        members = [model_dir(cfg, "baseline"), Path(cfg.output_dir) / tuned_name(seed, variant)]
        if "mean_of_members" not in row and all((m / "model_info.json").is_file() for m in members):
            row["mean_of_members"], backfilled = mean_of_members(cfg, members), True
    if backfilled:
        save()
    for seed in args.seeds:
        if str(seed) in result["seeds"]:
            print(f"seed {seed}: done before, skipped", flush=True)
            continue
        started, row, dirs = time.time(), {}, {}

        def report(kind: str, run: Any, row: dict = row, seed: int = seed, dirs: dict = dirs) -> None:
            dirs[kind] = run.model_dir
            if kind == "baseline":
                result["baseline"] = figures(run)
            elif kind in KINDS:
                row[kind] = figures(run, with_combiner=kind == "ensemble")
                print(f"seed {seed} {kind}", json.dumps(row[kind]), flush=True)

        tuned = [f"train.seed={seed}", f"tracking.run_name={tuned_name(seed, variant)}", *overrides]
        run_recipe(["tracking.registered_model=null"], tuned, report=report)
        row["mean_of_members"] = mean_of_members(cfg, [dirs["baseline"], dirs["fine_tuned"]])
        result["seeds"][str(seed)] = row | {"wall_seconds": round(time.time() - started)}
        save()
    print(json.dumps(result.get("summary"), indent=2))


if __name__ == "__main__":
    main()
