"""What every `pipeline` subcommand shares: the config flags, and the Config they resolve to."""

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
