"""Labelled corpora: schema validation, normalisation, deduplication, leakage-free splits."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, DataConfig, SplitConfig
from pipeline.dedup import SOURCE_KEY, deduplicate, shingles
from pipeline.errors import DataError
from pipeline.files import sha256
from pipeline.labels import LABELS_FIELD, LabelMap, check_labels, load_labels
from pipeline.readers import RawRow, iter_rows, read_jsonl, write_jsonl
from pipeline.text import Normalizer, find_repeated_lines, join_fields

__all__ = ["deduplicate", "shingles"]  # moved to pipeline.dedup; still importable from here

SPLITS = ("train", "validation", "test")
REPORT_FILE = "data_report.json"
BOILERPLATE_FILE = "boilerplate_lines.json"


@dataclass
class Loaded:
    """Rows that passed validation, and what was skipped and why."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    unreviewed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)


def stable_id(text: str) -> str:
    """An id derived from the content, the same on every run."""
    return "sha1-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def check_row(row: RawRow, cfg: DataConfig, labels: LabelMap, multi: bool = False) -> dict[str, Any]:
    """Validate one raw row into {id, text, label, ...}; raise DataError naming file, line and field.

    A carried (or, in multi-label mode, any) `labels` field must be a non-empty list of known labels; in
    multi-label mode a row without one gets `[label]`."""
    if row.error:
        raise DataError(f"{row.where}: {row.error.replace('_', ' ')} ({row.detail})", row.error)
    data = row.data
    present = [f for f in cfg.text_fields if f in data]
    if not present:
        fields = ", ".join(f"'{f}'" for f in cfg.text_fields)
        raise DataError(f"{row.where}: missing text field {fields} (has {', '.join(map(str, data)) or 'nothing'})",
                        "missing_text")
    text = join_fields(data.get(f) for f in cfg.text_fields)
    if not text:
        raise DataError(f"{row.where}: field '{present[-1]}' is empty", "is_empty")
    if cfg.label_field not in data or data[cfg.label_field] in (None, ""):
        raise DataError(f"{row.where}: missing label field '{cfg.label_field}'", "missing_label")
    source_label = str(data[cfg.label_field]).strip()
    label = labels.resolve(source_label)
    if label is None:
        raise DataError(f"{row.where}: field '{cfg.label_field}': label '{source_label}' is not in the label set "
                        f"({', '.join(labels.ids)}); map it with labels.map", "not_in_the_label_set")
    out = {"id": str(data.get(cfg.id_field) or stable_id(text)), "text": text, "label": label}
    for name in cfg.extra_fields:
        if data.get(name) is not None:
            out[name] = data[name]
    if multi or LABELS_FIELD in cfg.extra_fields:
        if data.get(LABELS_FIELD) not in (None, ""):  # an empty CSV cell: no list
            out[LABELS_FIELD] = check_labels(data[LABELS_FIELD], label, row.where, labels)
        elif multi:
            out[LABELS_FIELD] = [label]
    return out


def load_labelled(path: str | Path, cfg: DataConfig, labels: LabelMap, multi: bool = False, fmt: str | None = None,
                  skip_unlabelled: bool = False) -> Loaded:
    """Read and validate a labelled file or folder; bad rows raise or are counted, per `on_bad_rows`.

    `multi`: a multi-label config (a row without `labels` gets its `label`); `skip_unlabelled` (a review queue):
    rows whose label is empty are skipped and counted as `unreviewed`.
    """
    loaded = Loaded()
    for row in iter_rows(path, fmt or cfg.format):
        loaded.read += 1
        if skip_unlabelled and not row.error and not str(row.data.get(cfg.label_field) or "").strip():
            loaded.unreviewed += 1
            continue
        try:
            loaded.rows.append(check_row(row, cfg, labels, multi))
        except DataError as exc:
            if cfg.on_bad_rows == "error":
                raise
            loaded.skipped[exc.code] += 1
            if len(loaded.examples) < 20:
                loaded.examples.append(str(exc))
    return loaded


def check_class_sizes(rows: list[dict[str, Any]], labels: LabelMap, minimum: int) -> None:
    """Every label present must have enough rows to appear in each split."""
    counts = Counter(r["label"] for r in rows)
    for label in labels.ids:
        if 0 < counts[label] < minimum:
            raise DataError(f"label '{label}' has {counts[label]} example(s) after deduplication; "
                            f"at least {minimum} are needed to split train/validation/test", "too_few_rows")


def _carve(idx: np.ndarray, y: list[str], groups: list[str] | None, share: float, seed: int,
           ) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, carved) with `share` carved off, stratified, grouped if asked."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    if share <= 0:
        return idx, idx[:0]
    y_sub = [y[i] for i in idx]
    if groups is None:
        n_classes = len(set(y_sub))
        if math.ceil(share * len(idx)) < n_classes:
            raise DataError(f"a split of {share:.0%} of {len(idx)} rows cannot hold all {n_classes} labels; "
                            "add data or raise data.split.validation/test", "too_few_rows")
        rest, carved = train_test_split(idx, test_size=share, stratify=y_sub, random_state=seed)
        return np.sort(rest), np.sort(carved)
    n_splits = max(2, round(1 / share))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rest, carved = next(folds.split(idx, y_sub, [groups[i] for i in idx]))
    return np.sort(idx[rest]), np.sort(idx[carved])


def split_rows(rows: list[dict[str, Any]], cfg: SplitConfig) -> dict[str, list[dict[str, Any]]]:
    """Stratified, seeded train/validation/test split; grouped so one group never straddles splits."""
    y = [r["label"] for r in rows]
    groups = [str(r.get(cfg.group_by, "")) for r in rows] if cfg.group_by else None
    idx = np.arange(len(rows))
    rest, test = _carve(idx, y, groups, cfg.test, cfg.seed)
    val_share = cfg.validation / (1 - cfg.test) if cfg.test < 1 else 0
    train, val = _carve(rest, y, groups, val_share, cfg.seed)
    return {"train": [rows[i] for i in train], "validation": [rows[i] for i in val], "test": [rows[i] for i in test]}


def length_stats(texts: Iterable[str]) -> dict[str, dict[str, float]]:
    """Character and word length statistics."""
    texts = list(texts)
    out = {}
    for unit, measure in (("chars", len), ("words", lambda t: len(t.split()))):
        values = np.array([measure(t) for t in texts] or [0])
        out[unit] = {"min": int(values.min()), "mean": round(float(values.mean()), 1),
                     "median": round(float(np.median(values)), 1),
                     "p95": round(float(np.percentile(values, 95)), 1),
                     "max": int(values.max())}
    return out


def _normalise_all(rows: list[dict[str, Any]], cfg: Config) -> tuple[list[dict[str, Any]], list[str], int]:
    """Normalise texts in place; learn lines repeated across documents (site chrome) first."""
    repeated = find_repeated_lines((r["text"] for r in rows), cfg.text.repeated_line_min_docs)
    repeated_list = sorted(repeated) if cfg.text.strip_boilerplate else []
    normalise = Normalizer(cfg.text, frozenset(repeated_list))
    kept = []
    for row in rows:
        row["text"] = normalise(row["text"])
        if row["text"]:
            kept.append(row)
    return kept, repeated_list, len(rows) - len(kept)


def _load_sources(cfg: Config, labels: LabelMap) -> tuple[list[dict[str, Any]], dict[str, Any], dict | None]:
    """All rows (train-file rows first when split files are given), with read/skip counts."""
    files = cfg.data.split.files
    sources = [(s, files[s]) for s in SPLITS if s in files] if files else [(None, p) for p in _paths(cfg.data.path)]
    rows, read, skipped, examples = [], 0, Counter(), []
    for split, path in sources:
        loaded = load_labelled(path, cfg.data, labels, cfg.labels.mode == "multi")
        read += loaded.read
        skipped.update(loaded.skipped)
        examples += loaded.examples
        for row in loaded.rows:
            row["_split"] = split
        rows += loaded.rows
    return rows, {"rows_read": read, "rows_skipped": dict(skipped), "skip_examples": examples[:20]}, files


def _load_extra(cfg: Config, labels: LabelMap) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """Rows of `data.sources` (filled review queues, any labelled file), tagged with their path, and per source
    the rows read, unreviewed (empty label) and skipped (bad rows under `on_bad_rows: skip`)."""
    rows, stats = [], {}
    for path in cfg.data.sources:
        loaded = load_labelled(path, cfg.data, labels, cfg.labels.mode == "multi", fmt="auto",
                               skip_unlabelled=True)
        for row in loaded.rows:
            row[SOURCE_KEY] = path
            row["_split"] = "train"  # used only with data.split.files; otherwise they are split with the rest
        rows += loaded.rows
        stats[path] = {"read": loaded.read, "unreviewed": loaded.unreviewed, "skipped": sum(loaded.skipped.values())}
    return rows, stats


def _paths(path: str | list[str]) -> list[str]:
    return [path] if isinstance(path, str) else list(path)


def prepare(cfg: Config) -> Path:
    """Read, validate, normalise, deduplicate and split; write the splits and data_report.json."""
    labels = load_labels(cfg.labels)
    rows, report, files = _load_sources(cfg, labels)
    extra, sources = _load_extra(cfg, labels)
    rows, repeated, emptied = _normalise_all(rows + extra, cfg)
    rows, dedup = deduplicate(rows, cfg.data.dedup)
    of_corpus = dedup.pop("duplicates_of_corpus")
    check_class_sizes(rows, labels, cfg.data.min_per_class if not files else 1)
    splits = {s: [r for r in rows if r["_split"] == s] for s in SPLITS} if files else split_rows(rows, cfg.data.split)
    out_dir = Path(cfg.data.processed_dir) / cfg.data.name
    for name, part in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", [{k: v for k, v in r.items() if not k.startswith("_")} for r in part])
    added = Counter(r[SOURCE_KEY] for part in splits.values() for r in part if r.get(SOURCE_KEY))
    for path, stats in sources.items():
        stats.update(duplicates_of_corpus=of_corpus.get(path, 0), added=added[path])
    report.update({
        "dataset": cfg.data.name, "rows_empty_after_normalisation": emptied, **dedup,
        "rows_kept": sum(len(p) for p in splits.values()),
        "label_counts": {s: {lb: Counter(r["label"] for r in p)[lb] for lb in labels.ids} for s, p in splits.items()},
        "lengths": {s: length_stats(r["text"] for r in p) for s, p in splits.items()},
        "boilerplate_lines_learned": len(repeated), "sources": sources,
    })
    (out_dir / BOILERPLATE_FILE).write_text(json.dumps(repeated, ensure_ascii=False, indent=1), encoding="utf-8")
    (out_dir / REPORT_FILE).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return out_dir


def processed_dir(cfg: Config) -> Path:
    """Where `prepare` writes this config's splits."""
    return Path(cfg.data.processed_dir) / cfg.data.name


def splits_sha256(cfg: Config, splits: tuple[str, ...] = SPLITS) -> str:
    """sha256 over the prepared split files (train, validation, test); equal hashes: the runs saw the same data."""
    paths = [processed_dir(cfg) / f"{s}.jsonl" for s in splits]
    return sha256(paths) if any(p.is_file() for p in paths) else ""


def load_split(cfg: Config, split: str) -> list[dict[str, Any]]:
    """Rows of one prepared split; a clear error when `prepare` has not run."""
    path = processed_dir(cfg) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: not prepared; run `pipeline prepare` with the same config first", "not_prepared")
    return read_jsonl(path)
