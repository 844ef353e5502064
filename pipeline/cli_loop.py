"""The analyst's loop on the command line: review queues, label audits, drift reports."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from pipeline.config import load_config


def cmd_audit_labels(args: argparse.Namespace) -> int:
    """Rank likely label errors in the prepared splits (out-of-fold TF-IDF probabilities + cleanlab)."""
    from pipeline.audit import AUDIT_JSON, ISSUES_CSV, audit_labels

    oof = None
    if args.model == "transformer":
        from pipeline.audit_transformer import transformer_out_of_fold as oof
    result = audit_labels(load_config(args.config, args.overrides), folds=args.folds, output=args.output, oof=oof)
    s, m = result.summary, result.summary["model"]
    model = f"TF-IDF, C={m['C']:g}" if m["kind"] == "tfidf" else f"{Path(m['backbone']).name} fine-tunes"
    print(f"{s['rows_audited']} rows audited ({s['folds']}-fold {model}, out-of-fold "
          f"macro-F1 {s['oof_macro_f1']:.3f}): {s['issues_flagged']} likely label errors; "
          + ", ".join(f"{lb}={n}" for lb, n in s["issues_by_label"].items() if n))
    shown = result.issues[:max(args.top, 0)]
    if shown:
        width = max(len(str(i["id"])) for i in shown)
        print(f"{'rank':>4}  {'score':>6}  {'id':<{width}}  {'split':<10} given -> suggested (p)  lead")
        for i in shown:
            print(f"{i['rank']:>4}  {i['score']:>6.3f}  {i['id']:<{width}}  {i['split']:<10} {i['given_label']} -> "
                  f"{i['suggested_label']} ({i['p_suggested']:.2f})  {i['lead'][:60]}")
    print(f"wrote {result.output / ISSUES_CSV} and {result.output / AUDIT_JSON}"
          + (f"; MLflow run {result.run_id}" if result.run_id else ""))
    return 0


def _audit_labels_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config; repeat to merge left to right")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. baseline.C=[2.0]")
    p.add_argument("--folds", type=int, default=5, help="stratified folds for the out-of-fold probabilities")
    p.add_argument("--output", type=Path, default=None,
                   help="output directory (default: <output_dir>/<data.name>-label-audit)")
    p.add_argument("--model", choices=("tfidf", "transformer"), default="tfidf",
                   help="out-of-fold model: the TF-IDF baseline (seconds) or k fine-tunes of model.name_or_path")
    p.add_argument("--top", type=int, default=20, help="flagged rows to print (all are in label_issues.csv)")

def cmd_drift(args: argparse.Namespace) -> int:
    """Compare a dump with a model's training data, dimension by dimension; exit 0 (1 with --fail-on-drift)."""
    from pipeline.drift import DEFAULT_SAMPLE, DriftJob, drift, parse_thresholds

    sample = DEFAULT_SAMPLE if args.sample is None else args.sample
    job = DriftJob(model=args.model, input=args.input, output=args.output, sample=sample,
                   text_fields=args.text_fields, id_field=args.id_field, thresholds=parse_thresholds(args.threshold),
                   tracking_uri=args.tracking_uri, experiment=args.experiment,
                   tracking=False if args.no_tracking else None)
    out, report = drift(job)
    print(f"{report['rows_scored']} of {report['rows_read']} rows scored (the first {job.sample} at most)")
    for name, dim in report["dimensions"].items():
        mark = "FLAG" if dim["flagged"] else "ok"
        print(f"  {name:<11} {dim['measure']:<24} {dim['statistic']:8.3f}  (threshold {dim['threshold']:g})  {mark}")
    if report.get("note"):
        print(f"note: {report['note']}")
    flagged = report["flagged"]
    run = f" (MLflow run {report['run_id']})" if report.get("run_id") else ""
    print(f"{len(flagged)} of {len(report['dimensions'])} dimensions flagged{': ' * bool(flagged)}"
          f"{', '.join(flagged)}; wrote {out}/drift.json and drift.png{run}")
    return 1 if flagged and args.fail_on_drift else 0


def _drift_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory, models:/NAME@ALIAS or runs:/RUN_ID/model")
    p.add_argument("--input", required=True, help="JSONL/CSV/Parquet file (.gz ok) or folder of .txt/.json")
    p.add_argument("--output", help="report directory (default: MODEL/drift/<input name>)")
    p.add_argument("--text-field", dest="text_fields", type=lambda v: v.split(","),
                   help="comma-separated text fields (default: the model's)")
    p.add_argument("--id-field", help="id field (default: the model's)")
    p.add_argument("--sample", type=int, help="score the first N rows only (default 20000)")
    p.add_argument("--threshold", action="append", metavar="DIM=VALUE",
                   help="override a threshold, repeatable: labels=0.2 length=0.25 quality=10 vocabulary=8 "
                        "confidence=0.25 are the defaults")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 when a dimension is flagged (for CI)")
    p.add_argument("--tracking-uri", help="MLflow store (default: the model config's tracking.uri)")
    p.add_argument("--experiment", help="MLflow experiment (default: the model config's)")
    p.add_argument("--no-tracking", action="store_true", help="log nothing to MLflow")


def cmd_review(args: argparse.Namespace) -> int:
    """Pick the N articles of a dump most worth a person's time into a queue file (CSV or JSONL) to label."""
    from pipeline.review import ReviewJob, review

    job = ReviewJob(model=args.model, input=args.input, output=args.output, n=args.n, strategy=args.strategy,
                    overwrite=args.overwrite, text_fields=args.text_fields, id_field=args.id_field,
                    progress=not args.quiet, runtime=args.runtime)
    print(review(job).line(job))
    return 0


def _review_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (TF-IDF or transformer), models:/NAME@ALIAS or "
                   "runs:/RUN_ID/model")
    p.add_argument("--input", required=True, help="the dump: JSONL/CSV/Parquet file (.gz ok), folder, or -")
    p.add_argument("--output", required=True, help="the queue: .csv, .tsv or .jsonl")
    p.add_argument("--n", type=int, default=200, help="articles to pick (default 200)")
    p.add_argument("--strategy", choices=["margin", "entropy", "diverse"], default="margin",
                   help="margin: smallest gap between the top two probabilities (default); entropy: most spread "
                   "probabilities; diverse: the most uncertain of each cluster of similar stories, round-robin")
    p.add_argument("--text-field", dest="text_fields", type=lambda v: v.split(","),
                   help="comma-separated text fields (default: the model's data.text_fields)")
    p.add_argument("--id-field", help="id field (default: the model's data.id_field)")
    p.add_argument("--runtime", choices=["auto", "torch", "onnx"],
                   help="a transformer's runtime, as in predict: auto (default) picks the fastest that agrees with "
                        "float on this CPU; torch scores in exact float")
    p.add_argument("--overwrite", action="store_true", help="replace an existing queue file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable | None]] = {
    "review": (cmd_review, _review_args),
    "audit-labels": (cmd_audit_labels, _audit_labels_args),
    "drift": (cmd_drift, _drift_args),
}
