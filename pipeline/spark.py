"""Batch classification on Spark: the project's own Predictor inside `mapInArrow`, loaded once per Python worker.

The input is cut into fixed ranges of `part_rows` input lines; each range is written by its own Spark job into
`OUT/lines-<first>-<last>/` through Spark's committer, so a range either has its `_SUCCESS` and every row, or is
redone: `resume=True` skips the committed ranges.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.autoruntime import CANDIDATES
from pipeline.errors import DataError, PipelineError
from pipeline.jobs import exclusive
from pipeline.predict import PredictJob, Predictor, Summary, load, switch_runtime
from pipeline.readers import RawRow, detect_format, parse_jsonl_line
from pipeline.sinks import _schema, output_columns

INSTALL = "pip install 'arabic-news-pipeline[spark]' (pyspark 4) and Java 17 (apt install openjdk-17-jre-headless)"
# what `runtime.apply` tags each runtime `auto` may choose, so the workers can be given the same one explicitly
RUNTIME_OF_TAG = {"+onnx-int8": CANDIDATES["onnx int8"], "+bf16": CANDIDATES["torch bf16"],
                  "+int8": CANDIDATES["torch int8"], "+onnx": CANDIDATES["onnx fp32"]}
FLOAT_FLAGS = {"runtime": "torch", "quantize": "none", "precision": "fp32"}
LINE = "_pipeline_line"  # the input line number travels in a column no dump is likely to have
NO_NULL = "\u0000"  # CSV: read empty fields as "", like Python's csv module, not as null
DDL = {"id": "string", "line": "bigint", "label": "string", "confidence": "double", "labels": "array<string>",
       "needs_review": "boolean", "flags": "array<string>", "top": "array<struct<label:string,prob:double>>",
       "model": "string", "error": "string"}  # = sinks._schema, in Spark's words

_PREDICTORS: dict[tuple[str, str], Predictor] = {}  # one per Python worker and model + options


@dataclass(frozen=True)
class SparkJob:
    """A `pipeline predict --engine spark` request: input file, output dataset directory, Spark master."""

    model: str
    input: str
    output: str
    master: str | None = None
    part_rows: int = 100_000
    resume: bool = False
    overwrite: bool = False


@dataclass
class SparkResult:
    """The usual summary, plus what Spark did: ranges written and skipped, model loads in Python workers."""

    summary: Summary
    written: int = 0
    skipped: int = 0
    loads: int = 0

    def line(self, output: str) -> str:
        """The one-line summary printed at the end."""
        return (f"{self.summary.line(output)} (spark: {self.written} line ranges written, {self.skipped} already "
                f"committed, model loaded {self.loads}x in Python workers)")


def worker_predictor(model: str, local: str, name: str, flags_json: str) -> tuple[Predictor, bool]:
    """This Python worker's Predictor for a model and options, loaded on first use; True when it was loaded now.

    `local` is the driver's directory of a `models:/` URI: used where the worker sees it, else the URI is resolved.
    """
    key = (model, flags_json)
    if key in _PREDICTORS:
        return _PREDICTORS[key], False
    ref = local if local and Path(local).is_dir() else model
    scorer, _, opts = load(PredictJob(ref, "", ""), json.loads(flags_json))
    predictor = Predictor(scorer, name, opts)
    if opts.fast_runtime:  # the driver has checked it against float on the input's first documents already
        from pipeline import runtime

        predictor.name += runtime.apply(scorer, opts)
    _PREDICTORS[key] = predictor
    return predictor, True


def raw_rows(batch: Any, kind: str, source: str) -> list[RawRow]:
    """An Arrow batch of input rows as the readers' RawRows, parsed and numbered as `iter_rows` would."""
    lines = batch.column(LINE).to_pylist()
    if kind != "jsonl":
        data = batch.drop_columns([LINE]).to_pylist()
        return [RawRow(source, n, d) for n, d in zip(lines, data, strict=True)]
    rows = (_jsonl_row(source, n, text) for n, text in zip(lines, batch.column("value").to_pylist(), strict=True))
    return [row for row in rows if row is not None]


def _jsonl_row(source: str, number: int, text: str) -> RawRow | None:
    if "\ufffd" in text:  # Spark decodes text as UTF-8 and puts U+FFFD where bytes are not UTF-8
        return RawRow(source, number, error="invalid_utf8", detail="line is not UTF-8")
    return parse_jsonl_line(source, number, text.encode("utf-8"))


def classify_batches(batches: Iterator[Any], spec: tuple[str, ...], loads: Any,
                     hook: Callable[[list[int]], None] | None = None) -> Iterator[Any]:
    """Output rows for Arrow batches of input rows (runs in the Python workers)."""
    import pyarrow as pa

    model, local, name, flags_json, kind, source = spec
    predictor, fresh = worker_predictor(model, local, name, flags_json)
    if fresh:
        loads.add(1)
    for batch in batches:
        if hook is not None:
            hook(batch.column(LINE).to_pylist())
        outs = predictor.run(raw_rows(batch, kind, source))
        columns = output_columns(predictor.multi)  # a multi-label model adds `labels`, as the local sinks do
        yield pa.RecordBatch.from_pylist([{c: o[c] for c in columns} for o in outs], schema=_schema(columns))


def session(master: str | None) -> Any:
    """A SparkSession; local masters run the workers on this interpreter and this copy of the package."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise PipelineError(f"--engine spark needs pyspark: {INSTALL}") from None
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise PipelineError(f"--engine spark needs Java: {INSTALL}")
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        master = "local[*,4]"  # the second number lets a failed task be retried, as on a cluster
    if master and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        root = str(Path(__file__).resolve().parents[1])
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    builder = SparkSession.builder.appName("pipeline predict").config("spark.ui.showConsoleProgress", "false")
    spark = (builder.master(master) if master else builder).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def read_indexed(spark: Any, path: str, kind: str) -> tuple[Any, int]:
    """The input as a DataFrame with its 1-based line number in `LINE`, and the last line number.

    Lines are numbered in the JVM from per-partition counts (no Python round trip): JSONL and Parquet rows as
    `iter_rows` numbers them; CSV rows as the physical line they end on when no quoted field spans lines.
    """
    from pyspark.sql import functions as F

    reader = spark.read
    if kind == "jsonl":
        df = reader.text(path)
    elif kind == "csv":
        sep = "\t" if ".tsv" in [s.lower() for s in Path(path).suffixes] else ","
        df = reader.csv(path, header=True, multiLine=True, escape='"', sep=sep, nullValue=NO_NULL, emptyValue="")
    else:
        df = reader.parquet(path)
    first = 2 if kind == "csv" else 1  # a CSV's line 1 is its header
    df = df.withColumn("_pid", F.spark_partition_id()).withColumn("_mid", F.monotonically_increasing_id())
    counts = sorted((r["_pid"], r["count"]) for r in df.groupBy("_pid").count().collect())
    offsets, total = [], 0
    for pid, count in counts:
        offsets += [F.lit(pid), F.lit(total)]
        total += count
    if not counts:
        return df.drop("_pid", "_mid").withColumn(LINE, F.lit(0).cast("long")), 0
    start = F.element_at(F.create_map(*offsets), F.col("_pid"))
    position = F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), 33)  # id = partition << 33 | row number
    return df.withColumn(LINE, start + position + first).drop("_pid", "_mid"), total + first - 1


def ranges(last: int, part_rows: int) -> list[tuple[int, int]]:
    """Fixed ranges of input line numbers, `part_rows` each, covering 1..last."""
    return [(lo, lo + part_rows - 1) for lo in range(1, last + 1, part_rows)]


def range_dir(output: str, lo: int, hi: int) -> str:
    """The committed sub-directory of one line range."""
    return f"{output.rstrip('/')}/lines-{lo:010d}-{hi:010d}"


class _Fs:
    """The output's file system (local, HDFS, S3...) through Hadoop, as Spark's committer sees it."""

    def __init__(self, spark: Any, path: str) -> None:
        jvm = spark.sparkContext._jvm
        self.path = jvm.org.apache.hadoop.fs.Path
        self.fs = self.path(path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def exists(self, path: str) -> bool:
        """Whether a path exists."""
        return bool(self.fs.exists(self.path(path)))

    def children(self, path: str) -> list[str]:
        """Names of the entries of a directory."""
        return [s.getPath().getName() for s in self.fs.listStatus(self.path(path))] if self.exists(path) else []

    def delete(self, path: str) -> None:
        """Remove a path and everything under it."""
        self.fs.delete(self.path(path), True)


def _plan(fs: _Fs, job: SparkJob, last: int) -> tuple[list[tuple[int, int]], int]:
    """The ranges still to write, and how many are committed already; refuses to mix runs or clobber."""
    planned = ranges(last, job.part_rows)
    existing = [n for n in fs.children(job.output) if not n.startswith(("_", "."))]
    if existing and job.overwrite and not job.resume:
        fs.delete(job.output)
        return planned, 0
    if existing and not job.resume:
        raise DataError(f"{job.output}: exists; pass --resume to continue it or --overwrite to replace it",
                        "output_exists")
    names = {Path(range_dir(job.output, lo, hi)).name for lo, hi in planned}
    if stray := sorted(set(existing) - names):
        raise DataError(f"{job.output}: holds {stray[0]}, not a line range of this input with --part-rows "
                        f"{job.part_rows}; resume with the --part-rows it was written with", "output_exists")
    todo = [r for r in planned if not fs.exists(range_dir(job.output, *r) + "/_SUCCESS")]
    return todo, len(planned) - len(todo)


def _driver_check(job: SparkJob, flags: dict[str, Any]) -> tuple[str, str, Any, dict[str, Any], bool]:
    """Load the model once on the driver: bad flags and a disagreeing fast runtime fail before Spark starts.

    `auto` is settled here, once, and the workers get the runtime it chose as explicit flags; returns the model's
    local directory, its output name, the options, the flags for the workers, and whether it is multi-label.
    """
    scorer, name, opts = load(PredictJob(job.model, job.input, job.output), flags)
    auto = opts.runtime == "auto" and scorer.transformer is not None  # a TF-IDF model has nothing to choose
    if (opts.fast_runtime or auto) and "://" not in job.input:
        predictor = Predictor(scorer, name, opts)
        switch_runtime(predictor, opts, job.input)  # also exports ONNX once, before the workers look for it
        if opts.runtime == "auto":
            flags = {**flags, **RUNTIME_OF_TAG.get(predictor.name.removeprefix(name), FLOAT_FLAGS)}
    elif opts.runtime == "auto":
        flags = {**flags, **FLOAT_FLAGS}  # nothing to try on a remote input: the float model, as on stdin
    return str(scorer.directory), name, opts, flags, scorer.multi


def predict_spark(job: SparkJob, flags: dict[str, Any] | None = None, spark: Any = None,
                  hook: Callable[[list[int]], None] | None = None) -> SparkResult:
    """Classify a JSONL/CSV/Parquet dump into a Parquet dataset directory with Spark; see the module docstring.

    `hook` runs in the workers on each batch's line numbers before it is classified (tests inject faults with it).
    """
    kind = detect_format(job.input)
    if kind == "folder" or job.input == "-":
        raise DataError("--engine spark reads JSONL, CSV or Parquet files (.gz too), not folders or stdin",
                        "bad_option")
    if "://" not in job.input and not Path(job.input).exists():
        raise DataError(f"{job.input}: input not found", "not_found")
    if job.part_rows < 1:
        raise DataError("--part-rows: expected a positive number of input lines", "bad_option")
    flags = flags or {}
    local, name, opts, flags, multi = _driver_check(job, flags)
    lock = exclusive(job.output, "output") if "://" not in job.output else contextlib.nullcontext()
    with lock:
        spark = spark or session(job.master)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(opts.window))
        spec = (job.model, local, name, json.dumps(flags, sort_keys=True), kind, job.input)
        return _run(spark, job, spec, hook, ", ".join(f"{c} {DDL[c]}" for c in output_columns(multi)))


def _run(spark: Any, job: SparkJob, spec: tuple[str, ...], hook: Any, schema: str) -> SparkResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.time()
    data, last = read_indexed(spark, job.input, spec[4])
    fs = _Fs(spark, job.output)
    todo, skipped = _plan(fs, job, last)
    data = data.persist(StorageLevel.MEMORY_AND_DISK)
    loads = spark.sparkContext.accumulator(0)
    slices = spark.sparkContext.defaultParallelism
    try:
        for lo, hi in todo:
            part = data.filter(F.col(LINE).between(lo, hi)).repartitionByRange(slices, LINE).sortWithinPartitions(LINE)
            out = part.mapInArrow(lambda it: classify_batches(it, spec, loads, hook), schema)
            out.write.mode("overwrite").parquet(range_dir(job.output, lo, hi))
    finally:
        data.unpersist()
    result = SparkResult(_summary(spark, job.output, last), written=len(todo), skipped=skipped, loads=loads.value)
    result.summary.seconds = time.time() - started
    return result


def _summary(spark: Any, output: str, last: int) -> Summary:
    """Counts over the whole committed output (this run's ranges and the ones a resume skipped)."""
    from pyspark.sql import functions as F

    summary = Summary()
    if last == 0:
        return summary
    out = spark.read.option("recursiveFileLookup", "true").parquet(output)
    totals = out.agg(F.count("*").alias("rows"), F.sum(F.col("needs_review").cast("int")).alias("review")).first()
    summary.rows, summary.needs_review = int(totals["rows"]), int(totals["review"] or 0)
    errors = out.where("error is not null").groupBy("error").count().collect()
    summary.by_error = {r["error"]: r["count"] for r in errors}
    summary.errors = sum(summary.by_error.values())
    return summary
