import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT, make_corpus, write_jsonl

from pipeline.autoruntime import native_bf16
from pipeline.cli import main
from pipeline.predict import PredictJob, predict
from pipeline.sinks import JsonlSink


@pytest.fixture(scope="module")
def model_dir(trained) -> Path:
    return trained[1].model_dir


@pytest.fixture(scope="module")
def dump(corpus) -> list[dict]:
    rows = make_corpus(per_label=6, seed=7)
    return [{"url": f"https://news.example/{i}", "title": r["title"], "text": r["text"]} for i, r in enumerate(rows)]


def _run(model_dir, inp, out, *extra) -> int:
    return main(["predict", "--model", str(model_dir), "--input", str(inp), "--output", str(out), "--quiet",
                 "--id-field", "url", *extra])


def _same(got: list[dict], want: list[dict]) -> bool:
    """Rows equal up to float noise: batch composition changes the last bits of a matmul, nothing else."""
    def key(r):
        return r["id"], r["line"], r["label"], r["error"], [t["label"] for t in r["top"]]

    return [key(r) for r in got] == [key(r) for r in want] and all(
        abs(a["confidence"] - b["confidence"]) < 1e-5 for a, b in zip(got, want, strict=True) if a["label"])


def _read(path: Path) -> list[dict]:
    """Output rows in JSONL's shape, whatever the format."""
    if path.suffix == ".parquet":
        rows = pd.read_parquet(path).to_dict("records")
        return [{**r, "top": [dict(t) for t in r["top"]], "flags": list(r["flags"])} for r in rows]
    if path.suffix == ".csv":
        rows = pd.read_csv(path, dtype={"id": str, "error": str, "label": str}, keep_default_na=False)
        return [{**r, "top": json.loads(r["top"]), "flags": json.loads(r["flags"]), "error": r["error"] or None}
                for r in rows.to_dict("records")]
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_every_input_and_output_format(model_dir, dump, tmp_path):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    (tmp_path / "dump.jsonl.gz").write_bytes(gzip.compress(src.read_bytes()))
    pd.DataFrame(dump).to_csv(tmp_path / "dump.csv", index=False)
    pd.DataFrame(dump).to_parquet(tmp_path / "dump.parquet")
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, row in enumerate(dump):
        (folder / f"{i:04d}.json").write_text(json.dumps(row, ensure_ascii=False), encoding="utf-8")
    assert _run(model_dir, src, tmp_path / "ref.jsonl") == 0
    expected = [(r["id"], r["label"]) for r in _read(tmp_path / "ref.jsonl")]
    assert [e[0] for e in expected] == [r["url"] for r in dump]  # input order kept
    for name in ("dump.jsonl.gz", "dump.csv", "dump.parquet", "folder"):
        for ext in ("jsonl", "csv", "parquet"):
            out = tmp_path / f"{name}.{ext}"
            assert _run(model_dir, tmp_path / name, out) == 0, (name, ext)
            assert [(r["id"], r["label"]) for r in _read(out)] == expected, (name, ext)


def test_stdin_input(model_dir, dump, tmp_path):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    proc = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--model", str(model_dir), "--input", "-",
                           "--output", str(tmp_path / "o.jsonl"), "--id-field", "url", "--quiet"],
                          input=src.read_bytes(), capture_output=True, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert len(_read(tmp_path / "o.jsonl")) == len(dump)


def test_output_rows_carry_everything(model_dir, dump, tmp_path):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    assert _run(model_dir, src, tmp_path / "o.jsonl", "--top-k", "3") == 0
    row = _read(tmp_path / "o.jsonl")[0]
    assert set(row) == {"id", "line", "label", "confidence", "needs_review", "flags", "top", "model", "error"}
    assert len(row["top"]) == 3 and row["top"][0]["label"] == row["label"]
    assert row["top"][0]["prob"] >= row["top"][1]["prob"] >= row["top"][2]["prob"]
    assert row["model"].startswith(model_dir.name + "@") and row["error"] is None


def test_threshold_drives_needs_review(model_dir, dump, tmp_path):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    for t in (0.0, 0.5, 0.9, 1.0):
        _run(model_dir, src, tmp_path / f"t{t}.jsonl", "--threshold", str(t))
        rows = _read(tmp_path / f"t{t}.jsonl")
        assert all(("low_confidence" in r["flags"]) == (r["confidence"] < t) for r in rows)
        assert all(r["needs_review"] == bool(r["flags"] or r["error"]) for r in rows)
    assert not any(r["needs_review"] for r in _read(tmp_path / "t0.0.jsonl"))


def test_threshold_out_of_range(model_dir, dump, tmp_path, capsys):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    assert _run(model_dir, src, tmp_path / "o.jsonl", "--threshold", "1.5") == 2
    assert "--threshold 1.5: expected a confidence between 0 and 1" in capsys.readouterr().err


def test_bad_inputs_get_error_codes_and_the_rest_is_classified(model_dir, dump, tmp_path):
    good = [json.dumps(r, ensure_ascii=False).encode() for r in dump[:4]]
    huge = json.dumps({"url": "huge", "text": "الجيش يقصف المدينة " * 600_000}).encode()  # ~11 MB
    lines = [good[0], b"{not json", good[1], b'{"url": "no-text", "body": "x"}',
             b'{"url": "bad-bytes", "text": "\xff\xfe broken"}', huge, b'{"url": "empty", "title": "", "text": " "}',
             b'{"url": "english", "title": "Breaking", "text": "The army said on Monday that the talks failed."}',
             good[2], good[3]]
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    assert _run(model_dir, src, tmp_path / "o.jsonl") == 0
    rows = {r["line"]: r for r in _read(tmp_path / "o.jsonl")}
    assert sorted(rows) == list(range(1, 11))  # one row per input line
    assert [rows[i]["error"] for i in range(1, 11)] == [
        None, "invalid_json", None, "missing_text", "invalid_utf8", "too_long", "empty_text", None, None, None]
    assert rows[6]["label"] is not None and "cut_heavily" in rows[6]["flags"]
    assert "not_arabic" in rows[8]["flags"] and rows[8]["needs_review"]
    assert all(rows[i]["label"] for i in (1, 3, 9, 10))
    errors = [json.loads(x) for x in (tmp_path / "o.jsonl.errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["error"]) for e in errors] == [
        (2, "invalid_json"), (4, "missing_text"), (5, "invalid_utf8"), (6, "too_long"), (7, "empty_text")]


# Runs compared to float precision pin the torch runtime: ONNX Runtime's fused attention and dynamic int8 (which
# `auto` may pick) round differently when padding or batch composition change, as shards and resumes do.
TORCH = ("--runtime", "torch")


def test_shards_together_equal_the_whole(model_dir, dump, tmp_path):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    _run(model_dir, src, tmp_path / "all.jsonl", *TORCH)
    parts = []
    for i in range(3):
        _run(model_dir, src, tmp_path / f"s{i}.jsonl", "--shard", f"{i}/3", *TORCH)
        parts += _read(tmp_path / f"s{i}.jsonl")
    whole = _read(tmp_path / "all.jsonl")
    assert _same(sorted(parts, key=lambda r: r["line"]), whole)
    assert len({r["id"] for r in parts}) == len(whole)


def test_existing_output_is_never_clobbered(model_dir, dump, tmp_path, capsys):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    out = tmp_path / "o.jsonl"
    out.write_text("precious\n")
    assert _run(model_dir, src, out) == 2
    assert "exists; pass --resume to continue it or --overwrite to replace it" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert _run(model_dir, src, out, "--overwrite") == 0
    assert len(_read(out)) == len(dump)


def test_resume_discards_a_partial_row_and_adds_nothing_twice(model_dir, dump, tmp_path):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    _run(model_dir, src, tmp_path / "full.jsonl", *TORCH)
    full = (tmp_path / "full.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp_path / "cut.jsonl"
    out.write_text("".join(full[:10]) + full[10][: len(full[10]) // 2], encoding="utf-8")  # died mid-row
    assert JsonlSink(out).recover() == json.loads(full[9])["line"]
    assert out.read_text(encoding="utf-8") == "".join(full[:10])  # the cut row is gone, the rest untouched
    assert _run(model_dir, src, out, "--resume", *TORCH) == 0
    assert _same(_read(out), [json.loads(x) for x in full])


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(model_dir, tmp_path, ext):
    rows = make_corpus(per_label=300, seed=3)  # 2,100 rows in windows of 16
    src = write_jsonl(tmp_path / "big.jsonl", [{"url": f"u{i}", **r} for i, r in enumerate(rows)])
    out = tmp_path / f"o.{ext}"
    cmd = [sys.executable, "-m", "pipeline", "predict", "--model", str(model_dir), "--input", str(src),
           "--output", str(out), "--id-field", "url", "--window", "16", "--quiet", "--threads", "1", *TORCH]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out if ext != "parquet" else Path(str(out) + ".parts")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        size = sum(p.stat().st_size for p in progress.glob("*")) if progress.is_dir() else \
            (progress.stat().st_size if progress.exists() else 0)
        if size > 20_000:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if ext == "parquet":
        assert not out.exists() and any(progress.glob("part-*.parquet"))  # killed before finalising
    else:
        assert 0 < out.read_bytes().count(b"\n") < len(rows)  # killed mid-run, not after it
    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = tmp_path / f"ref.{ext}"
    subprocess.run([*cmd[:9], str(reference), *cmd[10:]], cwd=ROOT, check=True)
    got, want = _read(out), _read(reference)
    assert len(got) == len(rows) and len({r["id"] for r in got}) == len(rows)
    assert _same(got, want)


@pytest.mark.parametrize(("flags", "tag"), [
    (["--quantize", "int8"], "+int8"), (["--precision", "bf16"], "+bf16"), (["--runtime", "onnx"], "+onnx"),
    (["--runtime", "onnx", "--quantize", "int8"], "+onnx-int8")])
def test_faster_runtimes_agree_with_float(model_dir, dump, tmp_path, capsys, flags, tag):
    if "onnx" in flags:
        pytest.importorskip("onnxruntime")
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    _run(model_dir, src, tmp_path / "f.jsonl")
    if "bf16" in flags and not native_bf16():  # an AVX2 machine: emulated bf16 is refused, not run slowly
        assert _run(model_dir, src, tmp_path / "q.jsonl", *flags) == 2
        assert "this CPU has no native bf16" in capsys.readouterr().err and not (tmp_path / "q.jsonl").exists()
        return
    assert _run(model_dir, src, tmp_path / "q.jsonl", *flags, "--min-agreement", "0.9") == 0
    assert f"{tag[1:]}: label agreement with the float model on the first" in capsys.readouterr().err
    f, q = _read(tmp_path / "f.jsonl"), _read(tmp_path / "q.jsonl")
    assert sum(a["label"] == b["label"] for a, b in zip(f, q, strict=True)) / len(f) >= 0.9
    assert q[0]["model"].endswith(tag)


def test_runtime_refused_below_agreement(model_dir, dump, tmp_path, capsys):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    assert _run(model_dir, src, tmp_path / "q.jsonl", "--quantize", "int8", "--min-agreement", "1.01") == 2
    assert "use the default runtime" in capsys.readouterr().err
    assert not (tmp_path / "q.jsonl").exists()


def test_broken_model_directory_fails_at_start(model_dir, dump, tmp_path, capsys):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "labels.json", "pipeline.yaml"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    assert _run(broken, src, tmp_path / "o.jsonl") == 2
    assert capsys.readouterr().err == f"error: {broken}: incomplete model directory, missing model.safetensors\n"
    (broken / "pipeline.yaml").write_text("text: {remove_diacritics: sometimes}\n")
    assert _run(broken, src, tmp_path / "o.jsonl") == 2
    assert "config key 'text.remove_diacritics'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_input_is_one_line(model_dir, tmp_path, capsys):
    assert _run(model_dir, tmp_path / "nope.jsonl", tmp_path / "o.jsonl") == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.jsonl'}: input not found\n"


def test_programmatic_api(model_dir, dump, tmp_path):
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    summary = predict(PredictJob(model=str(model_dir), input=str(src), output=str(tmp_path / "o.csv"),
                                 progress=False), {"id_field": "url"})
    assert summary.rows == len(dump) and summary.errors == 0
    assert "docs/s" in summary.line("o.csv")


def test_flags_override_the_models_saved_predict_section(model_dir, dump, tmp_path):
    import shutil

    import yaml

    model = shutil.copytree(model_dir, tmp_path / "model")
    saved = yaml.safe_load((model / "pipeline.yaml").read_text(encoding="utf-8"))
    saved["predict"].update(threshold=1.0, top_k=2, id_field="url")
    (model / "pipeline.yaml").write_text(yaml.safe_dump(saved, allow_unicode=True), encoding="utf-8")
    src = write_jsonl(tmp_path / "dump.jsonl", dump)
    assert main(["predict", "--model", str(model), "--input", str(src), "--output", str(tmp_path / "a.jsonl"),
                 "--quiet"]) == 0
    rows = _read(tmp_path / "a.jsonl")
    assert all(len(r["top"]) == 2 and r["needs_review"] for r in rows)  # the saved section decides
    assert [r["id"] for r in rows] == [d["url"] for d in dump]
    assert _run(model, src, tmp_path / "b.jsonl", "--threshold", "0", "--top-k", "3") == 0
    assert all(len(r["top"]) == 3 and not r["needs_review"] for r in _read(tmp_path / "b.jsonl"))


def test_runtime_trials_never_read_a_pipe_twice(tmp_path):
    from pipeline.predict import first_texts

    fifo = tmp_path / "dump.jsonl"
    os.mkfifo(fifo)  # a named pipe, like stdin, yields its rows once: sampling them first would lose them
    assert first_texts(None, str(fifo)) is None
