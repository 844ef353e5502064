"""`pipeline drift`: the training profile written with a model, and a dump compared with it dimension by dimension."""

import json
import shutil
from pathlib import Path

import pytest
from helpers import FIXTURES, base_overrides, make_corpus, write_jsonl

from pipeline.artifacts import PROFILE_FILE
from pipeline.cli import main
from pipeline.drift import DIMENSIONS, THRESHOLDS, DriftJob, drift, parse_thresholds
from pipeline.errors import ConfigError, DataError, ModelError

OFFTOPIC = FIXTURES / "drift_offtopic.jsonl"  # short sport and economy items, written for this test


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A TF-IDF baseline on the fixture corpus (30 a label), its root, and a held-out dump of the same generator."""
    from pipeline.baseline import train_baseline
    from pipeline.config import load_config
    from pipeline.data import prepare

    root = tmp_path_factory.mktemp("drift")
    cfg = load_config(overrides=base_overrides(root, write_jsonl(root / "c.jsonl", make_corpus(per_label=30))))
    prepare(cfg)
    model = train_baseline(cfg).model_dir
    same = [{k: v for k, v in r.items() if k != "label"} for r in make_corpus(per_label=15, seed=1)]
    return model, root, write_jsonl(root / "same.jsonl", same)


def test_profile_is_written_at_training(baseline):
    model, _, _ = baseline
    profile = json.loads((model / PROFILE_FILE).read_text(encoding="utf-8"))
    assert profile["source"] == "training"
    assert sum(profile["label_priors"].values()) == pytest.approx(1.0)
    assert sum(profile["length"]["words"]["counts"]) == profile["rows"]["train"]
    assert 30 <= profile["length"]["words"]["quantiles"]["0.5"] <= 40  # 30 body words and a 3-word title
    assert sum(profile["confidence"]["counts"]) == profile["rows"]["test"] > 0
    assert "انفجار" in profile["vocabulary"]["tokens"] and 0 <= profile["vocabulary"]["test_novelty"] < 0.05
    assert profile["quality"] == {"not_arabic": 0.0, "empty": 0.0, "cut": 0.0}


def test_same_distribution_raises_no_flag(baseline, tmp_path):
    model, _, same = baseline
    out, report = drift(DriftJob(model=str(model), input=str(same), output=str(tmp_path / "r")))
    assert report["flagged"] == [] and report["rows_scored"] == 105
    written = json.loads((out / "drift.json").read_text(encoding="utf-8"))
    assert set(written["dimensions"]) == set(DIMENSIONS)
    for name, dim in written["dimensions"].items():
        assert dim["threshold"] == THRESHOLDS[name] and dim["flagged"] is False
        assert isinstance(dim["statistic"], float) and dim["statistic"] <= dim["threshold"]
    assert (out / "drift.png").read_bytes()[:4] == b"\x89PNG"


def test_off_distribution_dump_is_flagged(baseline, tmp_path, capsys):
    model, _, _ = baseline
    rc = main(["drift", "--model", str(model), "--input", str(OFFTOPIC), "--output", str(tmp_path / "r")])
    assert rc == 0  # a report, not an error
    report = json.loads((tmp_path / "r" / "drift.json").read_text(encoding="utf-8"))
    assert {"vocabulary", "length"} <= set(report["flagged"])
    assert report["dimensions"]["vocabulary"]["dump_novelty"] > 0.5
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[0] == "vocabulary" and line.endswith("FLAG") for line in lines[1:6])
    assert "dimensions flagged: " in lines[-1] and (tmp_path / "r" / "drift.png").is_file()
    rc = main(["drift", "--model", str(model), "--input", str(OFFTOPIC), "--output", str(tmp_path / "r2"),
               "--fail-on-drift"])
    assert rc == 1


def test_english_and_empty_rows_flag_quality(baseline, tmp_path):
    model, _, same = baseline
    rows = [json.loads(line) for line in same.read_text(encoding="utf-8").splitlines()][:60]
    rows += [{"id": f"en-{i}", "title": "Markets", "text": "Shares rose on Monday as investors bought banks"}
             for i in range(20)] + [{"id": f"empty-{i}", "title": "", "text": "  "} for i in range(10)]
    dump = write_jsonl(tmp_path / "mixed.jsonl", rows)
    _, report = drift(DriftJob(model=str(model), input=str(dump), output=str(tmp_path / "r")))
    quality = report["dimensions"]["quality"]
    assert "quality" in report["flagged"]
    assert quality["dump"]["empty"] == pytest.approx(10 / 90)
    assert quality["dump"]["not_arabic"] == pytest.approx(20 / 90)
    assert report["rows_read"] == 90 and report["rows_scored"] == 80


def test_a_dump_of_empty_rows_flags_quality_only(baseline, tmp_path):
    model, _, _ = baseline
    dump = write_jsonl(tmp_path / "empty.jsonl", [{"id": str(i), "title": "", "text": ""} for i in range(5)])
    _, report = drift(DriftJob(model=str(model), input=str(dump), output=str(tmp_path / "r")))
    assert report["rows_scored"] == 0 and report["flagged"] == ["quality"]
    assert report["dimensions"]["quality"]["difference_pp"]["empty"] == pytest.approx(100.0)


def test_sample_caps_rows_and_thresholds_override(baseline, tmp_path):
    model, _, _ = baseline
    _, report = drift(DriftJob(model=str(model), input=str(OFFTOPIC), output=str(tmp_path / "r"), sample=10,
                               thresholds=parse_thresholds(["vocabulary=99", "length=100"])))
    assert report["rows_read"] == 10 and "only 10 rows scored" in report["note"]
    assert "vocabulary" not in report["flagged"] and report["dimensions"]["vocabulary"]["threshold"] == 99
    with pytest.raises(ConfigError, match="unknown dimension"):
        parse_thresholds(["speed=1"])
    with pytest.raises(ConfigError, match="expected labels=NUMBER"):
        parse_thresholds(["labels=high"])


def test_older_model_falls_back_to_prepared_splits_then_asks_to_retrain(baseline, tmp_path):
    model, root, same = baseline
    old = tmp_path / "old-model"
    shutil.copytree(model, old)
    (old / PROFILE_FILE).unlink()
    _, report = drift(DriftJob(model=str(old), input=str(same), output=str(tmp_path / "r")))
    assert report["profile_source"].startswith("prepared splits") and report["flagged"] == []
    moved = tmp_path / "processed-moved"
    shutil.move(root / "processed", moved)
    try:
        with pytest.raises(ModelError, match=r"no training_profile\.json .* retrain the model"):
            drift(DriftJob(model=str(old), input=str(same), output=str(tmp_path / "r2")))
    finally:
        shutil.move(moved, root / "processed")


@pytest.mark.parametrize("case", ["no_model", "no_input", "empty_input", "bad_sample"])
def test_bad_input_is_one_line(baseline, tmp_path, capsys, case):
    model, _, same = baseline
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    args = {"no_model": [str(tmp_path / "nope"), str(same)], "no_input": [str(model), str(tmp_path / "x.jsonl")],
            "empty_input": [str(model), str(empty)], "bad_sample": [str(model), str(same), "--sample", "0"]}[case]
    rc = main(["drift", "--model", args[0], "--input", args[1], *args[2:], "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert {"no_model": "model directory not found", "no_input": "input not found",
            "empty_input": "no rows to compare", "bad_sample": "--sample 0"}[case] in err
    with pytest.raises((ModelError, DataError, ConfigError)):
        drift(DriftJob(model=args[0], input=args[1], output=str(tmp_path / "r3"), sample=0 if len(args) > 2 else 5))


def test_report_is_logged_as_a_drift_run(baseline, tmp_path):
    model, _, same = baseline
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, report = drift(DriftJob(model=str(model), input=str(same), output=str(tmp_path / "r"), tracking_uri=uri,
                               experiment="drift-test"))
    import mlflow

    run = mlflow.MlflowClient(uri).get_run(report["run_id"])
    assert run.data.tags["kind"] == "drift" and run.info.status == "FINISHED"
    assert run.data.metrics["drift_vocabulary_flagged"] == 0 and "drift_labels" in run.data.metrics
    names = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(report["run_id"])}
    assert {"drift.json", "drift.png"} <= names
    saved = json.loads((tmp_path / "r" / "drift.json").read_text(encoding="utf-8"))
    fetched = mlflow.MlflowClient(uri).download_artifacts(report["run_id"], "drift.json", str(tmp_path))
    logged = json.loads(Path(fetched).read_text(encoding="utf-8"))
    assert saved["run_id"] == logged["run_id"] == report["run_id"]


def test_tiny_transformer_profile_and_drift(trained, tmp_path):
    cfg, result = trained
    profile = json.loads((result.model_dir / PROFILE_FILE).read_text(encoding="utf-8"))
    assert profile["quality"]["cut"] == 0.0 and profile["rows"]["test"] > 0
    test_split = tmp_path / "test.jsonl"
    shutil.copy(f"{cfg.data.processed_dir}/{cfg.data.name}/test.jsonl", test_split)
    _, report = drift(DriftJob(model=str(result.model_dir), input=str(test_split), output=str(tmp_path / "r")))
    assert report["dimensions"]["confidence"]["statistic"] == pytest.approx(0.0, abs=1e-9)  # the same test split
    assert report["dimensions"]["vocabulary"]["statistic"] == pytest.approx(0.0, abs=1e-9)
    assert report["flagged"] == []
