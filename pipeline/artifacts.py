"""The files every model directory and evaluation carries, for transformer and baseline models alike."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, load_config, to_yaml
from pipeline.data import BOILERPLATE_FILE, REPORT_FILE, processed_dir
from pipeline.errors import ModelError
from pipeline.labels import LabelMap
from pipeline.metrics import classification_metrics, plot_confusion, report_text

CONFIG_FILE = "pipeline.yaml"
METRICS_FILE = "metrics.json"
CALIBRATION_FILE = "calibration.json"
REPORT_TXT = "classification_report.txt"
CONFUSION_PNG = "confusion_matrix.png"
ERRORS_CSV = "errors.csv"


def write_common(out: Path, cfg: Config, labels: LabelMap, metrics: dict[str, Any], temperature: float) -> None:
    """labels.json, the resolved config, the data report, learned boilerplate, calibration and metrics."""
    out.mkdir(parents=True, exist_ok=True)
    labels.save(out)
    (out / CONFIG_FILE).write_text(to_yaml(cfg), encoding="utf-8")
    for name in (BOILERPLATE_FILE, REPORT_FILE):
        if (processed_dir(cfg) / name).is_file():
            shutil.copy(processed_dir(cfg) / name, out / name)
    val = metrics.get("validation", {})
    (out / CALIBRATION_FILE).write_text(json.dumps({
        "temperature": temperature, "fitted_on": "validation",
        "ece_before": val.get("ece_uncalibrated"), "ece_after": val.get("ece")}, indent=2))
    (out / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2))


def write_evaluation(out: Path, rows: list[dict[str, Any]], y: np.ndarray, probs: np.ndarray, labels: LabelMap,
                     title: str = "test", metrics_file: bool = True) -> dict[str, Any]:
    """Metrics, text report, confusion matrix and misclassified examples for one labelled set."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(labels.ids)
    metrics = classification_metrics(y, probs, names)
    if metrics_file:
        (out / METRICS_FILE).write_text(json.dumps(metrics, ensure_ascii=False, indent=2))
    (out / REPORT_TXT).write_text(report_text(y, probs, names), encoding="utf-8")
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

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities for normalised texts, and per text its length in model units (tokens)."""
        raise NotImplementedError

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Probabilities for raw texts (normalised here exactly as in training)."""
        return self.score([self.normalise(t) for t in texts])[0]
