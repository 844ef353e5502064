"""5-fold cross-validation of the real-data recipe on the security corpus: the TF-IDF baseline, the TF-IDF model of
the title and lead, the e5-small fine-tune and their ensemble, trained and tested on the same folds.

    python benchmarks/cv_recipe.py                   # every fold (~20 min each on 2 CPU cores), then the summary
    python benchmarks/cv_recipe.py --folds 0 1       # some folds; the summary pools the folds done so far
    python benchmarks/cv_recipe.py --summary-only    # pool the saved folds without training
    python benchmarks/cv_recipe.py --fold-seed 7     # a second partition: a replication with new folds
    python benchmarks/cv_recipe.py --pretrain-epochs 3   # the fine-tune from a backbone pretrained on each fold's
                                                         # own training articles (~40 min more a fold)

Folds are by default the same stratified 5-fold split (seed 42) as `benchmarks/accuracy.py`'s baseline
cross-validation, over every prepared article; `--fold-seed` draws another partition, with its own work folder and
results file (security-cv-seed{S}.json). In each fold the test part is the fold, validation a stratified 15% of the
rest, and train the remainder: the baseline picks C, the fine-tune picks its epoch and the ensemble fits its combiner
on that validation slice only. Each finished fold's record (its test articles' truth and every model's prediction)
is saved in benchmarks/results/cv/ (fold-K.json; a variant's in a subfolder) and kept in git, because the models and
the work folder do not outlive the machine they were trained on, and a fold costs a CPU half an hour; a fold with a
record is skipped when the job runs again with the same recipe version. Every model's validation and test
probabilities go to the work folder (work/cv/probs-fold-K.npz), so that a combiner can be studied without training
again. In the fold in progress, a fine-tune finished with the
same settings on the same splits is reused and one cut short continues from its last complete checkpoint, so a
stopped job loses at most an epoch. `tfidf_pair` (the two TF-IDF models) and
`with_lead` (the lead model as a third member) are the ensemble's combiner over other members, to show what each
member adds. The summary (benchmarks/results/security-cv.json) gives per-fold mean and sd, the pooled out-of-fold
macro-F1 and per-label F1 with 95% bootstrap intervals, and the paired bootstrap and McNemar tests of every model
against the baseline on the same articles.

`--pretrain-epochs N` measures task-adaptive pretraining: in each fold, `pipeline pretrain` continues masked-LM
training of e5-small on that fold's training articles alone (never its validation or test text) for N epochs, and
the fine-tune starts from that backbone. Its folds live in their own folders (cv/tapt and work/cv/tapt, or
seed-S/tapt in each) and
results file (security-cv-tapt.json, security-cv-seed{S}-tapt.json), on the same partition as the plain recipe, so
that where the plain recipe's folds are saved the summary also tests the pretrained fine-tune and ensemble against
them on the same articles (`vs_plain`). A finished pretraining is reused when the job runs again with the same
number of epochs; another number is refused (move the tapt folder away to measure it); one cut short continues
from its last checkpoint (every 50 steps).

`--backbone DIR` fine-tunes from one pretrained backbone on every fold, such as benchmarks/dapt.py's
(domain-adaptive pretraining on unlabelled news of the same outlets). It must have been pretrained with the corpus
excluded (`pipeline pretrain --exclude`, recorded in its pretrain.json), or it could have read the folds' test
articles; it is refused otherwise. Its folds and results are a variant named after the directory (cv/NAME,
security-cv-NAME.json), compared with the plain recipe on the same folds as the pretrained variant is.

    python benchmarks/cv_recipe.py --backbone models/pretrained/e5-small-ant-dapt
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "security-news" / "labelled.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "work" / "cv"
RECORDS = RESULTS / "cv"
MODELS = ("baseline", "lead", "fine_tuned", "tfidf_pair", "with_lead", "ensemble")
PAIRS = {"tfidf_pair": ("baseline", "lead"), "with_lead": ("baseline", "lead", "fine_tuned")}
FOLDS = 5
SEED = 42


PLAIN_MODELS = ("fine_tuned", "ensemble")  # compared with the pretrained variant's on the same folds
VARIANT = "tapt"
CONFIDENCE = "label_confidence"  # the security corpus's annotator confidence: high / medium / low
CONFIDENCE_ORDER = ("high", "medium", "low")


def variant_name(pretrain_epochs: float, backbone: Path | None) -> str:
    """The variant a run measures: "" for the plain recipe, VARIANT for per-fold pretraining, else the backbone's
    directory name."""
    return VARIANT if pretrain_epochs else backbone.name if backbone is not None else ""


def work_dir(seed: int, variant: str = "") -> Path:
    """Where one partition's folds, models and predictions live (seed 42: the original folder); a variant's in a
    subfolder of it."""
    base = WORK if seed == SEED else WORK / f"seed-{seed}"
    return base / variant if variant else base


def record_dir(seed: int, variant: str = "") -> Path:
    """Where one partition's (or its variant's) finished fold records are kept, laid out as its work folder."""
    return RECORDS / work_dir(seed, variant).relative_to(WORK)


def results_file(seed: int, variant: str = "") -> Path:
    """One partition's summary."""
    stem = "security-cv" if seed == SEED else f"security-cv-seed{seed}"
    return RESULTS / f"{stem}{'-' + variant if variant else ''}.json"


def fold_parts(rows: list[dict[str, Any]], fold: int, seed: int) -> dict[str, list[int]]:
    """The rows of train, validation (stratified 15% of the other folds) and test (fold `fold`), by position."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    y = [r["label"] for r in rows]
    rest, test = list(StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(rows, y))[fold]
    train, val = train_test_split(list(rest), test_size=0.15, stratify=[y[i] for i in rest], random_state=seed)
    return {"train": train, "validation": val, "test": list(test)}


def fold_files(rows: list[dict[str, Any]], fold: int, seed: int, variant: str = "") -> dict[str, Path]:
    """A fold's train, validation and test rows (`fold_parts`) as JSONL files."""
    from pipeline.readers import write_jsonl

    return {name: write_jsonl(work_dir(seed, variant) / f"fold-{fold}" / f"{name}.jsonl", [rows[i] for i in idx])
            for name, idx in fold_parts(rows, fold, seed).items()}


def by_confidence(rows: list[dict[str, Any]], folds: list[dict[str, Any]], field: str = CONFIDENCE
                  ) -> dict[str, Any]:
    """Every model's pooled figures on the articles of each level of the annotators' confidence in the label
    (`field`; in the security corpus `low` means two annotators disagreed): how much of a label's errors lie where
    people disagree too. Each fold's test articles are drawn again from `rows` as the fold drew them; empty when
    the corpus records no confidence or the kept labels do not match the articles drawn (another corpus)."""
    from sklearn.metrics import f1_score

    level, truth, preds = [], [], {m: [] for m in MODELS if all(m in f["pred"] for f in folds)}
    for f in folds:
        test = [rows[i] for i in fold_parts(rows, f["fold"], f.get("fold_seed", SEED))["test"]]
        if [r["label"] for r in test] != f["truth"] or any(field not in r for r in test):
            return {}
        level += [r[field] for r in test]
        truth += f["truth"]
        for m, p in preds.items():
            p += f["pred"][m]
    labels, out = sorted(set(truth)), {}
    for lv in sorted(set(level), key=lambda v: (CONFIDENCE_ORDER.index(v) if v in CONFIDENCE_ORDER else 9, v)):
        idx = [i for i, v in enumerate(level) if v == lv]
        t = [truth[i] for i in idx]
        out[lv] = {"rows": len(idx), "support": {lb: t.count(lb) for lb in labels}} | {
            m: {"macro_f1": round(float(f1_score(t, [p[i] for i in idx], average="macro")), 4),
                "per_class_f1": {lb: round(float(x), 4) for lb, x in zip(labels, f1_score(
                    t, [p[i] for i in idx], labels=labels, average=None, zero_division=0), strict=True)}}
            for m, p in preds.items()}
    return out


def dataset(fold: int, seed: int, variant: str = "") -> str:
    """One fold's dataset (and MLflow run) name."""
    return f"security-news-cv{fold}" + ("" if seed == SEED else f"-s{seed}") + (f"-{variant}" if variant else "")


def pretrained_backbone(data: list[str], train_file: Path, out: Path, epochs: float) -> dict[str, Any]:
    """`pipeline pretrain` of e5-small on one fold's training articles (the `data` overrides name the fold's
    prepared splits, whose validation and test texts pretraining leaves out), unless `out` holds it already; one
    that was stopped continues from its last checkpoint."""
    from recipe import CONFIGS, E5

    from pipeline.config import load_config
    from pipeline.data import prepare
    from pipeline.pretrain import PRETRAIN_FILE, pretrain

    if (out / PRETRAIN_FILE).is_file():
        saved = json.loads((out / PRETRAIN_FILE).read_text())
        if saved.get("settings", {}).get("epochs", epochs) != epochs:
            raise SystemExit(f"error: {out} was pretrained for {saved['settings']['epochs']:g} epochs, not {epochs:g}; "
                             f"move {out.parents[1]} away to measure another number")
        return saved
    cfg = load_config([*CONFIGS, *E5], [*data, f"pretrain.epochs={epochs}", "train.resume=true"])
    prepare(cfg)
    return pretrain(cfg, [str(train_file)], out)


def checked_backbone(path: Path) -> dict[str, Any]:
    """A pretrained backbone's record, when its pretraining left out every article of the corpus; else exit."""
    from pipeline.pretrain import PRETRAIN_FILE

    record = path / PRETRAIN_FILE
    saved = json.loads(record.read_text()) if record.is_file() else {}
    if str(CORPUS.resolve()) not in saved.get("left_out", {}).get("exclude", []):
        raise SystemExit(f"error: {path} was not pretrained with --exclude {CORPUS} ({record} does not record it), so "
                         "it may have read the folds' test articles; pretrain it with benchmarks/dapt.py")
    return saved


BACKBONE_KEYS = ("base_model", "articles", "steps", "settings", "input", "mlm_loss_before", "mlm_loss_after")


def backbone_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys of two pretrain.json records that differ: two different pretrainings when not empty."""
    from pipeline.checkpoints import differing

    return differing(saved, current, BACKBONE_KEYS)


def other_backbones(folds: list[dict[str, Any]], current: dict[str, Any]) -> dict[int, list[str]]:
    """The folds fine-tuned from another pretraining than the backbone's `current` record (the backbone was made
    again, say on a new machine, and came out different), each with the keys of its record that differ: pooling
    them would mix two backbones."""
    return {f["fold"]: diff for f in folds
            if (diff := backbone_diff(f.get("pretrain") or {}, current))}


def same_backbone(path: Path, before: dict[str, Any] | None, where: Path) -> dict[str, Any]:
    """The backbone's checked record (`checked_backbone`, with the directory named) when the results saved in `where`
    were fine-tuned from the same pretraining, recorded as `before` (None: none saved yet); else exit naming the keys
    that differ, since it was pretrained again, say on a new machine, and came out different."""
    record = {"backbone": str(path), **checked_backbone(path)}
    if before is not None and (diff := backbone_diff(before, record)):
        raise SystemExit(f"error: the results in {where} were fine-tuned from another pretraining of {path} (differs "
                         f"in {', '.join(diff)}); move that file away to measure this one")
    return record


def run_fold(rows: list[dict[str, Any]], fold: int, overrides: list[str], seed: int = SEED,
             pretrain_epochs: float = 0, backbone: Path | None = None) -> dict[str, Any]:
    """The recipe's models on one fold (with `pretrain_epochs`, the fine-tune from a backbone pretrained on the
    fold's training articles; with `backbone`, from that one); their predictions on the fold's test articles."""
    from recipe import VERSION, run_recipe, split_data

    started = time.time()
    variant = variant_name(pretrain_epochs, backbone)
    work = work_dir(seed, variant)
    files = fold_files(rows, fold, seed, variant)
    data = [*split_data(dataset(fold, seed, variant), files, work),
            f"output_dir={work / 'models'}", "tracking.registered_model=null"]
    pretrained = None
    if pretrain_epochs:
        backbone = work / "models" / f"e5-small-tapt-fold-{fold}"
        pretrained = pretrained_backbone(data, files["train"], backbone, pretrain_epochs)
        overrides = [*overrides, f"model.name_or_path={backbone}"]
    elif backbone is not None:
        pretrained = {"backbone": str(backbone), **checked_backbone(backbone)}
        overrides = [*overrides, f"model.name_or_path={backbone}"]
    cfg, runs = run_recipe(data, overrides)
    dirs = {kind: run.model_dir for kind, run in runs.items()}
    ens = runs["ensemble"]
    pred, truth, combiners = predictions(cfg, dirs, work / f"probs-fold-{fold}.npz")
    result = {"fold": fold, "n_test": len(truth), "truth": truth, "pred": pred,
              "models": {m: d.name for m, d in dirs.items()},
              "ensemble": {k: ens.metrics["ensemble"].get(k) for k in ("combiner", "note")},
              "pairs": combiners, "recipe": VERSION,
              "wall_seconds": round(time.time() - started, 1), "overrides": overrides, "fold_seed": seed,
              "pretrain": pretrained, "variant": variant, "corpus_sha256": corpus_digest()}
    save_record(result)
    print(f"fold {fold}: " + ", ".join(f"{m} {macro_f1(result['truth'], pred[m]):.3f}" for m in MODELS), flush=True)
    return result


def scored_splits(cfg: Any, dirs: dict[str, Path], probs_file: Path | None = None
                  ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[dict[str, Any]]], Any]:
    """Every model's validation and test probabilities (`{model: {split: probs}}`), the splits' rows and the label
    map. With `probs_file`, the probabilities and both splits' labels are saved there (`MODEL_SPLIT`, `y_SPLIT`,
    `labels`: what offsets.py reads back)."""
    from pipeline.data import load_split
    from pipeline.scoring import load_scorer

    rows = {s: load_split(cfg, s) for s in ("validation", "test")}
    scored = {}
    for model, directory in dirs.items():
        scorer = load_scorer(directory)
        labels = scorer.labels
        scored[model] = {s: scorer.score([r["text"] for r in rs])[0] for s, rs in rows.items()}
    if probs_file is not None:
        np.savez_compressed(probs_file, **{f"{m}_{s}": p for m, by in scored.items() for s, p in by.items()},
                            **{f"y_{s}": labels.encode(rs) for s, rs in rows.items()}, labels=np.array(labels.ids))
    return scored, rows, labels


def predictions(cfg: Any, dirs: dict[str, Path], probs_file: Path | None = None,
                ) -> tuple[dict[str, list[str]], list[str], dict[str, str]]:
    """Every model's test predictions, and those of the ensemble's combiner over each pair of `PAIRS` (chosen on
    validation with the recipe's label offsets, as the ensemble's): what each extra member adds. Also the truth and
    the pairs' combiners. With `probs_file`, every model's validation and test probabilities and both splits' labels
    are saved there."""
    from pipeline.ensemble import choose

    scored, rows, labels = scored_splits(cfg, dirs, probs_file)
    pred = {m: [labels.ids[i] for i in by["test"].argmax(axis=1)] for m, by in scored.items()}
    combiners = {}
    for name, pair in PAIRS.items():
        combiner, _, _ = choose([scored[m]["validation"] for m in pair], labels.encode(rows["validation"]),
                                len(labels), cfg.train.seed, offsets=cfg.train.ensemble_offsets)
        pred[name] = [labels.ids[i] for i in combiner.logits([scored[m]["test"] for m in pair]).argmax(axis=1)]
        combiners[name] = combiner.describe(list(pair))
    return pred, [r["label"] for r in rows["test"]], combiners


def add_pairs(fold: dict[str, Any]) -> dict[str, Any]:
    """A saved fold of this recipe without some pair's predictions, given them from its saved models."""
    from recipe import CONFIGS

    from pipeline.config import load_config

    seed, variant = fold.get("fold_seed", SEED), fold.get("variant", VARIANT if fold.get("pretrain") else "")
    work = work_dir(seed, variant)
    cfg = load_config(CONFIGS, [f"data.name={dataset(fold['fold'], seed, variant)}",
                                f"data.processed_dir={work / 'processed'}"])
    pred, _, combiners = predictions(cfg, {m: work / "models" / d for m, d in fold["models"].items()})
    fold = {**fold, "pred": {**pred, **fold["pred"]}, "pairs": {**combiners, **fold.get("pairs", {})},
            "fold_seed": seed, "variant": variant}
    save_record(fold)
    return fold


def save_record(fold: dict[str, Any]) -> Path:
    """Keep a finished fold's record in git."""
    return write_record(record_dir(fold["fold_seed"], fold["variant"]) / f"fold-{fold['fold']}.json", fold)


def write_record(path: Path, record: dict[str, Any]) -> Path:
    """A benchmark's record of predictions, kept in git: JSON with one line a key, so that a change is a short
    diff."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in record.items())
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    return path


def macro_f1(truth: list[str], pred: list[str]) -> float:
    """Macro-F1 over the labels in the truth or predictions (scikit-learn's default)."""
    from sklearn.metrics import f1_score

    return float(f1_score(truth, pred, average="macro"))


def pooled(y: np.ndarray, preds: dict[str, np.ndarray], labels: list[str]) -> dict[str, dict[str, Any]]:
    """Every model's figures over articles pooled from several test sets, with 95% bootstrap intervals, and the
    paired tests of every model after the first (the baseline) against it on the same articles."""
    from sklearn.metrics import f1_score

    from pipeline.uncertainty import bootstrap_intervals, paired_test

    out = {m: {"pooled_macro_f1": round(float(f1_score(y, p, average="macro")), 4),
               "pooled_accuracy": round(float(np.mean(y == p)), 4),
               "pooled_per_class_f1": {lb: round(float(f), 4) for lb, f in zip(labels, f1_score(
                   y, p, labels=range(len(labels)), average=None, zero_division=0), strict=True)},
               "pooled_intervals": bootstrap_intervals(y, p, labels)} for m, p in preds.items()}
    base, *others = preds
    for m in others:
        out[m]["vs_baseline"] = paired_test(y, preds[m], preds[base], len(labels))
    return out


def encoder(labels: list[str]) -> Any:
    """A function that turns label names into their positions in `labels`, as the paired tests take them."""
    index = {lb: i for i, lb in enumerate(labels)}
    return lambda names: np.array([index[n] for n in names])


def summarise(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold mean and sd, pooled out-of-fold figures with intervals, and paired tests against the baseline."""
    truth = [t for f in folds for t in f["truth"]]
    labels = sorted(set(truth))
    encode = encoder(labels)
    models = [m for m in MODELS if all(m in f["pred"] for f in folds)]
    figures = pooled(encode(truth), {m: encode([p for f in folds for p in f["pred"][m]]) for m in models}, labels)
    out: dict[str, Any] = {"k": FOLDS, "fold_seed": folds[0].get("fold_seed", SEED),
                           "folds": [f["fold"] for f in folds], "rows": len(truth), "labels": labels}
    for m in models:
        scores = [macro_f1(f["truth"], f["pred"][m]) for f in folds]
        out[m] = {"macro_f1_folds": [round(s, 4) for s in scores], "macro_f1_mean": round(float(np.mean(scores)), 4),
                  "macro_f1_std": round(float(np.std(scores)), 4)} | figures[m]
    for m in models[1:]:
        out[m]["mean_gain_over_baseline"] = round(out[m]["macro_f1_mean"] - out["baseline"]["macro_f1_mean"], 4)
    out["recipe"] = folds[0].get("recipe")
    out["combiners"] = [f["ensemble"] for f in folds]
    out["pair_combiners"] = [f.get("pairs") for f in folds]
    out["fold_wall_seconds"] = [f["wall_seconds"] for f in folds]
    return out


def against_plain(folds: list[dict[str, Any]], plain: list[dict[str, Any]]) -> dict[str, Any]:
    """The pretrained variant's fine-tune and ensemble against the plain recipe's on the folds both finished (the
    same articles): mean macro-F1 by fold of each, and the paired tests of variant against plain, pooled."""
    from pipeline.uncertainty import paired_test

    by_fold = {f["fold"]: f for f in plain}
    pairs = [(f, by_fold[f["fold"]]) for f in folds if f["fold"] in by_fold]
    pairs = [(f, p) for f, p in pairs if f["truth"] == p["truth"]]
    if not pairs:
        return {}
    labels = sorted({t for f, _ in pairs for t in f["truth"]})
    encode = encoder(labels)
    y = encode([t for f, _ in pairs for t in f["truth"]])
    out: dict[str, Any] = {"folds": [f["fold"] for f, _ in pairs]}
    for m in PLAIN_MODELS:
        a = encode([x for f, _ in pairs for x in f["pred"][m]])
        b = encode([x for _, p in pairs for x in p["pred"][m]])
        out[m] = {"macro_f1_mean": round(float(np.mean([macro_f1(f["truth"], f["pred"][m]) for f, _ in pairs])), 4),
                  "plain_macro_f1_mean": round(float(np.mean([macro_f1(p["truth"], p["pred"][m]) for _, p in pairs])),
                                               4),
                  "vs_plain": paired_test(y, a, b, len(labels))}
    return out


@functools.cache
def corpus_digest() -> str:
    """The labelled corpus's SHA-256: a fold record made on other articles (the corpus grew) is not pooled."""
    return hashlib.sha256(CORPUS.read_bytes()).hexdigest()


def plain_by_fold(folds: list[dict[str, Any]], summary_file: Path, rows: int) -> dict[str, Any]:
    """Where the plain recipe's fold records are not kept (its folds ran before records were), the variant against
    the plain recipe's per-fold macro-F1 from its summary of the same partition and corpus size: means by fold over
    the same folds, without a paired test (that needs both predictions of each article). The plain summary's recipe
    version is named (`plain_recipe`) where it is not the current one: its fine-tune is the same, its ensemble may
    not be."""
    from recipe import VERSION

    plain = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if plain.get("rows") != rows or len(plain.get("folds", [])) != FOLDS:
        return {}
    same = [f for f in folds if f["fold"] in plain["folds"]]
    out: dict[str, Any] = {"folds": [f["fold"] for f in same], "plain_from": summary_file.name} \
        | ({} if plain.get("recipe") == VERSION else {"plain_recipe": plain.get("recipe")})
    for m in PLAIN_MODELS:
        by_fold = dict(zip(plain["folds"], plain[m]["macro_f1_folds"], strict=True))
        out[m] = {"macro_f1_mean": round(float(np.mean([macro_f1(f["truth"], f["pred"][m]) for f in same])), 4),
                  "plain_macro_f1_mean": round(float(np.mean([by_fold[f["fold"]] for f in same])), 4),
                  "vs_plain": None}
    return out


def finished_folds(records: Path, version: str) -> list[dict[str, Any]]:
    """The fold records kept in `records` by this recipe version on the corpus as it is now."""
    return [f for p in sorted(records.glob("fold-*.json"))
            if (f := json.loads(p.read_text())).get("recipe") == version and f.get("corpus_sha256") == corpus_digest()]


def main() -> None:
    """Run the missing folds, then pool every saved fold."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", nargs="*", type=int, default=list(range(FOLDS)), choices=range(FOLDS))
    ap.add_argument("--summary-only", action="store_true", help="pool the saved folds without training")
    ap.add_argument("--fold-seed", type=int, default=SEED, help="the partition's seed (42: accuracy.py's folds)")
    ap.add_argument("--pretrain-epochs", type=float, default=0,
                    help="pretrain e5-small on each fold's training articles for this many epochs first (0: no)")
    ap.add_argument("--backbone", type=Path, default=None,
                    help="fine-tune every fold from this backbone, pretrained with the corpus excluded (dapt.py)")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for the fine-tuned runs")
    args = ap.parse_args()
    if not CORPUS.is_file():
        print(f"skipped: {CORPUS} is absent (benchmarks read real data from ../shared/data)")
        return
    from recipe import CONFIGS, VERSION

    from pipeline.config import load_config
    from pipeline.data import SPLITS, load_split, prepare

    cfg = load_config(CONFIGS)
    prepare(cfg)
    rows = [r for s in SPLITS for r in load_split(cfg, s)]  # normalised and deduplicated, as the baseline's CV
    if args.pretrain_epochs and args.backbone:
        raise SystemExit("error: --pretrain-epochs and --backbone are two variants; measure one at a time")
    variant = variant_name(args.pretrain_epochs, args.backbone)
    work_dir(args.fold_seed, variant).mkdir(parents=True, exist_ok=True)
    records = record_dir(args.fold_seed, variant)
    kept = finished_folds(records, VERSION)
    if args.backbone is not None:
        odd = other_backbones(kept, checked_backbone(args.backbone))
        if odd:
            named = "; ".join(f"fold {k} ({' '.join(d)} differ)" for k, d in odd.items())
            raise SystemExit(f"error: {named} in {records} "
                             f"were fine-tuned from another pretraining than {args.backbone}: make the backbone as "
                             "they were (benchmarks/dapt.py with the same arguments), or move their records away")
    if not args.summary_only:
        finished = {f["fold"] for f in kept}
        for fold in args.folds:
            if fold in finished:
                print(f"fold {fold}: done already ({records / f'fold-{fold}.json'})")
                continue
            run_fold(rows, fold, args.overrides, args.fold_seed, args.pretrain_epochs, args.backbone)
    done = [f if set(PAIRS) <= set(f["pred"]) else add_pairs(f) for f in finished_folds(records, VERSION)]
    if not done:
        print("no fold finished yet")
        return
    summary = summarise(done)
    if variant:
        summary["variant"], summary["pretrain"] = variant, [f["pretrain"] for f in done]
        if args.pretrain_epochs:
            summary["pretrain_epochs"] = args.pretrain_epochs
        summary["against_plain"] = (against_plain(done, finished_folds(record_dir(args.fold_seed), VERSION))
                                    or plain_by_fold(done, results_file(args.fold_seed), len(rows)))
    if levels := by_confidence(rows, done):
        summary["by_label_confidence"] = levels
    path = results_file(args.fold_seed, variant)
    path.write_text(json.dumps(summary, ensure_ascii=False, indent=2))
    for m in [m for m in MODELS if m in summary]:
        s = summary[m]
        ci = s["pooled_intervals"]["macro_f1"]
        print(f"{m}: mean macro-F1 {s['macro_f1_mean']:.3f} ± {s['macro_f1_std']:.3f} over {len(done)} folds; "
              f"pooled {ci}" + (f"; vs baseline {s['vs_baseline']}" if "vs_baseline" in s else ""))
    plain = summary.get("against_plain")
    for m in PLAIN_MODELS if plain else ():
        print(f"{m}, pretrained against plain on folds {plain['folds']}: {plain[m]['macro_f1_mean']:.3f} against "
              f"{plain[m]['plain_macro_f1_mean']:.3f}; {plain[m]['vs_plain'] or 'means by fold, no paired test'}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
