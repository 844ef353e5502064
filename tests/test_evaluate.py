import csv
import json

import numpy as np
import pytest
from helpers import write_jsonl

from pipeline.artifacts import write_evaluation
from pipeline.cli import main
from pipeline.labels import LabelMap


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


def test_cli_evaluate_transformer_and_baseline(trained, tmp_path, capsys):
    _, result = trained
    data = tmp_path / "labelled.csv"
    import pandas as pd

    pd.DataFrame([{"id": "x1", "title": "غارات", "text": "قصف الجيش القوات الجوية", "label": "military_operation"},
                  {"id": "x2", "title": "مباراة", "text": "الفريق المباراة الطقس", "label": "other"}]).to_csv(data)
    model = str(result.model_dir)
    assert main(["evaluate", "--model", model, "--data", str(data), "--output", str(tmp_path / "e")]) == 0
    assert "2 rows: accuracy" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "e").iterdir()} == {"metrics.json", "classification_report.txt",
                                                           "confusion_matrix.png", "errors.csv"}
    assert main(["baseline", "-c", str(result.model_dir / "pipeline.yaml")]) == 0
    base = next(p for p in (result.model_dir.parent).iterdir() if p.name.endswith("tfidf-logreg"))
    assert main(["evaluate", "--model", str(base), "--data", str(data), "--output", str(tmp_path / "b")]) == 0


def test_labels_outside_the_model_label_set(trained, tmp_path, capsys):
    _, result = trained
    data = write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "نص", "label": "other"},
                                              {"id": "2", "text": "نص", "label": "sports"}])
    assert main(["evaluate", "--model", str(result.model_dir), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d.jsonl:2: field 'label': label 'sports' is not in the label set" in err


def test_model_directory_without_labels(tmp_path, capsys, trained):
    _, result = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors", "pipeline.yaml"):
        (broken / name).write_bytes((result.model_dir / name).read_bytes())
    assert main(["evaluate", "--model", str(broken), "--data", "x.jsonl"]) == 2
    expected = f"error: {broken}: no labels.json; not a model directory written by this pipeline\n"
    assert capsys.readouterr().err == expected


def test_missing_model_directory(capsys):
    assert main(["evaluate", "--model", "models/nope", "--data", "x.jsonl"]) == 2
    assert "models/nope: model directory not found" in capsys.readouterr().err
