"""A third ensemble member that costs no fine-tune: the frozen e5-small's mean-pooled embedding of the whole article
(windows over it, averaged) fed to a logistic regression, measured on the folds cv_recipe.py saved.

    python benchmarks/frozen_member.py                  # the seed-42 partition (~18 min to embed, 2 cores)
    python benchmarks/frozen_member.py --fold-seed 7    # the second partition

Per fold the regression learns on the fold's train part and picks C on its validation slice (log-loss); the
embeddings are computed once per article (cached in the work folder). Against the saved baseline and
fine-tune probabilities it reports, on every fold's test part and pooled over them: the member alone, the mean of
all three members, and the subset of the three that validation log-loss picks (recipe 4's rule with a third
candidate), each beside the recipe's ensemble and the baseline (benchmarks/results/security-cv-frozen*.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

import numpy as np
from cv_recipe import FOLDS, SEED, dataset, macro_f1, pooled, work_dir
from recipe import CONFIGS, E5, ROOT

RESULTS = ROOT / "benchmarks" / "results"
GRID = (1.0, 3.0, 10.0, 30.0, 100.0)


def embed(texts: list[str], batch_size: int = 16) -> np.ndarray:
    """The frozen backbone's mean-pooled, unit-length embedding of each text: windows over the whole article
    (the e5-small config's inputs with `model.long_text=chunks`), averaged per article."""
    import torch
    from tqdm import tqdm

    from pipeline.config import load_config
    from pipeline.labels import load_labels
    from pipeline.model import TextEncoder, average_by_doc, load_pretrained, load_tokenizer, mean_pool, pad_batch

    cfg = load_config([*CONFIGS, *E5], ["model.long_text=chunks"])
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    encoder = load_pretrained(cfg.model.name_or_path, load_labels(cfg.labels), pooling="mean").base_model.eval()
    encoded = TextEncoder(tokenizer, cfg.model).encode(texts)
    vectors = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(encoded.input_ids), batch_size), desc="embedding", unit="batch"):
            batch = pad_batch(tokenizer, encoded.input_ids[start:start + batch_size])
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            vectors.append(torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1).numpy())
    return average_by_doc(np.concatenate(vectors), encoded.doc_index, len(texts))


def split_rows(seed: int, fold: int, split: str) -> list[dict[str, Any]]:
    """A fold's prepared (normalised) split, as the fine-tune read it."""
    path = work_dir(seed) / "processed" / dataset(fold, seed) / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def embeddings(seed: int) -> dict[str, np.ndarray]:
    """Every article's embedding, by id, computed once (the cache in the seed-42 work folder serves every
    partition: they hold the same articles)."""
    cache = work_dir(SEED) / "frozen-embeddings.npz"
    saved = np.load(cache) if cache.is_file() else {"ids": np.array([]), "vectors": np.zeros((0, 0))}
    vectors = dict(zip(saved["ids"].tolist(), saved["vectors"], strict=True))
    rows = {r["id"]: r["text"] for f in range(FOLDS) for r in split_rows(seed, f, "test") if r["id"] not in vectors}
    if rows:
        ids = sorted(rows)
        vectors.update(zip(ids, embed([rows[i] for i in ids]), strict=True))
        np.savez(cache, ids=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))
    return vectors


def geometric_mean(probs: list[np.ndarray]) -> np.ndarray:
    """The recipe's combiner: `pipeline.stack.Combiner` with equal weights (the unweighted mean of
    log-probabilities), as probabilities."""
    from pipeline.metrics import softmax
    from pipeline.stack import Combiner

    return softmax(Combiner("weights", weights=[1 / len(probs)] * len(probs)).logits(probs))


def run_fold(seed: int, fold: int, vectors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The member on one fold, and the combinations with the saved members' probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    saved = np.load(work_dir(seed) / f"probs-fold-{fold}.npz")
    labels = [str(lb) for lb in saved["labels"]]
    rows = {s: split_rows(seed, fold, s) for s in ("train", "validation", "test")}
    x = {s: np.stack([vectors[r["id"]] for r in part]) for s, part in rows.items()}
    y_train = np.array([labels.index(r["label"]) for r in rows["train"]])
    y_val, y_test = saved["y_validation"], saved["y_test"]
    fits = [LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(x["train"], y_train) for c in GRID]
    losses = [log_loss(y_val, m.predict_proba(x["validation"]), labels=range(len(labels))) for m in fits]
    member = fits[int(np.argmin(losses))]
    val = {"baseline": saved["baseline_validation"], "fine_tuned": saved["fine_tuned_validation"],
           "frozen": member.predict_proba(x["validation"])}
    test = {"baseline": saved["baseline_test"], "fine_tuned": saved["fine_tuned_test"],
            "frozen": member.predict_proba(x["test"])}
    subsets = [c for r in (1, 2, 3) for c in itertools.combinations(val, r)]
    chosen = min(subsets, key=lambda c: log_loss(y_val, geometric_mean([val[m] for m in c]),
                                                 labels=range(len(labels))))
    probs = {"baseline": test["baseline"], "ensemble": saved["ensemble_test"], "frozen": test["frozen"],
             "mean_of_three": geometric_mean(list(test.values())),
             "validation_choice": geometric_mean([test[m] for m in chosen])}
    return {"fold": fold, "C": GRID[int(np.argmin(losses))], "chosen": list(chosen), "labels": labels,
            "truth": y_test.tolist(), "pred": {m: p.argmax(1).tolist() for m, p in probs.items()}}


def main() -> None:
    """Embed, fit per fold, write the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fold-seed", type=int, default=SEED, help="the partition cv_recipe.py ran (default 42)")
    args = ap.parse_args()
    work = work_dir(args.fold_seed)
    missing = [f for f in range(FOLDS) if not (work / f"probs-fold-{f}.npz").is_file()]
    if missing:
        print(f"skipped: folds {missing} of partition {args.fold_seed} have no saved probabilities in {work}; "
              f"run python benchmarks/cv_recipe.py --fold-seed {args.fold_seed} first")
        return
    vectors = embeddings(args.fold_seed)
    folds = [run_fold(args.fold_seed, f, vectors) for f in range(FOLDS)]
    labels = folds[0]["labels"]
    y = np.array([t for f in folds for t in f["truth"]])
    models = list(folds[0]["pred"])
    out: dict[str, Any] = {"fold_seed": args.fold_seed, "rows": len(y),
                           "chosen": {f["fold"]: f["chosen"] for f in folds}, "C": {f["fold"]: f["C"] for f in folds}}
    figures = pooled(y, {m: np.array([p for f in folds for p in f["pred"][m]]) for m in models}, labels)
    for m in models:
        gains = [macro_f1(f["truth"], f["pred"][m]) - macro_f1(f["truth"], f["pred"]["baseline"]) for f in folds]
        out[m] = {"gain_folds": [round(g, 4) for g in gains], "gain_mean": round(float(np.mean(gains)), 4),
                  **figures[m]}
        print(f"{m:18s} pooled {figures[m]['pooled_macro_f1']:.3f}  − baseline by fold "
              f"{' '.join(f'{g:+.3f}' for g in gains)}  mean {np.mean(gains):+.3f}")
    path = RESULTS / ("security-cv-frozen.json" if args.fold_seed == SEED else
                      f"security-cv-frozen-seed{args.fold_seed}.json")
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
