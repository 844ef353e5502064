"""The analyst's loop on the command line: review queues, label audits, drift reports."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable | None]] = {
    "drift": (cmd_drift, _drift_args),
}
