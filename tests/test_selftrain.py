import json

import numpy as np
from helpers import make_corpus, write_jsonl

from pipeline.cli import main
from pipeline.data import processed_dir
from pipeline.readers import read_jsonl
from pipeline.selftrain import pick, self_train


def test_pick_is_class_balanced_and_confident():
    probs = np.array([[0.95, 0.05], [0.99, 0.01], [0.97, 0.03], [0.2, 0.8], [0.05, 0.95], [0.5, 0.5]])
    assert pick(probs, 0.9, per_class=2) == [(1, 0), (2, 0), (4, 1)]  # at most 2 per label, above 0.9 only


def test_self_training_never_pseudo_labels_validation_or_test(cfg_tiny, tmp_path, capsys):
    cfg = cfg_tiny.prepared()
    held_out = {r["text"] for s in ("validation", "test") for r in read_jsonl(processed_dir(cfg) / f"{s}.jsonl")}
    fresh = [{"title": r["title"], "text": r["text"]} for r in make_corpus(per_label=8, seed=3)]
    leaked = [{"title": "", "text": t} for t in held_out]  # the pool holds every validation and test article
    pool = write_jsonl(tmp_path / "pool.jsonl", fresh + leaked)
    args = [*cfg_tiny.args(f"train.unlabelled={pool}", "train.pseudo_threshold=0.3", "train.pseudo_per_class=3",
                     "baseline.C=[2.0]")]
    assert main(["baseline", *args]) == 0
    printed = capsys.readouterr().out
    assert "self-training round 2: " in printed and "kept: " in printed
    for r in (1, 2):
        train = read_jsonl(tmp_path / "processed" / f"fixture-self{r}" / "train.jsonl")
        pseudo = [row for row in train if row.get("pseudo_label")]
        assert pseudo and not {row["text"] for row in pseudo} & held_out
        assert max(np.unique([row["label"] for row in pseudo], return_counts=True)[1]) <= 3 * r
        for split in ("validation", "test"):  # unchanged
            assert (tmp_path / "processed" / f"fixture-self{r}" / f"{split}.jsonl").read_bytes() == (
                processed_dir(cfg) / f"{split}.jsonl").read_bytes()
    best, rounds = self_train(cfg_tiny(f"train.unlabelled={pool}", "train.self_training_rounds=1", "baseline.C=[2.0]"),
                             "baseline")
    assert best.metrics["validation"]["macro_f1"] == max(r["val_macro_f1"] for r in rounds)
    assert json.loads((best.model_dir / "metrics.json").read_text())["validation"]["macro_f1"] == max(
        r["val_macro_f1"] for r in rounds)
