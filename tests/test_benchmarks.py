"""The benchmark scripts' arithmetic: pooled split statistics and the tables rendered into the README."""

import importlib.util
import json
import statistics
import sys

import numpy as np
import pytest
from helpers import ROOT

from pipeline.stack import Combiner


def _module(name):
    """A benchmark script as a module, able to import its neighbours as it does when run (python benchmarks/X.py)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
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


def test_transfer_from_a_backbone_runs_in_its_own_datasets_folders_and_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    transfer, report, cv = _module("transfer"), _module("report"), _module("cv_recipe")
    import recipe

    monkeypatch.setattr(cv, "corpus_digest", lambda: "now")
    monkeypatch.setitem(sys.modules, "cv_recipe", cv)
    monkeypatch.setattr(transfer, "WORK", tmp_path / "work")
    monkeypatch.setattr(transfer, "RECORDS", tmp_path / "records")
    assert transfer.variant_paths()[0] == tmp_path / "work"
    work, records, results = transfer.variant_paths("e5-small-ant-dapt")
    assert (work, records) == (tmp_path / "work" / "e5-small-ant-dapt", tmp_path / "records" / "e5-small-ant-dapt")
    assert results.name == "security-transfer-e5-small-ant-dapt.json"
    trained = []
    metrics = {"test": {"n": 4, "confusion_matrix": [[2, 0], [0, 2]], "accuracy": 1.0, "macro_f1": 1.0,
                        "intervals": {}, "per_class": {"a": {"f1": 1.0, "support": 2}, "b": {"f1": 1.0, "support": 2}}},
               "ensemble": {"combiner": "member x alone"}}

    def run_recipe(data, overrides, fine_tune, report):
        trained.append((data, overrides, fine_tune))
        runs = {k: type("Run", (), {"model_dir": tmp_path / k, "metrics": metrics})()
                for k in ("baseline", "fine_tuned", "ensemble")}
        for kind, run in runs.items():
            report(kind, run)
        return None, runs

    monkeypatch.setattr(recipe, "run_recipe", run_recipe)
    monkeypatch.setattr(cv, "predictions", lambda cfg, dirs, probs: ({m: ["a", "b"] for m in dirs}, ["a", "b"], {}))
    rows = [{"id": str(i), "text": f"article {i}", "label": "ab"[i % 2], "source": ["BBC", "Jawhara FM"][i % 3 == 0]}
            for i in range(60)]
    override = "model.name_or_path=models/pretrained/e5-small-ant-dapt"
    out = transfer.leave_out(rows, "Jawhara FM", True, [override], "e5-small-ant-dapt")
    (data, overrides, fine_tune), = trained
    assert overrides == [override] and fine_tune
    assert "data.name=security-news-without-Jawhara_FM-e5-small-ant-dapt" in data
    assert f"data.split.files.test={work / 'Jawhara_FM' / 'test.jsonl'}" in data
    kept = json.loads((records / "Jawhara_FM.json").read_text())
    assert kept["variant"] == "e5-small-ant-dapt" and kept["truth"] == ["a", "b"]
    assert out["ensemble"]["combiner"] == "member x alone" and not (tmp_path / "records" / "Jawhara_FM.json").exists()
    named = "unweighted mean of log-probabilities: s-without-BBC-e5-small-ant-dapt-tfidf-logreg, " \
        "s-without-BBC-e5-small-ant-dapt-tfidf-logreg-lead80, s-without-BBC-e5-small-ant-dapt-e5-small"
    assert report.members(named) == "baseline + title + lead + fine-tune (mean)"  # the dataset's name says e5
    pretrain = {"backbone": "models/pretrained/e5-small-ant-dapt", "articles": 3999}
    table = report.transfer_table({"rows": 60, "sources": [out], "pretrain": pretrain})
    assert table.startswith("**Transfer to an unseen outlet, e5-small pretrained on 3,999 unlabelled articles "
                            "(e5-small-ant-dapt), which may have read unlabelled articles of the left-out outlet")
    pool = {"sources": ["BBC", "Jawhara FM"], "rows": 60, "recipe": "4"}
    lines = report.pooled_row(pool, [], set(), False, "--backbone models/pretrained/e5-small-ant-dapt ")
    assert "(`python benchmarks/transfer.py --backbone models/pretrained/e5-small-ant-dapt --summary-only`)" \
        in lines[-1]
    assert report.pooled_row(pool | {"sources": ["BBC"]}, [], set(), False) == []  # one source: its row says it all


def test_tables_show_intervals_and_the_transfer_table_lists_every_source():
    report = _module("report")
    figures = {"n": 100, "macro_f1": 0.6, "accuracy": 0.7, "macro_f1_ci": [0.52, 0.68]}
    text = report.transfer_table({"rows": 1751, "sources": [
        {"source": "Jawhara FM", "baseline": figures},
        {"source": "BBC", "baseline": figures, "fine_tuned": {**figures, "macro_f1": 0.7, "vs_baseline": {
            "macro_f1_diff": 0.1, "p_bootstrap": 0.01}}}]})
    assert "| Jawhara FM | 100 | 0.600 [0.520, 0.680] | not run |  |" in text
    assert "| BBC | 100 | 0.600 [0.520, 0.680] | 0.700 [0.520, 0.680] | +0.100 (0.010) |" in text
    assert "members, chosen on validation" not in text  # no ensemble ran
    diff = {"macro_f1_diff": -0.01, "macro_f1_diff_interval": [-0.05, 0.03], "p_bootstrap": 0.6, "p_mcnemar": 0.0001}
    cnn = {"source": "CNN", "baseline": figures, "fine_tuned": {**figures, "vs_baseline": diff},
           "ensemble": {**figures, "macro_f1": 0.65, "combiner": "unweighted mean of log-probabilities: "
                                                               "x-without-CNN-tfidf-logreg, x-without-CNN-e5-small"}}
    alone = {**cnn, "source": "BBC", "ensemble": {**figures, "combiner": "member x-without-BBC-tfidf-logreg alone"},
             "recipe": "4: baseline + e5-small"}
    both = report.transfer_table({"rows": 1751, "sources": [cnn, alone]})
    assert "TF-IDF of title + lead" not in both  # no source ran it
    assert "| ensemble macro-F1 | ensemble's members" in both  # no paired column where no source has a test
    assert "| CNN | 100 | 0.600 [0.520, 0.680] | 0.600 [0.520, 0.680] | -0.010 [-0.050, 0.030] (0.600, < 0.001) | " \
        "0.650 [0.520, 0.680] | baseline + fine-tune (mean) |" in both
    assert both.splitlines()[-1].endswith("| baseline alone (recipe 4) |")  # the recipe its row was run with
    base = {"accuracy": 0.75, "macro_f1": 0.65, "weighted_f1": 0.74, "ece": 0.06, "per_class_f1": {"a": 0.5},
            "intervals": {"accuracy": [0.7, 0.8], "macro_f1": [0.59, 0.73], "per_class_f1": {"a": [0.2, 0.7]}}}
    table = report.accuracy_table("Security", {"baseline": base, "data_report": {"label_counts": {"test": {"a": 263}}},
                                               "baseline_cv": {"folds": 5, "rows": 1751, "macro_f1_mean": 0.7,
                                                               "macro_f1_std": 0.02, "pooled_macro_f1": 0.7,
                                                               "pooled_intervals": {"macro_f1": [0.68, 0.72]}}})
    assert "| 0.750 [0.700, 0.800] | 0.650 [0.590, 0.730] | 0.740 | 0.060 | 0.50 [0.20, 0.70] |" in table
    assert "pooled over the out-of-fold predictions of all 1751 articles 0.700 [0.680, 0.720]" in table
    diff = {"macro_f1_diff": 0.03, "macro_f1_diff_interval": [0.01, 0.05], "p_bootstrap": 0.02, "p_mcnemar": 0.1}
    recipe = report.accuracy_table("Security", {
        "baseline": base, "data_report": {"label_counts": {"test": {"a": 263}}},
        "lead": {**base, "vs_baseline": {**diff, "macro_f1_diff": -0.01}},
        "fine_tuned": {**base, "settings": "e5", "train_seconds": 600},
        "ensemble": {**base, "vs_baseline": {**diff, "p_bootstrap": 0.0},
                     "combiner": "unweighted mean of log-probabilities: b, e"}})
    assert [line.split(" |")[0] for line in recipe.splitlines() if line.startswith("| ")][1:] == [
        "| TF-IDF + logistic regression", "| TF-IDF of the title and lead (first 80 words)",
        "| e5-small fine-tuned, CPU", "| ensemble (the recipe: baseline + e5-small)"]
    assert "(first 80 words) -0.010 [0.010, 0.050] (paired bootstrap p = 0.020, McNemar p = 0.100); ensemble (the " \
        "recipe: baseline + e5-small) +0.030 [0.010, 0.050] (paired bootstrap p < 0.001, McNemar p = 0.100)." in recipe
    assert "combiner, chosen on validation: unweighted mean of log-probabilities: b, e." in recipe
    assert "e5; 10 min of training" in recipe
    named = report.accuracy_table("Security", {"baseline": base, "data_report": {"label_counts": {"test": {"a": 263}}},
                                               "ensemble": base, "recipe": "5: baseline + e5-small, offsets"})
    assert "| ensemble (recipe 5: baseline + e5-small) |" in named  # the recipe version it ran, when recorded


def test_recipe_cross_validation_pools_folds_and_tests_against_the_baseline():
    cv, report = _module("cv_recipe"), _module("report")
    truth = ["a", "b", "c"] * 8
    wrong = {"a": "b", "b": "c", "c": "a"}
    folds = [{"fold": k, "truth": truth, "wall_seconds": 60.0, "ensemble": {"combiner": "weights", "note": None},
              "pred": {"baseline": [wrong[t] if i % 3 == 0 else t for i, t in enumerate(truth)],
                       "fine_tuned": truth, "ensemble": truth}} for k in range(2)]
    s = cv.summarise(folds)
    assert s["rows"] == 48 and s["folds"] == [0, 1]
    assert s["ensemble"]["pooled_macro_f1"] == 1.0 and s["ensemble"]["macro_f1_std"] == 0.0
    assert s["baseline"]["pooled_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    vs = s["ensemble"]["vs_baseline"]
    assert vs["only_a_right"] == 16 and vs["only_b_right"] == 0 and vs["p_mcnemar"] < 0.001
    assert s["ensemble"]["mean_gain_over_baseline"] == pytest.approx(1 - s["baseline"]["macro_f1_mean"], abs=1e-4)
    text = report.cv_table(s)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 4  # header and three models
    assert rows[-1].startswith("| ensemble (baseline + e5-small) | 1.000 ± 0.000 | 1.000 [")
    assert "tfidf_pair" not in s and "with_lead" not in s  # models the folds did not run are left out
    assert "(p < 0.001, < 0.001)" in rows[-1]
    assert "folds drawn with seed 42; 48 articles" in text
    assert "The ensemble's choice on each fold's validation: weights alone: 2 of 2." in text
    s["combiners"][1] = {"combiner": "member s-cv1-e5-small alone", "note": "the stack did not beat its best member"}
    s.update(recipe="4: baseline + e5-small", fold_seed=7)
    text = report.cv_table(s)
    assert "(recipe 4, folds drawn with seed 7; 48 articles" in text
    assert "validation: weights alone: 1 of 2; fine-tune alone: 1 of 2." in text


def test_seeds_summarize_gains_and_the_weakest_label_and_render_every_seed():
    seeds, report = _module("seeds"), _module("report")

    def model(f1, diff, p, weak, combiner=None):
        row = {"macro_f1": f1, "intervals": {"macro_f1": [f1 - 0.05, f1 + 0.05]},
               "per_class_f1": {"a": 0.8, "b": weak}, "vs_baseline": {"macro_f1_diff": diff, "p_bootstrap": p}}
        return row | ({"combiner": combiner} if combiner else {})

    mean = "unweighted mean of log-probabilities: s-tfidf-logreg, s-e5-small-seed1"
    runs = {"42": {"fine_tuned": model(0.70, 0.05, 0.10, 0.4), "ensemble": model(0.74, 0.09, 0.0001, 0.45, mean)},
            "1": {"fine_tuned": model(0.66, 0.01, 0.70, 0.3),
                  "ensemble": model(0.70, 0.05, 0.03, 0.55, "member s-e5-small-seed1 alone")}}
    summary = seeds.summarize(runs, {"macro_f1": 0.65})
    e, f = summary["ensemble"], summary["fine_tuned"]
    assert (e["seeds"], e["macro_f1_mean"], e["gain_mean"], e["gain_min"], e["gain_max"]) == (2, 0.72, 0.07, 0.05, 0.09)
    assert e["macro_f1_std"] == round(statistics.stdev([0.74, 0.70]), 4)
    assert (e["significant"], f["significant"]) == (2, 0)
    assert e["weakest_label"] == "b" and e["per_class_f1_mean"]["b"] == 0.5
    one = seeds.summarize({"42": runs["42"]}, {"macro_f1": 0.65})["ensemble"]
    assert one["macro_f1_std"] == 0.0 and one["gain_std"] == 0.0  # one seed: no spread, not an error
    assert "mean_of_members" not in summary  # no seed measured it
    runs["1"]["mean_of_members"] = {"validation_macro_f1": 0.76, "test_macro_f1": 0.745,
                                    "vs_baseline": {"macro_f1_diff": 0.094, "p_bootstrap": 0.002}}
    summary = seeds.summarize(runs, {"macro_f1": 0.65})
    assert summary["mean_of_members"] == {"seeds": 1, "gain_mean": 0.094, "gain_std": 0.0, "significant": 1}

    table = report.seeds_table({"seeds": runs, "summary": summary})
    assert "2 training seeds** (the split and the baseline fixed, baseline macro-F1 0.650" in table
    assert "| 42 | 0.700 [0.650, 0.750] | +0.050 (0.100) | 0.740 [0.690, 0.790] | +0.090 (< 0.001) | " \
        "baseline + fine-tune (mean) | 0.45 |  |" in table
    assert "| 1 | 0.660 [0.610, 0.710] | +0.010 (0.700) | 0.700 [0.650, 0.750] | +0.050 (0.030) | fine-tune alone | " \
        "0.55 | 0.760, 0.745, +0.094 (0.002) |" in table
    assert "| mean ± sd | 0.680 ± 0.028 | +0.030 ± 0.028 | 0.720 ± 0.028 | +0.070 ± 0.028 | | 0.50 | " \
        "− baseline +0.094 ± 0.000 |" in table
    assert "at p < 0.05 with 2 of 2 seeds (gain +0.050 to +0.090); the fine-tune alone with 0; the mean of both " \
        "members with 1." in table
    assert "bootstrap resamples" not in table  # no seed measured the criteria
    crit = {"log_loss": {"picks": {"member 0": 3, "member 1": 0, "mean": 297}, "resamples": 300, "mean_gain": 0.06,
                         "mean_gain_sd": 0.02},
            "macro_f1": {"picks": {"member 0": 150, "member 1": 90, "mean": 60}, "resamples": 300,
                         "mean_gain": -0.02, "mean_gain_sd": 0.025}}
    runs["1"]["mean_of_members"]["criteria"] = crit
    table = report.seeds_table({"seeds": runs, "summary": summary})
    assert "On 300 bootstrap resamples of validation (nothing from test), with each of the 1 seeds: log-loss picks " \
        "the mean of both members in 99% of them (its gain over the best member alone +0.060, sd 0.020); macro-F1 " \
        "picks the mean of both members in 20% of them (its gain over the best member alone -0.020, sd 0.025)." \
        in table


def test_seeds_from_a_backbone_keep_their_own_names_and_file_and_refuse_another_pretraining(tmp_path, monkeypatch):
    seeds, report = _module("seeds"), _module("report")
    import cv_recipe  # the module seeds.py and transfer.py import their backbone check from

    assert (seeds.tuned_name(1), seeds.results_file()) == ("security-news-e5-small-seed1", seeds.RESULTS)
    assert seeds.tuned_name(1, "e5-small-ant-dapt") == "security-news-e5-small-ant-dapt-seed1"
    assert seeds.results_file("e5-small-ant-dapt") == seeds.RESULTS.with_name("security-seeds-e5-small-ant-dapt.json")
    corpus = tmp_path / "labelled.jsonl"
    corpus.write_text('{"id": "a", "text": "x", "label": "other"}\n')
    monkeypatch.setattr(cv_recipe, "CORPUS", corpus)
    backbone = tmp_path / "e5-small-ant-dapt"
    backbone.mkdir()
    record = {"base_model": "e5", "articles": 4000, "steps": 238, "settings": {"epochs": 1.0}, "input": {},
              "mlm_loss_before": 14.1, "mlm_loss_after": 6.7, "left_out": {"exclude": []}}
    (backbone / "pretrain.json").write_text(json.dumps(record))
    where = seeds.results_file(backbone.name)
    with pytest.raises(SystemExit, match="not pretrained with --exclude"):  # may have read the test split
        cv_recipe.same_backbone(backbone, None, where)
    record["left_out"]["exclude"].append(str(corpus))
    (backbone / "pretrain.json").write_text(json.dumps(record))
    assert cv_recipe.same_backbone(backbone, None, where) == {"backbone": str(backbone), **record}
    assert cv_recipe.same_backbone(backbone, record, where)["steps"] == 238
    with pytest.raises(SystemExit, match=r"security-seeds-e5-small-ant-dapt.json were fine-tuned from another "
                                         r"pretraining .* \(differs in steps, mlm_loss_after\)"):
        cv_recipe.same_backbone(backbone, {**record, "steps": 200, "mlm_loss_after": 6.9}, where)
    row = {"macro_f1": 0.7, "per_class_f1": {"a": 0.8, "b": 0.6},
           "vs_baseline": {"macro_f1_diff": 0.05, "p_bootstrap": 0.01}}
    runs = {"42": {"fine_tuned": row, "ensemble": row | {"combiner": "member s-e5-small alone"}}}
    table = report.seeds_table({"seeds": runs, "summary": seeds.summarize(runs, {"macro_f1": 0.65}),
                                "pretrain": {"backbone": str(backbone), **record}})
    assert "**Security corpus, fixed split, 1 training seed, e5-small pretrained on 4,000 unlabelled articles " \
        "(e5-small-ant-dapt)** (the split" in table


def test_criterion_stability_reads_validation_resamples():
    seeds = _module("seeds")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)

    def member(right: float) -> np.ndarray:  # sure where right (a random share), unsure where wrong
        hit = rng.random(len(y)) < right
        wrong = np.eye(3)[(y + 1) % 3] * 0.5 + np.eye(3)[y] * 0.35 + np.eye(3)[(y + 2) % 3] * 0.15
        return np.where(hit[:, None], np.eye(3)[y] * 0.8 + 0.1, wrong)

    probs = [member(0.8), member(0.8)]
    mean = Combiner("weights", weights=[0.5, 0.5]).logits(probs)
    out = seeds.criterion_stability(probs, mean, y, 3, resamples=40)
    for criterion in ("log_loss", "macro_f1"):
        assert sum(out[criterion]["picks"].values()) == out[criterion]["resamples"] == 40
        assert set(out[criterion]["picks"]) == {"member 0", "member 1", "mean"}
    assert out["log_loss"]["picks"]["mean"] == 40 and out["log_loss"]["mean_gain"] > 0  # independent errors average out


def test_transfer_pools_the_left_out_sources_and_leaves_out_stale_predictions(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    transfer, report, cv = _module("transfer"), _module("report"), _module("cv_recipe")
    from recipe import VERSION
    from sklearn.metrics import f1_score

    monkeypatch.setattr(cv, "corpus_digest", lambda: "now")
    monkeypatch.setitem(sys.modules, "cv_recipe", cv)
    labels = np.array(["a", "b", "c"])
    kinds = ("baseline", "lead", "fine_tuned", "ensemble")

    def source(name, n, right):  # each model right on a share of the articles, wrong (the next label) elsewhere
        rng = np.random.default_rng(len(name))
        y = np.arange(n) % 3
        pred = {k: np.where(rng.random(n) < right[k], y, (y + 1) % 3) for k in kinds}
        path = cv.write_record(transfer.source_dir(name, tmp_path).with_suffix(".json"), {
            "source": name, "recipe": VERSION, "corpus_sha256": "now", "truth": labels[y].tolist(),
            "pred": {k: labels[p].tolist() for k, p in pred.items()}})
        assert path.name == f"{name.replace(' ', '_')}.json"  # a file name without spaces
        row = {"source": name, "recipe": VERSION,
               **{k: {"n": n, "macro_f1": round(f1_score(y, p, average="macro"), 4)} for k, p in pred.items()}}
        return row, y, pred

    right = {"baseline": 0.6, "lead": 0.6, "fine_tuned": 0.7, "ensemble": 0.9}
    (r1, y1, p1), (r2, y2, p2) = source("BBC", 60, right), source("Jawhara FM", 90, right)
    old = {"source": "CNN", "baseline": r1["baseline"]}  # a baseline-only row is not pooled
    pool = transfer.pool_sources([r1, r2, old], tmp_path)
    assert pool["sources"] == ["BBC", "Jawhara FM"] and pool["rows"] == 150 and pool["labels"] == ["a", "b", "c"]
    y = np.concatenate([y1, y2])
    for k in kinds:
        assert pool[k]["pooled_macro_f1"] == round(f1_score(y, np.concatenate([p1[k], p2[k]]), average="macro"), 4)
    vs = pool["ensemble"]["vs_baseline"]
    assert vs["n"] == 150 and vs["macro_f1_diff"] > 0.2 and vs["p_mcnemar"] < 0.001
    assert "vs_baseline" not in pool["baseline"]

    rows = [r | {k: r[k] | {"macro_f1_ci": None} for k in kinds} for r in (r1, r2)]
    for r in rows:
        r["ensemble"] |= {"vs_baseline": {"macro_f1_diff": 0.1, "p_bootstrap": 0.01}, "combiner": "mean: x-tfidf, x-e5"}
    table = report.transfer_table({"rows": 150, "sources": rows, "pooled": pool})
    last = [line for line in table.splitlines() if line.startswith("| ")][-1]
    assert last.startswith(f"| all 2 pooled | 150 | {pool['baseline']['pooled_macro_f1']:.3f} [")
    assert last.endswith(f"({report.bare_p(vs['p_bootstrap'])}, {report.bare_p(vs['p_mcnemar'])}) | "
                         f"{report.recipe_name(VERSION)} |")
    assert "pools the 150 articles of BBC, Jawhara FM" in table and "Per label, ensemble (baseline): a " in table

    r2["ensemble"]["macro_f1"] += 0.05  # the row was re-run since its predictions were kept
    assert transfer.pool_sources([r1, r2], tmp_path) == {"missing": ["Jawhara FM"]}
    monkeypatch.setattr(cv, "corpus_digest", lambda: "the corpus grew")
    assert transfer.pool_sources([r1], tmp_path) == {"missing": ["BBC"]}  # predictions of other articles
    monkeypatch.setattr(cv, "corpus_digest", lambda: "now")
    (tmp_path / "BBC.json").unlink()
    assert transfer.pool_sources([r1], tmp_path) == {"missing": ["BBC"]}
    assert transfer.pool_sources([old], tmp_path) == {"missing": []}  # nothing ran the recipe


@pytest.mark.parametrize("argv", [["--summary-only", "--sources", "BBC"], ["--summary-only", "--fine-tune"]])
def test_transfer_summary_only_refuses_what_it_would_ignore(argv, monkeypatch, capsys):
    transfer = _module("transfer")
    monkeypatch.setattr("sys.argv", ["transfer.py", *argv])
    with pytest.raises(SystemExit) as stop:
        transfer.main()
    assert stop.value.code == 2
    assert "--summary-only pools the sources already run, without training" in capsys.readouterr().err


@pytest.mark.parametrize("variant", [[], ["--backbone", "models/pretrained/not-run"]])
def test_transfer_summary_only_with_nothing_run_writes_nothing(variant, tmp_path, monkeypatch, capsys):
    transfer = _module("transfer")
    corpus = tmp_path / "labelled.jsonl"
    corpus.write_text('{"id": "a", "text": "x", "label": "other", "source": "BBC"}\n', encoding="utf-8")
    monkeypatch.setattr(transfer, "CORPUS", corpus)
    monkeypatch.setattr(transfer, "RESULTS", tmp_path)
    monkeypatch.setattr("sys.argv", ["transfer.py", "--summary-only", *variant])
    with pytest.raises(SystemExit) as stop:
        transfer.main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nothing to pool: ") and "has no source run yet" in err and len(err.splitlines()) == 1
    assert "--sources SOURCE first" in err and (not variant or "--backbone models/pretrained/not-run" in err)
    assert not list(tmp_path.glob("security-transfer*.json"))  # no empty results file


def test_transfer_names_an_unknown_source(tmp_path, monkeypatch, capsys):
    transfer = _module("transfer")
    corpus = tmp_path / "labelled.jsonl"
    corpus.write_text('{"id": "a", "text": "x", "label": "other", "source": "BBC"}\n', encoding="utf-8")
    monkeypatch.setattr(transfer, "CORPUS", corpus)
    monkeypatch.setattr("sys.argv", ["transfer.py", "--sources", "BBC", "Reuters"])
    with pytest.raises(SystemExit) as stop:
        transfer.main()
    assert stop.value.code == 2
    assert f"no source 'Reuters' in {corpus}; its sources: BBC" in capsys.readouterr().err


def test_frozen_member_fits_on_train_picks_on_validation_and_combines_like_the_recipe(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    frozen = _module("frozen_member")
    monkeypatch.setattr(frozen, "work_dir", lambda seed: tmp_path)
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b", "c"])
    vectors, sizes = {}, {"train": 90, "validation": 30, "test": 30}
    for split, n in sizes.items():  # the embedding separates the labels; the saved members are coin flips
        y = np.arange(n) % 3
        rows = [{"id": f"{split}{i}", "text": "x", "label": str(labels[k])} for i, k in enumerate(y)]
        for r, k in zip(rows, y, strict=True):
            vectors[r["id"]] = np.eye(3)[k] * 3 + rng.normal(0, 0.3, 3)
        path = tmp_path / "processed" / frozen.dataset(0, frozen.SEED) / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    noise = {s: rng.dirichlet(np.ones(3), sizes[s]) for s in ("validation", "test")}
    np.savez(tmp_path / "probs-fold-0.npz", labels=labels, y_validation=np.arange(30) % 3, y_test=np.arange(30) % 3,
             baseline_validation=noise["validation"], fine_tuned_validation=noise["validation"][::-1],
             baseline_test=noise["test"], fine_tuned_test=noise["test"][::-1], ensemble_test=noise["test"])
    fold = frozen.run_fold(frozen.SEED, 0, vectors)
    assert fold["chosen"] == ["frozen"]  # validation log-loss keeps the one informative member alone
    assert fold["pred"]["frozen"] == fold["truth"] == fold["pred"]["validation_choice"]
    assert set(fold["pred"]) == {"baseline", "ensemble", "frozen", "mean_of_three", "validation_choice"}
    both = frozen.geometric_mean([np.array([[0.8, 0.2]]), np.array([[0.2, 0.8]])])
    assert both == pytest.approx(np.array([[0.5, 0.5]]))


def test_frozen_member_embeds_each_article_once(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    frozen = _module("frozen_member")
    monkeypatch.setattr(frozen, "work_dir", lambda seed: tmp_path / str(seed))
    for seed in (frozen.SEED, 7):
        for fold in range(frozen.FOLDS):
            path = tmp_path / str(seed) / "processed" / frozen.dataset(fold, seed) / "test.jsonl"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"id": f"{fold}", "text": f"text {fold}", "label": "a"}) + "\n")
    calls = []
    monkeypatch.setattr(frozen, "embed", lambda texts: calls.append(texts) or np.ones((len(texts), 2)))
    assert sorted(frozen.embeddings(frozen.SEED)) == ["0", "1", "2", "3", "4"]
    assert sorted(frozen.embeddings(7)) == ["0", "1", "2", "3", "4"]  # the other partition's articles: cached
    assert calls == [[f"text {f}" for f in range(5)]]


def test_cv_pretrained_variant_pretrains_on_the_folds_training_articles_and_lives_apart(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    cv = _module("cv_recipe")
    import recipe

    monkeypatch.setattr(cv, "WORK", tmp_path / "cv")
    monkeypatch.setattr(cv, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(cv, "corpus_digest", lambda: "sha")
    assert cv.work_dir(42, "tapt") == tmp_path / "cv" / "tapt" and cv.work_dir(7) == tmp_path / "cv" / "seed-7"
    assert cv.record_dir(42, "tapt") == tmp_path / "records" / "tapt"
    assert cv.record_dir(7) == tmp_path / "records" / "seed-7"
    assert cv.results_file(7, "tapt").name == "security-cv-seed7-tapt.json"
    assert cv.results_file(42).name == "security-cv.json" and cv.dataset(1, 7, "tapt") == "security-news-cv1-s7-tapt"
    rows = [{"id": str(i), "text": f"article {i}", "label": "ab"[i % 2]} for i in range(40)]
    pretrained, trained = [], []

    def pretrain(data, train_file, out, epochs):
        pretrained.append((train_file, out, epochs))
        return {"steps": 3}

    monkeypatch.setattr(cv, "pretrained_backbone", pretrain)
    monkeypatch.setattr(recipe, "run_recipe", lambda data, overrides: trained.append((data, overrides)) or (
        None, {k: type("Run", (), {"model_dir": tmp_path / k, "metrics": {"ensemble": {}}})()
               for k in ("baseline", "fine_tuned", "ensemble")}))
    monkeypatch.setattr(cv, "predictions", lambda cfg, dirs, probs: (
        {m: ["a"] * 8 for m in cv.MODELS}, ["a"] * 8, {}))
    fold = cv.run_fold(rows, 1, ["train.epochs=1"], 42, pretrain_epochs=3)
    (train_file, backbone, epochs), = pretrained
    assert epochs == 3 and backbone.parent == tmp_path / "cv" / "tapt" / "models"
    train_ids = {r["id"] for r in map(json.loads, train_file.read_text().splitlines())}
    held_out = {r["id"] for s in ("validation", "test")
                for r in map(json.loads, (train_file.parent / f"{s}.jsonl").read_text().splitlines())}
    assert train_ids and held_out and not train_ids & held_out  # pretrained on the fold's training articles alone
    (data, overrides), = trained
    assert overrides == ["train.epochs=1", f"model.name_or_path={backbone}"]
    assert "data.name=security-news-cv1-tapt" in data
    assert fold["pretrain"] == {"steps": 3} and (tmp_path / "records" / "tapt" / "fold-1.json").is_file()
    assert not (tmp_path / "records" / "fold-1.json").exists()  # the plain recipe's folds are left alone


def test_cv_with_a_given_backbone_takes_only_one_pretrained_without_the_corpus(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    cv = _module("cv_recipe")
    import recipe

    monkeypatch.setattr(cv, "WORK", tmp_path / "cv")
    monkeypatch.setattr(cv, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(cv, "corpus_digest", lambda: "sha")
    backbone = tmp_path / "e5-small-dapt"
    backbone.mkdir()
    record = {"steps": 250, "left_out": {"articles": 1, "exclude": ["/elsewhere/other.jsonl"]}}
    (backbone / "pretrain.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=r"e5-small-dapt was not pretrained with --exclude .*labelled\.jsonl"):
        cv.checked_backbone(backbone)
    record["left_out"]["exclude"].append(str(cv.CORPUS.resolve()))
    (backbone / "pretrain.json").write_text(json.dumps(record))
    trained = []
    monkeypatch.setattr(recipe, "run_recipe", lambda data, overrides: trained.append((data, overrides)) or (
        None, {k: type("Run", (), {"model_dir": tmp_path / k, "metrics": {"ensemble": {}}})()
               for k in ("baseline", "fine_tuned", "ensemble")}))
    monkeypatch.setattr(cv, "predictions", lambda cfg, dirs, probs: ({m: ["a"] * 8 for m in cv.MODELS}, ["a"] * 8, {}))
    rows = [{"id": str(i), "text": f"article {i}", "label": "ab"[i % 2]} for i in range(40)]
    fold = cv.run_fold(rows, 2, [], 42, backbone=backbone)
    (data, overrides), = trained
    assert overrides == [f"model.name_or_path={backbone}"] and "data.name=security-news-cv2-e5-small-dapt" in data
    assert fold["variant"] == "e5-small-dapt" and fold["pretrain"]["steps"] == 250
    assert (tmp_path / "records" / "e5-small-dapt" / "fold-2.json").is_file()
    assert not (tmp_path / "records" / "fold-2.json").exists()  # the plain recipe's folds are left alone


def test_cv_fold_records_are_kept_apart_from_the_work_folder_and_pooled_only_on_the_same_corpus(tmp_path,
                                                                                                    monkeypatch):
    cv = _module("cv_recipe")
    monkeypatch.setattr(cv, "WORK", tmp_path / "work" / "cv")
    monkeypatch.setattr(cv, "RECORDS", tmp_path / "cv")
    monkeypatch.setattr(cv, "corpus_digest", lambda: "now")
    fold = {"fold": 3, "truth": ["a", "b"], "pred": {"baseline": ["a", "a"]}, "recipe": "4", "fold_seed": 7,
            "variant": "dapt", "corpus_sha256": "now", "note": "ع"}
    path = cv.save_record(fold)
    assert path == tmp_path / "cv" / "seed-7" / "dapt" / "fold-3.json"
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(fold) + 2  # a line a key: short diffs
    assert cv.finished_folds(path.parent, "4") == [fold]
    assert cv.finished_folds(path.parent, "5") == []  # another recipe version's fold is not pooled
    cv.save_record({**fold, "fold": 4, "corpus_sha256": "before the corpus grew"})
    assert [f["fold"] for f in cv.finished_folds(path.parent, "4")] == [3]


def test_cv_variant_without_the_plain_recipes_records_is_compared_by_fold_with_its_summary(tmp_path):
    cv, report = _module("cv_recipe"), _module("report")
    import recipe

    truth = ["a", "b"] * 5
    variant = [{"fold": k, "truth": truth, "pred": {"fine_tuned": truth, "ensemble": truth}} for k in (1, 3)]
    plain = {"recipe": recipe.VERSION, "rows": 50, "folds": [0, 1, 2, 3, 4],
             "fine_tuned": {"macro_f1_folds": [0.1, 0.2, 0.3, 0.4, 0.5]},
             "ensemble": {"macro_f1_folds": [0.5, 0.6, 0.7, 0.8, 0.9]}}
    path = tmp_path / "security-cv.json"
    path.write_text(json.dumps(plain))
    out = cv.plain_by_fold(variant, path, 50)
    assert out["folds"] == [1, 3] and out["plain_from"] == "security-cv.json"
    assert out["ensemble"] == {"macro_f1_mean": 1.0, "plain_macro_f1_mean": 0.7, "vs_plain": None}
    assert out["fine_tuned"]["plain_macro_f1_mean"] == 0.3  # folds 1 and 3 of the plain recipe, not all five
    assert cv.plain_by_fold(variant, path, 51) == {}  # another corpus
    assert "plain_recipe" not in out
    path.write_text(json.dumps({**plain, "recipe": "3: an older ensemble"}))
    older = cv.plain_by_fold(variant, path, 50)  # another recipe version: compared, and named
    assert older == {**out, "plain_recipe": "3: an older ensemble"}
    assert cv.plain_by_fold(variant, tmp_path / "absent.json", 50) == {}
    pooled = {"pooled_per_class_f1": {"a": 0.9, "b": 0.45},
              "pooled_intervals": {"per_class_f1": {"a": [0.8, 0.95], "b": [0.3, 0.6]}}}
    table = report.variant_table({"against_plain": out, "fold_seed": 42, "k": 5, "rows": 20, "ensemble": pooled,
                                  "pretrain": [{"backbone": "models/pretrained/dapt", "articles": 3999, "steps": 250,
                                                "left_out": {"articles": 1}}]})
    assert "pooled over these folds (20 articles): a 0.90 [0.80, 0.95]; b 0.45 [0.30, 0.60]." in table
    row = next(line for line in table.splitlines() if line.startswith("| ensemble"))
    assert row == "| ensemble (baseline + e5-small) | 0.700 | 1.000 |  |  |"
    assert "per-fold macro-F1 in `security-cv.json`: its folds" in table and "no paired test against it" in table
    table = report.variant_table({"against_plain": older, "fold_seed": 42, "k": 5, "rows": 20, "pretrain": [
        {"backbone": "models/pretrained/dapt", "articles": 3999, "steps": 250, "left_out": {"articles": 1}}]})
    assert "in `security-cv.json`, of recipe 3 (its fine-tune is the same as this one, its ensemble is recipe 3's)" \
        in table
    assert "| TF-IDF baseline" not in table  # no baseline figures given
    out["folds"] = [0, 1, 2, 3, 4]
    table = report.variant_table({"against_plain": out, "fold_seed": 42, "k": 5, "rows": 20,
                                  "baseline": {"macro_f1_mean": 0.6129}, "pretrain": [
                                      {"backbone": "models/pretrained/dapt", "articles": 3999, "steps": 250,
                                       "left_out": {"articles": 1}}]})
    assert "`; all 5 folds drawn with seed 42; e5-small pretrained once" in table and "so far" not in table
    assert "| TF-IDF baseline (the same in both) | 0.613 | 0.613 | | |" in table


def test_cv_folds_from_another_pretraining_of_the_backbone_are_named_not_pooled(tmp_path, monkeypatch):
    cv = _module("cv_recipe")
    import recipe

    record = {"base_model": "multilingual-e5-small", "articles": 3999, "steps": 238, "settings": {"epochs": 1.0},
              "input": {"seed": 42}, "mlm_loss_before": 14.1, "mlm_loss_after": 6.7114, "seconds": 2647.8}
    made_again = {**record, "seconds": 2900.0, "backbone": "elsewhere"}  # slower, another path: the same backbone
    differs = {**record, "mlm_loss_after": 6.7301}
    folds = [{"fold": 0, "pretrain": made_again}, {"fold": 1, "pretrain": differs}, {"fold": 2, "pretrain": None}]
    assert cv.other_backbones(folds, record) == {1: ["mlm_loss_after"], 2: list(cv.BACKBONE_KEYS)}
    backbone = tmp_path / "e5-small-ant-dapt"
    backbone.mkdir()
    monkeypatch.setattr(cv, "CORPUS", tmp_path / "labelled.jsonl")
    cv.CORPUS.write_text('{"id": "a", "text": "x", "label": "other"}\n')
    (backbone / "pretrain.json").write_text(json.dumps({**record, "left_out": {"exclude": [str(cv.CORPUS)]}}))
    monkeypatch.setattr(cv, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(cv, "WORK", tmp_path / "work")
    cv.save_record({"fold": 3, "recipe": recipe.VERSION, "corpus_sha256": cv.corpus_digest(), "fold_seed": 42,
                    "variant": backbone.name, "pretrain": differs})
    monkeypatch.setattr("sys.argv", ["cv_recipe.py", "--backbone", str(backbone), "--summary-only"])
    monkeypatch.setattr("pipeline.data.prepare", lambda cfg: None)
    monkeypatch.setattr("pipeline.data.load_split", lambda cfg, split: [])
    with pytest.raises(SystemExit, match=r"error: fold 3 \(mlm_loss_after differ\) in .*records/e5-small-ant-dapt "
                                         r"were fine-tuned from another pretraining than .*e5-small-ant-dapt"):
        cv.main()


def test_cv_reuses_a_finished_pretraining_only_for_the_same_epochs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    cv = _module("cv_recipe")
    out = tmp_path / "tapt" / "models" / "e5-small-tapt-fold-0"
    out.mkdir(parents=True)
    (out / "pretrain.json").write_text(json.dumps({"steps": 213, "settings": {"epochs": 3.0}}))
    assert cv.pretrained_backbone([], tmp_path / "train.jsonl", out, 3)["steps"] == 213  # reused, nothing trains
    with pytest.raises(SystemExit, match=r"pretrained for 3 epochs, not 1; move .*tapt away"):
        cv.pretrained_backbone([], tmp_path / "train.jsonl", out, 1)


def test_cv_pretrained_variant_is_tested_against_the_plain_recipe_on_the_same_folds():
    cv = _module("cv_recipe")
    truth = ["a", "b", "c"] * 10
    wrong = {"a": "b", "b": "c", "c": "a"}
    half = [wrong[t] if i % 2 else t for i, t in enumerate(truth)]

    def fold(k, pred, t=truth):
        return {"fold": k, "truth": t, "pred": {"fine_tuned": pred, "ensemble": pred}}

    variant = [fold(0, truth), fold(1, truth), fold(2, truth)]
    plain = [fold(0, half), fold(1, half), fold(2, half, list(reversed(truth))), fold(3, half)]
    out = cv.against_plain(variant, plain)
    assert out["folds"] == [0, 1]  # fold 2's articles differ, fold 3 has no variant: neither is compared
    vs = out["ensemble"]["vs_plain"]
    assert vs["n"] == 60 and vs["only_a_right"] == 30 and vs["only_b_right"] == 0 and vs["macro_f1_diff"] > 0.4
    assert out["fine_tuned"]["macro_f1_mean"] == 1.0 and out["fine_tuned"]["plain_macro_f1_mean"] < 0.6
    assert cv.against_plain(variant, []) == {}
    report = _module("report")
    dapt = report.variant_table({"against_plain": out, "fold_seed": 42, "k": 5, "pretrain": [
        {"backbone": "models/pretrained/dapt", "articles": 3999, "steps": 250, "left_out": {"articles": 1},
         "input": {"sections": ["internationalNews", "middleEast"]}}]})
    assert "**Domain-adaptive pretraining, cross-validated** (`python benchmarks/cv_recipe.py --backbone " \
           "models/pretrained/dapt`; folds 0, 1 of 5 drawn with seed 42 so far; e5-small pretrained once on 3999 " \
           "unlabelled articles of ANT internationalNews and middleEast (250 steps; 1 copy of security-corpus " \
           "articles left out)" in dapt
    table = report.variant_table({"against_plain": out, "fold_seed": 7, "k": 5, "pretrain_epochs": 3.0,
                               "pretrain": [{"steps": 213}, {"steps": 214}]})
    assert "`python benchmarks/cv_recipe.py --pretrain-epochs 3 --fold-seed 7`; folds 0, 1 of 5" in table
    assert "(213, 214 steps)" in table
    row = next(line for line in table.splitlines() if line.startswith("| ensemble"))
    assert row.startswith(f"| ensemble (baseline + e5-small) | {out['ensemble']['plain_macro_f1_mean']:.3f} | 1.000 | "
                          f"{vs['macro_f1_diff']:+.3f} [")
    assert row.endswith(") |  |")  # no baseline in these folds: that cell is empty


def test_cv_figures_by_annotator_confidence_redraw_each_folds_articles():
    cv, report = _module("cv_recipe"), _module("report")
    labels = ["a", "b", "c"]
    rows = [{"id": str(i), "label": labels[i % 3], "label_confidence": "low" if i % 4 == 0 else "high"}
            for i in range(60)]
    folds = []
    for k in (0, 2):
        test = [rows[i] for i in cv.fold_parts(rows, k, 42)["test"]]
        truth = [r["label"] for r in test]
        # the baseline is wrong on every low-confidence article, the ensemble on none
        wrong = [labels[(labels.index(r["label"]) + 1) % 3] if r["label_confidence"] == "low" else r["label"]
                 for r in test]
        folds.append({"fold": k, "fold_seed": 42, "truth": truth, "pred": {"baseline": wrong, "ensemble": truth}})
    out = cv.by_confidence(rows, folds)
    assert list(out) == ["high", "low"]  # high, medium, low order; a level no article has is absent
    tested = [rows[i] for k in (0, 2) for i in cv.fold_parts(rows, k, 42)["test"]]
    assert out["low"]["rows"] == sum(r["label_confidence"] == "low" for r in tested) > 0
    assert out["high"]["rows"] + out["low"]["rows"] == len(tested) == 24
    assert out["high"]["baseline"]["macro_f1"] == 1.0 and out["low"]["baseline"]["macro_f1"] == 0.0
    assert out["low"]["ensemble"]["per_class_f1"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert sum(out["low"]["support"].values()) == out["low"]["rows"]
    # folds of another corpus (kept labels that are not the articles drawn), or no confidence recorded: nothing
    assert cv.by_confidence(rows[1:], folds) == {}
    assert cv.by_confidence([{k: v for k, v in r.items() if k != "label_confidence"} for r in rows], folds) == {}
    table = report.confidence_table({"by_label_confidence": out,
                                     "ensemble": {"pooled_per_class_f1": {"a": 0.9, "b": 0.4, "c": 0.8}}})
    assert "| confidence | articles | b articles | baseline macro-F1 | ensemble macro-F1 | baseline: b F1 | " \
           "ensemble: b F1 |" in table  # the ensemble's weakest label over all articles; no fine-tune recorded
    assert f"| low | {out['low']['rows']} | {out['low']['support']['b']} | 0.000 | 1.000 | 0.00 | 1.00 |" in table
    assert report.confidence_table({}) == ""


def _member_probs(y, rng, shy=None):
    p = np.eye(3)[y] * 0.6 + 0.4 / 3 + rng.random((len(y), 3)) * 0.3
    if shy is not None:
        p[:, shy] *= 0.35
    return p / p.sum(axis=1, keepdims=True)


def test_offsets_benchmark_recombines_the_kept_probabilities_both_ways(tmp_path, monkeypatch):
    offsets = _module("offsets")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [60, 30, 10])
    for k in range(2):  # two folds of kept probabilities, as cv_recipe.py writes them; a shy baseline
        (tmp_path / "cv" / "dapt").mkdir(parents=True, exist_ok=True)
        np.savez(tmp_path / "cv" / "dapt" / f"probs-fold-{k}.npz", labels=np.array(["a", "b", "c"]),
                 y_validation=y, y_test=y,
                 **{f"baseline_{s}": _member_probs(y, rng, 2) for s in ("validation", "test")},
                 **{f"fine_tuned_{s}": _member_probs(y, rng) for s in ("validation", "test")})
    monkeypatch.setattr(offsets, "WORK", tmp_path)
    import cv_recipe  # where a partition's work folder is laid out

    monkeypatch.setattr(cv_recipe, "WORK", tmp_path / "cv")
    sets = offsets.cv_sets("dapt")
    assert [s["name"] for s in sets] == ["fold 0", "fold 1"] and offsets.transfer_sets("dapt") == []
    r = offsets.recombined(sets, ["a", "b", "c"])
    assert r["rows"] == 200 and r["support"] == {"a": 120, "b": 60, "c": 20}
    assert r["predicted"]["baseline"]["c"] < 20 <= r["predicted"]["count_match"]["c"] + 4  # the shy label, found
    assert r["count_match"]["pooled_per_class_f1"]["c"] > r["baseline"]["pooled_per_class_f1"]["c"]
    assert set(r["count_match"]["vs_none"]) >= {"macro_f1_diff", "p_bootstrap", "p_mcnemar"}
    assert "vs_baseline" in r["none"] and "vs_baseline" in r["count_match"]  # both against the baseline, paired
    row = r["sets"][0]
    assert set(row["label_offsets"]) == {"baseline", "fine_tuned"} and row["label_offsets"]["baseline"][2] > 0
    assert "offsets matched" in row["count_match_combiner"] and "offsets" not in row["none_combiner"]
    assert offsets.other_partitions("dapt") == []
    (tmp_path / "cv" / "seed-7" / "dapt").mkdir(parents=True)
    (tmp_path / "cv" / "seed-7" / "plain").mkdir(parents=True)  # another variant's partition is not this one's
    np.savez(tmp_path / "cv" / "seed-7" / "plain" / "probs-fold-0.npz", labels=np.array(["a"]))
    assert offsets.other_partitions("dapt") == []
    for k in (0, 3):  # a partition with folds 0 and 3 so far
        (tmp_path / "cv" / "seed-7" / "dapt" / f"probs-fold-{k}.npz").write_bytes(
            (tmp_path / "cv" / "dapt" / "probs-fold-0.npz").read_bytes())
    assert offsets.other_partitions("dapt") == [7]
    assert [s["name"] for s in offsets.cv_sets("dapt", 7)] == ["fold 0", "fold 3"]
    table = _module("report").offsets_table({"variant": "dapt", "cv": r, "fixed": [r],
                                             "cv_partitions": [{"fold_seed": 7} | r]})
    assert "| cross-validation folds | 200 |" in table and "| fixed split, fold 0 |" in table
    assert "| cross-validation, folds drawn with seed 7 (fold 0, fold 1 so far) | 200 |" in table


def test_seeds_mean_of_members_shifts_the_members_as_the_recipe_does(monkeypatch):
    seeds = _module("seeds")
    import recipe

    import pipeline.baseline
    import pipeline.data
    import pipeline.scoring
    from pipeline.config import load_config
    from pipeline.labels import load_labels
    from pipeline.stack import count_offsets, shifted

    cfg = load_config(recipe.CONFIGS)
    assert cfg.train.ensemble_offsets == "count_match"  # the recipe's
    labels = load_labels(cfg.labels)
    n = len(labels)
    y = np.repeat(np.arange(n), 12)
    rows = {s: [{"text": f"{s} {i}", "label": labels.ids[k]} for i, k in enumerate(y)] for s in ("validation", "test")}
    rng = np.random.default_rng(3)

    def shy() -> np.ndarray:  # right more often than not, but label 2 a tenth as likely as it should be
        p = rng.dirichlet(np.ones(n), len(y)) + 2.0 * np.eye(n)[y] * (rng.random(len(y)) < 0.7)[:, None]
        p[:, 2] *= 0.1
        return p / p.sum(axis=1, keepdims=True)

    probs = {s: [shy(), shy()] for s in rows}

    class Scorer:
        def __init__(self, i):
            self.i = i

        def score(self, texts):
            return probs[texts[0].split()[0]][self.i], np.zeros(len(texts), dtype=int)

    seen = {}
    monkeypatch.setattr(pipeline.data, "load_split", lambda cfg, s: rows[s])
    monkeypatch.setattr(pipeline.scoring, "load_scorer", lambda m: Scorer(int(str(m))))
    monkeypatch.setattr(pipeline.baseline, "against_baseline", lambda cfg, r, lg: seen.setdefault(
        cfg.train.ensemble_offsets, lg))
    out = seeds.mean_of_members(cfg, [0, 1])
    plain_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ensemble_offsets": "none"})})
    plain = seeds.mean_of_members(plain_cfg, [0, 1])
    offsets = [count_offsets(p, y) for p in probs["validation"]]
    expected = Combiner("weights", weights=[0.5, 0.5]).logits(shifted(probs["test"], offsets))
    np.testing.assert_allclose(seen["count_match"], expected)  # offsets fitted on validation, applied to test
    np.testing.assert_allclose(seen["none"], Combiner("weights", weights=[0.5, 0.5]).logits(probs["test"]))
    assert (seen["count_match"].argmax(axis=1) == 2).sum() > (seen["none"].argmax(axis=1) == 2).sum()
    assert out["validation_macro_f1"] > plain["validation_macro_f1"]
