"""An ensemble's combiner and its scorer: members' calibrated probabilities in, one calibrated distribution out.

The combiner is one of: `member` (one member alone: the stack did not beat it on validation), `weights` (a
weighted mean of the members' log-probabilities; by default their unweighted mean) or `logreg` (a multinomial
logistic regression on them). With `train.ensemble_offsets: count_match` each member's log-probabilities are first
shifted by per-label offsets (`count_offsets`) that the combiner carries. It is chosen on validation by
`pipeline.ensemble`, never on test; this module only applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import ENSEMBLE_FILE, MEMBERS_DIR, WEIGHTS, Scorer, read_json
from pipeline.errors import ModelError
from pipeline.metrics import softmax


def log_probs(probs: np.ndarray) -> np.ndarray:
    """A member's log-probabilities, a probability of 0 read as 1e-9: what every combiner adds up."""
    return np.log(np.clip(probs, 1e-9, 1.0))


def features(member_probs: list[np.ndarray]) -> np.ndarray:
    """The stack's input: every member's log-probabilities side by side."""
    return np.concatenate([log_probs(p) for p in member_probs], axis=1)


def count_offsets(probs: np.ndarray, y: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Per-label offsets to add to a model's log-probabilities so that its argmax predicts every label about as
    often as `y` holds it (a multiplicative step towards each label's count, shrinking; centred; deterministic)."""
    n_labels = probs.shape[1]
    logp, target, offsets = log_probs(probs), np.bincount(y, minlength=n_labels), np.zeros(n_labels)
    for t in range(iterations):
        counts = np.bincount((logp + offsets).argmax(axis=1), minlength=n_labels)
        offsets += 0.5 / (1 + t / 30) * (np.log(target + 1) - np.log(counts + 1))
        offsets = np.clip(offsets - offsets.mean(), -5.0, 5.0)
    return offsets


def shifted(member_probs: list[np.ndarray], offsets: list[list[float]] | None) -> list[np.ndarray]:
    """The members' probabilities with their per-label offsets added to the log-probabilities (none: as they are)."""
    if not offsets:
        return member_probs
    return [softmax(log_probs(p) + np.asarray(b)) for p, b in zip(member_probs, offsets, strict=True)]


@dataclass
class Combiner:
    """How member probabilities become the ensemble's logits."""

    method: str  # member | weights | logreg
    member: int = 0
    weights: list[float] = field(default_factory=list)
    model: Any = None  # the fitted scikit-learn LogisticRegression of `logreg`
    offsets: list[list[float]] = field(default_factory=list)  # per member, per label (`count_offsets`); or none

    def logits(self, member_probs: list[np.ndarray]) -> np.ndarray:
        """Logits over the label set (the ensemble's temperature is applied by the caller)."""
        member_probs = shifted(member_probs, getattr(self, "offsets", None))  # combiners saved before offsets: none
        if self.method == "member":
            return log_probs(member_probs[self.member])
        if self.method == "weights":
            return sum(w * log_probs(p) for w, p in zip(self.weights, member_probs, strict=True))
        n_labels = member_probs[0].shape[1]
        out = np.full((len(member_probs[0]), n_labels), -30.0)
        out[:, self.model.classes_] = self.model.predict_log_proba(features(member_probs))
        return out

    def used(self, n_members: int) -> list[int]:
        """The members, of `n_members`, this combiner reads (a member weighted 0 need not be scored at all)."""
        if self.method == "member":
            return [self.member]
        if self.method == "weights":
            return [i for i, w in enumerate(self.weights) if w > 0]
        return list(range(n_members))

    def restricted(self, used: list[int]) -> Combiner:
        """The same combiner over the `used` members only, in their order."""
        offsets = [self.offsets[i] for i in used] if getattr(self, "offsets", None) else []
        if self.method == "member":
            return Combiner("member", member=used.index(self.member), offsets=offsets)
        if self.method == "weights":
            return Combiner("weights", weights=[self.weights[i] for i in used], offsets=offsets)
        return self

    def describe(self, names: list[str]) -> str:
        """One line for the log and the card."""
        if getattr(self, "offsets", None):
            return self._describe(names) + " (each member's label offsets matched to validation's label counts)"
        return self._describe(names)

    def _describe(self, names: list[str]) -> str:
        if self.method == "member":
            return f"member {names[self.member]} alone"
        if self.method == "weights" and len(set(self.weights)) == 1:
            return "unweighted mean of log-probabilities: " + ", ".join(names)
        if self.method == "weights":
            return "weighted log-probabilities: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(names, self.weights,
                                                                                            strict=True))
        return f"logistic regression on the members' log-probabilities (C={self.model.C:g})"


def save_combiner(combiner: Combiner, out: Path) -> None:
    """The combiner as the ensemble's weights file."""
    import joblib

    joblib.dump(combiner, out / WEIGHTS["ensemble"])


def member_dirs(directory: str | Path) -> list[Path]:
    """The member model directories bundled inside an ensemble directory, in stack order."""
    directory = Path(directory)
    spec = read_json(directory / ENSEMBLE_FILE)
    dirs = [directory / MEMBERS_DIR / m["dir"] for m in spec["members"]]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise ModelError(f"{directory}: member {missing[0].name} is missing from {MEMBERS_DIR}/; copy the ensemble "
                         "directory whole")
    return dirs


class EnsembleScorer(Scorer):
    """An ensemble directory ready for inference: its members score, the combiner and temperature combine."""

    kind = "ensemble"

    def __init__(self, directory: str | Path, members: list[Scorer]) -> None:
        import joblib

        super().__init__(directory)
        self.members = members
        self.combiner: Combiner = joblib.load(Path(directory) / WEIGHTS["ensemble"])
        for member in members:
            if member.labels.ids != self.labels.ids:
                raise ModelError(f"{member.directory}: its labels differ from the ensemble's")

    @property
    def transformer(self) -> Scorer | None:
        """The transformer member, to which runtime and long-text options apply."""
        return next((m for m in self.members if m.kind == "transformer"), None)

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities for normalised texts; lengths in the transformer member's tokens if any."""
        scored = [m.score(texts) for m in self.members]
        lengths = next((s[1] for m, s in zip(self.members, scored, strict=True) if m.kind == "transformer"),
                       scored[0][1])
        if not texts:
            return np.zeros((0, len(self.labels))), np.zeros(0, dtype=int)
        return softmax(self.combiner.logits([s[0] for s in scored]), self.temperature), lengths
