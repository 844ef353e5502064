import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.baseline import train_baseline
from pipeline.cli import main
from pipeline.uncertainty import bootstrap_intervals, label_set_intervals, macro_f1, paired_test, per_label_f1

LABELS = [f"l{i}" for i in range(5)]


def _noisy(n: int, right: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    return y, np.where(rng.random(n) < right, y, rng.integers(0, len(LABELS), n))


def test_f1_matches_scikit_learn_also_with_a_label_nobody_used():
    y, pred = _noisy(300, 0.6)
    y[y == 4], pred[pred == 4] = 3, 3  # label 4 absent from both
    assert macro_f1(y, pred, 5) == pytest.approx(f1_score(y, pred, average="macro"))
    expected = f1_score(y, pred, labels=[0, 1, 2, 3], average=None)
    assert per_label_f1(y, pred, 5)[:4] == pytest.approx(expected) and np.isnan(per_label_f1(y, pred, 5)[4])


def test_intervals_hold_the_point_and_narrow_with_more_articles():
    small, large = (bootstrap_intervals(*_noisy(n, 0.7), LABELS, resamples=500) for n in (100, 1600))
    for n, ci in ((100, small), (1600, large)):
        point = f1_score(*_noisy(n, 0.7), average="macro")
        assert ci["macro_f1"][0] < point < ci["macro_f1"][1]
        assert set(ci["per_class_f1"]) == set(LABELS) and ci["level"] == 0.95
    width = {n: ci["macro_f1"][1] - ci["macro_f1"][0] for n, ci in ((100, small), (1600, large))}
    assert width[1600] < width[100] / 2.5  # ~ 1/sqrt(16) = a quarter


def test_label_set_intervals_hold_scikit_learns_micro_and_macro_f1():
    rng = np.random.default_rng(3)
    truth = rng.random((400, 5)) < 0.3
    truth[:, 4] = False  # a label never true: scored 0 when never predicted either (zero_division=0)
    pred = np.where(rng.random(truth.shape) < 0.8, truth, ~truth)
    pred[:, 4] = False
    ci = label_set_intervals(truth, pred, resamples=500)
    for key, avg in (("multilabel_micro_f1", "micro"), ("multilabel_macro_f1", "macro")):
        point = f1_score(truth, pred, average=avg, zero_division=0)
        assert ci[key][0] < point < ci[key][1] and ci[key][1] - ci[key][0] < 0.1
    assert label_set_intervals(truth[:1], pred[:1]) == {}


def test_paired_test_finds_a_real_difference_and_not_a_null_one():
    y, a = _noisy(400, 0.8, seed=1)
    same = paired_test(y, a, a.copy(), 5, resamples=500)
    assert same["macro_f1_diff"] == 0 and same["p_mcnemar"] == 1.0 and same["only_a_right"] == 0
    worse = a.copy()
    wrong = np.flatnonzero(a == y)[:60]
    worse[wrong] = (y[wrong] + 1) % 5  # B loses 60 articles A got right
    better = paired_test(y, a, worse, 5, resamples=500)
    assert better["only_a_right"] == 60 and better["only_b_right"] == 0
    assert better["p_mcnemar"] < 1e-6 and better["p_bootstrap"] < 0.01
    assert 0 < better["macro_f1_diff_interval"][0] < better["macro_f1_diff"] < better["macro_f1_diff_interval"][1]
    with pytest.raises(ValueError, match="different rows"):
        paired_test(y, a, a[:-1], 5)


def test_a_run_reports_intervals_in_metrics_card_and_mlflow(cfg_tiny, tmp_path, capsys):
    import mlflow

    cfg = cfg_tiny.prepared("tracking.enabled=true", f"tracking.uri=sqlite:///{tmp_path}/m.db")
    result = train_baseline(cfg)
    test = json.loads((result.model_dir / "metrics.json").read_text())["test"]
    low, high = test["intervals"]["macro_f1"]
    assert low <= test["macro_f1"] <= high and len(test["intervals"]["per_class_f1"]) == 7
    assert f"[{low:.3f}, {high:.3f}]" in (result.model_dir / "README.md").read_text()
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/m.db").get_run(result.run_id)
    assert run.data.metrics["test_macro_f1_ci_low"] == pytest.approx(low)
    assert json.loads((result.model_dir / "model_info.json").read_text())["data_sha256"]


def test_a_fine_tune_is_compared_with_the_baseline_of_its_splits_and_evaluate_against(cfg_tiny, tmp_path, capsys):
    from pipeline.train import train

    cfg = cfg_tiny.prepared("train.epochs=1")
    base = train_baseline(cfg).model_dir
    tuned = train(cfg)
    paired = tuned.metrics["test"]["vs_baseline"]
    assert paired["baseline"] == base.name and paired["n"] == tuned.metrics["test"]["n"]
    assert "Against the TF-IDF baseline" in (tuned.model_dir / "README.md").read_text()
    test_file = tmp_path / "processed" / "fixture" / "test.jsonl"
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(tuned.model_dir), "--data", str(test_file), "--output", str(out),
                 "--against", str(base)]) == 0
    printed = capsys.readouterr().out
    assert "95% CI" in printed and f"against {base.name}: macro-F1" in printed
    vs = json.loads((out / "metrics.json").read_text())["vs"]
    assert vs["macro_f1_diff"] == pytest.approx(paired["macro_f1_diff"], abs=1e-3)
    assert main(["evaluate", "--model", str(tuned.model_dir), "--data", str(test_file), "--against",
                 str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
