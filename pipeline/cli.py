"""The `pipeline` command line: argparse subcommands; the only code that reads sys.argv."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from pipeline.config import Config, load_config, to_yaml
from pipeline.errors import PipelineError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config; repeat to merge left to right")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=2")


def _cfg(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved config."""
    sys.stdout.write(to_yaml(_cfg(args)))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Validate, normalise, deduplicate and split a labelled corpus."""
    from pipeline.data import REPORT_FILE, prepare

    out = prepare(_cfg(args))
    report = json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
    print(f"read {report['rows_read']} rows, kept {report['rows_kept']}; "
          f"removed {report['duplicates_removed']} duplicates and {report['conflict_rows_removed']} "
          f"rows with conflicting labels; skipped {sum(report['rows_skipped'].values())}")
    for split, counts in report["label_counts"].items():
        print(f"  {split:<10} " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    print(f"wrote {out}/{{train,validation,test}}.jsonl and {out / REPORT_FILE}")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], bool]] = {
    "config": (cmd_config, True),
    "prepare": (cmd_prepare, True),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, takes_config) in COMMANDS.items():
        p = sub.add_parser(name, help=fn.__doc__, description=fn.__doc__)
        if takes_config:
            _config_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and return 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
