"""A fine-tune's checkpoints and what they were written with: a resume continues only the run that wrote them.

The settings that decide what a run learns (model, labels, training), the hash of the data it learns from and the
number of processes that wrote them are kept next to the checkpoints, in one record (`settings.json`). A resume with
other settings, data or world size fails in one line that names what changed, instead of silently training a mixture
of two runs; a fresh start removes the checkpoints an earlier run left, so that a later resume cannot pick one of
them up. Checkpoints written before the world size joined the record kept it in `world_size.json`, which is still
read.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.artifacts import CHECKPOINTS, FIT_SPLITS, model_dir
from pipeline.config import Config
from pipeline.data import splits_sha256
from pipeline.distributed import WorldSizeChanged, check_world_size, world_size
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)
SETTINGS_FILE = "settings.json"
LEGACY_WORLD_FILE = "world_size.json"  # where checkpoints written before `settings.json` held it kept the world size
# How a run is carried out or what happens after it, not what it learns: free to change between a stop and a resume.
CARRIED_OUT = {"resume", "keep_checkpoints", "threads", "logging_steps", "eval_batch_size", "ddp_timeout"}


class SettingsChanged(PipelineError):
    """A resume with other settings or data than the checkpoints were written with."""


def learning_settings(cfg: Config) -> dict[str, Any]:
    """The sections of `cfg` that decide what a fine-tune learns (the ensemble_* keys act after it)."""
    train = {k: v for k, v in cfg.train.model_dump(mode="json").items()
             if k not in CARRIED_OUT and not k.startswith("ensemble_")}
    return {"model": cfg.model.model_dump(mode="json"), "labels": cfg.labels.model_dump(mode="json"), "train": train}


def run_settings(cfg: Config) -> dict[str, Any]:
    """What the checkpoints of a fine-tune with `cfg` are written with: its learning settings, data and processes."""
    return {**learning_settings(cfg), "fit_sha256": splits_sha256(cfg, FIT_SPLITS), "world_size": world_size()}


def read_record(record: Path) -> dict[str, Any] | None:
    """A JSON record next to the checkpoints, or None when absent; ValueError when it is not a JSON object."""
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(saved, dict):
        raise ValueError(f"{record} holds no JSON object")
    return saved


def _unreadable(record: Path) -> WorldSizeChanged:
    return WorldSizeChanged(f"{record} is unreadable; cannot tell how many processes wrote the checkpoints")


def _record(checkpoints: Path) -> dict[str, Any] | None:
    """The record, read once for all the checks of a resume; None when absent."""
    try:
        return read_record(checkpoints / SETTINGS_FILE)
    except (OSError, ValueError):
        raise _unreadable(checkpoints / SETTINGS_FILE) from None


def written_by(checkpoints: Path, saved: dict[str, Any] | None = None) -> int:
    """How many processes wrote the checkpoints: the record's `world_size` (`saved`: the record already read); for
    older checkpoints the one `world_size.json` kept, and 1 for those from before either."""
    record, found = checkpoints / SETTINGS_FILE, _record(checkpoints) if saved is None else saved
    try:
        if found is None or "world_size" not in found:
            record = checkpoints / LEGACY_WORLD_FILE
            found = read_record(record) or {}
        return int(found.get("world_size", 1))
    except (OSError, ValueError, TypeError):
        raise _unreadable(record) from None


def complete_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing; unfinished ones (a kill or full disk mid-save) go.

    The Trainer writes `trainer_state.json` last and not atomically, so a checkpoint is complete when that file
    parses; resuming from a half-written one would fail or, worse, load half a model.
    """
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True)
    for ckpt in found:
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            return ckpt
        except (OSError, ValueError):
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def disk_fault_state(checkpoints: Path) -> tuple[str, bool]:
    """What a disk fault while training leaves safe, for `jobs.on_disk_fault`: the newest complete checkpoint (the
    one the fault cut short goes), and that a rerun with --resume continues from it."""
    last = complete_checkpoint(checkpoints)
    state = f"the last complete checkpoint is {last.name}" if last else "no checkpoint was complete yet"
    return f"{state}; free space, then rerun with --resume", True


def differing(old: dict[str, Any], new: dict[str, Any], keys: Iterable[str] | None = None) -> list[str]:
    """The keys whose values differ between two records (of `keys`, or of both records' keys), sorted."""
    keys = sorted(set(old) | set(new)) if keys is None else list(keys)
    return [k for k in keys if old.get(k) != new.get(k)]


def changed_settings(checkpoints: Path, cfg: Config, saved: dict[str, Any] | None = None) -> list[str]:
    """What differs between the settings the checkpoints were written with (`saved`: the record already read) and
    `cfg` (`train.learning_rate`, `data` ...); empty when nothing does or when they predate the record."""
    try:
        saved = saved if saved is not None else read_record(checkpoints / SETTINGS_FILE)
    except (OSError, ValueError):
        return [f"an unreadable {SETTINGS_FILE}"]
    if saved is None:
        return []
    now = run_settings(cfg)
    changed = [] if saved.get("fit_sha256") == now["fit_sha256"] else ["data"]
    for section in ("model", "labels", "train"):
        old, new = saved.get(section) or {}, now[section]
        changed += [f"{section}.{k}" for k in differing(old, new)]
    return changed


def refuse_changes(checkpoints: Path, changed: list[str], what: str, job: str) -> None:
    """Stop a resume in one line that names what changed since the checkpoints were written (`what` they were
    written with; the `job` to start afresh instead); go on when nothing did."""
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise SettingsChanged(f"the checkpoints in {checkpoints} were written with other {what} (changed: {shown}); "
                              f"resume with the ones they were written with, or {job} from scratch without --resume")


def record_settings(checkpoints: Path, settings: dict[str, Any]) -> None:
    """Record beside a fresh run's checkpoints what they are written with, for a later resume to check."""
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / SETTINGS_FILE).write_text(json.dumps(settings, sort_keys=True) + "\n", encoding="utf-8")


def check_settings(checkpoints: Path, cfg: Config, resuming: bool) -> None:
    """On resume, refuse checkpoints written by another number of processes or with other settings or data; on a
    fresh start, remove an earlier run's checkpoints and record this run's settings."""
    if resuming:
        saved = _record(checkpoints)
        check_world_size(written_by(checkpoints, saved), checkpoints)
        refuse_changes(checkpoints, changed_settings(checkpoints, cfg, saved), "settings or data", "train")
        return
    stale = sorted(checkpoints.glob("checkpoint-*"))
    if stale:
        log.warning("%s: removing %d checkpoint(s) of an earlier run (train with --resume to continue it instead)",
                    checkpoints, len(stale))
        for ckpt in stale:
            shutil.rmtree(ckpt, ignore_errors=True)
    (checkpoints / LEGACY_WORLD_FILE).unlink(missing_ok=True)
    record_settings(checkpoints, run_settings(cfg))


def resumable(cfg: Config, kind: str = "transformer") -> bool:
    """Whether the model directory of `cfg` holds a complete checkpoint recorded as written with the same settings
    and data by as many processes, so that a job that was stopped can continue it with `train.resume=true`
    (benchmarks do)."""
    checkpoints = model_dir(cfg, kind) / CHECKPOINTS
    saved = _record(checkpoints)
    return saved is not None and complete_checkpoint(checkpoints) is not None \
        and not changed_settings(checkpoints, cfg, saved) and written_by(checkpoints, saved) == world_size()
