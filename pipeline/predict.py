"""Streaming batch predictor for article dumps: bounded memory, input order kept, resumable, never loses a row."""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import Scorer, read_model_config
from pipeline.errors import DataError, PipelineError
from pipeline.readers import RawRow, detect_format, iter_rows
from pipeline.sinks import open_sink
from pipeline.text import arabic_share, join_fields


@dataclass
class PredictOptions:
    """What `pipeline predict` was asked to do."""

    model: str
    input: str
    output: str
    batch_size: int | None = None  # None: the model config's predict section decides
    threshold: float | None = None
    top_k: int | None = None
    device: str | None = None
    threads: int | None = None
    resume: bool = False
    overwrite: bool = False
    shard: tuple[int, int] = (0, 1)
    text_fields: list[str] | None = None
    id_field: str | None = None
    long_text: str | None = None
    runtime: str = "torch"
    quantize: str = "none"
    precision: str = "fp32"
    min_agreement: float = 0.97
    window: int | None = None
    progress: bool = True


@dataclass
class Summary:
    """Counts for the final line."""

    rows: int = 0
    errors: int = 0
    needs_review: int = 0
    seconds: float = 0.0
    by_error: dict[str, int] = field(default_factory=dict)

    def line(self, output: str) -> str:
        """The one-line summary printed at the end."""
        rate = self.rows / self.seconds if self.seconds else 0.0
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_error.items()))
        return (f"{self.rows} rows, {self.errors} errors{f' ({kinds})' if kinds else ''}, "
                f"{self.needs_review} need review, {rate:.1f} docs/s -> {output}")


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise DataError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise DataError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def resolve_model(model: str) -> tuple[Path, str]:
    """A local model directory and the name written into every output row."""
    if model.startswith(("models:/", "runs:/")):
        from pipeline.tracking import resolve_model_uri  # only URIs need mlflow

        return resolve_model_uri(model), model
    path = Path(model)
    weights = path / "model.safetensors" if (path / "model.safetensors").is_file() else path / "model.joblib"
    digest = hashlib.sha256()
    if weights.is_file():
        with open(weights, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return path, f"{path.name}@{digest.hexdigest()[:12]}"


def load(opts: PredictOptions) -> tuple[Scorer, str]:
    """The scorer on the requested runtime and the model name for output rows; fails at start on a bad model."""
    from pipeline.evaluate import load_scorer
    from pipeline.model import set_threads

    directory, name = resolve_model(opts.model)
    defaults = read_model_config(directory).predict
    set_threads(opts.threads or defaults.threads)
    scorer = load_scorer(directory, device=opts.device or defaults.device,
                         batch_size=opts.batch_size or defaults.batch_size)
    if opts.long_text and scorer.kind == "transformer":
        scorer.set_long_text(opts.long_text)
    if (opts.runtime, opts.quantize, opts.precision) != ("torch", "none", "fp32"):
        name += switch_runtime(scorer, opts, Predictor(scorer, name, opts).text)
    return scorer, name


def switch_runtime(scorer: Scorer, opts: PredictOptions, text_of: Callable[[RawRow], str | None],
                   sample: int = 64) -> str:
    """Move to a faster runtime only after it agrees with the float model on the input's first documents."""
    from pipeline import runtime

    if opts.input == "-":
        raise PipelineError("a faster runtime is checked against float on the input's first documents; give a file")
    texts: list[str] = []
    for row in itertools.islice(iter_rows(opts.input), sample * 4):
        if (text := text_of(row)) is not None:
            texts.append(text)
        if len(texts) >= sample:
            break
    reference = scorer.score(texts)[0] if texts else np.zeros((0, 1))
    tag = runtime.apply(scorer, opts.runtime, opts.quantize, opts.precision, opts.threads)
    probs = scorer.score(texts)[0] if texts else reference
    agreement = float((probs.argmax(1) == reference.argmax(1)).mean()) if texts else 1.0
    drift = float(np.abs(probs - reference).max()) if texts else 0.0
    print(f"{tag[1:]}: label agreement with the float model on the first {len(texts)} documents {agreement:.1%}, "
          f"max probability difference {drift:.4f}", file=sys.stderr)
    if agreement < opts.min_agreement:
        raise PipelineError(f"{tag[1:]} agrees with the float model on only {agreement:.1%} of the first "
                            f"{len(texts)} documents (< {opts.min_agreement:.0%}); use the default runtime")
    return tag


def windows(rows: Iterator[RawRow], size: int) -> Iterator[list[RawRow]]:
    """Consecutive slices of `size` rows."""
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


class Predictor:
    """Turns raw rows into output rows with the model's normaliser, encoder and calibration."""

    def __init__(self, scorer: Scorer, name: str, opts: PredictOptions) -> None:
        cfg = scorer.cfg
        self.scorer, self.name, self.labels = scorer, name, list(scorer.labels.ids)
        self.text_fields = opts.text_fields or cfg.data.text_fields
        self.id_field = opts.id_field or cfg.data.id_field
        self.threshold = cfg.predict.threshold if opts.threshold is None else opts.threshold
        self.top_k = min(opts.top_k or cfg.predict.top_k or len(self.labels), len(self.labels))
        self.max_chars = cfg.predict.max_chars
        self.min_arabic = cfg.predict.min_arabic_share
        self.max_tokens = 4 * (cfg.model.max_length if scorer.kind == "transformer" else 10**9)

    def _base(self, row: RawRow) -> dict[str, Any]:
        raw_id = row.data.get(self.id_field) if row.data else None
        return {"id": None if raw_id is None else str(raw_id), "line": row.line, "label": None, "confidence": None,
                "needs_review": True, "flags": [], "top": [], "model": self.name, "error": row.error}

    def text(self, row: RawRow) -> str | None:
        """The normalised text of a row, or None where it has none to classify."""
        return self._text(row, {"error": None})

    def _text(self, row: RawRow, out: dict[str, Any]) -> str | None:
        """The normalised text to classify, or None with an error code set."""
        if row.error:
            return None
        if not any(f in row.data for f in self.text_fields):
            out["error"] = "missing_text"
            return None
        text = join_fields(row.data.get(f) for f in self.text_fields)
        if len(text) > self.max_chars:  # keep head and tail: bounded work for a runaway document
            half = self.max_chars // 2
            text = text[:half] + "\n" + text[-half:]
            out["error"] = "too_long"
        text = self.scorer.normalise(text)
        if not text:
            out["error"] = out["error"] or "empty_text"
            return None
        return text

    def run(self, window: list[RawRow]) -> list[dict[str, Any]]:
        """Output rows for one window, in input order; length-sorted batching happens inside the scorer."""
        outs = [self._base(row) for row in window]
        texts = [self._text(row, out) for row, out in zip(window, outs, strict=True)]
        todo = [i for i, t in enumerate(texts) if t is not None]
        if todo:
            probs, tokens = self.scorer.score([texts[i] for i in todo])
            for k, i in enumerate(todo):
                self._fill(outs[i], probs[k], int(tokens[k]), texts[i])
        return outs

    def _fill(self, out: dict[str, Any], probs: np.ndarray, tokens: int, text: str) -> None:
        order = np.argsort(-probs, kind="stable")[: self.top_k]
        out["label"] = self.labels[order[0]]
        out["confidence"] = float(probs[order[0]])
        out["top"] = [{"label": self.labels[j], "prob": round(float(probs[j]), 6)} for j in order]
        flags = []
        if out["confidence"] < self.threshold:
            flags.append("low_confidence")
        if arabic_share(text) < self.min_arabic:
            flags.append("not_arabic")
        if tokens > self.max_tokens or out["error"] == "too_long":
            flags.append("cut_heavily")
        out["flags"] = flags
        out["needs_review"] = bool(flags) or out["error"] is not None


def estimate_rows(path: str, shard: tuple[int, int]) -> int | None:
    """Rows to expect, for the ETA: Parquet metadata, or newlines of an uncompressed file."""
    if path == "-" or path.endswith(".gz"):
        return None
    kind = detect_format(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        total = pq.ParquetFile(path).metadata.num_rows
    elif kind == "folder":
        total = sum(1 for p in Path(path).rglob("*") if p.suffix.lower() in (".txt", ".json"))
    else:
        with open(path, "rb") as fh:
            total = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
        total -= kind == "csv"
    return -(-total // shard[1])


def _check_output(opts: PredictOptions, sink: Any) -> int:
    """Refuse to clobber an existing output; on --resume, the input line to continue after."""
    exists = Path(opts.output).exists() or Path(opts.output + ".parts").exists()
    if exists and not (opts.resume or opts.overwrite):
        raise DataError(f"{opts.output}: exists; pass --resume to continue it or --overwrite to replace it")
    if opts.resume and opts.input == "-":
        raise DataError("--resume needs a file input, not stdin")
    if exists and opts.overwrite and not opts.resume:
        import shutil

        for p in (Path(opts.output), Path(opts.output + ".errors.jsonl")):
            p.unlink(missing_ok=True)
        shutil.rmtree(opts.output + ".parts", ignore_errors=True)
        return 0
    return sink.recover() if opts.resume else 0


def _trim_errors(path: Path, after: int) -> None:
    """Keep error records up to the resume point, so re-processed rows are not recorded twice."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [x for x in lines if x.endswith("\n") and json.loads(x)["line"] <= after]
    path.write_text("".join(kept), encoding="utf-8")


def predict(opts: PredictOptions) -> Summary:
    """Classify a dump into `opts.output`; resumable, sharded, in input order."""
    sink = open_sink(opts.output)
    if opts.threshold is not None and not 0.0 <= opts.threshold <= 1.0:
        raise DataError(f"--threshold {opts.threshold:g}: expected a confidence between 0 and 1")
    if opts.input != "-" and not Path(opts.input).exists():
        raise DataError(f"{opts.input}: input not found")
    detect_format(opts.input)
    scorer, name = load(opts)
    Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
    start_after = _check_output(opts, sink)
    errors_path = Path(opts.output + ".errors.jsonl")
    _trim_errors(errors_path, start_after)
    predictor = Predictor(scorer, name, opts)
    shard_i, shard_n = opts.shard
    rows = (r for n, r in enumerate(iter_rows(opts.input)) if n % shard_n == shard_i and r.line > start_after)
    summary, started = Summary(), time.time()
    bar = _progress(opts, start_after)
    for window in windows(rows, opts.window or scorer.cfg.predict.window):
        outs = predictor.run(window)
        errs = [{"line": o["line"], "id": o["id"], "error": o["error"], "detail": r.detail}
                for o, r in zip(outs, window, strict=True) if o["error"]]
        if errs:
            with open(errors_path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errs))
        sink.write(outs)
        summary.rows += len(outs)
        summary.errors += len(errs)
        summary.needs_review += sum(o["needs_review"] for o in outs)
        for e in errs:
            summary.by_error[e["error"]] = summary.by_error.get(e["error"], 0) + 1
        if bar is not None:
            bar.update(len(outs))
    if bar is not None:
        bar.close()
    sink.close()
    summary.seconds = time.time() - started
    return summary


def _progress(opts: PredictOptions, start_after: int) -> Any:
    if not opts.progress:
        return None
    from tqdm import tqdm

    total = estimate_rows(opts.input, opts.shard)
    if total is not None and start_after:
        total = None  # a resumed job does not know how many rows are left
    return tqdm(total=total, unit="doc", desc="classifying", file=sys.stderr, dynamic_ncols=True)
