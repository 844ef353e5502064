"""`pipeline audit-labels`: planted label flips rank at the top, the outputs' shape, errors, MLflow logging."""

import csv
import json
from pathlib import Path

import pytest
from helpers import LABELS, Tiny, base_overrides, make_corpus, write_jsonl

from pipeline.audit import AUDIT_JSON, COLUMNS, ISSUES_CSV, audit_labels
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.data import prepare

PLANTED = 6
PER_LABEL = 40


@pytest.fixture
def flipped(tmp_path):
    """The fixture corpus (7 x 40 rows) with six labels flipped to the next label: (overrides, {id: true label}).

    Confident learning flags a row only where the out-of-fold probability of another label reaches that label's
    mean self-confidence; on 22 rows a label (154 in all) two of six flips stayed under it, on 40 none do.
    """
    rows = make_corpus(per_label=PER_LABEL, seed=3)
    truth = {}
    for row in rows[:: len(rows) // PLANTED][:PLANTED]:
        truth[row["id"]] = row["label"]
        row["label"] = LABELS[(LABELS.index(row["label"]) + 1) % len(LABELS)]
    overrides = base_overrides(tmp_path, write_jsonl(tmp_path / "corpus.jsonl", rows))
    prepare(load_config(overrides=overrides))
    return overrides, truth


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_planted_flips_rank_at_the_top(flipped, tmp_path, capsys):
    overrides, truth = flipped
    out = tmp_path / "audit"
    assert main(["audit-labels", *overrides, "--output", str(out), "--top", "5"]) == 0  # tracking disabled
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"{7 * PER_LABEL} rows audited (5-fold TF-IDF") and "likely label errors" in printed[0]
    assert len(printed) == 1 + 1 + 5 + 1  # summary, header, top 5, where the files are

    fields, issues = read_csv(out / ISSUES_CSV)
    assert tuple(fields) == COLUMNS
    top = issues[:10]
    caught = [r for r in top if r["id"] in truth]
    assert len(caught) >= PLANTED - 1, [r["id"] for r in top]
    assert all(r["suggested_label"] == truth[r["id"]] and r["given_label"] != truth[r["id"]] for r in caught)
    assert [int(r["rank"]) for r in issues] == list(range(1, len(issues) + 1))
    scores = [float(r["score"]) for r in issues]
    assert scores == sorted(scores) and all(0 <= s <= 1 for s in scores)  # most likely wrong first
    assert all(float(r["p_given"]) == pytest.approx(float(r["score"]), abs=1e-3) for r in issues)  # self-confidence
    assert all(float(r["p_suggested"]) >= float(r["p_given"]) for r in issues)
    assert all(r["split"] in ("train", "validation", "test") and 0 < len(r["lead"]) <= 201 for r in issues)

    summary = json.loads((out / AUDIT_JSON).read_text(encoding="utf-8"))
    assert summary["rows_audited"] == 7 * PER_LABEL and summary["folds"] == 5
    assert summary["issues_flagged"] == len(issues) == sum(summary["issues_by_label"].values())
    assert sum(summary["issues_by_split"].values()) == len(issues)
    assert set(summary["issues_by_label"]) == set(LABELS)
    assert summary["oof_macro_f1"] > 0.8 and summary["model"]["C"] in load_config(overrides=overrides).baseline.C


def test_same_seed_same_ranking_and_default_output(flipped):
    overrides, _ = flipped
    cfg = load_config(overrides=[*overrides, "baseline.C=[4.0]"])
    first, second = audit_labels(cfg, folds=3), audit_labels(cfg, folds=3)
    assert first.output == second.output == Path(cfg.output_dir) / "fixture-label-audit"
    assert [i["id"] for i in first.issues] == [i["id"] for i in second.issues]
    assert first.summary["model"]["C"] == 4.0 and first.summary["folds"] == 3


def test_labels_absent_from_the_corpus_are_never_suggested(tmp_path):
    rows = [r for r in make_corpus(per_label=12, seed=5) if r["label"] in LABELS[:4]]
    overrides = base_overrides(tmp_path, write_jsonl(tmp_path / "corpus.jsonl", rows))
    cfg = load_config(overrides=[*overrides, "baseline.C=[2.0]"])
    prepare(cfg)
    result = audit_labels(cfg, folds=3)
    assert result.summary["rows_audited"] == len(rows)
    assert {i["suggested_label"] for i in result.issues} <= set(LABELS[:4])
    assert all(result.summary["issues_by_label"][lb] == 0 for lb in LABELS[4:])


def test_not_prepared_is_one_line(overrides, capsys):
    assert main(["audit-labels", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train.jsonl: not prepared; run `pipeline prepare`" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("folds", ["1", "1000"])
def test_bad_folds_is_one_line(flipped, tmp_path, capsys, folds):
    overrides, _ = flipped
    assert main(["audit-labels", *overrides, "--folds", folds, "--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --folds") and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()  # nothing written


def test_tracked_audit_logs_the_files(flipped, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    overrides, _ = flipped
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(overrides=[*overrides, "tracking.enabled=true", f"tracking.uri={uri}", "baseline.C=[4.0]"])
    result = audit_labels(cfg, folds=3)
    assert result.run_id
    run = mlflow.MlflowClient(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "audit"
    assert run.data.tags["mlflow.runName"] == "fixture-label-audit" and run.data.params["audit.folds"] == "3"
    assert run.data.metrics["issues_flagged"] == len(result.issues)
    assert run.data.metrics["oof_macro_f1"] == pytest.approx(result.summary["oof_macro_f1"])
    assert {a.path for a in mlflow.MlflowClient(uri).list_artifacts(result.run_id)} >= {ISSUES_CSV, AUDIT_JSON}
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path=ISSUES_CSV, tracking_uri=uri)
    assert read_csv(local)[1] == read_csv(result.output / ISSUES_CSV)[1]


@pytest.mark.slow  # fine-tunes the tiny model: `make test-slow`, which CI runs too
def test_transformer_folds_fine_tune_the_backbone(tmp_path, corpus, tiny_bert, capsys):
    rows = [dict(r) for r in corpus]
    truth = {}
    for row in rows[:: len(rows) // 3][:3]:
        truth[row["id"]] = row["label"]
        row["label"] = LABELS[(LABELS.index(row["label"]) + 1) % len(LABELS)]
    tiny = Tiny(tmp_path, write_jsonl(tmp_path / "c.jsonl", rows), tiny_bert)
    tiny.prepared()
    out = tmp_path / "audit"
    assert main(["audit-labels", *tiny.args("train.epochs=8"), "--model", "transformer", "--folds", "2",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(rows)} rows audited (2-fold {tiny_bert.name} fine-tunes" in printed
    summary = json.loads((out / AUDIT_JSON).read_text(encoding="utf-8"))
    assert summary["model"]["kind"] == "transformer" and len(summary["model"]["fold_val_macro_f1"]) == 2
    assert summary["oof_macro_f1"] > 0.6  # each row scored by a model that never saw it
    flagged = {r["id"]: r for r in read_csv(out / ISSUES_CSV)[1]}
    assert sum(i in flagged for i in truth) >= 2, (truth, list(flagged)[:10])
    assert not (tmp_path / "models").exists()  # the folds' models lived in a temporary directory
