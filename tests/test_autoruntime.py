"""`--runtime auto`: a timed trial picks a runtime that agrees with float, the choice is cached per weights and CPU,
and bf16 is neither chosen nor accepted on a CPU that would emulate it."""

import io
import json
import shutil
import types

import pytest
from helpers import make_corpus, write_jsonl

from pipeline import autoruntime
from pipeline.artifacts import read_info
from pipeline.cli import main

AVX2_ONLY = "processor\t: 0\nmodel name\t: Fake AVX2 CPU\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma\n"
AVX512 = "model name\t: Fake Server CPU\nflags\t\t: fpu avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16\n"


@pytest.fixture
def model(trained, tmp_path):
    """A private copy of the session's tiny model: its cache file is this test's alone."""
    return shutil.copytree(trained[1].model_dir, tmp_path / "model", ignore=shutil.ignore_patterns(
        autoruntime.CHOICE_FILE))


@pytest.fixture
def src(tmp_path):
    rows = make_corpus(per_label=6, seed=7)
    return write_jsonl(tmp_path / "dump.jsonl", [{"url": f"u{i}", **r} for i, r in enumerate(rows)])


@pytest.fixture
def trials(monkeypatch):
    """Counts the timed trials that run."""
    calls = []
    real = autoruntime.trial

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(autoruntime, "trial", counted)
    return calls


def _run(model, inp, out, *extra) -> int:
    return main(["predict", "--model", str(model), "--input", str(inp), "--output", str(out), "--quiet",
                 "--id-field", "url", *extra])


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _choice(model) -> dict:
    return json.loads((model / autoruntime.CHOICE_FILE).read_text(encoding="utf-8"))


def test_auto_picks_an_agreeing_runtime_caches_it_and_the_next_run_skips_the_trial(model, src, tmp_path, capsys,
                                                                                   trials):
    assert _run(model, src, tmp_path / "float.jsonl", "--runtime", "torch") == 0
    assert _run(model, src, tmp_path / "auto.jsonl") == 0
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("runtime auto: ")]
    assert len(trials) == 1 and len(line) == 1 and "the float model on the first" in line[0]
    saved = _choice(model)
    assert saved["weights_sha256"] == read_info(model)["weights_sha256"]
    assert saved["cpu"] == autoruntime.cpu_signature(None)
    assert saved["choice"] in {autoruntime.FLOAT, *autoruntime.CANDIDATES} and saved["agreement"] >= 0.97
    assert line[0].startswith(f"runtime auto: {saved['choice']} on {autoruntime.cpu_class()}, ")
    auto, ref = _rows(tmp_path / "auto.jsonl"), _rows(tmp_path / "float.jsonl")
    agree = sum(a["label"] == b["label"] for a, b in zip(auto, ref, strict=True)) / len(ref)
    assert agree >= 0.97  # the whole dump is within the first 64 documents the choice was checked on
    tag = {"torch fp32": "", "torch int8": "+int8", "torch bf16": "+bf16", "onnx fp32": "+onnx",
           "onnx int8": "+onnx-int8"}[saved["choice"]]
    assert auto[0]["model"] == ref[0]["model"] + tag

    assert _run(model, src, tmp_path / "again.jsonl") == 0
    err = capsys.readouterr().err
    assert len(trials) == 1  # no second trial
    assert f"runtime auto: {saved['choice']}, cached for this model and CPU in {model / 'runtime_choice.json'}" in err
    assert [r["model"] for r in _rows(tmp_path / "again.jsonl")] == [r["model"] for r in auto]


def test_a_new_cpu_or_new_weights_invalidate_the_cache(model, src, tmp_path, monkeypatch, trials):
    assert _run(model, src, tmp_path / "a.jsonl") == 0
    assert _run(model, src, tmp_path / "b.jsonl") == 0
    assert len(trials) == 1
    monkeypatch.setattr(autoruntime, "cpuinfo", lambda: AVX512)  # another CPU
    assert _run(model, src, tmp_path / "c.jsonl") == 0
    assert len(trials) == 2 and _choice(model)["cpu"]["cpu"] == "Fake Server CPU"
    info = json.loads((model / "model_info.json").read_text())
    (model / "model_info.json").write_text(json.dumps({**info, "weights_sha256": "0" * 64}))  # other weights
    assert _run(model, src, tmp_path / "d.jsonl") == 0
    assert len(trials) == 3 and _choice(model)["weights_sha256"] == "0" * 64


def test_read_choice_matches_weights_cpu_and_agreement(tmp_path, monkeypatch):
    monkeypatch.setattr(autoruntime, "cpuinfo", lambda: AVX512)
    sig = autoruntime.cpu_signature(2)
    record = {"weights_sha256": "ab" * 32, "cpu": sig, "choice": "onnx int8", "speedup": 2.5, "agreement": 0.99}
    assert autoruntime.write_choice(tmp_path, record) == tmp_path / autoruntime.CHOICE_FILE
    assert autoruntime.read_choice(tmp_path, "ab" * 32, sig, 0.97)["choice"] == "onnx int8"
    assert autoruntime.read_choice(tmp_path, "cd" * 32, sig, 0.97) is None  # weights changed
    assert autoruntime.read_choice(tmp_path, "ab" * 32, autoruntime.cpu_signature(4), 0.97) is None  # threads
    assert autoruntime.read_choice(tmp_path, "ab" * 32, sig, 0.995) is None  # stricter agreement asked now
    monkeypatch.setattr(autoruntime, "cpuinfo", lambda: AVX2_ONLY)
    assert autoruntime.read_choice(tmp_path, "ab" * 32, autoruntime.cpu_signature(2), 0.97) is None  # CPU changed


def test_cpu_features_come_from_cpuinfo_and_the_torch_isa_switches(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(autoruntime, "cpuinfo", lambda: AVX512)
    assert autoruntime.native_bf16() and autoruntime.cpu_class() == "AVX-512+VNNI+bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert not autoruntime.native_bf16() and autoruntime.cpu_class() == "AVX-512+VNNI"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert autoruntime.cpu_class() == "AVX2" and autoruntime.cpu_signature(None)["flags"] == ["avx2", "fma"]
    monkeypatch.setattr(autoruntime, "cpuinfo", lambda: "")
    assert not autoruntime.native_bf16() and autoruntime.cpu_class() == "no AVX2"


def test_bf16_is_refused_in_one_line_on_a_cpu_without_native_bf16(model, src, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(autoruntime, "cpuinfo", lambda: AVX2_ONLY)
    assert _run(model, src, tmp_path / "o.jsonl", "--precision", "bf16") == 2
    assert capsys.readouterr().err == (
        "error: --precision bf16: this CPU has no native bf16 (neither AVX512-BF16 nor AMX), so torch would emulate "
        "it, about 5x slower than fp32; use --runtime auto (the fastest runtime that agrees with float on this CPU) "
        "or --runtime onnx --quantize int8\n")
    assert not (tmp_path / "o.jsonl").exists()


def test_auto_never_picks_bf16_on_a_cpu_without_native_bf16(model, src, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(autoruntime, "cpuinfo", lambda: AVX2_ONLY)
    assert _run(model, src, tmp_path / "o.jsonl") == 0
    saved = _choice(model)
    assert saved["choice"] != "torch bf16" and saved["cpu"]["flags"] == ["avx2", "fma"]
    assert {"name": "torch bf16", "speedup": None, "agreement": None,
            "note": "skipped (no native bf16 on this CPU)"} in saved["tried"]
    assert "on AVX2, " in capsys.readouterr().err


def test_stdin_falls_back_to_the_cached_choice_or_float_and_says_so(model, src, tmp_path, capsys, monkeypatch):
    def stdin():
        monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(src.read_bytes())))

    stdin()
    assert _run(model, "-", tmp_path / "a.jsonl") == 0
    assert ("runtime auto: torch fp32, the float model: stdin has no file to try runtimes on and nothing is cached "
            "for this CPU") in capsys.readouterr().err
    assert not (model / autoruntime.CHOICE_FILE).exists()
    assert _run(model, src, tmp_path / "b.jsonl") == 0  # a file: the trial runs and caches
    choice = _choice(model)["choice"]
    capsys.readouterr()
    stdin()
    assert _run(model, "-", tmp_path / "c.jsonl") == 0
    assert (f"runtime auto: {choice}, cached for this model and CPU in {model / autoruntime.CHOICE_FILE}; stdin has "
            "no file to try runtimes on") in capsys.readouterr().err
    assert _rows(tmp_path / "c.jsonl")[0]["model"] == _rows(tmp_path / "b.jsonl")[0]["model"]
