"""Self-training: rounds of pseudo-labels from unlabelled articles the current model is confident about.

Round 0 trains on the prepared splits. Each next round scores the unlabelled pool with the previous model, takes
the most confident articles of each label (at most `train.pseudo_per_class`, at or above `train.pseudo_threshold`,
so no label floods the others), adds them to the training split of a new prepared dataset `<name>-self<r>`
(validation and test copied unchanged: pseudo-labels are never drawn from them, and the pool is deduplicated
against every labelled article first, exact or near copies), and trains again. The round with the best validation
macro-F1 is kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import read_boilerplate, run_name
from pipeline.config import Config
from pipeline.data import BOILERPLATE_FILE, REPORT_FILE, SPLITS, load_split, processed_dir
from pipeline.dedup import KnownTexts
from pipeline.errors import DataError
from pipeline.labels import load_labels
from pipeline.pretrain import unlabelled_texts
from pipeline.readers import write_jsonl
from pipeline.runs import RunResult
from pipeline.scoring import load_scorer
from pipeline.text import Normalizer, text_digest


def unlabelled_pool(cfg: Config) -> list[dict[str, Any]]:
    """The unlabelled articles, normalised as training was, each once, none of them a labelled article."""
    labelled = KnownTexts([r["text"] for s in SPLITS for r in load_split(cfg, s)], cfg.data.dedup)
    normalise = Normalizer(cfg.text, read_boilerplate(processed_dir(cfg)))
    pool = [{"id": f"pseudo-{text_digest(text)[:16]}", "text": text}
            for text in unlabelled_texts(cfg, [cfg.train.unlabelled], None, labelled, normalise)]
    if not pool:
        raise DataError(f"{cfg.train.unlabelled}: no unlabelled article left after removing labelled ones",
                        "too_few_rows")
    return pool


def pick(probs: np.ndarray, threshold: float, per_class: int) -> list[tuple[int, int]]:
    """(row, label) pairs: per label, its most confident rows at or above the threshold, at most `per_class`."""
    label, conf = probs.argmax(axis=1), probs.max(axis=1)
    chosen = []
    for c in range(probs.shape[1]):
        rows = np.flatnonzero((label == c) & (conf >= threshold))
        chosen += [(int(i), c) for i in rows[np.argsort(-conf[rows], kind="stable")][:per_class]]
    return sorted(chosen)


def round_config(cfg: Config, r: int, kind: str, added: list[dict[str, Any]]) -> Config:
    """A prepared dataset `<name>-self<r>`: train plus pseudo-labelled rows, validation and test unchanged."""
    source, name = processed_dir(cfg), f"{cfg.data.name}-self{r}"
    target = Path(cfg.data.processed_dir) / name
    target.mkdir(parents=True, exist_ok=True)
    write_jsonl(target / "train.jsonl", load_split(cfg, "train") + added)
    for item in ("validation.jsonl", "test.jsonl", BOILERPLATE_FILE, REPORT_FILE):
        if (source / item).is_file():
            shutil.copy(source / item, target / item)
    tracking = cfg.tracking.model_copy(update={"run_name": f"{run_name(cfg, kind)}-self{r}",
                                               "experiment": cfg.tracking.experiment or cfg.data.name})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"name": name}), "tracking": tracking})


def self_train(cfg: Config, kind: str = "transformer") -> tuple[RunResult, list[dict[str, Any]]]:
    """Rounds of training and pseudo-labelling; the best round by validation macro-F1, and every round's figures."""
    if kind == "baseline":
        from pipeline.baseline import train_baseline as fit
    else:
        from pipeline.train import train as fit
    labels = load_labels(cfg.labels)
    pool = unlabelled_pool(cfg)
    result = fit(cfg)
    rounds = [{"round": 0, "pseudo_labelled": 0, "model_dir": str(result.model_dir),
               "val_macro_f1": result.metrics["validation"]["macro_f1"], "test_macro_f1": result.metrics["test"][
                   "macro_f1"]}]
    best, added, used = result, [], set()
    for r in range(1, cfg.train.self_training_rounds + 1):
        free = [i for i in range(len(pool)) if i not in used]
        probs = load_scorer(result.model_dir).score([pool[i]["text"] for i in free])[0]
        picks = [(free[i], c) for i, c in pick(probs, cfg.train.pseudo_threshold, cfg.train.pseudo_per_class)]
        if not picks:
            break
        used |= {i for i, _ in picks}
        added += [{**pool[i], "label": labels.ids[c], "pseudo_label": True} for i, c in picks]
        result = fit(round_config(cfg, r, kind, added))
        rounds.append({"round": r, "pseudo_labelled": len(added), "model_dir": str(result.model_dir),
                       "per_label": {lb: sum(a["label"] == lb for a in added) for lb in labels.ids},
                       "val_macro_f1": result.metrics["validation"]["macro_f1"],
                       "test_macro_f1": result.metrics["test"]["macro_f1"]})
        if result.metrics["validation"]["macro_f1"] > best.metrics["validation"]["macro_f1"]:
            best = result
    return best, rounds
