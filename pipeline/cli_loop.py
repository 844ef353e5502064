"""The analyst's loop on the command line: review queues, label audits, drift reports."""

from __future__ import annotations

import argparse
from collections.abc import Callable

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable | None]] = {}
