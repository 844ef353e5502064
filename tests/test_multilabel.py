"""Multi-label mode (`labels.mode: multi`): validated `labels` lists, label-set metrics, per-label thresholds tuned
on validation, the one-vs-rest baseline, the sigmoid/BCE transformer, and `labels` in every output."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import LABEL_WORDS, SECONDARY, Tiny, multi_corpus, write_jsonl

from pipeline.cli import main
from pipeline.config import DataConfig, load_config
from pipeline.data import load_labelled, load_split, processed_dir
from pipeline.errors import DataError
from pipeline.labels import LabelMap
from pipeline.multilabel import (
    calibrated_multilabel,
    multi_hot,
    multilabel_metrics,
    predicted_sets,
    tune_thresholds,
)

NAMES = ["a", "b", "c"]
LABELS = LabelMap(ids=tuple(LABEL_WORDS), mapping={"arrests": "security_operation"})
@pytest.fixture(scope="module")
def baseline_multi(tmp_path_factory):
    """A multi-label TF-IDF baseline on the multi-label fixture corpus."""
    from helpers import base_overrides

    from pipeline.baseline import train_baseline
    from pipeline.data import prepare

    root = tmp_path_factory.mktemp("multi")
    cfg = load_config(overrides=[*base_overrides(root, write_jsonl(root / "c.jsonl", multi_corpus())),
                                 "labels.mode=multi"])
    prepare(cfg)
    return cfg, train_baseline(cfg)


# --- data validation -------------------------------------------------------------------------------------------

def _load(tmp_path, rows, multi=False, **kw):
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    return load_labelled(path, DataConfig(**kw), LABELS, multi)


@pytest.mark.parametrize(("value", "message"), [
    ("recruitment", r"x\.jsonl:2: field 'labels': expected a list of labels, got str"),
    ([], r"x\.jsonl:2: field 'labels': empty list"),
    (["security_operation", "foo"], r"x\.jsonl:2: field 'labels': label 'foo' is not in the label set \(recruitment,"),
])
@pytest.mark.parametrize("multi", [False, True])
def test_bad_labels_lists_name_file_line_and_field(tmp_path, value, message, multi):
    rows = [{"text": "نص", "label": "other", "labels": ["other"]},
            {"text": "نص آخر", "label": "security_operation", "labels": value}]
    with pytest.raises(DataError, match=message) as err:
        _load(tmp_path, rows, multi)
    assert err.value.code == "bad_labels"
    loaded = _load(tmp_path, rows, multi, on_bad_rows="skip")
    assert loaded.skipped == {"bad_labels": 1} and len(loaded.rows) == 1


def test_labels_are_mapped_primary_first_and_default_to_the_label_in_multi_mode(tmp_path):
    rows = [{"text": "نص", "label": "arrests", "labels": ["recruitment", "arrests", "recruitment"]},
            {"text": "نص آخر", "label": "other"}]
    multi = _load(tmp_path, rows, multi=True).rows
    assert [r["labels"] for r in multi] == [["security_operation", "recruitment"], ["other"]]
    single = _load(tmp_path, rows).rows
    assert single[0]["labels"] == ["security_operation", "recruitment"] and "labels" not in single[1]


def test_csv_labels_are_a_json_array_and_an_empty_cell_is_none(tmp_path):
    path = tmp_path / "x.csv"
    pd.DataFrame({"text": ["نص", "نص آخر", "نص ثالث"], "label": ["arrests", "other", "other"],
                  "labels": ['["arrests", "recruitment"]', "", "other|recruitment"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"x\.csv:4: field 'labels': expected a list of labels, got str"):
        load_labelled(path, DataConfig(), LABELS, True)
    rows = load_labelled(path, DataConfig(on_bad_rows="skip"), LABELS, True).rows
    assert [r["labels"] for r in rows] == [["security_operation", "recruitment"], ["other"]]


def test_labels_mode_is_checked_and_saved(baseline_multi):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"labels\.mode"):
        load_config(overrides=["labels.mode=several"])
    _cfg, result = baseline_multi
    assert "mode: multi" in (result.model_dir / "pipeline.yaml").read_text(encoding="utf-8")


def test_a_multi_label_run_reports_intervals_for_the_primary_and_the_label_sets(baseline_multi):
    _cfg, result = baseline_multi
    test = json.loads((result.model_dir / "metrics.json").read_text())["test"]
    for key in ("macro_f1", "multilabel_micro_f1", "multilabel_macro_f1"):
        low, high = test["intervals"][key]
        assert low <= test[key] <= high
    assert set(test["intervals"]["per_class_f1"]) == set(LABEL_WORDS)
    card = (result.model_dir / "README.md").read_text(encoding="utf-8")
    assert f"| all labels: micro-F1 | {test['multilabel_micro_f1']:.3f} [" in card


# --- metrics and thresholds ------------------------------------------------------------------------------------

Y = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]])
P = np.array([[.9, .6, .1], [.2, .8, .3], [.1, .2, .7], [.6, .1, .4]])
HALF = {"a": .5, "b": .5, "c": .5}


def test_multilabel_metrics_by_hand():
    m = multilabel_metrics(np.array([0, 1, 2, 0]), Y, P, HALF, NAMES)
    # predicted sets at 0.5: {a, b}, {b}, {c}, {a}; truth {a, b}, {b}, {c}, {a, c}: one missed c, nothing extra
    assert predicted_sets(P, HALF, NAMES) == [["a", "b"], ["b"], ["c"], ["a"]]
    assert m["multilabel_micro_f1"] == pytest.approx(10 / 11)  # P = 5/5, R = 5/6
    assert m["multilabel_macro_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)  # c: P 1, R 1/2
    assert m["subset_accuracy"] == pytest.approx(3 / 4)
    assert m["hamming_loss"] == pytest.approx(1 / 12)
    assert m["per_label"]["c"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2,
                                   "threshold": 0.5}
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0  # argmax against the primary label, as in single mode
    assert m["labels_per_doc"] == {"true": 1.5, "predicted": 1.25}


def test_the_primary_is_always_predicted_and_comes_first():
    probs = np.array([[.1, .3, .2], [.4, .9, .7]])
    assert predicted_sets(probs, {"a": .5, "b": .95, "c": .5}, NAMES) == [["b"], ["b", "c"]]


def test_thresholds_maximise_each_labels_f1_halfway_between_scores():
    # a: positives .9 and .6, negatives .2 and .1 -> any cut in (.2, .6] is perfect; halfway is .4
    assert tune_thresholds(Y, P, NAMES) == pytest.approx({"a": 0.4, "b": 0.4, "c": 0.35})
    assert tune_thresholds(np.zeros_like(Y), P, NAMES) == HALF  # no positive: the default


def test_thresholds_come_from_validation_never_from_test():
    y = {"validation": np.array([0, 1, 2, 0]), "test": np.array([0, 1, 2, 0])}
    truth = {"validation": Y, "test": Y}
    probs = {"validation": lambda: P, "test": lambda: P}
    _, thresholds, _ = calibrated_multilabel(probs, y, truth, NAMES)
    other_test = {**truth, "test": 1 - Y}
    assert calibrated_multilabel({**probs, "test": lambda: 1 - P}, y, other_test, NAMES)[1] == thresholds
    other_val = {**truth, "validation": np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]])}
    assert calibrated_multilabel(probs, y, other_val, NAMES)[1]["a"] != thresholds["a"]


def test_baseline_thresholds_ignore_the_test_split(baseline_multi, tmp_path):
    from pipeline.baseline import train_baseline

    cfg, result = baseline_multi
    saved = json.loads((result.model_dir / "thresholds.json").read_text())
    assert saved["fitted_on"] == "validation" and set(saved["thresholds"]) == set(LABEL_WORDS)
    other = cfg.model_copy(update={"output_dir": str(tmp_path / "models"),
                                   "data": cfg.data.model_copy(update={"processed_dir": str(tmp_path / "p")})})
    target = processed_dir(other)
    target.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        rows = load_split(cfg, split)
        if split == "test":  # every test row relabelled: the tuned thresholds must not move
            rows = [{**r, "labels": [r["label"], *(x for x in LABEL_WORDS if x != r["label"])]} for r in rows]
        write_jsonl(target / f"{split}.jsonl", rows)
    again = train_baseline(other)
    assert json.loads((again.model_dir / "thresholds.json").read_text())["thresholds"] == saved["thresholds"]
    assert again.metrics["test"]["subset_accuracy"] < result.metrics["test"]["subset_accuracy"]


# --- the baseline ----------------------------------------------------------------------------------------------

def test_baseline_learns_the_secondary_labels(baseline_multi):
    _cfg, result = baseline_multi
    test = result.metrics["test"]
    assert test["accuracy"] >= 0.9 and test["macro_f1"] >= 0.9  # the primary label, single mode's keys
    assert test["multilabel_micro_f1"] >= 0.85 and test["subset_accuracy"] >= 0.7
    for label in SECONDARY.values():
        assert test["per_label"][label]["f1"] >= 0.8, (label, test["per_label"][label])
    assert (result.model_dir / "calibration.json").is_file()
    assert json.loads((result.model_dir / "calibration.json").read_text())["temperature"] == 1.0
    report = (result.model_dir / "classification_report.txt").read_text()
    assert "primary label" in report and "samples avg" in report
    card = (result.model_dir / "README.md").read_text(encoding="utf-8")
    assert "| all labels: micro-F1 |" in card and "`thresholds.json`" in card


def test_baseline_scorer_gives_sigmoid_probabilities(baseline_multi):
    from pipeline.baseline import BaselineScorer

    cfg, result = baseline_multi
    rows = load_split(cfg, "test")
    scorer = BaselineScorer(result.model_dir)
    probs = scorer.predict_proba([r["text"] for r in rows])
    assert probs.shape == (len(rows), 7) and ((probs > 0) & (probs < 1)).all()
    assert not np.allclose(probs.sum(axis=1), 1)  # one probability per label, not a distribution
    sets = scorer.label_sets(probs)
    assert all(s[0] == LABELS.ids[i] for s, i in zip(sets, probs.argmax(1), strict=True))
    with_second = [(r, s) for r, s in zip(rows, sets, strict=True) if len(r["labels"]) > 1]
    assert with_second and sum(set(r["labels"]) == set(s) for r, s in with_second) >= 0.7 * len(with_second)


def test_evaluate_reports_the_label_set_metrics(baseline_multi, tmp_path, capsys):
    cfg, result = baseline_multi
    data = processed_dir(cfg) / "test.jsonl"
    assert main(["evaluate", "--model", str(result.model_dir), "--data", str(data), "--output",
                 str(tmp_path / "e")]) == 0
    assert "all labels: micro-F1" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "multilabel_micro_f1", "multilabel_macro_f1", "subset_accuracy",
                "hamming_loss", "per_label"):
        assert metrics[key] == result.metrics["test"][key]


def test_evaluate_refuses_a_bad_labels_list(baseline_multi, tmp_path, capsys):
    _cfg, result = baseline_multi
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"title": "t", "text": "نص", "label": "other", "labels": ["nope"]}])
    assert main(["evaluate", "--model", str(result.model_dir), "--data", str(bad)]) == 2
    assert "bad.jsonl:1: field 'labels': label 'nope' is not in the label set" in capsys.readouterr().err


# --- the predictor, its sinks, the pyfunc ----------------------------------------------------------------------

def _dump(tmp_path):
    rows = multi_corpus(per_label=4, seed=5)
    return write_jsonl(tmp_path / "dump.jsonl", [{"id": r["id"], "title": r["title"], "text": r["text"]}
                                                 for r in rows] + [{"id": "empty", "text": ""}])


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_predictor_rows_carry_labels_in_every_format(baseline_multi, tmp_path, ext):
    _cfg, result = baseline_multi
    out = tmp_path / f"o.{ext}"
    assert main(["predict", "--model", str(result.model_dir), "--input", str(_dump(tmp_path)), "--output", str(out),
                 "--quiet"]) == 0
    if ext == "jsonl":
        rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    elif ext == "csv":
        rows = pd.read_csv(out, keep_default_na=False).to_dict("records")
        rows = [{**r, "labels": json.loads(r["labels"])} for r in rows]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert str(table.schema.field("labels").type) == "list<element: string>"
        rows = table.to_pylist()
    assert list(rows[0])[:5] == ["id", "line", "label", "confidence", "labels"]
    done = [r for r in rows if r["label"]]
    assert all(r["labels"][0] == r["label"] for r in done)
    assert any(len(r["labels"]) > 1 for r in done)
    assert rows[-1]["labels"] == [] and rows[-1]["error"] == "empty_text"


def test_single_label_rows_have_no_labels_column(tmp_path):
    from helpers import base_overrides

    from pipeline.baseline import train_baseline
    from pipeline.data import prepare

    cfg = load_config(overrides=base_overrides(tmp_path, write_jsonl(tmp_path / "c.jsonl", multi_corpus())))
    prepare(cfg)
    result = train_baseline(cfg)
    assert not (result.model_dir / "thresholds.json").exists() and "subset_accuracy" not in result.metrics["test"]
    out = tmp_path / "o.csv"
    assert main(["predict", "--model", str(result.model_dir), "--input", str(_dump(tmp_path)), "--output", str(out),
                 "--quiet"]) == 0
    assert out.read_text(encoding="utf-8").splitlines()[0] == \
        "id,line,label,confidence,needs_review,flags,top,model,error"


def test_a_multi_label_model_without_thresholds_is_refused(baseline_multi, tmp_path):
    import shutil

    from pipeline.errors import ModelError
    from pipeline.scoring import load_scorer

    _cfg, result = baseline_multi
    copy = shutil.copytree(result.model_dir, tmp_path / "m")
    (copy / "thresholds.json").unlink()
    with pytest.raises(ModelError, match=r"multi-label model without thresholds\.json"):
        load_scorer(copy)


def test_pyfunc_returns_labels(baseline_multi):
    from pipeline.pyfunc_model import NewsClassifier

    cfg, result = baseline_multi
    rows = load_split(cfg, "test")
    model = NewsClassifier()
    model.load_context(SimpleNamespace(artifacts={"model_dir": str(result.model_dir)}))
    out = model.predict(None, pd.DataFrame({"text": [r["text"] for r in rows]}))
    assert list(out.columns[:3]) == ["label", "confidence", "labels"]
    assert all(isinstance(s, list) and s[0] == lb for s, lb in zip(out["labels"], out["label"], strict=True))
    assert any(len(s) > 1 for s in out["labels"])


# --- the transformer -------------------------------------------------------------------------------------------

def test_transformer_multi_label_trains_with_bce_and_predicts_labels(tmp_path, tiny_bert):
    import torch

    from pipeline.finetune import class_weights, weighted_loss
    from pipeline.train import train

    tiny = Tiny(tmp_path, write_jsonl(tmp_path / "c.jsonl", multi_corpus(per_label=12)), tiny_bert)
    cfg = tiny.prepared("labels.mode=multi", "train.epochs=6", "train.linear_probe=true")
    y_multi = multi_hot([r["labels"] for r in load_split(cfg, "train")], LABELS.ids)
    pos_weight = class_weights(cfg, LABELS, [0], y_multi)
    assert pos_weight[0] == pytest.approx((len(y_multi) - y_multi[:, 0].sum()) / y_multi[:, 0].sum())
    loss = weighted_loss(None, multi=True)({"logits": torch.zeros(2, 7)}, torch.ones(2, 7))
    assert float(loss) == pytest.approx(np.log(2), rel=1e-5)  # BCE of a sigmoid at 0.5

    result = train(cfg)
    out = result.model_dir
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert (out / "thresholds.json").is_file() and json.loads((out / "calibration.json").read_text())[
        "temperature"] == 1.0
    test = result.metrics["test"]
    assert {"multilabel_micro_f1", "subset_accuracy", "per_label"} <= set(test)
    assert test["accuracy"] >= 0.7 and test["multilabel_micro_f1"] >= 0.8  # 0.846 and 0.938 when written
    assert "val_multilabel_micro_f1" in {k.replace("eval_", "val_") for h in result.metrics["history"] for k in h}
    dump = tmp_path / "o.jsonl"
    assert main(["predict", "--model", str(out), "--input", str(_dump(tmp_path)), "--output", str(dump), "--quiet",
                 "--runtime", "torch"]) == 0
    rows = [json.loads(x) for x in dump.read_text(encoding="utf-8").splitlines()]
    assert all(r["labels"][0] == r["label"] for r in rows if r["label"])


def test_a_multi_label_run_has_its_own_name_and_directory():
    from pipeline.artifacts import run_name

    single, multi = load_config(), load_config(overrides=["labels.mode=multi"])
    assert run_name(multi, "baseline") == run_name(single, "baseline") + "-multi"
    assert run_name(multi, "transformer") == run_name(single, "transformer") + "-multi"
    named = load_config(overrides=["labels.mode=multi", "tracking.run_name=mine-multi"])
    assert run_name(named, "transformer") == "mine-multi"
