"""A fine-tune's checkpoints resume only the run that wrote them: other settings or data fail in one line that
names what changed, a fresh start clears an earlier run's checkpoints, and benchmarks continue a stopped fine-tune."""

import json

import pytest

from pipeline.artifacts import CHECKPOINTS, model_dir
from pipeline.checkpoints import (
    SETTINGS_FILE,
    SettingsChanged,
    changed_settings,
    check_settings,
    complete_checkpoint,
    differing,
    resumable,
)
from pipeline.cli import main
from pipeline.data import processed_dir

KIND = "transformer"


def _checkpoint(checkpoints, step):
    (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
    (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")  # complete, as far as resume can tell


def test_differing_names_the_keys_of_two_records_that_differ():
    old, new = {"lr": 1, "steps": 2, "gone": 0}, {"lr": 1, "steps": 3, "new": 5}
    assert differing(old, new) == ["gone", "new", "steps"]  # sorted; a key on one side only differs
    assert differing(old, new, ["steps", "lr"]) == ["steps"]  # only the keys asked for, in their order
    assert differing(old, dict(old)) == []


def test_settings_name_what_changed(cfg_tiny):
    cfg = cfg_tiny.prepared()
    checkpoints = model_dir(cfg, KIND) / CHECKPOINTS
    check_settings(checkpoints, cfg, resuming=False)
    assert json.loads((checkpoints / SETTINGS_FILE).read_text())["fit_sha256"]
    assert changed_settings(checkpoints, cfg) == []
    # how a run is carried out may change between a stop and a resume; what it learns may not
    assert changed_settings(checkpoints, cfg_tiny("train.threads=1", "train.keep_checkpoints=true",
                                                  "train.ensemble_criterion=macro_f1")) == []
    assert changed_settings(checkpoints, cfg_tiny("train.learning_rate=0.001", "model.max_length=32")) == \
        ["model.max_length", "train.learning_rate"]
    with pytest.raises(SettingsChanged, match=r"other settings or data \(changed: train\.learning_rate\); resume"):
        check_settings(checkpoints, cfg_tiny("train.learning_rate=0.001"), resuming=True)
    train_file = processed_dir(cfg) / "train.jsonl"
    train_file.write_text("\n".join(train_file.read_text().splitlines()[1:]) + "\n")  # one article fewer
    assert changed_settings(checkpoints, cfg) == ["data"]


def test_checkpoints_from_before_the_record_still_resume(cfg_tiny):
    cfg = cfg_tiny.prepared()
    checkpoints = model_dir(cfg, KIND) / CHECKPOINTS
    _checkpoint(checkpoints, 4)
    check_settings(checkpoints, cfg, resuming=True)  # no settings.json: written before settings were kept
    assert not resumable(cfg)  # ...but a benchmark does not continue a run it cannot vouch for


def test_a_fresh_start_removes_an_earlier_runs_checkpoints(cfg_tiny):
    cfg = cfg_tiny.prepared()
    checkpoints = model_dir(cfg, KIND) / CHECKPOINTS
    _checkpoint(checkpoints, 9)
    check_settings(checkpoints, cfg, resuming=False)
    assert complete_checkpoint(checkpoints) is None  # a later resume cannot pick up the earlier run's step 9
    assert (checkpoints / SETTINGS_FILE).is_file()


def test_resumable_wants_a_complete_checkpoint_with_the_same_settings(cfg_tiny):
    cfg = cfg_tiny.prepared()
    checkpoints = model_dir(cfg, KIND) / CHECKPOINTS
    check_settings(checkpoints, cfg, resuming=False)
    assert not resumable(cfg)  # nothing to continue yet
    _checkpoint(checkpoints, 3)
    (checkpoints / "checkpoint-6").mkdir()  # cut short by a kill: no trainer state
    assert resumable(cfg)
    assert not (checkpoints / "checkpoint-6").exists()
    assert not resumable(cfg_tiny("train.batch_size=4"))  # the same model directory, another run


def test_a_resume_reads_the_record_once(cfg_tiny, monkeypatch):
    import pipeline.checkpoints as ckpt

    cfg = cfg_tiny.prepared()
    checkpoints = model_dir(cfg, KIND) / CHECKPOINTS
    check_settings(checkpoints, cfg, resuming=False)
    _checkpoint(checkpoints, 3)
    read, real = [], ckpt.read_record
    monkeypatch.setattr(ckpt, "read_record", lambda record: read.append(record.name) or real(record))
    assert resumable(cfg)
    check_settings(checkpoints, cfg, resuming=True)
    assert read == [SETTINGS_FILE, SETTINGS_FILE]  # once for each, world size and settings from the same read


def test_a_resume_with_other_settings_fails_in_one_line(cfg_tiny, capsys):
    # (a learning rate or epoch count of its own names another model directory: tiny-...-lr0.001-ep1)
    cfg = cfg_tiny.prepared()
    checkpoints = model_dir(cfg, KIND) / CHECKPOINTS
    check_settings(checkpoints, cfg, resuming=False)
    _checkpoint(checkpoints, 3)
    capsys.readouterr()
    assert main(["train", *cfg_tiny.args("train.warmup_ratio=0.2", "train.weight_decay=0.1", "--resume")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: the checkpoints in {checkpoints} were written with other settings or data (changed: "
        "train.warmup_ratio, train.weight_decay); resume with the ones they were written with, or train from scratch "
        "without --resume"]
    assert complete_checkpoint(checkpoints) == checkpoints / "checkpoint-3"  # nothing was lost
