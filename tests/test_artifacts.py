import csv
import json

import numpy as np
import pytest

from pipeline.artifacts import (
    INFO_FILE,
    model_name,
    read_info,
    read_kind,
    run_name,
    write_evaluation,
    write_model_dir,
)
from pipeline.config import load_config
from pipeline.errors import ModelError
from pipeline.files import sha256
from pipeline.labels import LabelMap

LABELS = LabelMap(ids=("a", "b"))
METRICS = {"validation": {"ece": 0.05, "ece_uncalibrated": 0.2}, "test": {}, "token_audit": {"train": {"docs": 3}}}


def _fake_weights(directory):
    (directory / "model.joblib").write_bytes(b"weights")


def _written(tmp_path, kind="baseline", **extra):
    cfg = load_config(overrides=[f"data.processed_dir={tmp_path / 'none'}"])
    out = tmp_path / "model"
    write_model_dir(out, kind=kind, cfg=cfg, labels=LABELS, metrics=METRICS, temperature=1.5,
                    save_weights=_fake_weights, **extra)
    return out, cfg


def test_every_file_of_a_model_directory_is_written_here(tmp_path):
    out, cfg = _written(tmp_path, extra={"baseline.json": {"C": 2.0}})
    assert {p.name for p in out.iterdir()} == {"model.joblib", "labels.json", "pipeline.yaml", "calibration.json",
                                              "metrics.json", "token_audit.json", "baseline.json", "README.md",
                                              INFO_FILE}
    assert load_config([out / "pipeline.yaml"]) == cfg
    assert json.loads((out / "calibration.json").read_text()) == {
        "temperature": 1.5, "fitted_on": "validation", "ece_before": 0.2, "ece_after": 0.05}
    assert json.loads((out / "token_audit.json").read_text()) == {"train": {"docs": 3}}
    info = json.loads((out / INFO_FILE).read_text())
    assert info == {"kind": "baseline", "weights": "model.joblib", "weights_sha256": sha256(out / "model.joblib"),
                    "data_sha256": "", "fit_sha256": ""}  # nothing prepared: no splits to hash


def test_kind_is_a_lookup_and_names_carry_the_weights_hash(tmp_path):
    out, _ = _written(tmp_path)
    assert read_kind(out) == "baseline"
    assert model_name(out) == f"model@{sha256(out / 'model.joblib')[:12]}"


def test_directories_written_before_the_kind_marker(tmp_path):
    out, _ = _written(tmp_path)
    (out / INFO_FILE).unlink()
    assert read_kind(out) == "transformer"  # no baseline.json: the only other kind there was
    (out / "baseline.json").write_text("{}")
    assert read_info(out) == {"kind": "baseline", "weights": "model.joblib",
                              "weights_sha256": sha256(out / "model.joblib")}


def test_bad_kind_markers_are_one_line(tmp_path):
    out, _ = _written(tmp_path)
    (out / INFO_FILE).write_text('{"kind": "rnn"}')
    with pytest.raises(ModelError, match=r"model_info\.json: unknown model kind 'rnn'"):
        read_kind(out)
    (out / INFO_FILE).write_text("{oops")
    with pytest.raises(ModelError, match=r"model_info\.json: unreadable"):
        read_kind(out)
    with pytest.raises(ModelError, match="model directory not found"):
        read_kind(tmp_path / "nope")
    with pytest.raises(ModelError, match="unknown model kind 'rnn'"):
        _written(tmp_path, kind="rnn")


def test_run_names_per_kind():
    cfg = load_config(overrides=["name=demo", "data.name=sample", "model.name_or_path=models/pretrained/e5/",
                                 "model.max_length=160", "train.learning_rate=5e-5", "train.epochs=6"])
    assert run_name(cfg, "transformer") == "demo-e5-head_tail160-lr5e-05-ep6"
    assert run_name(cfg, "baseline") == "sample-tfidf-logreg"
    named = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"run_name": "mine"})})
    assert run_name(named, "transformer") == "mine"
    assert run_name(named, "baseline") == "sample-tfidf-logreg"  # a baseline never takes a fine-tune's directory


def test_write_evaluation_hand_checked(tmp_path):
    labels = LabelMap(ids=("a", "b", "c"))
    rows = [{"id": f"r{i}", "text": f"نص رقم {i} " * 50} for i in range(4)]
    y = np.array([0, 0, 1, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.05, 0.35, 0.6]])
    m = write_evaluation(tmp_path, rows, y, probs, labels)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["accuracy"] == 0.75 and saved["macro_f1"] == pytest.approx(m["macro_f1"])
    assert set(saved) >= {"accuracy", "macro_f1", "weighted_f1", "ece", "per_class"}
    assert saved["per_class"]["a"]["support"] == 2
    with open(tmp_path / "errors.csv", encoding="utf-8") as fh:
        errors = list(csv.DictReader(fh))
    assert [(e["id"], e["true"], e["predicted"], e["confidence"]) for e in errors] == [("r1", "a", "b", "0.7000")]
    assert len(errors[0]["text"]) == 200
    report = (tmp_path / "classification_report.txt").read_text()
    assert "macro avg" in report and "     a " in report
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000


def test_errors_sorted_by_confidence(tmp_path):
    labels = LabelMap(ids=("a", "b"))
    rows = [{"id": str(i), "text": "x"} for i in range(3)]
    probs = np.array([[0.4, 0.6], [0.1, 0.9], [0.3, 0.7]])
    write_evaluation(tmp_path, rows, np.array([0, 0, 0]), probs, labels)
    with open(tmp_path / "errors.csv", encoding="utf-8") as fh:
        assert [r["id"] for r in csv.DictReader(fh)] == ["1", "2", "0"]


def test_saved_config_and_card_hide_credentials_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(overrides=[f"data.processed_dir={tmp_path / 'none'}", "tracking.uri=http://alice:s3cret@h:5000",
                                 f"data.path={tmp_path}/news.jsonl"])
    out = tmp_path / "model"
    write_model_dir(out, kind="baseline", cfg=cfg, labels=LABELS, metrics=METRICS, temperature=1.0,
                    save_weights=_fake_weights)
    for name in ("pipeline.yaml", "README.md"):
        text = (out / name).read_text(encoding="utf-8")
        assert "s3cret" not in text and str(tmp_path) not in text, name
    assert "uri: http://alice:***@h:5000" in (out / "pipeline.yaml").read_text(encoding="utf-8")
    assert load_config([out / "pipeline.yaml"]).data.path == f"{tmp_path}/news.jsonl"  # `~` expands again
