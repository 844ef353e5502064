"""Transfer to other outlets: train without one source of the security corpus, test on it (leave-source-out).

    python benchmarks/transfer.py                         # the TF-IDF baseline, every source left out in turn
    python benchmarks/transfer.py --sources "Jawhara FM" BBC --fine-tune  # + e5-small and the ensemble (~20 min each)
    python benchmarks/transfer.py --summary-only          # pool the saved predictions again without training
    python benchmarks/transfer.py --backbone models/pretrained/e5-small-ant-dapt --sources "Jawhara FM"

Each left-out source is its own prepared dataset (`data.split.files`: train and validation drawn from the other
outlets, test = the left-out one), trained and logged to MLflow (sqlite:///mlflow.db) like any run. The test
figures carry 95% bootstrap intervals. Each run also trains the TF-IDF model of the title and lead; with --fine-tune
the e5-small fine-tune and the recipe's ensemble (combiner chosen on the validation slice of the other outlets) are
each compared with the baseline on the same articles by a paired bootstrap and McNemar; every model's prediction of
every test article is kept in git (benchmarks/results/transfer/SOURCE.json, as cv_recipe.py's fold records), and its
validation and test probabilities in the work folder (work/transfer/SOURCE/probs.npz). Models stay out of the model
registry. Results go to benchmarks/results/security-transfer.json; a row names the recipe version it ran.

The summary also pools the left-out sources: every article of every source run with the current recipe, scored by
the models that never saw its outlet, in one paired test of each model against the baseline (`pooled`). It is
computed from the kept predictions, which must be of the corpus as it is and reproduce each row's test macro-F1;
where a row's are missing or disagree, the pooled figure is left out and the sources to run again are named.

`--backbone DIR` runs the recipe with the fine-tune from a pretrained backbone (benchmarks/dapt.py's; implies
--fine-tune), checked as cv_recipe.py checks it (pretrained with the corpus excluded). Its sources are a variant named
after the directory, with their own datasets, work folder, records (transfer/NAME/) and results file
(security-transfer-NAME.json, which records the backbone's pretrain.json; another pretraining of it is refused
there). The backbone never read a test article, but it may have read other, unlabelled articles of the left-out
outlet (dapt.py's are of five of the corpus's six outlets, all but Jawhara FM): a domain-adapted model is meant to
have, so the figure measures an outlet whose labels, not whose news, were never seen.
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
RECORDS = RESULTS / "transfer"


def variant_paths(variant: str = "") -> tuple[Path, Path, Path]:
    """The work folder, the record folder and the results file of the plain recipe, or of the fine-tune from the
    backbone `variant`."""
    if not variant:
        return WORK, RECORDS, RESULTS / "security-transfer.json"
    return WORK / variant, RECORDS / variant, RESULTS / f"security-transfer-{variant}.json"


def source_dir(source: str, work: Path = WORK) -> Path:
    """Where one left-out source's split files and saved probabilities live."""
    return work / source.replace(" ", "_")


def split_files(rows: list[dict[str, Any]], source: str, seed: int = 42, work: Path = WORK) -> dict[str, Path]:
    """Train and validation (stratified 10%) from the other outlets, test from `source`."""
    from sklearn.model_selection import train_test_split

    from pipeline.readers import write_jsonl

    rest = [r for r in rows if r["source"] != source]
    train, val = train_test_split(rest, test_size=0.1, stratify=[r["label"] for r in rest], random_state=seed)
    out = source_dir(source, work)
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


def leave_out(rows: list[dict[str, Any]], source: str, fine_tune: bool, overrides: list[str],
              variant: str = "") -> dict[str, Any]:
    """Baseline (and the fine-tune and the ensemble) trained without `source`, tested on it; with `variant` (a
    backbone's name, which `overrides` set as model.name_or_path), in that variant's datasets and folders."""
    from recipe import VERSION, run_recipe, split_data

    work, records, _ = variant_paths(variant)
    out: dict[str, Any] = {"source": source} | ({"recipe": VERSION} if fine_tune else {})

    def report(kind: str, run: Any) -> None:
        test = run.metrics["test"]
        out[kind] = figures(run.metrics) | ({} if kind == "baseline" else {"vs_baseline": test.get("vs_baseline")}) \
            | ({"combiner": run.metrics["ensemble"]["combiner"]} if kind == "ensemble" else {})
        print(source, kind.replace("_", "-"), json.dumps(out[kind]), flush=True)

    name = f"security-news-without-{source.replace(' ', '_')}" + (f"-{variant}" if variant else "")
    data = split_data(name, split_files(rows, source, work=work), work)
    cfg, runs = run_recipe([*data, "tracking.registered_model=null"], overrides, fine_tune=fine_tune, report=report)
    if fine_tune:  # every model's predictions, kept; and its probabilities: a combiner can be studied again
        from cv_recipe import corpus_digest, predictions, write_record

        pred, truth, _ = predictions(cfg, {kind: run.model_dir for kind, run in runs.items()},
                                     source_dir(source, work) / "probs.npz")
        write_record(source_dir(source, records).with_suffix(".json"),
                     {"source": source, "recipe": VERSION, "corpus_sha256": corpus_digest(), "truth": truth,
                      "pred": pred} | ({"variant": variant} if variant else {}))
    return out


def kept_predictions(source: str, records: Path = RECORDS) -> dict[str, Any]:
    """A left-out source's kept record of predictions when it is of the corpus as it is now; else empty."""
    from cv_recipe import corpus_digest

    path = source_dir(source, records).with_suffix(".json")
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return record if record.get("corpus_sha256") == corpus_digest() else {}


def pool_sources(rows: list[dict[str, Any]], records: Path = RECORDS) -> dict[str, Any]:
    """The baseline, the lead model, the fine-tune and the ensemble over every article of the sources run with the
    current recipe, each scored by models trained without its outlet; `{"missing": [...]}` where some row's kept
    predictions are absent or do not reproduce its figures."""
    from cv_recipe import encoder, macro_f1, pooled
    from recipe import VERSION

    kinds = ("baseline", "lead", "fine_tuned", "ensemble")
    ran = [r for r in rows if r.get("recipe") == VERSION and all(k in r for k in kinds)]
    saved, missing = {}, []
    for r in ran:
        record = kept_predictions(r["source"], records)
        pred = {k: record["pred"][k] for k in kinds if k in record.get("pred", {})}
        if len(pred) < len(kinds) or any(abs(macro_f1(record["truth"], p) - r[k]["macro_f1"]) > 1e-3
                                         for k, p in pred.items()):
            missing.append(r["source"])
        else:
            saved[r["source"]] = (record["truth"], pred)
    if missing or not saved:
        return {"missing": missing}
    truth = [x for t, _ in saved.values() for x in t]
    labels = sorted({*truth, *(x for _, p in saved.values() for k in kinds for x in p[k])})
    encode = encoder(labels)
    preds = {k: encode([x for _, p in saved.values() for x in p[k]]) for k in kinds}
    return {"sources": list(saved), "rows": len(truth), "labels": labels, "recipe": VERSION} \
        | pooled(encode(truth), preds, labels)


def main() -> None:
    """Leave each chosen source out in turn; write the results JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", nargs="*", help="sources to leave out (default: every source)")
    ap.add_argument("--fine-tune", action="store_true",
                    help="also fine-tune e5-small (cpu.yaml: 4 epochs) and stack it with the baseline per source")
    ap.add_argument("--summary-only", action="store_true", help="pool the saved predictions without training")
    ap.add_argument("--backbone", type=Path, help="fine-tune from this pretrained backbone (benchmarks/dapt.py's); "
                    "implies --fine-tune")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for the fine-tuned runs")
    args = ap.parse_args()
    if args.summary_only and (args.sources is not None or args.fine_tune or args.overrides):
        ap.error("--summary-only pools the sources already run, without training: it takes no --sources, "
                 "--fine-tune or overrides")
    if not CORPUS.is_file():
        print(f"skipped: {CORPUS} is absent (benchmarks read real data from ../shared/data)")
        return
    from pipeline.readers import read_jsonl

    rows = read_jsonl(CORPUS)
    known = sorted({r["source"] for r in rows})
    unknown = [s for s in args.sources or [] if s not in known]
    if unknown:
        ap.error(f"no source {', '.join(map(repr, unknown))} in {CORPUS}; its sources: {', '.join(known)}")
    sources = [] if args.summary_only else args.sources or known
    variant = args.backbone.name if args.backbone else ""
    _, records, path = variant_paths(variant)
    before = json.loads(path.read_text()) if path.is_file() else {}
    if args.summary_only and not before.get("sources"):
        again = f"--backbone {args.backbone} --sources SOURCE" if variant else "--sources SOURCE"
        ap.exit(2, f"error: nothing to pool: {path} has no source run yet; "
                   f"run python benchmarks/transfer.py {again} first\n")
    overrides, pretrain = list(args.overrides), before.get("pretrain")
    if args.backbone and not args.summary_only:  # pooling the kept predictions needs no backbone
        from cv_recipe import same_backbone

        pretrain = same_backbone(args.backbone, pretrain if before.get("sources") else None, path)
        overrides.append(f"model.name_or_path={args.backbone}")
    started = time.time()
    results = [leave_out(rows, s, args.fine_tune or bool(variant), overrides, variant) for s in sources]
    previous = {r["source"]: r for r in before.get("sources", [])}
    previous.update({r["source"]: r for r in results})
    pool = pool_sources(list(previous.values()), records)
    if "missing" in pool:
        again = f"--backbone {args.backbone}" if variant else "--fine-tune"
        print("no pooled figure: " + (f"the kept test predictions of {', '.join(pool['missing'])} are absent or "
                                      f"out of date; run them again with {again}" if pool["missing"] else
                                      f"no source has run with {again} under the current recipe"))
    else:
        print(f"pooled over {len(pool['sources'])} sources ({pool['rows']} articles): ensemble − baseline "
              f"{pool['ensemble']['vs_baseline']['macro_f1_diff']:+.3f} "
              f"{pool['ensemble']['vs_baseline'].get('macro_f1_diff_interval')}")
    wall = before.get("wall_seconds") if args.summary_only else round(time.time() - started, 1)
    path.write_text(json.dumps({"corpus": str(CORPUS.relative_to(ROOT.parent)), "rows": len(rows),
                                "sources": list(previous.values()), "wall_seconds": wall}
                               | ({"pretrain": pretrain} if pretrain else {})
                               | ({} if "missing" in pool else {"pooled": pool}), ensure_ascii=False, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
