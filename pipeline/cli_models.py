"""The commands that train models: `train`, `baseline`, `ensemble`, `pretrain`, and self-training rounds."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli_args import cfg_of, config_args, summary
from pipeline.config import Config

if TYPE_CHECKING:
    from pipeline.runs import RunResult


def _train_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint of a run that stopped (= train.resume=true)")


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune a transformer on the prepared splits; write models/<run_name>/."""
    from pipeline.train import train

    cfg = cfg_of(args)
    result = _self_train(cfg, "transformer") if cfg.train.unlabelled else train(cfg)
    if not result.metrics:  # a torchrun rank other than 0: rank 0 reports
        return 0
    print(summary("fine-tuned", result.metrics))
    print(f"model directory: {result.model_dir}")
    if cfg.train.ensemble_with_baseline:
        from pipeline.artifacts import model_dir

        lead = cfg.train.ensemble_lead_words
        leads = [model_dir(cfg.model_copy(update={"baseline": cfg.baseline.model_copy(update={"lead_words": lead})}),
                           "baseline")] if lead else []
        _ensemble(cfg, [model_dir(cfg, "baseline"), *leads, result.model_dir])
    return 0


def _self_train(cfg: Config, kind: str) -> RunResult:
    """train.unlabelled: rounds of pseudo-labels; prints each round, returns the best by validation macro-F1."""
    from pipeline.selftrain import self_train

    best, rounds = self_train(cfg, kind)
    for r in rounds:
        print(f"self-training round {r['round']}: {r['pseudo_labelled']} pseudo-labelled articles, validation "
              f"macro-F1 {r['val_macro_f1']:.3f}, test {r['test_macro_f1']:.3f} ({Path(r['model_dir']).name})")
    print(f"kept: {best.model_dir.name} (the best validation macro-F1)")
    return best


def _ensemble(cfg: Config, members: list) -> None:
    from pipeline.ensemble import CRITERIA, fit_ensemble

    result = fit_ensemble(cfg, members)
    info = result.metrics["ensemble"]
    print(info.get("note") or f"stacked: {info['combiner']} (validation"
          f"{', cross-validated' if info['method'] == 'fitted' else ''}: log-loss {info['chosen_val_log_loss']:.3f}, "
          f"macro-F1 {info['chosen_val_macro_f1']:.3f}; best member on {CRITERIA[info['criterion']]}: "
          f"log-loss {info['best_member_val_log_loss']:.3f}, macro-F1 {info['best_member_val_macro_f1']:.3f})")
    print(summary("ensemble", result.metrics))
    print(f"model directory: {result.model_dir}")


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Masked-LM pretraining of the backbone on unlabelled news; the output is a backbone directory."""
    from pipeline.pretrain import pretrain

    cfg = cfg_of(args)
    r = pretrain(cfg, args.input, args.output, args.exclude)
    print(f"{r['articles']} articles ({r['left_out']['articles']} left out as copies of held-out or excluded ones), "
          f"{r['steps']} steps: held-out masked-LM perplexity {r['perplexity_before']} -> {r['perplexity_after']}")
    if r["new_head_tensors"]:
        print(f"note: {cfg.model.name_or_path} has no masked-LM head ({r['new_head_tensors']} tensors started "
              "random, so the perplexity before is a random head's); the steps train that head as well as the encoder, "
              "and need to be many more than for a checkpoint saved with its pretraining head")
    print(f"backbone directory: {args.output} (use it with model.name_or_path={args.output})")
    return 0


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="unlabelled JSONL/CSV/Parquet/folders")
    p.add_argument("--output", required=True, help="the backbone directory to write")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint of a stopped pretraining (= train.resume=true)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="PATH",
                   help="labelled files whose articles (or near copies) pretraining must not read, e.g. a corpus "
                        "that will be cross-validated; the prepared validation and test splits are always left out")


def cmd_ensemble(args: argparse.Namespace) -> int:
    """Stack models trained on one config's splits; the combiner is fitted on validation, never on test."""
    _ensemble(cfg_of(args), args.members)
    return 0


def _ensemble_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--members", nargs="+", required=True, metavar="DIR",
                   help="model directories trained on this config's prepared splits (two or more)")


def cmd_baseline(args: argparse.Namespace) -> int:
    """Fit the TF-IDF + linear baseline on the prepared splits."""
    from pipeline.baseline import train_baseline

    cfg = cfg_of(args)
    result = _self_train(cfg, "baseline") if cfg.train.unlabelled else train_baseline(cfg)
    print(summary("baseline", result.metrics, f", C={result.metrics['baseline']['C']}"))
    print(f"model directory: {result.model_dir}")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable | None]] = {
    "baseline": (cmd_baseline, config_args),
    "train": (cmd_train, _train_args),
    "ensemble": (cmd_ensemble, _ensemble_args),
    "pretrain": (cmd_pretrain, _pretrain_args),
}
