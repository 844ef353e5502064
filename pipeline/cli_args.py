"""What the `pipeline` subcommands share: the config flags, the Config they resolve to, one-line metric summaries."""

from __future__ import annotations

import argparse

from pipeline.config import Config, load_config


def config_args(p: argparse.ArgumentParser) -> None:
    """`-c CONFIG` (repeatable) and dotted overrides."""
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config; repeat to merge left to right")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=2")


def cfg_of(args: argparse.Namespace) -> Config:
    """The Config of `-c` files and overrides (`--resume` is `train.resume=true`)."""
    resume = ["train.resume=true"] if getattr(args, "resume", False) else []
    return load_config(args.config, args.overrides + resume)


def summary(name: str, metrics: dict, suffix: str = "") -> str:
    """A run's test figures in one line (two for a multi-label model)."""
    test = metrics["test"]
    line = (f"{name}: test accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f}, "
            f"weighted-F1 {test['weighted_f1']:.3f}, ECE {test['ece']:.3f} "
            f"(uncalibrated {test['ece_uncalibrated']:.3f}){suffix}")
    return line + (multi_line(test) if "multilabel_micro_f1" in test else "")


def multi_line(m: dict) -> str:
    """The label-set figures of a multi-label model, on a line of their own."""
    return (f"\nall labels: micro-F1 {m['multilabel_micro_f1']:.3f}, macro-F1 {m['multilabel_macro_f1']:.3f}, "
            f"subset accuracy {m['subset_accuracy']:.3f}, Hamming loss {m['hamming_loss']:.3f}")
