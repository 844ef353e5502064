"""Streaming batch predictor for article dumps: bounded memory, input order kept, resumable, never loses a row."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import autoruntime
from pipeline.artifacts import Scorer, model_name, read_model_config
from pipeline.config import PredictConfig, with_flags
from pipeline.errors import DataError
from pipeline.jobs import DiskError, StopSignals, disk_error, exclusive, is_disk_fault, on_disk_fault
from pipeline.readers import RawRow, detect_format, iter_rows
from pipeline.scoring import load_scorer
from pipeline.sinks import errors_file, open_sink, output_columns, prepare_output
from pipeline.text import arabic_share, join_fields


@dataclass(frozen=True)
class PredictJob:
    """What to classify and where to: everything else comes from the model's `predict:` section and flags."""

    model: str
    input: str
    output: str
    resume: bool = False
    overwrite: bool = False
    shard: tuple[int, int] = (0, 1)
    progress: bool = True


@dataclass
class Summary:
    """Counts for the final line."""

    rows: int = 0
    errors: int = 0
    needs_review: int = 0
    seconds: float = 0.0
    by_error: dict[str, int] = field(default_factory=dict)

    def add(self, outs: list[dict[str, Any]], errs: list[dict[str, Any]]) -> None:
        """Count one window's output rows and error records."""
        self.rows += len(outs)
        self.errors += len(errs)
        self.needs_review += sum(o["needs_review"] for o in outs)
        for e in errs:
            self.by_error[e["error"]] = self.by_error.get(e["error"], 0) + 1

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
        raise DataError(f"--shard {text!r}: expected I/N, e.g. 0/4", "bad_option") from None
    if not 0 <= i < n:
        raise DataError(f"--shard {text!r}: need 0 <= I < N", "bad_option")
    return i, n


def resolve_model(model: str) -> tuple[Path, str]:
    """A local model directory and the name written into every output row."""
    if model.startswith(("models:/", "runs:/")):
        from pipeline.tracking import resolve_model_uri  # only URIs need mlflow

        return resolve_model_uri(model), model
    return Path(model), model_name(model)


def load(job: PredictJob, flags: dict[str, Any]) -> tuple[Scorer, str, PredictConfig]:
    """The scorer, the model name for output rows, and the effective predict options; fails at start."""
    directory, name = resolve_model(job.model)
    opts = with_flags(read_model_config(directory).predict, flags)
    autoruntime.refuse_emulated_bf16(opts)
    scorer = load_scorer(directory, device=opts.device, batch_size=opts.batch_size, threads=opts.threads)
    if opts.long_text and scorer.transformer is not None:
        scorer.transformer.set_long_text(opts.long_text)
    return scorer, name, opts


def first_texts(predictor: Predictor, path: str, sample: int = 64) -> list[str] | None:
    """The normalised texts of the input's first documents; None for stdin or a pipe, which cannot be read twice."""
    if path == "-" or not (Path(path).is_file() or Path(path).is_dir()):
        return None
    texts: list[str] = []
    for row in itertools.islice(iter_rows(path), sample * 4):
        if (text := predictor.text(row)) is not None:
            texts.append(text)
        if len(texts) >= sample:
            break
    return texts


def switch_runtime(predictor: Predictor, opts: PredictConfig, path: str, sample: int = 64) -> None:
    """`auto`: the fastest runtime that agrees with float here; explicit ones only once they agree with float."""
    target = predictor.scorer.transformer or predictor.scorer  # an ensemble's runtime is its transformer member's
    if opts.runtime == "auto" and target.kind != "transformer":
        return  # a TF-IDF model has one scorer: nothing to sample, torch never loaded
    texts = first_texts(predictor, path, sample)
    if opts.runtime == "auto":
        predictor.name += autoruntime.choose(target, opts, texts)
    else:
        predictor.name += autoruntime.check_explicit(target, opts, texts)


def windows(rows: Iterator[RawRow], size: int) -> Iterator[list[RawRow]]:
    """Consecutive slices of `size` rows."""
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


class Predictor:
    """Turns raw rows into output rows with the model's normaliser, encoder and calibration."""

    def __init__(self, scorer: Scorer, name: str, opts: PredictConfig) -> None:
        cfg = scorer.cfg
        self.scorer, self.name, self.labels = scorer, name, list(scorer.labels.ids)
        self.multi = scorer.multi  # rows then carry `labels`: every label at or above its threshold
        self.text_fields = opts.text_fields or cfg.data.text_fields
        self.id_field = opts.id_field or cfg.data.id_field
        self.threshold, self.max_chars, self.min_arabic = opts.threshold, opts.max_chars, opts.min_arabic_share
        self.top_k = min(opts.top_k or len(self.labels), len(self.labels))
        self.max_tokens = 4 * (scorer.transformer.cfg.model.max_length if scorer.transformer else 10**9)

    def _base(self, row: RawRow) -> dict[str, Any]:
        raw_id = row.data.get(self.id_field) if row.data else None
        out = {"id": None if raw_id is None else str(raw_id), "line": row.line, "label": None, "confidence": None,
               "labels": [], "needs_review": True, "flags": [], "top": [], "model": self.name, "error": row.error}
        return {c: out[c] for c in output_columns(self.multi)}

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
        return self.run_texts(window)[0]

    def run_texts(self, window: list[RawRow]) -> tuple[list[dict[str, Any]], list[str | None]]:
        """`run`'s output rows, and the normalised text of each row (None where it had none to classify)."""
        outs = [self._base(row) for row in window]
        texts = [self._text(row, out) for row, out in zip(window, outs, strict=True)]
        todo = [i for i, t in enumerate(texts) if t is not None]
        if todo:
            probs, tokens = self.scorer.score([texts[i] for i in todo])
            sets = self.scorer.label_sets(probs) if self.multi else None
            for k, i in enumerate(todo):
                self._fill(outs[i], probs[k], int(tokens[k]), texts[i])
                if sets is not None:
                    outs[i]["labels"] = sets[k]
        return outs, texts

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


def predict(job: PredictJob, flags: dict[str, Any] | None = None) -> Summary:
    """Classify a dump into `job.output`; resumable, sharded, in input order, one writer per output.

    `flags` override the model's saved `predict:` section key by key (None: not given), e.g. {"threshold": 0.7}.
    SIGINT/SIGTERM finish the current window and raise `Interrupted`; a full or read-only disk raises `DiskError`;
    either way the output holds complete rows only, and `resume=True` continues after the last of them.
    """
    sink = open_sink(job.output)
    if job.input != "-" and not Path(job.input).exists():
        raise DataError(f"{job.input}: input not found", "not_found")
    detect_format(job.input)
    with exclusive(job.output, "output"):
        scorer, name, opts = load(job, flags or {})
        predictor = Predictor(scorer, name, opts)
        sink.columns = output_columns(predictor.multi)
        if opts.fast_runtime or opts.runtime == "auto":
            switch_runtime(predictor, opts, job.input)
        with StopSignals("finishing the current window, then stopping") as stop:
            return _classify(job, predictor, opts.window, sink, stop)


def _classify(job: PredictJob, predictor: Predictor, window_size: int, sink: Any, stop: StopSignals) -> Summary:
    start_after = prepare_output(sink, job.input, resume=job.resume, overwrite=job.overwrite)
    errors_path = errors_file(job.output)
    summary, started, last = Summary(), time.time(), start_after
    bar = _progress(job, start_after)
    for window in windows(iter_rows(job.input, start_line=start_after, shard=job.shard), window_size):
        outs = predictor.run(window)
        errs = [{"line": o["line"], "id": o["id"], "error": o["error"], "detail": r.detail}
                for o, r in zip(outs, window, strict=True) if o["error"]]
        try:
            if errs:
                with open(errors_path, "a", encoding="utf-8") as fh:
                    fh.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errs))
            sink.write(outs)
        except OSError as exc:
            if not is_disk_fault(exc):
                raise
            raise _write_failed(exc, job, sink, summary.rows, last, outs) from None
        summary.add(outs, errs)
        last = outs[-1]["line"]
        if bar is not None:
            bar.update(len(outs))
        if stop.signum is not None:
            break
    if bar is not None:
        bar.close()
    stop.check(f"stopped after {summary.rows} rows; {job.output} is complete through input line {last}")
    with on_disk_fault(f"finishing {job.output}", "every row is written; rerun with --resume to finish the output",
                       resumable=True):
        sink.close()
    summary.seconds = time.time() - started
    return summary


def _write_failed(exc: OSError, job: PredictJob, sink: Any, done: int, last: int, window: list[dict[str, Any]],
                  ) -> DiskError:
    """A disk fault while writing, in one line; a row the fault cut short is dropped, never counted as done."""
    with contextlib.suppress(OSError):
        last = sink.recover()  # cut the partial row now, so readers of the output never see it
    done += sum(o["line"] <= last for o in window)  # rows of the failed window that landed whole
    return disk_error(exc, f"writing {job.output}", f"{done} rows written by this run, the output is "
                      f"complete through input line {last}; free space, then rerun with --resume", resumable=True)


def _progress(job: PredictJob, start_after: int) -> Any:
    if not job.progress:
        return None
    from tqdm import tqdm

    total = estimate_rows(job.input, job.shard)
    if total is not None and start_after:
        total = None  # a resumed job does not know how many rows are left
    return tqdm(total=total, unit="doc", desc="classifying", file=sys.stderr, dynamic_ncols=True)
