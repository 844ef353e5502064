"""Crash-safe, append-only outputs for the batch predictor (JSONL, CSV, Parquet).

Every sink appends complete rows and makes them durable per chunk; `recover()`
drops whatever a killed job left half-written and says which input line the
last complete row came from, so `--resume` continues exactly after it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.files import SUFFIXES

COLUMNS = ("id", "line", "label", "confidence", "needs_review", "flags", "top", "model", "error")
# a multi-label model's rows add `labels` (every label at or above its threshold, the primary first)
MULTI_COLUMNS = ("id", "line", "label", "confidence", "labels", "needs_review", "flags", "top", "model", "error")


def output_columns(multi: bool) -> tuple[str, ...]:
    """The columns of an output row, in order: a multi-label model adds `labels`."""
    return MULTI_COLUMNS if multi else COLUMNS


def _durable(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _cut_partial_line(path: Path) -> None:
    """Truncate a text file after its last newline (a row cut by a crash is dropped)."""
    with open(path, "rb+") as fh:
        data_end = fh.seek(0, os.SEEK_END)
        pos = data_end
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                fh.truncate(pos - step + nl + 1)
                return
            pos -= step
        fh.truncate(0)


class _TextSink:
    """A text file of rows that a crash can only cut at its end."""

    def __init__(self, path: Path, columns: tuple[str, ...] = COLUMNS) -> None:
        self.path, self.columns = path, columns

    def _rows(self) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def recover(self) -> int:
        """Drop a partial last row; return the input line of the last complete row (0 if none)."""
        if not self.path.exists():
            return 0
        _cut_partial_line(self.path)
        last = 0
        for row in self._rows():
            last = int(row["line"])
        return last

    def _append(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(text)
            _durable(fh)

    def close(self) -> None:
        """Nothing to finalise: every chunk is already complete on disk."""


class JsonlSink(_TextSink):
    """One JSON object per line."""

    def _rows(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as fh:
            yield from (json.loads(raw) for raw in fh)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows and make them durable."""
        self._append("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class CsvSink(_TextSink):
    """CSV with a header; nested fields (flags, top, labels) as JSON strings."""

    def _rows(self) -> Iterator[dict[str, Any]]:
        with open(self.path, encoding="utf-8", newline="") as fh:
            yield from csv.DictReader(fh)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows (header first when the file is new) and make them durable."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        if not self.path.exists() or self.path.stat().st_size == 0:
            writer.writeheader()
        for r in rows:
            nested = {k: json.dumps(r[k], ensure_ascii=False) for k in ("flags", "top", "labels") if k in self.columns}
            writer.writerow({**{c: r[c] for c in self.columns}, **nested,
                             "id": "" if r["id"] is None else str(r["id"]).replace("\n", " ")})
        self._append(buf.getvalue())


class ParquetSink:
    """Parquet cannot be appended to, so chunks land as atomically renamed part files, merged on close."""

    def __init__(self, path: Path, columns: tuple[str, ...] = COLUMNS) -> None:
        self.path, self.columns = path, columns
        self.parts = path.with_name(path.name + ".parts")

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []

    def recover(self) -> int:
        """Forget unfinished part files; return the input line of the last complete row."""
        import pyarrow.parquet as pq

        if self.path.exists() and not self.parts.exists():
            last = pq.read_table(self.path, columns=["line"]).column("line").to_pylist()
            self._split_back(last)
        for tmp in self.parts.glob("*.tmp") if self.parts.is_dir() else []:
            tmp.unlink()
        files = self._part_files()
        return pq.read_table(files[-1], columns=["line"]).column("line").to_pylist()[-1] if files else 0

    def _split_back(self, lines: list[int]) -> None:
        """A finished output being resumed: move it back to part 0 so new parts follow it."""
        self.parts.mkdir()
        if lines:
            shutil.move(self.path, self.parts / "part-000000.parquet")
        else:
            self.path.unlink()

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Write one part file atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.parts.mkdir(parents=True, exist_ok=True)
        target = self.parts / f"part-{len(self._part_files()):06d}.parquet"
        tmp = target.with_suffix(".tmp")
        schema = _schema(self.columns)
        pq.write_table(pa.Table.from_pylist([{c: r[c] for c in self.columns} for r in rows], schema=schema), tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(target)

    def close(self) -> None:
        """Merge the parts into the output file, streaming one part at a time."""
        import pyarrow.parquet as pq

        files = self._part_files()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with pq.ParquetWriter(tmp, _schema(self.columns)) as writer:
                for part in files:
                    writer.write_table(pq.read_table(part, schema=_schema(self.columns)))
        except BaseException:
            tmp.unlink(missing_ok=True)  # the parts stay: a rerun with --resume merges them again
            raise
        tmp.replace(self.path)
        shutil.rmtree(self.parts, ignore_errors=True)


def _schema(columns: tuple[str, ...] = COLUMNS) -> Any:
    import pyarrow as pa

    top = pa.list_(pa.struct([("label", pa.string()), ("prob", pa.float64())]))
    types = {"id": pa.string(), "line": pa.int64(), "label": pa.string(), "confidence": pa.float64(),
             "labels": pa.list_(pa.string()), "needs_review": pa.bool_(), "flags": pa.list_(pa.string()), "top": top,
             "model": pa.string(), "error": pa.string()}
    return pa.schema([(c, types[c]) for c in columns])


def open_sink(path: str | Path, columns: tuple[str, ...] = COLUMNS) -> JsonlSink | CsvSink | ParquetSink:
    """The sink for an output path, by extension (JSONL writes each row's own keys; CSV and Parquet `columns`)."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower()) if path.suffix.lower() != ".tsv" else None  # a sink writes commas
    sink = {"jsonl": JsonlSink, "csv": CsvSink, "parquet": ParquetSink}.get(kind or "")
    if sink is not None:
        return sink(path, columns)
    raise DataError(f"{path}: output must end in .jsonl, .csv or .parquet")


def errors_file(output: str | Path) -> Path:
    """Where the error records of an output go: `<output>.errors.jsonl`."""
    return Path(f"{output}.errors.jsonl")


def prepare_output(sink: JsonlSink | CsvSink | ParquetSink, source: str, *, resume: bool, overwrite: bool) -> int:
    """Refuse to clobber an existing output; on resume, the input line to continue after (0: from the start).

    Error records past that line are dropped too, so re-processed rows are not recorded twice.
    """
    output = sink.path
    parts = Path(f"{output}.parts")
    exists = output.exists() or parts.exists()
    if exists and not (resume or overwrite):
        raise DataError(f"{output}: exists; pass --resume to continue it or --overwrite to replace it",
                        "output_exists")
    if resume and source == "-":
        raise DataError("--resume needs a file input, not stdin", "resume_stdin")
    if exists and overwrite and not resume:
        for p in (output, errors_file(output)):
            p.unlink(missing_ok=True)
        shutil.rmtree(parts, ignore_errors=True)
        return 0
    after = sink.recover() if resume else 0
    _trim_errors(errors_file(output), after)
    return after


def _trim_errors(path: Path, after: int) -> None:
    """Keep the error records up to input line `after` (a line cut by a crash is dropped)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [x for x in lines if x.endswith("\n") and json.loads(x)["line"] <= after]
    path.write_text("".join(kept), encoding="utf-8")
