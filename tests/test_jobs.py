"""Hard edges of long jobs: one writer per output or model directory, SIGINT/SIGTERM, and full disks."""

import errno
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, FirstStep, SignalAt, make_corpus, write_jsonl
from transformers import Trainer

from pipeline.artifacts import CHECKPOINTS
from pipeline.artifacts import model_dir as model_dir_of
from pipeline.cli import main, resume_command
from pipeline.data import load_split
from pipeline.jobs import Busy, Interrupted, StopSignals, exclusive
from pipeline.train import train

HOLD = "import sys, time\nfrom pipeline.jobs import exclusive\nwith exclusive(sys.argv[1], 'output'):\n" \
       "    print('held', flush=True)\n    time.sleep(120)\n"


@pytest.fixture(scope="module")
def model_dir(trained) -> Path:
    return trained[1].model_dir


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """2,100 rows: long enough for a job to be caught mid-run."""
    rows = make_corpus(per_label=300, seed=3)
    return write_jsonl(tmp_path_factory.mktemp("big") / "big.jsonl",
                       [{"url": f"u{i}", **r} for i, r in enumerate(rows)])


def _cmd(model_dir: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "predict", "--model", str(model_dir), "--input", str(src),
            "--output", str(out), "--id-field", "url", "--window", "16", "--quiet", "--threads", "1",
            "--runtime", "torch", *extra]  # float: a resumed run re-batches rows, which int8 would round differently


def _rows(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a row cut short is on disk"
    return [json.loads(x) for x in data.decode("utf-8").splitlines()]


def _ours(stderr: str) -> list[str]:
    """The pipeline's own closing lines, among library logs and progress bars; never a traceback."""
    assert "Traceback" not in stderr
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", stderr)  # progress bars move the cursor
    return [x.strip() for x in re.split(r"[\r\n]+", plain) if x.strip().startswith(("error:", "to continue:"))]


def _wait_for(predicate, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before the test could catch it mid-run"


@pytest.fixture(scope="module")
def reference(model_dir, big) -> list[dict]:
    """The big dump classified in one uninterrupted run."""
    ref = big.with_name("reference.jsonl")
    subprocess.run(_cmd(model_dir, big, ref), cwd=ROOT, check=True, capture_output=True)
    return _rows(ref)


def _same(got: list[dict], want: list[dict]) -> None:
    assert [(r["id"], r["line"], r["label"]) for r in got] == [(r["id"], r["line"], r["label"]) for r in want]
    assert all(abs(a["confidence"] - b["confidence"]) < 1e-5 for a, b in zip(got, want, strict=True))


def test_lock_is_exclusive_names_the_holder_and_outlives_a_kill_9(tmp_path):
    target = tmp_path / "out.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = rf"out.jsonl: another process \(pid {holder.pid}\) is writing this output"
        with pytest.raises(Busy, match=busy), exclusive(target, "output"):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert Path(f"{target}.lock").exists()  # kill -9 left the file, but the kernel dropped the lock with the holder
    with exclusive(target, "output") as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


def _open_fifo_writer(fifo: Path, reader: subprocess.Popen) -> int:
    """Open a FIFO for writing once the job opened it for reading (a non-blocking open fails until then)."""
    deadline = time.time() + 120
    while time.time() < deadline and reader.poll() is None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            time.sleep(0.05)
    raise AssertionError("the job never opened its input")


def test_second_predict_on_one_output_stops_and_the_first_writes_every_row_once(model_dir, big, tmp_path):
    fifo, out = tmp_path / "dump.jsonl", tmp_path / "o.jsonl"
    os.mkfifo(fifo)  # the first job reads from the test, so it is surely still writing when the others start
    first = subprocess.Popen(_cmd(model_dir, fifo, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    rows = big.read_bytes().splitlines(keepends=True)
    fd = _open_fifo_writer(fifo, first)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as feed:
        feed.write(b"".join(rows[:1000]))
        feed.flush()
        _wait_for(lambda: out.exists() and out.stat().st_size > 0, first)
        for extra in ((), ("--overwrite",), ("--resume",)):
            second = subprocess.run(_cmd(model_dir, big, out, *extra), cwd=ROOT, capture_output=True, text=True)
            assert second.returncode == 75
            assert second.stderr.strip().splitlines() == [
                f"error: {out}: another process (pid {first.pid}) is writing this output; wait for it to finish or "
                f"stop it (lock: {out}.lock)"]
        feed.write(b"".join(rows[1000:]))
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    got = _rows(out)
    assert len(got) == 2100 and len({r["id"] for r in got}) == 2100
    assert not Path(f"{out}.lock").exists()


def test_train_refuses_a_model_directory_another_process_writes(cfg_tiny, capsys):
    target = model_dir_of(cfg_tiny.prepared(), "transformer")
    with exclusive(target, "model directory"):
        code = main(["train", *cfg_tiny.args()])
    assert code == 75
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {target}: another process (pid {os.getpid()}) is writing this model directory; wait for "
                   f"it to finish or stop it (lock: {target}.lock)"]
    assert not target.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_window_and_the_printed_command_resumes(model_dir, big, reference, tmp_path, sig):
    out = tmp_path / "o.jsonl"
    proc = subprocess.Popen(_cmd(model_dir, big, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(lambda: out.exists() and out.stat().st_size > 20_000, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    lines = _ours(err)
    rows = _rows(out)
    assert 0 < len(rows) < 2100 and len(rows) % 16 == 0  # whole windows only
    assert lines[-2] == (f"error: {signal.Signals(sig).name}: stopped after {len(rows)} rows; {out} is complete "
                         f"through input line {rows[-1]['line']}")
    assert lines[-1].startswith("to continue: pipeline predict ") and lines[-1].endswith(" --resume")
    resumed = subprocess.run([sys.executable, "-m", *shlex.split(lines[-1].removeprefix("to continue: "))],
                             cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _same(_rows(out), reference)


def _file_size_limit(nbytes: int):
    """A child whose files cannot grow past `nbytes`: writes fail with EFBIG, as on a full disk."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


def test_full_disk_stops_in_one_line_and_resume_completes(model_dir, big, reference, tmp_path):
    out = tmp_path / "o.jsonl"
    full = subprocess.run(_cmd(model_dir, big, out), cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=_file_size_limit(60_000))
    assert full.returncode == 74
    rows = _rows(out)  # the row the fault cut short is gone
    first, second = _ours(full.stderr)
    assert first == (f"error: writing {out}: File too large; {len(rows)} rows written by this run, the output is "
                     f"complete through input line {rows[-1]['line']}; free space, then rerun with --resume")
    assert second.startswith("to continue: ") and "Traceback" not in full.stderr
    resumed = subprocess.run(_cmd(model_dir, big, out, "--resume"), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _same(_rows(out), reference)


def test_full_disk_while_merging_parquet_keeps_the_parts(model_dir, big, tmp_path):
    import pandas as pd

    out = tmp_path / "o.parquet"
    full = subprocess.run(_cmd(model_dir, big, out), cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=_file_size_limit(60_000))  # each part fits; the merged file does not
    assert full.returncode == 74
    first = _ours(full.stderr)[0]
    assert first.startswith(f"error: finishing {out}: ") and "File too large" in first  # pyarrow's own wording
    assert first.endswith("; every row is written; rerun with --resume to finish the output")
    assert not out.exists() and not Path(f"{out}.tmp").exists() and any(Path(f"{out}.parts").glob("part-*"))
    resumed = subprocess.run(_cmd(model_dir, big, out, "--resume"), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert pd.read_parquet(out)["id"].tolist() == [f"u{i}" for i in range(2100)]


def _status(uri: str) -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["fixture"], order_by=["start_time"])["status"].tolist()


def test_sigterm_in_training_checkpoints_marks_the_run_killed_and_resume_continues(cfg_tiny, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = ("train.epochs=3", "tracking.enabled=true", f"tracking.uri={uri}")
    cfg = cfg_tiny.prepared(*tracked)
    with pytest.raises(Interrupted, match=r"SIGTERM: training stopped at step 3") as stopped:
        train(cfg, callbacks=[SignalAt(3, signal.SIGTERM)])
    assert stopped.value.exit_code == 143 and stopped.value.resumable
    assert (model_dir_of(cfg, "transformer") / CHECKPOINTS / "checkpoint-3/trainer_state.json").is_file()
    assert _status(uri) == ["KILLED"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers were put back
    probe = FirstStep()
    resumed = train(cfg_tiny(*tracked, "train.resume=true"), callbacks=[probe])
    assert probe.first == 4  # continued after the checkpoint, not from the start
    assert max(h["epoch"] for h in resumed.metrics["history"]) == 3
    assert _status(uri) == ["KILLED", "FINISHED"]


def test_full_disk_while_checkpointing_is_one_line_and_resume_uses_the_last_complete_one(cfg_tiny, monkeypatch,
                                                                                          capsys):
    real, calls = Trainer._save_rng_state, []

    def failing(self, output_dir):  # the second checkpoint dies half-written: weights saved, no trainer state
        calls.append(output_dir)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", f"{output_dir}/rng_state.pth")
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", failing)
    cfg = cfg_tiny.prepared("train.epochs=3")
    steps = -(-len(load_split(cfg, "train")) // 8)
    assert main(["train", *cfg_tiny.args("train.epochs=3")]) == 74
    err = _ours(capsys.readouterr().err)
    checkpoints = model_dir_of(cfg, "transformer") / CHECKPOINTS
    assert err[0] == (f"error: training into {checkpoints.parent} ({checkpoints}/checkpoint-{2 * steps}/rng_state.pth)"
                      f": No space left on device; the last complete checkpoint is checkpoint-{steps}; free space, "
                      "then rerun with --resume")
    assert err[1].startswith("to continue: pipeline train ") and len(err) == 2
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == [f"checkpoint-{steps}"]  # the cut one is gone
    monkeypatch.undo()
    probe = FirstStep()
    train(cfg_tiny("train.epochs=3", "train.resume=true"), callbacks=[probe])
    assert probe.first == steps + 1


def test_full_store_leaves_a_complete_model_directory(cfg_tiny, tmp_path, monkeypatch, capsys):
    from pipeline.scoring import load_scorer
    from pipeline.tracking import Tracker

    def full(self, model_dir, exclude=()):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "mlartifacts"))

    monkeypatch.setattr(Tracker, "log_model", full)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg_tiny.prepared()
    assert main(["baseline", *cfg_tiny.args("tracking.enabled=true", f"tracking.uri={uri}")]) == 74
    err = _ours(capsys.readouterr().err)
    out = tmp_path / "models/fixture-tfidf-logreg"
    assert err == [f"error: logging the run to MLflow ({tmp_path / 'mlartifacts'}): No space left on device; the "
                   f"model directory {out} is complete and usable; free space in the tracking store before the next "
                   "run"]
    assert _status(uri) == ["FAILED"]
    assert load_scorer(out).score(["اعتقال خلية"])[0].shape == (1, 7)


def test_on_disk_fault_says_what_is_safe_and_lets_other_errors_through(tmp_path):
    from pipeline.jobs import DiskError, on_disk_fault

    looked = []
    full = r"^writing x \(/full/f\): No space left on device; 3 rows kept$"
    with pytest.raises(DiskError, match=full) as caught, \
            on_disk_fault("writing x", lambda: (looked.append(1) or "3 rows kept", True)):
        raise OSError(errno.ENOSPC, "No space left on device", "/full/f")
    assert caught.value.resumable and looked == [1]
    with pytest.raises(FileNotFoundError), \
            on_disk_fault("writing x", lambda: looked.append(2) or ("never", False)):  # not the disk's fault
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "nope"))
    assert looked == [1]  # the state is looked at only when the disk failed
    with pytest.raises(DiskError, match="read-only") as caught, on_disk_fault("logging", "the directory is whole"):
        raise OSError(errno.EROFS, "read-only file system")
    assert not caught.value.resumable


def test_stop_signals_defer_the_first_signal_and_stop_at_the_second():
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when started in the background
    with StopSignals("finishing") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.signum == signal.SIGINT  # recorded, nothing raised: the job decides when to stop
        with pytest.raises(Interrupted, match="SIGINT again: stopped at once") as now:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert now.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before  # the handler found on entry is back


def test_resume_command_adds_resume_and_drops_overwrite():
    assert resume_command(["predict", "--model", "m dir", "--output", "o.jsonl", "--overwrite"]) == \
        "pipeline predict --model 'm dir' --output o.jsonl --resume"
    assert resume_command(["train", "-c", "a.yaml", "--resume"]) == "pipeline train -c a.yaml --resume"
