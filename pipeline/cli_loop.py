"""The analyst's loop on the command line: review queues, label audits, drift reports."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def cmd_review(args: argparse.Namespace) -> int:
    """Pick the N articles of a dump most worth a person's time into a queue file (CSV or JSONL) to label."""
    from pipeline.review import ReviewJob, review

    job = ReviewJob(model=args.model, input=args.input, output=args.output, n=args.n, strategy=args.strategy,
                    overwrite=args.overwrite, text_fields=args.text_fields, id_field=args.id_field,
                    progress=not args.quiet)
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing queue file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable | None]] = {
    "review": (cmd_review, _review_args),
}
