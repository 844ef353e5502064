from helpers import write_jsonl

from pipeline.cli import main


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
