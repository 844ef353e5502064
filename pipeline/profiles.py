"""The training profile saved with every model: what its training data and test confidences looked like.

`pipeline drift` compares a dump with it. Everything is measured on text as the predictor sees it (normalised,
cut at `predict.max_chars`): label priors of the train split, text lengths on fixed log-spaced bins (words and
characters), shares of non-Arabic, empty and heavily cut rows, the train split's vocabulary (word tokens seen at
least `VOCAB_MIN_COUNT` times) with the share of test tokens it misses, and the calibrated confidence on the test
split.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import PROFILE_FILE
from pipeline.config import Config
from pipeline.data import load_split
from pipeline.errors import ModelError
from pipeline.labels import LabelMap
from pipeline.text import arabic_share

VERSION = 1
VOCAB_MIN_COUNT = 2  # a token seen once in training is noise, and would double the stored vocabulary
WORD_EDGES = [0.0, *(2.0**k for k in range(18))]  # [0, 1), [1, 2), [2, 4) ... octaves of words
CHAR_EDGES = [0.0, *(2.0**k for k in range(22))]
CONFIDENCE_EDGES = [k / 10 for k in range(11)]
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TOKEN = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    """Word tokens of a normalised text (lower-cased, so Latin words match whatever their case)."""
    return TOKEN.findall(text.lower())


def histogram(values: Iterable[float], edges: list[float]) -> list[int]:
    """Counts on fixed bins; the last bin takes everything above it."""
    values = np.asarray(list(values), dtype=float)
    return np.histogram(np.clip(values, edges[0], edges[-1] - 1e-9), bins=edges)[0].astype(int).tolist()


def length_profile(texts: list[str]) -> dict[str, Any]:
    """Word and character counts: histograms on the fixed bins, and quantiles."""
    out = {}
    for unit, edges, measure in (("words", WORD_EDGES, lambda t: len(t.split())), ("chars", CHAR_EDGES, len)):
        values = [measure(t) for t in texts]
        out[unit] = {"edges": edges, "counts": histogram(values, edges),
                     "quantiles": {str(q): float(np.quantile(values, q)) if values else 0.0 for q in QUANTILES}}
    return out


def confidence_profile(probs: np.ndarray, labels: LabelMap) -> dict[str, Any]:
    """Histogram of calibrated max probabilities on tenths, their mean, and the shares of predicted labels."""
    probs = np.asarray(probs).reshape(-1, len(labels))
    confidences, predicted = probs.max(axis=1), Counter(probs.argmax(axis=1).tolist())
    return {"edges": CONFIDENCE_EDGES, "counts": histogram(confidences, CONFIDENCE_EDGES),
            "mean": float(np.mean(confidences)) if len(confidences) else 0.0,
            "predicted_shares": {lb: predicted[i] / max(len(probs), 1) for i, lb in enumerate(labels.ids)}}


def novelty(texts: Iterable[str], vocabulary: set[str] | frozenset[str]) -> float:
    """Share of the texts' word tokens that are not in the vocabulary."""
    seen = unseen = 0
    for text in texts:
        for tok in tokens(text):
            seen += 1
            unseen += tok not in vocabulary
    return unseen / seen if seen else 0.0


def quality(cfg: Config, texts: list[str], token_counts: list[int] | None) -> dict[str, float]:
    """Shares of rows the predictor flags not_arabic or cut_heavily (the train split has no empty rows)."""
    n = max(len(texts), 1)
    max_tokens = 4 * cfg.model.max_length  # the predictor's cut_heavily bound for a transformer
    counts = token_counts or [0] * len(texts)
    cut = sum(len(t) > cfg.predict.max_chars or c > max_tokens for t, c in zip(texts, counts, strict=True))
    return {"not_arabic": sum(arabic_share(t) < cfg.predict.min_arabic_share for t in texts) / n,
            "empty": 0.0, "cut": cut / n}


def token_counts(kind: str, directory: Path, texts: list[str]) -> list[int] | None:
    """Model tokens per text for a transformer (its tokenizer, no weights); None for the baseline."""
    if kind != "transformer":
        return None
    from pipeline.model import load_tokenizer

    tokenizer = load_tokenizer(str(directory))
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]]


def cut_text(text: str, max_chars: int) -> str:
    """Head and tail of an over-long text, as the predictor cuts it."""
    half = max_chars // 2
    return text if len(text) <= max_chars else text[:half] + "\n" + text[-half:]


def build_profile(cfg: Config, labels: LabelMap, train_texts: list[str], train_labels: list[str],
                  test_texts: list[str], test_probs: np.ndarray, counts: list[int] | None = None,
                  source: str = "training") -> dict[str, Any]:
    """The profile of a train split (normalised texts and labels) and the model's test-split probabilities."""
    texts = [cut_text(t, cfg.predict.max_chars) for t in train_texts]
    freq = Counter(tok for t in texts for tok in tokens(t))
    vocabulary = sorted(tok for tok, c in freq.items() if c >= VOCAB_MIN_COUNT)
    priors = Counter(train_labels)
    test_novelty = novelty((cut_text(t, cfg.predict.max_chars) for t in test_texts), frozenset(vocabulary))
    return {
        "version": VERSION, "source": source, "rows": {"train": len(texts), "test": len(test_texts)},
        "label_priors": {lb: priors[lb] / max(len(train_labels), 1) for lb in labels.ids},
        "length": length_profile(texts),
        "quality": quality(cfg, texts, counts),
        "vocabulary": {"min_count": VOCAB_MIN_COUNT, "train_types": len(freq), "train_tokens": sum(freq.values()),
                       "test_novelty": test_novelty, "tokens": vocabulary},
        "confidence": confidence_profile(test_probs, labels),
        "thresholds": {"min_arabic_share": cfg.predict.min_arabic_share, "max_chars": cfg.predict.max_chars},
    }


def write_profile(out: Path, *, kind: str, cfg: Config, labels: LabelMap, test_rows: list[dict[str, Any]],
                  test_probs: np.ndarray) -> dict[str, Any]:
    """Profile the prepared train split and the test probabilities into `out/training_profile.json`."""
    train = load_split(cfg, "train")
    texts = [r["text"] for r in train]
    profile = build_profile(cfg, labels, texts, [r["label"] for r in train], [r["text"] for r in test_rows],
                            test_probs, token_counts(kind, out, texts))
    (out / PROFILE_FILE).write_text(json.dumps(profile, ensure_ascii=False, separators=(",", ":")),
                                    encoding="utf-8")
    return profile


def read_profile(directory: Path) -> dict[str, Any] | None:
    """A model directory's training profile, or None where it was written before profiles existed."""
    path = Path(directory) / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: unreadable ({exc.msg}); retrain the model to write it again") from None
    if profile.get("version") != VERSION:
        raise ModelError(f"{path}: profile version {profile.get('version')!r}, expected {VERSION}; retrain")
    return profile
