"""The review queue: the articles of a dump most worth a person's time, in a file they can label and train on.

The dump is streamed window by window through the batch predictor's reading and normalisation; only a bounded pool
of the most uncertain candidates is kept (N rows, or POOL_FACTOR x N for `diverse`), whatever the dump's size.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import json
import os
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import stable_id
from pipeline.errors import DataError, PipelineError
from pipeline.files import format_of
from pipeline.predict import PredictJob, Predictor, load, switch_runtime, windows
from pipeline.readers import RawRow, detect_format, iter_rows
from pipeline.text import arabic_share, join_fields

STRATEGIES = ("margin", "entropy", "diverse")
POOL_FACTOR = 10  # `diverse` clusters this many candidates per pick
LEAD_CHARS = 300
COLUMNS = ("id", "title", "lead", "predicted_label", "confidence", "margin", "entropy", "top3", "label", "text")


@dataclass(frozen=True)
class ReviewJob:
    """Which model scores which dump, how many articles to pick and how, and where the queue goes."""

    model: str
    input: str
    output: str
    n: int = 200
    strategy: str = "margin"
    overwrite: bool = False
    text_fields: list[str] | None = None
    id_field: str | None = None
    progress: bool = True
    runtime: str | None = None  # None: the model's predict.runtime (auto unless set); torch scores in exact float


@dataclass
class ReviewSummary:
    """What was read, what could be a candidate, and what was picked."""

    rows: int = 0
    candidates: int = 0
    picked: int = 0
    clusters: int | None = None
    refused: Counter[str] = field(default_factory=Counter)

    def line(self, job: ReviewJob) -> str:
        """The one-line summary printed at the end."""
        refused = ", ".join(f"{k} {v}" for k, v in sorted(self.refused.items()))
        spread = f" from {self.clusters} clusters" if self.clusters is not None else ""
        return (f"{self.rows} rows read, {self.candidates} candidates, {sum(self.refused.values())} refused"
                f"{f' ({refused})' if refused else ''}; picked {self.picked} by {job.strategy}{spread} -> "
                f"{job.output}")


def margin(probs: np.ndarray) -> np.ndarray:
    """Gap between the two highest probabilities of each row: small means the model hesitates."""
    top2 = -np.sort(-probs, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row's probability vector: high means the mass is spread out."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(probs * np.log(p)).sum(axis=1)


def check_job(job: ReviewJob) -> None:
    """Refuse a bad request before any model is loaded or row read."""
    if job.n < 1:
        raise PipelineError(f"--n {job.n}: need at least 1 article to pick")
    if job.strategy not in STRATEGIES:
        raise PipelineError(f"--strategy {job.strategy}: expected one of {', '.join(STRATEGIES)}")
    if format_of(job.output) not in ("csv", "jsonl") or job.output.lower().endswith(".gz"):
        raise PipelineError(f"{job.output}: the queue is written as .csv, .tsv or .jsonl")
    if Path(job.output).exists() and not job.overwrite:
        raise DataError(f"{job.output}: exists; pass --overwrite to replace it", "output_exists")
    if job.input != "-" and not Path(job.input).exists():
        raise DataError(f"{job.input}: input not found", "not_found")
    detect_format(job.input)
    if job.model and not job.model.startswith(("models:/", "runs:/")) and not Path(job.model).is_dir():
        raise PipelineError(f"{job.model}: model directory not found")


class Pool:
    """The `size` most uncertain candidates seen so far (a min-heap on uncertainty; earlier rows win ties)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.heap: list[tuple[float, int, int, dict[str, Any]]] = []
        self._seq = itertools.count()

    def wants(self, priority: float, line: int) -> bool:
        """Whether a row of this priority would be kept (checked before its queue row is built)."""
        return len(self.heap) < self.size or (priority, -line) > self.heap[0][:2]

    def offer(self, priority: float, line: int, item: dict[str, Any]) -> None:
        """Keep `item` if it is among the `size` most uncertain so far."""
        entry = (priority, -line, -next(self._seq), item)
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, entry)
        elif entry[:3] > self.heap[0][:3]:
            heapq.heapreplace(self.heap, entry)

    def ranked(self) -> list[dict[str, Any]]:
        """The kept candidates, most uncertain first (input order among equals)."""
        return [e[3] for e in sorted(self.heap, key=lambda e: e[:3], reverse=True)]


class Reviewer:
    """Scores rows with a Predictor and turns each candidate into a queue row."""

    def __init__(self, predictor: Predictor, strategy: str) -> None:
        self.predictor, self.strategy = predictor, strategy
        self.fields = predictor.text_fields

    def refusal(self, row: RawRow, text: str | None) -> str | None:
        """Why the predictor would not classify a row (its error code, `no_text`, `not_arabic`), or None."""
        if row.error:
            return row.error
        if text is None:
            return "no_text"
        if arabic_share(text) < self.predictor.min_arabic:
            return "not_arabic"
        return None

    def score(self, window: list[RawRow], pool: Pool, summary: ReviewSummary) -> None:
        """Score one window's candidates and offer them to the pool."""
        todo: list[tuple[RawRow, str]] = []
        for row in window:
            text = self.predictor.text(row)
            if reason := self.refusal(row, text):
                summary.refused[reason] += 1
            else:
                todo.append((row, text))
        summary.rows += len(window)
        summary.candidates += len(todo)
        if not todo:
            return
        probs, _ = self.predictor.scorer.score([t for _, t in todo])
        margins, entropies = margin(probs), entropy(probs)
        for k, (row, text) in enumerate(todo):
            priority = float(entropies[k] if self.strategy == "entropy" else -margins[k])
            if pool.wants(priority, row.line):
                pool.offer(priority, row.line, self.queue_row(row, text, probs[k], margins[k], entropies[k]))

    def queue_row(self, row: RawRow, text: str, probs: np.ndarray, gap: float, spread: float) -> dict[str, Any]:
        """One row of the queue: what a person reads, what the model thought, an empty label, the full text."""
        labels = self.predictor.labels
        values = [row.data.get(f) for f in self.fields]
        title = join_fields(values[:1]) if len(values) > 1 else ""
        body = join_fields(values[1:] if len(values) > 1 else values)
        raw_id = row.data.get(self.predictor.id_field)
        order = np.argsort(-probs, kind="stable")
        return {
            "id": str(raw_id) if raw_id not in (None, "") else stable_id(join_fields(values)),
            "title": title, "lead": " ".join(body.split())[:LEAD_CHARS],
            "predicted_label": labels[order[0]], "confidence": round(float(probs[order[0]]), 4),
            "margin": round(float(gap), 4), "entropy": round(float(spread), 4),
            "top3": ", ".join(f"{labels[j]}:{probs[j]:.3f}" for j in order[:3]),
            "label": "", "text": body, "_text": text,
        }


def diversify(ranked: list[dict[str, Any]], n: int, seed: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Cluster the candidates (MiniBatchKMeans with min(n, pool) clusters) and take them round-robin: the most
    uncertain of each cluster, clusters in order of their most uncertain member."""
    from sklearn.cluster import MiniBatchKMeans

    k = min(n, len(ranked))
    if k < 2:
        return [{**r, "cluster": 0} for r in ranked[:n]], min(1, len(ranked))
    vectors = embed([r["_text"] for r in ranked], seed)
    with warnings.catch_warnings():  # fewer distinct texts than clusters: sklearn warns, the result is still fine
        warnings.simplefilter("ignore")
        assigned = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=1024).fit_predict(vectors)
    groups: dict[int, list[dict[str, Any]]] = {}
    for row, c in zip(ranked, assigned, strict=True):  # ranked is most uncertain first, so each group is too
        groups.setdefault(int(c), []).append(row)
    ordered = list(groups.values())  # dicts keep insertion order: clusters by their most uncertain member
    picks = []
    for depth in itertools.count():
        layer = [(c, g[depth]) for c, g in enumerate(ordered) if depth < len(g)]
        if not layer or len(picks) >= n:
            break
        picks += [{**row, "cluster": c} for c, row in layer[: n - len(picks)]]
    return picks, len(ordered)


def embed(texts: list[str], seed: int = 0, dims: int = 64) -> np.ndarray:
    """Dense unit vectors for clustering: TF-IDF of words and word pairs, reduced by LSA (truncated SVD).

    Dense and small on purpose: k-means centres over a sparse character n-gram space (2^18 columns) took 1.1 GB and
    minutes for a 2,000-article pool; 64 LSA dimensions keep stories apart at a fraction of that."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=20_000,
                            token_pattern=r"(?u)\b\w+\b").fit_transform(texts)
    dims = min(dims, tfidf.shape[0] - 1, tfidf.shape[1] - 1)
    if dims < 2:
        return tfidf.toarray()
    return normalize(TruncatedSVD(n_components=dims, n_iter=3, random_state=seed).fit_transform(tfidf))


def review(job: ReviewJob) -> ReviewSummary:
    """Score a dump with any model directory and write the review queue (CSV or JSONL) atomically."""
    check_job(job)
    flags = {"text_fields": job.text_fields, "id_field": job.id_field, "runtime": job.runtime}
    scorer, name, opts = load(PredictJob(model=job.model, input=job.input, output=job.output), flags)
    predictor = Predictor(scorer, name, opts)
    if opts.fast_runtime or opts.runtime == "auto":  # as predict: the fastest runtime that agrees with float here
        switch_runtime(predictor, opts, job.input)
    reviewer = Reviewer(predictor, job.strategy)
    pool = Pool(job.n * POOL_FACTOR if job.strategy == "diverse" else job.n)
    summary = ReviewSummary()
    bar = _progress(job)
    for window in windows(iter_rows(job.input), opts.window):
        reviewer.score(window, pool, summary)
        if bar is not None:
            bar.update(len(window))
    if bar is not None:
        bar.close()
    if not summary.candidates:
        raise DataError(f"{job.input}: none of its {summary.rows} rows can be classified "
                        f"({', '.join(f'{k} {v}' for k, v in sorted(summary.refused.items())) or 'no rows'})",
                        "no_candidates")
    ranked = pool.ranked()
    if job.strategy == "diverse":
        picks, summary.clusters = diversify(ranked, job.n)
    else:
        picks = ranked[: job.n]
    summary.picked = len(picks)
    columns = [*COLUMNS[:8], "cluster", *COLUMNS[8:]] if job.strategy == "diverse" else list(COLUMNS)
    write_queue(Path(job.output), [{c: r[c] for c in columns} for r in picks], columns)
    return summary


def write_queue(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write the queue to a temporary file beside `path`, then rename it over: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            if format_of(path) == "jsonl":
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            else:
                delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
                writer = csv.DictWriter(fh, fieldnames=columns, delimiter=delimiter)
                writer.writeheader()
                writer.writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _progress(job: ReviewJob) -> Any:
    if not job.progress:
        return None
    from tqdm import tqdm

    return tqdm(unit="doc", desc="scoring", file=sys.stderr, dynamic_ncols=True)
