"""File-level facts every layer shares: formats by extension and streamed content hashes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

# extension -> format, for inputs (readers) and outputs (sinks) alike
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet", ".pq": "parquet"}


def format_of(path: str | Path) -> str | None:
    """The format an extension names (`.gz` looked through), or None."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return SUFFIXES.get(suffixes[-1]) if suffixes else None


def sha256(paths: Path | Iterable[Path], block: int = 1 << 22) -> str:
    """Hex sha256 over the bytes of one or more files, streamed; missing files contribute nothing."""
    digest = hashlib.sha256()
    for path in [paths] if isinstance(paths, Path) else paths:
        if Path(path).is_file():
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(block), b""):
                    digest.update(chunk)
    return digest.hexdigest()
