"""The benchmark scripts' arithmetic: pooled split statistics and the tables rendered into the README."""

import importlib.util

import pytest
from helpers import ROOT


def _module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split(seed, base, tuned, only_base, only_tuned):
    return {"seed": seed, "test_size": 64, "train_minutes": 7.0,
            "baseline": {"validation": 0.9, "test": base}, "fine_tuned": {"validation": 0.9, "test": tuned},
            "baseline_errors": only_base + 1, "fine_tuned_errors": only_tuned + 1,
            "only_baseline_wrong": only_base, "only_fine_tuned_wrong": only_tuned}


def test_pooled_counts_wins_and_tests_the_paired_errors():
    splits = [_split(1, 0.90, 0.95, 4, 1), _split(2, 0.93, 0.93, 2, 2), _split(3, 0.96, 0.94, 1, 2)]
    p = _module("sample_splits").pooled(splits)
    assert (p["fine_tuned_wins"], p["ties"], p["baseline_wins"]) == (1, 1, 1)
    assert p["baseline_mean"] == pytest.approx(0.93) and p["fine_tuned_mean"] == pytest.approx(0.94)
    assert (p["only_baseline_wrong"], p["only_fine_tuned_wrong"]) == (7, 5)
    assert p["mcnemar_p"] == pytest.approx(0.7744, abs=1e-4)  # two-sided binomial, 7 of 12 at 0.5


def test_pooled_without_disagreements_is_not_significant():
    p = _module("sample_splits").pooled([_split(1, 0.95, 0.95, 0, 0)])
    assert p["mcnemar_p"] == 1.0 and p["ties"] == 1


def test_splits_table_lists_every_split_and_the_summary():
    sample_splits, report = _module("sample_splits"), _module("report")
    splits = [_split(42, 0.953, 0.985, 2, 0), _split(1, 0.970, 0.955, 0, 1)]
    text = report.splits_table({"config": "configs/demo.yaml", "splits": splits,
                                "pooled": sample_splits.pooled(splits)})
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 4  # header, two splits, mean
    assert "| 42 | 0.953 (0.900) | 0.985 (0.900) | 3 / 1 |" in rows
    assert "better on 1 splits, tied on 0, worse on 1" in text
