"""Training under torchrun (DDP, gloo on CPU): rank 0 alone locks, tracks, evaluates and writes; the loss is on
the scale of one process; a resume with another number of processes fails in one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, write_jsonl

from pipeline.artifacts import model_dir
from pipeline.checkpoints import LEGACY_WORLD_FILE, SETTINGS_FILE, check_settings, written_by
from pipeline.cli import main, resume_command
from pipeline.data import load_split
from pipeline.distributed import WorldSizeChanged, lead, threads
from pipeline.evaluate import evaluate
from pipeline.finetune import StopCallback
from pipeline.jobs import StopSignals, exclusive
from pipeline.train import KIND, train

DDP = ("train.epochs=2", "train.logging_steps=1", "train.keep_checkpoints=true")


def torchrun_command(nproc: int, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """`torchrun --standalone --nproc_per_node N -m pipeline …` with this checkout on the path, over loopback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "TOKENIZERS_PARALLELISM": "false"}
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "pipeline", *args], env


def torchrun(nproc: int, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run torchrun to the end."""
    cmd, env = torchrun_command(nproc, args)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def first_loss(history: list[dict]) -> float:
    """The first logged training loss."""
    return next(h["loss"] for h in history if "loss" in h)


@pytest.mark.slow  # torchrun, 2 processes: `make test-slow`, run by CI
def test_two_processes_train_one_model_in_one_run(cfg_tiny, tmp_path, capsys):
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = cfg_tiny.prepared(*DDP)
    proc = torchrun(2, ["train", *cfg_tiny.args(*DDP, "tracking.enabled=true", f"tracking.uri={store}")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("model directory:") == 1  # rank 0 alone reports

    models = [p for p in (tmp_path / "models").iterdir()]
    assert len(models) == 1 and models[0].is_dir()  # one model directory, no lock left behind
    out = models[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["effective_batch_size"] == 2 * cfg.train.batch_size
    assert json.loads((out / "checkpoints" / SETTINGS_FILE).read_text())["world_size"] == 2

    test_file = write_jsonl(tmp_path / "test.jsonl", load_split(cfg, "test"))
    _, again = evaluate(out, test_file, tmp_path / "eval")
    for key in ("accuracy", "macro_f1", "weighted_f1"):
        assert again[key] == pytest.approx(metrics["test"][key])

    client = mlflow.MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.effective_batch_size"] == str(2 * cfg.train.batch_size)
    assert runs[0].data.params["train.world_size"] == "2"

    single = train(cfg_tiny(*DDP, f"output_dir={tmp_path / 'single'}"))
    one, two = first_loss(single.metrics["history"]), first_loss(metrics["history"])
    assert two == pytest.approx(one, rel=0.3)  # a mean over both ranks, not their sum
    assert json.loads((single.model_dir / "checkpoints" / SETTINGS_FILE).read_text())["world_size"] == 1

    # the kept checkpoints were written by 2 processes: resuming them in one fails in one line
    capsys.readouterr()
    assert main(["train", *cfg_tiny.args(*DDP, "train.resume=true")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "written by 2 process(es), this run has 1" in err


@pytest.mark.slow  # torchrun, 2 processes: `make test-slow`, run by CI
def test_a_busy_model_directory_stops_both_ranks_in_one_line_each(cfg_tiny):
    out = model_dir(cfg_tiny.prepared(), KIND)
    with exclusive(out, "model directory"):  # rank 0 alone takes the lock: rank 1 must not fail on it first
        proc = torchrun(2, ["train", *cfg_tiny.args("train.ddp_timeout=120")])
    assert proc.returncode != 0
    busy = f"another process (pid {os.getpid()}) is writing this model directory"
    message = f"{out}: {busy}; wait for it to finish or stop it (lock: {out}.lock)"
    # the ranks share one stderr, so their lines may interleave: count the messages, not the lines
    assert proc.stderr.count(f"error: {message}") == 1 and proc.stderr.count(f"error: rank 0 failed: {message}") == 1
    assert proc.stderr.count("error: ") == 2
    assert not out.exists()
    assert "exitcode  : 75" in proc.stderr and "exitcode  : 2" not in proc.stderr  # both ranks exit as Busy


@pytest.mark.slow  # torchrun, 2 processes: `make test-slow`, run by CI
def test_sigterm_to_torchrun_stops_every_rank_at_one_checkpoint(cfg_tiny, tmp_path):
    cfg = cfg_tiny.prepared("train.epochs=500")
    checkpoints = model_dir(cfg, KIND) / "checkpoints"
    cmd, env = torchrun_command(2, ["train", *cfg_tiny.args("train.epochs=500", "train.ddp_timeout=120")])
    with (tmp_path / "torchrun.log").open("w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 300
            while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint after 300 s"
                time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)  # neither rank waits forever in a collective the other left
        finally:
            if proc.poll() is None:
                proc.kill()
        log.seek(0)
        stopped = re.findall(r"error: SIGTERM: training stopped at step (\d+)", log.read())
    assert len(stopped) == 2 and stopped[0] == stopped[1], stopped  # both ranks, at the same step
    assert (checkpoints / f"checkpoint-{stopped[0]}" / "trainer_state.json").is_file()
    assert not (checkpoints.parent / "metrics.json").exists()


@pytest.mark.parametrize("record", [SETTINGS_FILE, LEGACY_WORLD_FILE])  # the record, and what older runs kept
def test_resume_with_another_world_size_fails_in_one_line(cfg_tiny, capsys, record):
    cfg = cfg_tiny.prepared()
    checkpoints = model_dir(cfg, KIND) / "checkpoints"
    (checkpoints / "checkpoint-7").mkdir(parents=True)
    (checkpoints / "checkpoint-7" / "trainer_state.json").write_text("{}")  # complete, as far as resume can tell
    (checkpoints / record).write_text('{"world_size": 4}')
    capsys.readouterr()
    assert main(["train", *cfg_tiny.args("--resume")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the checkpoints in {checkpoints} were written by 4 process(es), this run has 1; resume "
                   "with --nproc_per_node 4 (or without torchrun for 1), or train from scratch without --resume"]


def test_checkpoints_of_one_process_refuse_two(cfg_tiny, monkeypatch):
    cfg = cfg_tiny.prepared()
    checkpoints = model_dir(cfg, KIND) / "checkpoints"
    (checkpoints / "checkpoint-3").mkdir(parents=True)  # written before any record was kept: by one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(WorldSizeChanged, match="written by 1 process"):
        check_settings(checkpoints, cfg, resuming=True)
    assert written_by(checkpoints) == 1
    (checkpoints / LEGACY_WORLD_FILE).write_text('{"world_size": 4}')  # an earlier run's record goes on a fresh start
    check_settings(checkpoints, cfg, resuming=False)
    assert not (checkpoints / LEGACY_WORLD_FILE).exists()
    assert json.loads((checkpoints / SETTINGS_FILE).read_text())["world_size"] == 2 == written_by(checkpoints)
    check_settings(checkpoints, cfg, resuming=True)
    (checkpoints / SETTINGS_FILE).write_text("[")
    with pytest.raises(WorldSizeChanged, match="unreadable; cannot tell how many processes"):
        check_settings(checkpoints, cfg, resuming=True)


def test_threads_share_the_cores_between_processes(monkeypatch):
    assert threads(None) is None and threads(3) == 3  # one process: torch's default, or as configured
    monkeypatch.setenv("WORLD_SIZE", "64")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert threads(None) == max(1, len(os.sched_getaffinity(0)) // 64) and threads(2) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert threads(None) == len(os.sched_getaffinity(0))


def test_one_process_leads_itself():
    assert lead(lambda: Path("x")) == Path("x")


class _Control:
    should_save = should_training_stop = False


def test_a_stop_on_any_rank_stops_every_rank():
    stop = StopSignals("stopping")
    quiet = StopCallback(stop, agree=lambda flag: flag)
    assert not quiet.on_step_end(None, None, _Control()).should_training_stop
    peer_stopped = StopCallback(stop, agree=lambda flag: True)  # the all-reduce says another rank got a signal
    control = peer_stopped.on_step_end(None, None, _Control())
    assert control.should_save and control.should_training_stop
    assert stop.signum is not None  # so this rank raises Interrupted after the checkpoint, like its peer


def test_the_resume_command_under_torchrun_keeps_the_process_count(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resume_command(["train", "-c", "a.yaml"]) == \
        "torchrun --standalone --nproc_per_node=2 -m pipeline train -c a.yaml --resume"
