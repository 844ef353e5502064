"""Streaming row readers for JSONL, CSV, Parquet and folders of text files (`.gz` and stdin too).

Readers never stop on a bad row: they yield it with an error code and the
caller decides (raise, skip, or write an error row). Line numbers are 1-based.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipeline.errors import DataError
from pipeline.files import format_of


@dataclass
class RawRow:
    """One input row, or the reason it could not be read."""

    source: str
    line: int
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    detail: str = ""

    @property
    def where(self) -> str:
        """`file:line` for messages."""
        return f"{self.source}:{self.line}" if self.line else self.source


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    """The reader for a path: explicit `fmt`, a directory, or the extension (before `.gz`)."""
    if fmt != "auto":
        return fmt
    if str(path) == "-":
        return "jsonl"
    if Path(path).is_dir():
        return "folder"
    if kind := format_of(path):
        return kind
    raise DataError(f"{path}: cannot tell the format from the extension; use .jsonl, .csv, .parquet or a folder",
                    "unknown_format")


def _open_binary(path: str | Path) -> IO[bytes]:
    if str(path) == "-":
        return sys.stdin.buffer
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: file not found", "not_found")
    try:
        return gzip.open(p, "rb") if p.suffix.lower() == ".gz" else open(p, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})", "unreadable") from None


def iter_rows(path: str | Path, fmt: str = "auto", start_line: int = 0, shard: tuple[int, int] = (0, 1),
              ) -> Iterator[RawRow]:
    """Yield the rows of a file or folder: only shard `I` of `N` (every N-th row), and only after `start_line`.

    Rows are dealt to shards by their position in the whole input, so a resumed shard gets the same rows.
    """
    kind = detect_format(path, fmt)
    reader = {"jsonl": _iter_jsonl, "csv": _iter_csv, "parquet": _iter_parquet, "folder": _iter_folder}[kind]
    index, count = shard
    try:
        for n, row in enumerate(reader(path)):
            if n % count == index and row.line > start_line:
                yield row
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})", "unreadable") from None


def _iter_jsonl(path: str | Path) -> Iterator[RawRow]:
    name = str(path)
    with _open_binary(path) as fh:
        for number, raw in enumerate(fh, 1):
            if (row := parse_jsonl_line(name, number, raw)) is not None:
                yield row


def parse_jsonl_line(name: str, number: int, raw: bytes) -> RawRow | None:
    """One JSONL line as a row (or its error code); None for a blank line, which is no row."""
    if not raw.strip():
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return RawRow(name, number, error="invalid_utf8", detail=f"byte {exc.start} is not UTF-8")
    except json.JSONDecodeError as exc:
        return RawRow(name, number, error="invalid_json", detail=exc.msg)
    if not isinstance(data, dict):
        return RawRow(name, number, error="invalid_json", detail="line is not a JSON object")
    return RawRow(name, number, data)


def _has_bad_bytes(value: object) -> bool:
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


def _iter_csv(path: str | Path) -> Iterator[RawRow]:
    name = str(path)
    csv.field_size_limit(sys.maxsize)  # long articles exceed csv's 128 kB default
    delimiter = "\t" if ".tsv" in [s.lower() for s in Path(name).suffixes] else ","
    with _open_binary(path) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        try:
            for data in reader:
                if any(_has_bad_bytes(v) for v in data.values()):
                    yield RawRow(name, reader.line_num, error="invalid_utf8", detail="row is not UTF-8")
                    continue
                extra = data.pop(None, None)
                if extra:
                    yield RawRow(name, reader.line_num, error="invalid_csv", detail="more fields than the header")
                    continue
                yield RawRow(name, reader.line_num, dict(data))
        except csv.Error as exc:
            raise DataError(f"{name}:{reader.line_num}: invalid CSV ({exc})", "invalid_csv") from None


def _iter_parquet(path: str | Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq  # heavy; only for Parquet input

    name = str(path)
    try:
        pfile = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{name}: not a readable Parquet file ({exc})", "unreadable") from None
    number = 0
    for batch in pfile.iter_batches(batch_size=1024):
        for data in batch.to_pylist():
            number += 1
            yield RawRow(name, number, data)


def _iter_folder(path: str | Path) -> Iterator[RawRow]:
    """Files under a folder; a file's parent folder name is its label in folder-per-label trees."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".json"))
    for number, file in enumerate(files, 1):
        rel = file.relative_to(root)
        try:
            content = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RawRow(str(file), number, error="invalid_utf8", detail=f"byte {exc.start} is not UTF-8")
            continue
        if file.suffix.lower() == ".json":
            try:
                data = json.loads(content)
            except json.JSONDecodeError as exc:
                yield RawRow(str(file), number, error="invalid_json", detail=exc.msg)
                continue
            if not isinstance(data, dict):
                yield RawRow(str(file), number, error="invalid_json", detail="file is not a JSON object")
                continue
        else:
            data = {"text": content}
        data.setdefault("id", rel.with_suffix("").as_posix())
        if len(rel.parts) > 1:
            data.setdefault("label", rel.parts[0])
        yield RawRow(str(file), number, data)


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL (UTF-8, Arabic kept readable), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file written by this pipeline; any bad row is an error."""
    rows = []
    for row in iter_rows(path, "jsonl"):
        if row.error:
            raise DataError(f"{row.where}: {row.error} ({row.detail})", row.error)
        rows.append(row.data)
    return rows
