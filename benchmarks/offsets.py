"""Label offsets on the ensemble's members (`train.ensemble_offsets: count_match`), measured without training again.

    python benchmarks/offsets.py --backbone models/pretrained/e5-small-ant-dapt   # CV folds, transfer, fixed split

The TF-IDF member under-predicts the rare labels (over the five folds of the DAPT recipe it says
intelligence_assessment 67 times for 115 articles), and the mean of the members inherits it. `count_match` shifts
each member's log-probabilities by per-label offsets fitted on validation so that it predicts every label as often as
validation holds it, then combines them as before. This script recombines the members' kept validation and test
probabilities both ways with the pipeline's own `ensemble.choose`, so the figures are those `pipeline ensemble`
gives with and without the option on the same members:

- the recipe's cross-validation folds (cv_recipe.py's work folder: probs-fold-K.npz), on the seed-42 partition and
  on each other partition run with the backbone (`--fold-seed S`: its folds so far),
- the left-out sources (transfer.py's work folder: SOURCE/probs.npz),
- the fixed split: the baseline and each seed's fine-tune of seeds.py, scored on validation and test (about 5 min
  a model on 2 cores; cached in work/offsets/), when their model directories are of the current split.

Each set is pooled (every article once) and the count-matched ensemble is compared with the plain one and with the
baseline on the same articles (paired bootstrap and McNemar). Results: benchmarks/results/security-offsets-NAME.json.
The probabilities live in the ignored work folder of the machine that ran the benchmarks; where they are absent the
set is skipped and says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "work"
MEMBERS = ("baseline", "fine_tuned")
KINDS = ("none", "count_match")
SEED = 42  # the recipe's train.seed, which `pipeline ensemble` passes to the combiner


def recombined(sets: list[dict[str, np.ndarray]], labels: list[str]) -> dict[str, Any]:
    """Each set's members combined as the recipe's ensemble, plain and with count-matched offsets; pooled figures
    of the baseline and both ensembles with paired tests, and each set's macro-F1 of the three."""
    from cv_recipe import encoder, macro_f1, pooled

    from pipeline.ensemble import choose
    from pipeline.uncertainty import paired_test

    truth, preds, by_set = [], {"baseline": [], "none": [], "count_match": []}, []
    for s in sets:
        row = {"name": s["name"], "rows": len(s["y_test"])}
        y = [labels[i] for i in s["y_test"]]
        truth += y
        base = [labels[i] for i in s["baseline_test"].argmax(axis=1)]
        preds["baseline"] += base
        row["baseline"] = round(macro_f1(y, base), 4)
        for kind in KINDS:
            combiner, _, info = choose([s[f"{m}_validation"] for m in MEMBERS], s["y_validation"], len(labels),
                                       SEED, offsets=kind)
            pred = [labels[i] for i in combiner.logits([s[f"{m}_test"] for m in MEMBERS]).argmax(axis=1)]
            preds[kind] += pred
            row[kind] = round(macro_f1(y, pred), 4)
            row[f"{kind}_combiner"] = combiner.describe(list(MEMBERS))
            if kind == "count_match":
                row["label_offsets"] = dict(zip(MEMBERS, info["label_offsets"], strict=True))
        by_set.append(row)
    encode = encoder(labels)
    y = encode(truth)
    out = pooled(y, {k: encode(p) for k, p in preds.items()}, labels)
    out["count_match"]["vs_none"] = paired_test(y, encode(preds["count_match"]), encode(preds["none"]), len(labels))
    predicted = {k: {lb: int(sum(x == lb for x in p)) for lb in labels} for k, p in preds.items()}
    return {"rows": len(truth), "sets": by_set, "support": {lb: truth.count(lb) for lb in labels},
            "predicted": predicted} | out


def fold_files(variant: str, seed: int | None = None) -> list[Path]:
    """One partition's kept fold probabilities (cv_recipe.py --backbone [--fold-seed S]: probs-fold-K.npz in the
    partition's work folder, `cv_recipe.work_dir`)."""
    from cv_recipe import SEED as FIRST_PARTITION
    from cv_recipe import work_dir

    return sorted(work_dir(FIRST_PARTITION if seed is None else seed, variant).glob("probs-fold-*.npz"))


def cv_sets(variant: str, seed: int | None = None) -> list[dict[str, Any]]:
    """The recipe's folds' kept probabilities on one partition (seed 42's by default)."""
    return [{"name": f"fold {p.stem.rsplit('-', 1)[1]}", **np.load(p)} for p in fold_files(variant, seed)]


def other_partitions(variant: str) -> list[int]:
    """The fold seeds other than 42 whose folds of this variant kept probabilities."""
    from cv_recipe import WORK as CV_WORK

    seeds = (d.name.removeprefix("seed-") for d in CV_WORK.glob("seed-*"))
    return sorted(int(s) for s in seeds if s.isdigit() and fold_files(variant, int(s)))


def transfer_sets(variant: str) -> list[dict[str, Any]]:
    """The left-out sources' kept probabilities (transfer.py --backbone: work/transfer/NAME/SOURCE/probs.npz)."""
    return [{"name": p.parent.name.replace("_", " "), **np.load(p)}
            for p in sorted((WORK / "transfer" / variant).glob("*/probs.npz"))]


def fixed_sets(variant: str) -> list[dict[str, Any]]:
    """The fixed split's baseline and each seed's fine-tune (seeds.py --backbone), scored on validation and test;
    cached per seed in work/offsets/. Models of another split than the current one are skipped."""
    from cv_recipe import scored_splits
    from recipe import CONFIGS

    from pipeline.artifacts import FIT_SPLITS, read_info
    from pipeline.config import load_config
    from pipeline.data import prepare, splits_sha256

    seeds_file = RESULTS / f"security-seeds-{variant}.json"
    if not seeds_file.is_file():
        return []
    cfg = load_config(CONFIGS)
    prepare(cfg)
    digest = splits_sha256(cfg, FIT_SPLITS)
    base_dir = ROOT / "models" / "security-news-tfidf-logreg"
    sets = []
    for seed in json.loads(seeds_file.read_text())["seeds"]:
        cache = WORK / "offsets" / f"fixed-{variant}-seed{seed}.npz"
        tuned = ROOT / "models" / f"security-news-{variant}-seed{seed}"
        if not cache.is_file():
            if not all(d.is_dir() and read_info(d).get("fit_sha256") == digest for d in (base_dir, tuned)):
                print(f"fixed split, seed {seed}: {tuned.name} or the baseline is absent or of another split; skipped")
                continue
            cache.parent.mkdir(parents=True, exist_ok=True)
            scored_splits(cfg, {"baseline": base_dir, "fine_tuned": tuned}, cache)  # the baseline again: seconds
        sets.append({"name": f"seed {seed}", **np.load(cache)})
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", type=Path, required=True, help="the backbone the recipe's runs fine-tuned from")
    args = ap.parse_args()
    variant = args.backbone.name
    out: dict[str, Any] = {"variant": variant, "members": list(MEMBERS)}
    for name, sets in (("cv", cv_sets(variant)), ("transfer", transfer_sets(variant))):
        if not sets:
            print(f"{name}: no kept probabilities in {WORK / name / variant}; skipped")
            continue
        out[name] = recombined(sets, [str(x) for x in sets[0]["labels"]])
    # a replication on another partition: recipe 5's offsets were fixed before its folds were scored
    out["cv_partitions"] = [{"fold_seed": seed} | recombined(sets, [str(x) for x in sets[0]["labels"]])
                            for seed in other_partitions(variant) for sets in [cv_sets(variant, seed)]]
    # the fixed split's seeds share the baseline and the test articles: each seed is its own comparison
    fixed = fixed_sets(variant)
    if fixed:
        out["fixed"] = [recombined([s], [str(x) for x in s["labels"]]) for s in fixed]
    pooled = [(n, out[n]) for n in ("cv", "transfer") if n in out]
    for name, r in pooled + [(f"cv, fold seed {p['fold_seed']}", p) for p in out["cv_partitions"]]:
        print(f"{name} ({r['rows']} articles): baseline {r['baseline']['pooled_macro_f1']:.3f}, ensemble "
              f"{r['none']['pooled_macro_f1']:.3f}, with offsets {r['count_match']['pooled_macro_f1']:.3f} "
              f"(vs plain ensemble {r['count_match']['vs_none']['macro_f1_diff']:+.3f} "
              f"{r['count_match']['vs_none']['macro_f1_diff_interval']}, "
              f"p {r['count_match']['vs_none']['p_bootstrap']:.3f})")
    for r in out.get("fixed", []):
        low = {k: min(r[k]["pooled_per_class_f1"].values()) for k in ("none", "count_match")}
        print(f"fixed split, {r['sets'][0]['name']}: ensemble {r['none']['pooled_macro_f1']:.3f} (lowest label "
              f"{low['none']:.2f}), with offsets {r['count_match']['pooled_macro_f1']:.3f} (lowest "
              f"{low['count_match']:.2f})")
    path = RESULTS / f"security-offsets-{variant}.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
