"""The model directory: the one module that names, writes and reads its files, for every model kind.

A directory holds the weights of its kind (`model.safetensors` and tokenizer files for a transformer, written by
`model.save_model`; `model.joblib` for the TF-IDF baseline), `model_info.json` (the kind marker and the weights'
hash), `labels.json`, `pipeline.yaml` (the resolved config), the learned boilerplate lines, the data report,
`calibration.json`, `thresholds.json` (multi-label mode), `metrics.json`, `token_audit.json`,
`training_profile.json` (for `pipeline drift`), the model card `README.md`, and the test evaluation (report,
confusion matrix, errors). What may be shared (`pipeline.yaml`, the card) carries no credentials and no home path.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.card import CardFacts, model_card
from pipeline.config import Config, load_config, to_yaml
from pipeline.data import BOILERPLATE_FILE, REPORT_FILE, processed_dir, splits_sha256
from pipeline.errors import ModelError
from pipeline.files import sha256
from pipeline.labels import LabelMap
from pipeline.metrics import classification_metrics, plot_confusion, report_text
from pipeline.multilabel import label_sets, multi_hot, multilabel_metrics, multilabel_report, predicted_sets
from pipeline.redact import public_dump
from pipeline.uncertainty import bootstrap_intervals

CONFIG_FILE = "pipeline.yaml"
CARD_FILE = "README.md"
INFO_FILE = "model_info.json"
METRICS_FILE = "metrics.json"
CALIBRATION_FILE = "calibration.json"
THRESHOLDS_FILE = "thresholds.json"  # multi-label mode: per-label probability cut-offs tuned on validation
TOKEN_AUDIT_FILE = "token_audit.json"
REPORT_TXT = "classification_report.txt"
CONFUSION_PNG = "confusion_matrix.png"
ERRORS_CSV = "errors.csv"
PROFILE_FILE = "training_profile.json"  # what the training data looked like, for `pipeline drift`
BASELINE_FILE = "baseline.json"  # the baseline's classifier and its C grid
FIT_SPLITS = ("train", "validation")  # what a model learned from; models with equal hashes of these are comparable
CHECKPOINTS = "checkpoints"  # the Trainer's output, kept only while a run can resume
ENSEMBLE_FILE = "ensemble.json"  # an ensemble's combiner, members and validation scores
MEMBERS_DIR = "members"  # an ensemble's member model directories (hard links where the disk allows)
WEIGHTS = {"transformer": "model.safetensors", "baseline": "model.joblib", "ensemble": "stack.joblib"}
# what a tracked run logs as artifacts (no weights, no checkpoints: the logged model carries those)
RUN_ARTIFACTS = (CONFIG_FILE, CARD_FILE, "labels.json", REPORT_FILE, REPORT_TXT, CONFUSION_PNG, ERRORS_CSV,
                 CALIBRATION_FILE, THRESHOLDS_FILE, METRICS_FILE, TOKEN_AUDIT_FILE, "backbone.json", ENSEMBLE_FILE,
                 PROFILE_FILE)


def run_name(cfg: Config, kind: str) -> str:
    """The run's name, which is also its model directory's name under `output_dir`; a multi-label run's ends in
    `-multi`, so it never replaces the single-label model of the same config."""
    if kind == "baseline":
        lead = f"-lead{cfg.baseline.lead_words}" if cfg.baseline.lead_words else ""
        name = f"{cfg.data.name}-tfidf-{cfg.baseline.classifier}{lead}"
    elif kind == "ensemble":
        name = f"{cfg.data.name}-ensemble"
    elif cfg.tracking.run_name:
        name = cfg.tracking.run_name
    else:
        backbone = Path(cfg.model.name_or_path.rstrip("/")).name
        name = (f"{cfg.name}-{backbone}-{cfg.model.long_text}{cfg.model.max_length}"
                f"-lr{cfg.train.learning_rate:g}-ep{cfg.train.epochs:g}")
    multi = cfg.labels.mode == "multi" and not name.endswith("-multi")
    return f"{name}-multi" if multi else name


def model_dir(cfg: Config, kind: str) -> Path:
    """Where a run of this kind writes its model directory."""
    return Path(cfg.output_dir) / run_name(cfg, kind)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def write_model_dir(out: Path, *, kind: str, cfg: Config, labels: LabelMap, metrics: dict[str, Any],
                    temperature: float, save_weights: Callable[[Path], None],
                    extra: dict[str, Any] | None = None, run_id: str | None = None,
                    thresholds: dict[str, float] | None = None) -> None:
    """Every file of a model directory but the test evaluation; `model_info.json` last, once the rest is there.

    `thresholds` (multi-label mode) are the per-label cut-offs the predictor applies."""
    if kind not in WEIGHTS:
        raise ModelError(f"unknown model kind '{kind}'")
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out)
    labels.save(out)
    (out / CONFIG_FILE).write_text(to_yaml(public_dump(cfg)), encoding="utf-8")
    for name in (BOILERPLATE_FILE, REPORT_FILE):
        if (processed_dir(cfg) / name).is_file():
            shutil.copy(processed_dir(cfg) / name, out / name)
    val = metrics.get("validation", {})
    _write_json(out / CALIBRATION_FILE, {"temperature": temperature, "fitted_on": "validation",
                                         "ece_before": val.get("ece_uncalibrated"), "ece_after": val.get("ece")})
    if thresholds is not None:
        _write_json(out / THRESHOLDS_FILE, {"thresholds": thresholds, "fitted_on": "validation",
                                            "rule": "each label's F1 on validation is maximised"})
    _write_json(out / METRICS_FILE, metrics)
    if "token_audit" in metrics:
        _write_json(out / TOKEN_AUDIT_FILE, metrics["token_audit"])
    for name, data in (extra or {}).items():
        _write_json(out / name, data)
    report = out / REPORT_FILE
    facts = CardFacts(kind=kind, name=out.name, cfg=cfg, labels=labels, metrics=metrics, temperature=temperature,
                      data_report=json.loads(report.read_text(encoding="utf-8")) if report.is_file() else None,
                      data_sha256=splits_sha256(cfg), run_id=run_id)
    (out / CARD_FILE).write_text(model_card(facts), encoding="utf-8")
    weights = out / WEIGHTS[kind]
    _write_json(out / INFO_FILE, {"kind": kind, "weights": weights.name, "weights_sha256": sha256(weights),
                                  "data_sha256": splits_sha256(cfg), "fit_sha256": splits_sha256(cfg, FIT_SPLITS)})


def save_baseline(pipe: Any, out: Path) -> None:
    """The fitted scikit-learn pipeline, as `model.joblib`."""
    import joblib

    joblib.dump(pipe, out / WEIGHTS["baseline"])


def load_baseline(directory: str | Path) -> Any:
    """The scikit-learn pipeline of a baseline directory."""
    import joblib

    path = Path(directory) / WEIGHTS["baseline"]
    if not path.is_file():
        raise ModelError(f"{directory}: incomplete model directory, missing {path.name}")
    return joblib.load(path)


def read_json(path: Path) -> Any:
    """A JSON file of a model directory; a one-line error when it is missing or broken."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path.parent}: incomplete model directory, missing {path.name}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: unreadable ({exc.msg})") from None


def fitted_here(cfg: Config, kind: str) -> Path | None:
    """This config's model directory of `kind` when the model in it learned from this config's train and
    validation splits (equal sha256 of the prepared files); else None."""
    directory = model_dir(cfg, kind)
    if (directory / INFO_FILE).is_file() and read_info(directory).get("fit_sha256") == splits_sha256(cfg, FIT_SPLITS):
        return directory
    return None


def read_info(directory: str | Path) -> dict[str, Any]:
    """`model_info.json`: the kind and weights hash; derived for directories written before it existed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"{directory}: model directory not found")
    path = directory / INFO_FILE
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: unreadable ({exc.msg})") from None
        if info.get("kind") not in WEIGHTS:
            raise ModelError(f"{path}: unknown model kind {info.get('kind')!r}")
        return info
    kind = "baseline" if (directory / BASELINE_FILE).is_file() else "transformer"  # older directories
    weights = directory / WEIGHTS[kind]
    return {"kind": kind, "weights": weights.name, "weights_sha256": sha256(weights) if weights.is_file() else ""}


def read_kind(directory: str | Path) -> str:
    """`transformer` or `baseline`."""
    return str(read_info(directory)["kind"])


def model_name(directory: str | Path) -> str:
    """`<directory name>@<weights hash>`: what every output row says about the model that made it."""
    return f"{Path(directory).name}@{read_info(directory)['weights_sha256'][:12]}"


def read_model_config(directory: str | Path) -> Config:
    """The resolved config saved with a model; refuses a directory that has none."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise ModelError(f"{directory}: model directory not found")
    if not path.is_file():
        raise ModelError(f"{directory}: no {CONFIG_FILE}; cannot reproduce the normaliser it was trained with")
    return load_config([path])


def read_boilerplate(directory: str | Path) -> frozenset[str]:
    """Corpus-repeated lines learned at training time, so prediction strips the same chrome."""
    path = Path(directory) / BOILERPLATE_FILE
    return frozenset(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else frozenset()


def read_temperature(directory: str | Path) -> float:
    """The calibration temperature saved with a model (1.0 when absent)."""
    path = Path(directory) / CALIBRATION_FILE
    return float(json.loads(path.read_text())["temperature"]) if path.is_file() else 1.0


def read_thresholds(directory: str | Path) -> dict[str, float] | None:
    """The per-label thresholds of a multi-label model (None for a single-label one)."""
    path = Path(directory) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text(encoding="utf-8"))["thresholds"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{path}: unreadable thresholds ({exc})") from None


def write_evaluation(out: Path, rows: list[dict[str, Any]], y: np.ndarray, probs: np.ndarray, labels: LabelMap,
                     title: str = "test", metrics_file: bool = True,
                     thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Metrics, text report, confusion matrix and misclassified examples for one labelled set; with `thresholds`
    (a multi-label model) the label-set metrics too, the rows' `labels` lists as the truth."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(labels.ids)
    if thresholds is None:
        metrics, report = classification_metrics(y, probs, names), report_text(y, probs, names)
    else:
        y_true = multi_hot(label_sets(rows), names)
        metrics = multilabel_metrics(y, y_true, probs, thresholds, names)
        report = multilabel_report(y, y_true, probs, thresholds, names)
    if metrics_file:  # an evaluation of its own (a training run's test metrics carry theirs already)
        metrics["intervals"] = bootstrap_intervals(y, probs.argmax(axis=1), names)
        _write_json(out / METRICS_FILE, metrics)
    (out / REPORT_TXT).write_text(report, encoding="utf-8")
    plot_confusion(metrics["confusion_matrix"], names, out / CONFUSION_PNG, title)
    write_errors(out / ERRORS_CSV, rows, y, probs, names)
    return metrics


def write_errors(path: Path, rows: list[dict[str, Any]], y: np.ndarray, probs: np.ndarray, names: list[str]) -> None:
    """Misclassified rows, most confident first: id, true, predicted, confidence, first 200 characters."""
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    wrong = [i for i in np.argsort(-conf, kind="stable") if pred[i] != y[i]]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "true", "predicted", "confidence", "text"])
        for i in wrong:
            text = " ".join(str(rows[i]["text"]).split())[:200]
            writer.writerow([rows[i]["id"], names[y[i]], names[pred[i]], f"{conf[i]:.4f}", text])


class Scorer:
    """A saved model that turns raw texts into calibrated label probabilities; subclasses implement `score`."""

    kind = "model"

    def __init__(self, directory: str | Path) -> None:
        from pipeline.text import Normalizer

        self.directory = Path(directory)
        self.cfg = read_model_config(directory)
        self.labels = LabelMap.load(directory)
        self.normalise = Normalizer(self.cfg.text, read_boilerplate(directory))
        self.temperature = read_temperature(directory)
        self.multi = self.cfg.labels.mode == "multi"
        self.thresholds = read_thresholds(directory) if self.multi else None
        if self.multi and self.thresholds is None:
            raise ModelError(f"{directory}: a multi-label model without {THRESHOLDS_FILE}")

    @property
    def transformer(self) -> Scorer | None:
        """The transformer that runtime and long-text options apply to: this scorer, a member, or none."""
        return self if self.kind == "transformer" else None

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities for normalised texts (per-label sigmoid ones in multi-label mode), and per text its length
        in model units (tokens)."""
        raise NotImplementedError

    def label_sets(self, probs: np.ndarray) -> list[list[str]]:
        """Per row its labels, the primary (argmax) first: with a multi-label model every label at or above its
        threshold, else the argmax alone."""
        if not self.multi:
            return [[self.labels.ids[j]] for j in np.asarray(probs).argmax(axis=1)] if len(probs) else []
        return predicted_sets(probs, self.thresholds, list(self.labels.ids))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities for raw texts (normalised here exactly as in training)."""
        return self.score([self.normalise(t) for t in texts])[0]
