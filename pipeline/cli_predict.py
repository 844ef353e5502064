"""`pipeline predict`: its flags, and the job they ask for on the local engine or on Spark."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.predict import PredictJob


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


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable | None]] = {
    "predict": (cmd_predict, _predict_args),
}
