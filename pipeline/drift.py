"""`pipeline drift`: does a new dump still look like the data a model was trained on?

The dump is read and scored by the batch predictor (same normaliser, cut and flags), its first `sample` rows only,
and compared with the model's training profile dimension by dimension. A dimension whose statistic is above its
threshold is flagged. Drift is a report, not an error: the command exits 0 unless asked to fail on drift.

| dimension | statistic | threshold |
|---|---|---|
| `labels` | Jensen-Shannon distance (base 2) of predicted label shares to the train split's priors | 0.20 |
| `length` | population stability index of word counts on octave bins, train split vs dump | 0.25 |
| `quality` | largest difference of the non-Arabic, empty or heavily cut share, in percentage points | 10 |
| `vocabulary` | dump tokens unseen in training minus the same share on the test split, percentage points | 3 |
| `confidence` | population stability index of the calibrated max probability, test split vs dump (tenths) | 0.25 |
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon

from pipeline import profiles
from pipeline.artifacts import Scorer
from pipeline.config import Config
from pipeline.data import load_split
from pipeline.errors import ConfigError, DataError, ModelError
from pipeline.metrics import plot_drift
from pipeline.predict import PredictJob, Predictor, load, windows
from pipeline.profiles import CHAR_EDGES, CONFIDENCE_EDGES, WORD_EDGES, histogram, tokens
from pipeline.readers import detect_format, iter_rows

THRESHOLDS = {"labels": 0.20, "length": 0.25, "quality": 10.0, "vocabulary": 3.0, "confidence": 0.25}
DIMENSIONS = tuple(THRESHOLDS)
DEFAULT_SAMPLE = 20_000
EMPTY_ERRORS = ("empty_text", "missing_text")


@dataclass(frozen=True)
class DriftJob:
    """What to compare: a model and a dump; where the report goes; what overrides the defaults."""

    model: str
    input: str
    output: str | None = None
    sample: int = DEFAULT_SAMPLE
    text_fields: list[str] | None = None
    id_field: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment: str | None = None
    tracking: bool | None = None  # None: as the model's saved config says


@dataclass
class DumpStats:
    """What the predictor saw in the dump's first rows."""

    rows: int = 0
    scored: int = 0
    labels: Counter = field(default_factory=Counter)
    words: list[int] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    issues: Counter = field(default_factory=Counter)
    tokens: int = 0
    unseen: int = 0


def parse_thresholds(items: list[str] | None) -> dict[str, float]:
    """`NAME=VALUE` flags over the default thresholds; an unknown name or a bad value stops in one line."""
    out = {}
    for item in items or []:
        name, _, value = item.partition("=")
        if name not in THRESHOLDS:
            raise ConfigError(f"--threshold {item!r}: unknown dimension; one of {', '.join(DIMENSIONS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"--threshold {item!r}: expected {name}=NUMBER") from None
    return out


def reference(scorer: Scorer) -> dict[str, Any]:
    """The model's training profile; for an older model, rebuilt from its config's prepared splits."""
    profile = profiles.read_profile(scorer.directory)
    if profile is not None:
        return profile
    cfg: Config = scorer.cfg
    try:
        train, test = load_split(cfg, "train"), load_split(cfg, "test")
    except DataError:
        raise ModelError(f"{scorer.directory}: no training_profile.json and the prepared splits of "
                         f"{cfg.data.processed_dir}/{cfg.data.name} are gone; retrain the model to write one") from None
    test_texts = [r["text"] for r in test]
    probs, _ = scorer.score(test_texts)
    texts = [r["text"] for r in train]
    return profiles.build_profile(cfg, scorer.labels, texts, [r["label"] for r in train], test_texts, probs,
                                  profiles.token_counts(scorer.kind, scorer.directory, texts),
                                  source="prepared splits (model without a profile)")


def scan(predictor: Predictor, path: str, sample: int, vocabulary: frozenset[str], window: int) -> DumpStats:
    """Score the dump's first `sample` rows, streaming, keeping only what the comparison needs."""
    stats = DumpStats()
    for chunk in windows(itertools.islice(iter_rows(path), sample), window):
        outs, texts = predictor.run_texts(chunk)
        stats.rows += len(chunk)
        for out, text in zip(outs, texts, strict=True):
            error = out["error"]
            if error in EMPTY_ERRORS:
                stats.issues["empty"] += 1
            elif error and error != "too_long":
                stats.issues["unreadable"] += 1
            stats.issues["not_arabic"] += "not_arabic" in out["flags"]
            stats.issues["cut"] += "cut_heavily" in out["flags"]
            if text is None or out["label"] is None:
                continue
            stats.scored += 1
            stats.labels[out["label"]] += 1
            stats.confidence.append(out["confidence"])
            stats.words.append(len(text.split()))
            stats.chars.append(len(text))
            toks = tokens(text)
            stats.tokens += len(toks)
            stats.unseen += sum(t not in vocabulary for t in toks)
    return stats


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of two histograms on the same bins (half a count added to each used bin)."""
    e, a = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    used = (e + a) > 0
    if not used.any() or e.sum() == 0 or a.sum() == 0:
        return 0.0
    e, a = e[used] + 0.5, a[used] + 0.5
    p, q = e / e.sum(), a / a.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def ks(expected: list[int], actual: list[int]) -> float:
    """Kolmogorov-Smirnov statistic on binned data: the largest gap between the two cumulative shares."""
    e, a = np.cumsum(expected, dtype=float), np.cumsum(actual, dtype=float)
    if not e[-1] or not a[-1]:
        return 0.0
    return float(np.max(np.abs(e / e[-1] - a / a[-1])))


def compare(profile: dict[str, Any], stats: DumpStats, thresholds: dict[str, float]) -> dict[str, Any]:
    """Every dimension's statistic, threshold and flag, with the figures behind it."""
    priors = profile["label_priors"]
    shares = {lb: stats.labels[lb] / max(stats.scored, 1) for lb in priors}
    p, q = np.array(list(priors.values())), np.array(list(shares.values()))
    js = float(jensenshannon(p, q, base=2)) if stats.scored and p.sum() else 0.0
    test_shares = profile["confidence"].get("predicted_shares", priors)
    t = np.array([test_shares[lb] for lb in priors])
    js_test = float(jensenshannon(t, q, base=2)) if stats.scored and t.sum() else 0.0
    length = profile["length"]
    words, chars = histogram(stats.words, WORD_EDGES), histogram(stats.chars, CHAR_EDGES)
    n = max(stats.rows, 1)
    dump_quality = {k: stats.issues[k] / n for k in ("not_arabic", "empty", "cut")}
    gaps = {k: 100 * (dump_quality[k] - profile["quality"][k]) for k in dump_quality}
    vocab = profile["vocabulary"]
    dump_novelty = stats.unseen / stats.tokens if stats.tokens else 0.0
    conf = histogram(stats.confidence, CONFIDENCE_EDGES)
    dump_mean = float(np.mean(stats.confidence)) if stats.confidence else 0.0
    dims = {
        "labels": {"statistic": js, "measure": "jensen_shannon_distance", "train_priors": priors, "dump_shares": shares,
                   "ratio": {lb: (shares[lb] / priors[lb] if priors[lb] else None) for lb in priors},
                   "test_predicted_shares": test_shares, "jensen_shannon_vs_test_predictions": js_test},
        "length": {"statistic": psi(length["words"]["counts"], words), "measure": "psi_words",
                   "psi_chars": psi(length["chars"]["counts"], chars), "ks_words": ks(length["words"]["counts"], words),
                   "dump_word_counts": words, "train_median_words": length["words"]["quantiles"]["0.5"],
                   "dump_median_words": float(np.median(stats.words)) if stats.words else 0.0},
        "quality": {"statistic": max(abs(g) for g in gaps.values()), "measure": "max_share_difference_pp",
                    "train": profile["quality"], "dump": dump_quality, "difference_pp": gaps,
                    "dump_unreadable": stats.issues["unreadable"] / n},
        "vocabulary": {"statistic": 100 * (dump_novelty - vocab["test_novelty"]), "measure": "novelty_excess_pp",
                       "dump_novelty": dump_novelty, "test_novelty": vocab["test_novelty"]},
        "confidence": {"statistic": psi(profile["confidence"]["counts"], conf), "measure": "psi",
                       "ks": ks(profile["confidence"]["counts"], conf), "dump_counts": conf,
                       "test_mean": profile["confidence"]["mean"], "dump_mean": dump_mean,
                       "mean_drop": profile["confidence"]["mean"] - dump_mean},
    }
    limits = {**THRESHOLDS, **thresholds}
    for name, dim in dims.items():
        dim["threshold"] = limits[name]
        dim["flagged"] = (bool(stats.scored) or name == "quality") and dim["statistic"] > limits[name]
    flagged = [name for name, dim in dims.items() if dim["flagged"]]
    return {"rows_read": stats.rows, "rows_scored": stats.scored, "dimensions": dims, "flagged": flagged}


def _output(job: DriftJob, directory: Path) -> Path:
    if job.output:
        return Path(job.output)
    return directory / "drift" / Path(job.input).name.split(".")[0]


def drift(job: DriftJob) -> tuple[Path, dict[str, Any]]:
    """Score the dump's first rows, compare with the training profile, write drift.json and drift.png, log them."""
    if not Path(job.input).exists():
        raise DataError(f"{job.input}: input not found", "not_found")
    if job.sample < 1:
        raise ConfigError(f"--sample {job.sample}: expected at least 1 row")
    detect_format(job.input)
    scorer, name, opts = load(PredictJob(model=job.model, input=job.input, output=""),
                              {"text_fields": job.text_fields, "id_field": job.id_field})
    tracker = _tracker(job, scorer.cfg)  # connects first: an unreachable store fails before the dump is read
    profile = reference(scorer)
    stats = scan(Predictor(scorer, name, opts), job.input, job.sample, frozenset(profile["vocabulary"]["tokens"]),
                 opts.window)
    if stats.rows == 0:
        raise DataError(f"{job.input}: no rows to compare", "empty_input")
    report = {"model": name, "input": job.input, "sample": job.sample, "profile_source": profile["source"],
              "reference_rows": profile["rows"], **compare(profile, stats, job.thresholds)}
    if stats.scored < 100:
        report["note"] = f"only {stats.scored} rows scored: the statistics are noisy"
    out = _output(job, scorer.directory)
    out.mkdir(parents=True, exist_ok=True)
    _write(report, out)  # before tracking: a store that fails now loses nothing
    plot_drift(profile, report, out / "drift.png")
    _track(tracker, job, report, out)
    return out, report


def _tracker(job: DriftJob, cfg: Config) -> Any:
    """The model's tracking settings with the flags over them; disabled tracking logs nothing."""
    from pipeline.tracking import Tracker

    update: dict[str, Any] = {}
    if job.tracking_uri:
        update.update(uri=job.tracking_uri, enabled=True)
    if job.experiment:
        update["experiment"] = job.experiment
    if job.tracking is not None:
        update["enabled"] = job.tracking
    return Tracker(cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update=update)}))


def _track(tracker: Any, job: DriftJob, report: dict[str, Any], out: Path) -> None:
    """One MLflow run tagged kind=drift: the statistics as metrics, drift.json and drift.png as artifacts."""
    if not tracker.enabled:
        return
    tags = {"model": report["model"], "input": Path(job.input).name, "flagged": ",".join(report["flagged"])}
    with tracker.run(f"drift-{Path(job.input).name.split('.')[0]}", "drift", tags):
        metrics = {"rows_scored": report["rows_scored"], "dimensions_flagged": len(report["flagged"])}
        for name, dim in report["dimensions"].items():
            metrics[f"drift_{name}"] = dim["statistic"]
            metrics[f"drift_{name}_flagged"] = int(dim["flagged"])
        tracker.log_metrics(metrics)
        report["run_id"] = tracker.run_id  # drift.json names its MLflow run, here and in the run's artifacts
        _write(report, out)
        tracker.log_files([out / "drift.json", out / "drift.png"])


def _write(report: dict[str, Any], out: Path) -> None:
    (out / "drift.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
