"""`pipeline ensemble`: stack trained models of one config's splits into a model that is never worse on validation.

Every member was trained on the same prepared splits (checked by their sha256), so the members' validation
probabilities are out-of-sample. The combiner is chosen on validation alone (`train.ensemble_combiner`): by
default the unweighted mean of the log-probabilities of the subset of members best on validation; or (`fitted`)
weights or a logistic regression, each scored by k-fold cross-validation inside the validation split and refitted on
the whole of it. Candidates are compared on their calibrated validation log-loss (`train.ensemble_criterion`; or on
macro-F1). Test is scored once, at the end. If no stack beats the best member, the ensemble says so and is that
member alone.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import (
    CHECKPOINTS,
    ENSEMBLE_FILE,
    FIT_SPLITS,
    MEMBERS_DIR,
    model_dir,
    read_info,
    read_model_config,
    run_name,
)
from pipeline.baseline import against_baseline
from pipeline.config import Config
from pipeline.data import load_split, splits_sha256
from pipeline.errors import ConfigError, ModelError
from pipeline.jobs import exclusive
from pipeline.labels import LabelMap, load_labels
from pipeline.metrics import calibrated_metrics, fit_temperature, softmax
from pipeline.runs import RunResult, finish_run
from pipeline.scoring import load_scorer
from pipeline.stack import Combiner, count_offsets, features, log_probs, save_combiner, shifted
from pipeline.tracking import Tracker, run_tags
from pipeline.uncertainty import macro_f1

KIND = "ensemble"
FOLDS = 5
C_GRID = (0.01, 0.1, 1.0, 10.0)
TIE = 1e-6  # a candidate must beat the best so far by more than this; a tie keeps the smaller subset
CRITERIA = {"log_loss": "log-loss", "macro_f1": "macro-F1"}  # how candidates are compared on validation
# what a bundled member leaves behind: checkpoints, evaluations, and the runtime caches (`runtime.ONNX_DIR`,
# `autoruntime.CHOICE_FILE`, named here so that stacking TF-IDF models never imports torch), rebuilt where needed
SKIP = {CHECKPOINTS, "eval", "onnx", "runtime_choice.json"}


def check_members(cfg: Config, members: list[Path]) -> None:
    """Members exist, are two or more, share the label set and were trained on this config's prepared splits."""
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two --members")
    labels, digest = load_labels(cfg.labels), splits_sha256(cfg, FIT_SPLITS)
    for member in members:
        info = read_info(member)  # a one-line error when it is not a model directory
        if info["kind"] == KIND:
            raise ModelError(f"{member}: an ensemble cannot be a member of another")
        if read_model_config(member).labels.mode == "multi":
            raise ModelError(f"{member}: a multi-label model; ensembles stack single-label models only")
        if LabelMap.load(member).ids != labels.ids:
            raise ModelError(f"{member}: its labels differ from the config's ({', '.join(labels.ids)})")
        if "fit_sha256" not in info:
            raise ModelError(f"{member}: written before model directories recorded their splits' sha256; train it "
                             "again to stack it")
        if info.get("fit_sha256") != digest:
            raise ModelError(f"{member}: trained on other splits than {cfg.data.name}'s (train and validation "
                             "sha256 differ); its "
                             "validation probabilities would not be out-of-sample, so it cannot be stacked here")


def weight_grid(n_members: int) -> list[list[float]]:
    """Mixtures on a 0.1 grid of the simplex, every member weighted (a member alone is a candidate of its own)."""
    steps = np.round(np.arange(0.1, 1.0, 0.1), 2)
    return [list(map(float, w)) for w in itertools.product(steps, repeat=n_members) if abs(sum(w) - 1) < 1e-6]


def _fit(kind: str, param: Any, probs: list[np.ndarray], y: np.ndarray, seed: int, criterion: str) -> Combiner:
    """`weights`: the mixture of the grid best on these rows under `criterion`; `logreg`: a regression at C."""
    if kind == "weights":
        n_labels = probs[0].shape[1]
        scored = [(rank_key(Combiner("weights", weights=w).logits(probs), y, n_labels, criterion), -i, w)
                  for i, w in enumerate(weight_grid(len(probs)))]
        return Combiner("weights", weights=max(scored)[2])
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=param, max_iter=2000, random_state=seed).fit(features(probs), y)
    return Combiner("logreg", model=model)


def _cross_validated(kind: str, param: Any, probs: list[np.ndarray], y: np.ndarray, seed: int, criterion: str,
                     ) -> np.ndarray:
    """Out-of-fold logits of one candidate on validation: fitted (weights chosen) on k-1 folds, applied to the kth."""
    from sklearn.model_selection import StratifiedKFold

    folds = min(FOLDS, int(np.bincount(y).min()) if len(y) else 2)
    if folds < 2:
        raise ModelError("the validation split has a label with one article; a stack cannot be cross-validated")
    out = np.zeros((len(y), probs[0].shape[1]))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(probs[0], y):
        out[te] = _fit(kind, param, [p[tr] for p in probs], y[tr], seed, criterion).logits([p[te] for p in probs])
    return out


def log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """Validation log-loss of a candidate at its best temperature (every candidate is calibrated, as the
    ensemble will be, before they are compared)."""
    temp = fit_temperature(partial(softmax, logits), y)
    return float(-np.log(np.clip(softmax(logits, temp)[np.arange(len(y)), y], 1e-12, 1)).mean())


def rank_key(logits: np.ndarray, y: np.ndarray, n_labels: int, criterion: str) -> float:
    """How good a candidate is on these rows under `criterion`, higher better: macro-F1, or minus the log-loss."""
    return float(macro_f1(y, logits.argmax(axis=1), n_labels)) if criterion == "macro_f1" else -log_loss(logits, y)


def _scored(name: str, logits: np.ndarray, y: np.ndarray, n_labels: int, criterion: str) -> tuple[float, dict]:
    """A candidate's rank key under `criterion`, and its line of the report (both figures)."""
    f1, loss = float(macro_f1(y, logits.argmax(axis=1), n_labels)), log_loss(logits, y)
    return (f1 if criterion == "macro_f1" else -loss), {"combiner": name, "val_macro_f1": round(f1, 4),
                                                         "val_log_loss": round(loss, 4)}


def choose(probs: list[np.ndarray], y: np.ndarray, n_labels: int, seed: int, method: str = "mean",
           criterion: str = "log_loss", offsets: str = "none") -> tuple[Combiner, np.ndarray, dict]:
    """The combiner best on validation under `criterion`, its validation logits, and the scores.

    `mean`: the unweighted mean of the log-probabilities of a subset of the members (every subset is a candidate,
    a member alone included; nothing is fitted, so there is no winner's curse of fitted weights on a small
    validation split; on a tie the smaller subset wins). `fitted`: also a weighted mean on a 0.1 grid and logistic
    regressions, each scored by k-fold cross-validation inside validation. Either way a member alone is a
    candidate, so the choice is never worse than the best member on validation.

    `criterion`: `log_loss` (default) compares the candidates' calibrated validation log-loss, a proper score read
    from every article's probability; `macro_f1` their validation macro-F1, read from the argmax alone, which on a
    validation split of a few hundred articles moves by a few points when one rare-label article flips, so that it
    often cannot tell the candidates apart. Both figures are reported for every candidate.

    `offsets`: `count_match` first shifts each member's log-probabilities by per-label offsets that make it predict
    every label as often as validation holds it (`stack.count_offsets`); every candidate combines the shifted
    members, and the combiner keeps the offsets.
    """
    shift = [count_offsets(p, y).tolist() for p in probs] if offsets == "count_match" else []
    combiner, logits, chosen = _choose(shifted(probs, shift), y, n_labels, seed, method, criterion)
    combiner.offsets = shift
    return combiner, logits, chosen | ({"label_offsets": [[round(b, 3) for b in m] for m in shift]} if shift else {})


def _choose(probs: list[np.ndarray], y: np.ndarray, n_labels: int, seed: int, method: str, criterion: str,
            ) -> tuple[Combiner, np.ndarray, dict]:
    scores: list[dict[str, Any]] = []
    best: tuple[float, Combiner | None, np.ndarray | None, tuple[str, Any], dict] = (-np.inf, None, None, ("", None),
                                                                                     {})
    for i, p in enumerate(probs):
        logits = log_probs(p)
        key, line = _scored(f"member {i}", logits, y, n_labels, criterion)
        scores.append(line)
        if key > best[0]:
            best = (key, Combiner("member", member=i), logits, ("member", i), line)
    best_member = best[4]
    if method == "mean":
        subsets = [s for r in range(2, len(probs) + 1) for s in itertools.combinations(range(len(probs)), r)]
        for subset in subsets:
            combiner = Combiner("weights", weights=[1 / len(subset) if i in subset else 0.0 for i in range(len(probs))])
            logits = combiner.logits(probs)
            key, line = _scored("mean of members " + " ".join(map(str, subset)), logits, y, n_labels, criterion)
            scores.append(line)
            if key > best[0] + TIE:  # a member that changes nothing on validation is not worth scoring
                best = (key, combiner, logits, ("weights", subset), line)
    else:
        for kind, param in [("weights", None), *(("logreg", c) for c in C_GRID)]:
            logits = _cross_validated(kind, param, probs, y, seed, criterion)
            key, line = _scored(f"{kind} {param}", logits, y, n_labels, criterion)
            scores.append(line)
            if key > best[0] + TIE:
                best = (key, None, logits, (kind, param), line)
    combiner = best[1] or _fit(*best[3], probs, y, seed, criterion)
    return combiner, best[2], {"method": method, "criterion": criterion,
                               **{f"best_member_{k}": v for k, v in best_member.items() if k != "combiner"},
                               **{f"chosen_{k}": v for k, v in best[4].items() if k != "combiner"},
                               "candidates": scores}


def bundle(members: list[Path], out: Path) -> list[dict[str, Any]]:
    """Hard-link (else copy) each member into OUT/members/, without checkpoints or evaluations."""
    target = out / MEMBERS_DIR
    shutil.rmtree(target, ignore_errors=True)
    described = []
    for i, member in enumerate(members):
        name = f"{i}-{member.resolve().name}"

        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(member, target / name, copy_function=link, ignore=lambda _d, names: SKIP & set(names))
        info = read_info(member)
        described.append({"dir": name, "source": str(member), "kind": info["kind"],
                          "weights_sha256": info["weights_sha256"]})
    return described


def fit_ensemble(cfg: Config, members: list[str | Path]) -> RunResult:
    """Score the members on validation and test, choose and fit the combiner on validation, calibrate, evaluate
    on test, and write a self-contained ensemble directory logged like any run."""
    paths = [Path(m) for m in members]
    check_members(cfg, paths)
    tracker = Tracker(cfg)
    out = model_dir(cfg, KIND)
    with exclusive(out, "model directory"):
        return _fit_ensemble(cfg, tracker, out, paths)


def _fit_ensemble(cfg: Config, tracker: Tracker, out: Path, paths: list[Path]) -> RunResult:
    labels = load_labels(cfg.labels)
    rows = {s: load_split(cfg, s) for s in ("validation", "test")}
    y = {s: labels.encode(r) for s, r in rows.items()}
    with tracker.run(run_name(cfg, KIND), KIND, run_tags(cfg, list(labels.ids), KIND)):
        started = time.time()
        scorers = [load_scorer(p) for p in paths]
        texts = {s: [r["text"] for r in rs] for s, rs in rows.items()}  # prepared rows are normalised already
        probs = {s: [m.score(texts[s])[0] for m in scorers] for s in rows}
        combiner, val_logits, chosen = choose(probs["validation"], y["validation"], len(labels), cfg.train.seed,
                                              cfg.train.ensemble_combiner, cfg.train.ensemble_criterion,
                                              cfg.train.ensemble_offsets)
        names = [p.resolve().name for p in paths]
        member_f1 = {n: round(float(macro_f1(y["test"], p.argmax(axis=1), len(labels))), 4)
                     for n, p in zip(names, probs["test"], strict=True)}
        used = combiner.used(len(paths))  # a member the combiner does not read is not bundled, nor scored later
        combiner, paths, names = combiner.restricted(used), [paths[i] for i in used], [names[i] for i in used]
        logits = {"validation": val_logits, "test": combiner.logits([probs["test"][i] for i in used])}
        metrics, temp, calibrated = calibrated_metrics({s: partial(softmax, lg) for s, lg in logits.items()}, y,
                                                       list(labels.ids), calibrate=cfg.train.calibrate)
        described = bundle(paths, out)
        metrics["ensemble"] = {"combiner": combiner.describe(names), "members": described, **chosen,
                               "member_test_macro_f1": member_f1}
        metrics["train_seconds"] = round(time.time() - started, 1)
        paired = against_baseline(cfg, rows["test"], calibrated["test"])
        if paired:  # the baseline of this config learned from the same splits: compare on the same test articles
            metrics["test"]["vs_baseline"] = paired
        if combiner.method == "member":
            stacks, key = chosen["candidates"][len(scorers):], f"val_{chosen['criterion']}"
            best_stack = (min if chosen["criterion"] == "log_loss" else max)(c[key] for c in stacks)
            metrics["ensemble"]["note"] = (
                f"the stack did not beat its best member on validation ({CRITERIA[chosen['criterion']]} "
                f"{best_stack:.3f} vs {chosen[f'best_member_{key}']:.3f}): keeping {names[combiner.member]} alone")
        return finish_run(tracker, out, kind=KIND, cfg=cfg, labels=labels, metrics=metrics, temperature=temp,
                          save_weights=partial(save_combiner, combiner), test_rows=rows["test"],
                          test_probs=calibrated["test"], extra={ENSEMBLE_FILE: metrics["ensemble"]})
