"""Any model directory, ready to score raw texts: its kind marker picks the scorer class."""

from __future__ import annotations

from pathlib import Path

from pipeline.artifacts import Scorer, read_kind


def load_scorer(directory: str | Path, device: str = "auto", batch_size: int = 32, threads: int | None = None,
                ) -> Scorer:
    """The scorer of a directory's kind; torch is imported only for a transformer (or an ensemble holding one)."""
    kind = read_kind(directory)
    if kind == "baseline":
        from pipeline.baseline import BaselineScorer

        return BaselineScorer(directory)
    if kind == "ensemble":
        from pipeline.stack import EnsembleScorer, member_dirs

        return EnsembleScorer(directory, [load_scorer(d, device, batch_size, threads) for d in member_dirs(directory)])
    from pipeline.model import TransformerScorer

    return TransformerScorer(directory, device=device, batch_size=batch_size, threads=threads)
