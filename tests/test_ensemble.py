import json

import numpy as np
import pytest
from helpers import Tiny, make_corpus, write_jsonl

from pipeline.baseline import train_baseline
from pipeline.cli import main
from pipeline.data import load_split, processed_dir
from pipeline.ensemble import choose, fit_ensemble
from pipeline.errors import ConfigError, ModelError
from pipeline.readers import read_jsonl
from pipeline.scoring import load_scorer
from pipeline.stack import Combiner, count_offsets, shifted


@pytest.fixture(scope="module")
def two_baselines(tmp_path_factory, corpus, tiny_bert):
    """A logistic regression and a linear SVM on one prepared corpus: two members, no torch."""
    root = tmp_path_factory.mktemp("ensemble")
    cfg = Tiny(root, write_jsonl(root / "c.jsonl", corpus), tiny_bert).prepared("data.split.validation=0.3")
    svc = cfg.model_copy(update={"baseline": cfg.baseline.model_copy(update={"classifier": "linear_svc"})})
    return cfg, [train_baseline(cfg).model_dir, train_baseline(svc).model_dir]


def test_the_combiner_never_loses_to_its_best_member_on_validation():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)

    def member(right: float) -> np.ndarray:
        noisy = np.where(rng.random(len(y)) < right, y, rng.integers(0, 3, len(y)))
        return np.eye(3)[noisy] * 0.8 + 0.2 / 3

    strong, useless = member(0.9), np.full((len(y), 3), 1 / 3)
    for criterion in ("log_loss", "macro_f1"):
        combiner, logits, scores = choose([useless, strong], y, 3, seed=0, criterion=criterion)
        assert scores["criterion"] == criterion
        assert scores["chosen_val_macro_f1"] >= scores["best_member_val_macro_f1"]
        assert scores["chosen_val_log_loss"] <= scores["best_member_val_log_loss"]
        assert combiner.method == "member" and combiner.member == 1  # nothing to add to the strong one: kept alone
        assert (logits.argmax(axis=1) == strong.argmax(axis=1)).all()


def test_log_loss_tells_apart_what_macro_f1_cannot():
    """The mean of a member sure of its few mistakes and a weaker member unsure of them gets the same articles right
    as the first alone (a tie in macro-F1, which keeps the member) but is better calibrated (log-loss chooses it)."""
    y = np.repeat(np.arange(3), 20)

    def member(wrong: set[int], right_p: float, wrong_p: float, true_p: float) -> np.ndarray:
        p = np.tile((1 - right_p) / 2, (len(y), 3))
        p[np.arange(len(y)), y] = right_p
        for i in wrong:
            p[i] = 1 - wrong_p - true_p
            p[i, (y[i] + 1) % 3], p[i, y[i]] = wrong_p, true_p
        return p

    sure = member(set(range(0, 60, 10)), 0.9, 0.98, 0.01)
    unsure = member(set(range(0, 60, 5)), 0.7, 0.5, 0.2)
    combiner, _, scores = choose([sure, unsure], y, 3, seed=0)
    assert scores["criterion"] == "log_loss" and combiner.method == "weights" and combiner.weights == [0.5, 0.5]
    assert scores["chosen_val_log_loss"] < scores["best_member_val_log_loss"]
    assert scores["chosen_val_macro_f1"] == scores["candidates"][0]["val_macro_f1"] == 0.9  # as the sure one's
    combiner, _, scores = choose([sure, unsure], y, 3, seed=0, criterion="macro_f1")
    assert combiner.method == "member" and combiner.member == 0
    assert [c["combiner"] for c in scores["candidates"]] == ["member 0", "member 1", "mean of members 0 1"]


def test_the_mean_of_members_right_on_different_articles_is_chosen_and_fitting_is_an_option():
    y = np.repeat(np.arange(3), 20)
    half = np.arange(len(y)) < 30

    def member(right: np.ndarray) -> np.ndarray:  # sure and right where `right`, unsure and wrong elsewhere
        wrong = np.eye(3)[(y + 1) % 3] * 0.5 + 0.5 / 3
        return np.where(right[:, None], np.eye(3)[y] * 0.9 + 0.1 / 3, wrong)

    first, second, useless = member(half), member(~half), np.full((len(y), 3), 1 / 3)
    combiner, logits, scores = choose([first, useless, second], y, 3, seed=0)
    assert scores["method"] == "mean" and combiner.method == "weights" and combiner.weights == [0.5, 0.0, 0.5]
    assert scores["chosen_val_macro_f1"] == 1.0 > scores["best_member_val_macro_f1"]
    assert combiner.used(3) == [0, 2] and combiner.restricted([0, 2]).weights == [0.5, 0.5]  # useless: not bundled
    assert (combiner.restricted([0, 2]).logits([first, second]) == logits).all()
    assert "unweighted mean" in combiner.restricted([0, 2]).describe(["a", "b"])
    _, _, scores = choose([first, second], y, 3, seed=0, method="fitted")
    assert scores["method"] == "fitted" and any(c["combiner"].startswith("logreg") for c in scores["candidates"])
    assert scores["chosen_val_log_loss"] <= scores["best_member_val_log_loss"]


def _shy(y: np.ndarray, rare: int, rng: np.random.Generator) -> np.ndarray:
    """A member that knows every label but is shy of `rare`: its probability there is always scaled down."""
    p = np.eye(3)[y] * 0.6 + 0.4 / 3 + rng.random((len(y), 3)) * 0.3
    p[:, rare] *= 0.35
    return p / p.sum(axis=1, keepdims=True)


def test_count_offsets_make_a_shy_member_predict_each_label_as_often_as_validation_holds_it():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), [60, 30, 10])
    shy = _shy(y, 2, rng)
    assert np.bincount(shy.argmax(axis=1), minlength=3)[2] < 5  # label 2 (10 articles) is hardly ever predicted
    offsets = count_offsets(shy, y)
    counts = np.bincount((np.log(shy) + offsets).argmax(axis=1), minlength=3)
    assert np.abs(counts - np.bincount(y)).max() <= 2 and offsets[2] == offsets.max()
    assert abs(offsets.sum()) < 1e-9 and np.array_equal(offsets, count_offsets(shy, y))  # centred, deterministic
    moved = shifted([shy], [offsets.tolist()])[0]
    assert np.allclose(moved.sum(axis=1), 1) and shifted([shy], [])[0] is shy
    # on fresh articles of the same member the offsets hold: the rare label is found again
    y2 = np.repeat(np.arange(3), [60, 30, 10])
    fresh = _shy(y2, 2, np.random.default_rng(4))
    found = ((np.log(fresh) + offsets).argmax(axis=1) == y2)[y2 == 2].mean()
    assert found > 0.8 > (fresh.argmax(axis=1) == y2)[y2 == 2].mean()


def test_offsets_are_fitted_per_member_kept_by_the_combiner_and_restricted_with_it():
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(3), [60, 30, 10])
    members = [_shy(y, 2, rng), _shy(y, 2, rng), np.full((len(y), 3), 1 / 3)]  # both shy of the rare label
    plain, _, plain_scores = choose(members, y, 3, seed=0)
    combiner, logits, scores = choose(members, y, 3, seed=0, offsets="count_match")
    assert "label_offsets" not in plain_scores and not plain.offsets
    assert [int(np.argmax(b)) for b in scores["label_offsets"][:2]] == [2, 2]  # each raises the label it is shy of
    assert scores["chosen_val_macro_f1"] > plain_scores["chosen_val_macro_f1"]
    assert (combiner.logits(members).argmax(axis=1) == logits.argmax(axis=1)).all()
    used = combiner.used(3)
    alone = combiner.restricted(used)
    assert 2 not in used and alone.offsets == [combiner.offsets[i] for i in used]  # the useless one is not kept
    assert (alone.logits([members[i] for i in used]).argmax(axis=1) == logits.argmax(axis=1)).all()
    assert "label offsets matched to validation's label counts" in alone.describe(["a", "b"][:len(used)])
    old = Combiner("member", member=0)
    del old.offsets  # a combiner saved before offsets existed still combines, without them
    assert (old.logits(members[:1]) == np.log(np.clip(members[0], 1e-9, 1))).all()
    assert "offsets" not in old.describe(["a"])


def test_ensemble_is_fitted_on_validation_only(two_baselines, capsys):
    cfg, members = two_baselines
    first = fit_ensemble(cfg, members)
    combiner = json.loads((first.model_dir / "ensemble.json").read_text())
    test_file = processed_dir(cfg) / "test.jsonl"
    rows = read_jsonl(test_file)
    shuffled = np.random.default_rng(1).permutation([r["label"] for r in rows])  # plant a leak: garbage test labels
    write_jsonl(test_file, [{**r, "label": str(lb)} for r, lb in zip(rows, shuffled, strict=True)])
    try:
        second = fit_ensemble(cfg, members)
    finally:
        write_jsonl(test_file, rows)
    again = json.loads((second.model_dir / "ensemble.json").read_text())
    assert again["combiner"] == combiner["combiner"] and again["candidates"] == combiner["candidates"]
    assert second.metrics["validation"] == first.metrics["validation"]
    assert second.metrics["test"]["macro_f1"] < first.metrics["test"]["macro_f1"]  # test was read, for scoring only
    shifted_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ensemble_offsets": "count_match"})})
    offsets = json.loads((fit_ensemble(shifted_cfg, members).model_dir / "ensemble.json").read_text())
    write_jsonl(test_file, [{**r, "label": str(lb)} for r, lb in zip(rows, shuffled, strict=True)])
    try:
        planted = json.loads((fit_ensemble(shifted_cfg, members).model_dir / "ensemble.json").read_text())
    finally:
        write_jsonl(test_file, rows)
    assert planted["label_offsets"] == offsets["label_offsets"]  # the offsets, too, read validation alone
    assert planted["candidates"] == offsets["candidates"]
    paired = first.metrics["test"]["vs_baseline"]  # against this config's baseline, on the same test articles
    assert paired["baseline"] == members[0].name and paired["n"] == len(rows)


def test_an_ensemble_is_a_model_like_any_other(two_baselines, tmp_path, capsys):
    cfg, members = two_baselines
    assert main(["ensemble", *_args(cfg, tmp_path), "--members", *map(str, members)]) == 0
    printed = capsys.readouterr().out
    assert "ensemble: test accuracy" in printed and ("stacked:" in printed or "did not beat" in printed)
    out = tmp_path / "models" / "fixture-ensemble"
    info = json.loads((out / "model_info.json").read_text())
    assert info["kind"] == "ensemble" and (out / "stack.joblib").is_file() and (out / "README.md").is_file()
    spec = json.loads((out / "ensemble.json").read_text())
    shas = [json.loads((m / "model_info.json").read_text())["weights_sha256"] for m in members]
    bundled = [m["weights_sha256"] for m in spec["members"]]  # the members the combiner reads, in stack order
    assert set(bundled) <= set(shas) and bundled == sorted(bundled, key=shas.index)
    assert len(bundled) == (1 if spec["note"] else 2)
    assert spec["criterion"] == "log_loss"  # the default; never worse than a member alone on it
    assert all(m["val_log_loss"] >= spec["chosen_val_log_loss"] for m in spec["candidates"][:2])
    # self-contained: the members are inside, so the directory moves whole
    moved = tmp_path / "moved"
    out.rename(moved)
    scorer = load_scorer(moved)
    test = load_split(cfg, "test")
    probs = scorer.predict_proba([r["text"] for r in test])
    assert probs.shape == (len(test), 7) and np.allclose(probs.sum(axis=1), 1)
    metrics = json.loads((moved / "metrics.json").read_text())["test"]
    assert np.mean(probs.argmax(1) == scorer.labels.encode(test)) == pytest.approx(metrics["accuracy"])
    # predict, and resume a cut output to the same rows
    src = write_jsonl(tmp_path / "dump.jsonl", [{"id": f"d{i}", "title": r["title"], "text": r["text"]}
                                                for i, r in enumerate(make_corpus(per_label=4, seed=9))])
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    assert main(["predict", "--model", str(moved), "--input", str(src), "--output", str(full), "--quiet"]) == 0
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    cut.write_text("".join(lines[:11]) + lines[11][:20], encoding="utf-8")
    assert main(["predict", "--model", str(moved), "--input", str(src), "--output", str(cut), "--quiet",
                 "--resume"]) == 0
    assert [json.loads(line)["label"] for line in cut.read_text().splitlines()] == [
        json.loads(line)["label"] for line in lines]
    assert main(["evaluate", "--model", str(moved), "--data", str(processed_dir(cfg) / "test.jsonl"),
                 "--output", str(tmp_path / "ev"), "--against", str(members[0])]) == 0


def test_bad_members_are_one_line_errors(two_baselines, cfg_tiny, tmp_path, capsys):
    cfg, members = two_baselines
    with pytest.raises(ConfigError, match="at least two"):
        fit_ensemble(cfg, members[:1])
    other = cfg_tiny("data.split.seed=7", "data.split.validation=0.3")
    from pipeline.data import prepare

    prepare(other)
    with pytest.raises(ModelError, match="trained on other splits"):
        fit_ensemble(other, members)
    assert main(["ensemble", *_args(cfg, tmp_path), "--members", str(members[0]), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: model directory not found" in err


@pytest.mark.slow  # fine-tunes the tiny model: `make test-slow`, which CI runs too
def test_a_fine_tune_and_its_baseline_stack_and_predict_with_a_faster_runtime(trained, tmp_path, capsys,
                                                                               monkeypatch):
    cfg, result = trained
    base = train_baseline(cfg).model_dir
    both = Combiner("weights", weights=[0.5, 0.5])  # whatever validation says of the tiny model: stack both
    monkeypatch.setattr("pipeline.ensemble.choose", lambda *a: (both, np.zeros((len(load_split(cfg, "validation")),
                                                                                  7)), {"method": "mean"}))
    ens = fit_ensemble(cfg, [base, result.model_dir])
    scorer = load_scorer(ens.model_dir)
    assert scorer.transformer is not None and scorer.transformer.kind == "transformer"
    src = processed_dir(cfg) / "test.jsonl"
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(ens.model_dir), "--input", str(src), "--output", str(out), "--quiet",
                 "--runtime", "torch", "--quantize", "int8", "--min-agreement", "0"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(read_jsonl(src)) and all(r["label"] for r in rows)
    assert rows[0]["model"].endswith("+int8")


def _args(cfg, tmp_path) -> list[str]:
    """The config on the command line, its outputs under this test's tmp_path."""
    from pipeline.config import to_yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    return ["-c", str(path), f"output_dir={tmp_path / 'models'}"]


def test_train_stacks_the_baseline_and_the_lead_model_it_is_told_to(two_baselines, tmp_path, monkeypatch, capsys):
    cfg, members = two_baselines  # the linear SVM stands in for the fine-tune: `train` itself is not under test here
    from pipeline.runs import RunResult

    out = tmp_path / "models"
    lead_cfg = cfg.model_copy(update={"output_dir": str(out), "baseline": cfg.baseline.model_copy(
        update={"lead_words": 10})})
    base = train_baseline(cfg.model_copy(update={"output_dir": str(out)})).model_dir
    lead = train_baseline(lead_cfg).model_dir
    monkeypatch.setattr("pipeline.train.train", lambda c: RunResult(members[1], json.loads(
        (members[1] / "metrics.json").read_text())))
    assert main(["train", *_args(cfg, tmp_path), "train.ensemble_with_baseline=true",
                 "train.ensemble_lead_words=10"]) == 0
    spec = json.loads((out / "fixture-ensemble" / "ensemble.json").read_text())
    assert [c["combiner"] for c in spec["candidates"][:3]] == ["member 0", "member 1", "member 2"]
    assert set(spec["member_test_macro_f1"]) == {base.name, lead.name, members[1].name}
    assert lead.name.endswith("-lead10") and "model directory:" in capsys.readouterr().out
