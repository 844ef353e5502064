import numpy as np
import pytest

from pipeline.metrics import (
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    plot_confusion,
    plot_drift,
    softmax,
)


def test_hand_checked_metrics():
    y = np.array([0, 0, 1, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6]])
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    # a: P=1 R=0.5 F1=2/3; b: P=0.5 R=1 F1=2/3; c: P=R=F1=1
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["b"]["precision"] == 0.5 and m["per_class"]["b"]["recall"] == 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 / 3 + 1) / 4)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    # bins: 0.9 right, 0.7 wrong, 0.8 right, 0.6 right -> |1-.9|+|0-.7|+|1-.8|+|1-.6| over 4
    assert m["ece"] == pytest.approx((0.1 + 0.7 + 0.2 + 0.4) / 4)


def test_ece_of_perfect_calibration_is_zero():
    probs = np.array([[0.5, 0.5]] * 4)
    assert expected_calibration_error(probs, np.array([0, 1, 0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 0.0


def test_temperature_softens_an_overconfident_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), y] += 1.0
    logits *= 6  # right 70% of the time, but nearly always ~100% sure
    temp = fit_temperature(lambda t: softmax(logits, t), y)
    assert temp > 2
    before = expected_calibration_error(softmax(logits), y)
    after = expected_calibration_error(softmax(logits, temp), y)
    assert after < before / 2


def test_confusion_plot(tmp_path):
    path = plot_confusion([[3, 1], [0, 4]], ["attack_report", "other"], tmp_path / "cm.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_is_fitted_on_validation_only():
    from pipeline.metrics import calibrated_metrics

    rng = np.random.default_rng(0)
    logits = {s: rng.normal(size=(40, 3)) * 4 for s in ("validation", "test")}
    noisy = np.where(rng.random(40) < 0.3, rng.integers(0, 3, 40), logits["validation"].argmax(1))
    y = {"validation": noisy, "test": rng.integers(0, 3, 40)}  # test alone would want another temperature
    probs_at = {s: (lambda t, lg=lg: softmax(lg, t)) for s, lg in logits.items()}
    metrics, temp, probs = calibrated_metrics(probs_at, y, ["a", "b", "c"])
    assert temp == pytest.approx(fit_temperature(probs_at["validation"], y["validation"]))
    assert temp != pytest.approx(fit_temperature(probs_at["test"], y["test"]), rel=1e-3)
    assert np.allclose(probs["test"], softmax(logits["test"], temp))
    assert metrics["test"]["ece_uncalibrated"] == pytest.approx(
        expected_calibration_error(softmax(logits["test"]), y["test"]))
    assert calibrated_metrics(probs_at, y, ["a", "b", "c"], calibrate=False)[1] == 1.0


def test_plot_drift_draws_a_panel_per_dimension(tmp_path):
    profile = {"label_priors": {"a": 0.5, "b": 0.5},
               "length": {"words": {"edges": [0.0, 1.0, 2.0, 4.0], "counts": [0, 3, 1]}},
               "confidence": {"edges": [0.0, 0.5, 1.0], "counts": [1, 3]}}
    dim = {"statistic": 0.1, "threshold": 0.2, "flagged": False}
    report = {"dimensions": {
        "labels": {**dim, "dump_shares": {"a": 0.9, "b": 0.1}, "flagged": True},
        "length": {**dim, "dump_word_counts": [0, 0, 0]},  # no scored rows: an empty panel, not an error
        "quality": {**dim, "train": {"empty": 0.0}, "dump": {"empty": 1.0}},
        "vocabulary": {**dim, "test_novelty": 0.1, "dump_novelty": 0.3},
        "confidence": {**dim, "dump_counts": [2, 0]}}}
    path = plot_drift(profile, report, tmp_path / "drift.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000
