"""`--runtime auto`: per model and CPU, the fastest runtime that agrees with float, found by a short timed trial on
the input's first documents and cached; the agreement check of explicit runtimes; bf16 refused where emulated.

Imports no torch: the TF-IDF path goes through here too. CPU features come from `cpuinfo()` alone, so tests can
pretend to run on another CPU by patching that one function.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import read_info
from pipeline.config import PredictConfig
from pipeline.errors import PipelineError

CHOICE_FILE = "runtime_choice.json"
FLOAT = "torch fp32"
CANDIDATES: dict[str, dict[str, str]] = {  # likely fastest first: a slower one then stops after its timing
    "onnx int8": {"runtime": "onnx", "quantize": "int8", "precision": "fp32"},
    "torch bf16": {"runtime": "torch", "quantize": "none", "precision": "bf16"},
    "torch int8": {"runtime": "torch", "quantize": "int8", "precision": "fp32"},
    "onnx fp32": {"runtime": "onnx", "quantize": "none", "precision": "fp32"},
}
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
SIGNATURE_FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16",
                   "amx_int8")
TIMED_DOCS = 16  # documents each runtime is timed on; the agreement check uses the whole sample
MIN_TIMING_S = 0.5  # a runtime whose timing took less is timed again (at most 3 times), against noise
BUDGET_S = 8.0  # candidates' scoring seconds, or the float reference's if longer (one-off exports not counted)
BF16_REFUSED = ("--precision bf16: this CPU has no native bf16 (neither AVX512-BF16 nor AMX), so torch would emulate "
                "it, about 5x slower than fp32; use --runtime auto (the fastest runtime that agrees with float on "
                "this CPU) or --runtime onnx --quantize int8")
_BELOW_AVX512 = {"sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2"}  # ONEDNN_MAX_CPU_ISA values
_BELOW_BF16 = _BELOW_AVX512 | {"avx512_core", "avx512_core_vnni"}


def cpuinfo() -> str:
    """The text of /proc/cpuinfo ('' where there is none): the one source of CPU facts, patched in tests."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _field(name: str) -> str:
    for line in cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as torch may use them: less what ATEN_CPU_CAPABILITY or ONEDNN_MAX_CPU_ISA forbid."""
    flags = set(_field("flags").split())
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").lower()
    if aten in ("default", "avx2") or isa in _BELOW_AVX512:
        flags = {f for f in flags if not f.startswith(("avx512", "amx"))}
    if isa in _BELOW_BF16:
        flags -= BF16_FLAGS
    return frozenset(flags)


def native_bf16() -> bool:
    """Whether bf16 runs natively (AVX512-BF16 or AMX); elsewhere torch emulates it, about five times slower."""
    return bool(BF16_FLAGS & cpu_flags())


def cpu_class() -> str:
    """A short name for what matters to the runtimes: `AVX-512+VNNI+bf16`, `AVX2`, ..."""
    flags = cpu_flags()
    if "avx512f" not in flags:
        return "AVX2" if "avx2" in flags else "no AVX2"
    return "AVX-512" + ("+VNNI" if "avx512_vnni" in flags else "") + ("+bf16" if native_bf16() else "")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def cpu_signature(threads: int | None) -> dict[str, Any]:
    """What a runtime choice depends on besides the weights: CPU model, its relevant flags, cores, threads, versions."""
    flags = cpu_flags()
    return {"cpu": _field("model name") or platform.processor() or platform.machine(),
            "flags": [f for f in SIGNATURE_FLAGS if f in flags], "cores": len(os.sched_getaffinity(0)),
            "threads": threads, "torch": _version("torch"), "onnxruntime": _version("onnxruntime")}


def refuse_emulated_bf16(opts: PredictConfig) -> None:
    """Never run silently slow: bf16 on a CPU that would emulate it is refused before the model loads."""
    if opts.precision == "bf16" and opts.device != "cuda" and not native_bf16():
        raise PipelineError(BF16_REFUSED)


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    return float((probs.argmax(1) == reference.argmax(1)).mean()) if len(reference) else 1.0


def check_explicit(scorer: Any, opts: PredictConfig, texts: list[str] | None) -> str:
    """Switch to the runtime `opts` names once it agrees with float on `texts`; returns the output's model tag."""
    from pipeline import runtime

    if texts is None:
        raise PipelineError("a faster runtime is checked against float on the input's first documents; give a file")
    reference = scorer.score(texts)[0] if texts else np.zeros((0, 1))
    tag = runtime.apply(scorer, opts)
    probs = scorer.score(texts)[0] if texts else reference
    agreement = _agreement(probs, reference)
    drift = float(np.abs(probs - reference).max()) if texts else 0.0
    _say(f"{tag[1:]}: label agreement with the float model on the first {len(texts)} documents {agreement:.1%}, "
         f"max probability difference {drift:.4f}")
    if agreement < opts.min_agreement:
        raise PipelineError(f"{tag[1:]} agrees with the float model on only {agreement:.1%} of the first "
                            f"{len(texts)} documents (< {opts.min_agreement:.0%}); use the default runtime")
    return tag


@dataclass
class Tried:
    """One candidate's trial: speed relative to float on the timed documents, agreement on the whole sample."""

    name: str
    speedup: float | None = None
    agreement: float | None = None
    note: str = ""
    tag: str = ""

    def text(self) -> str:
        """`torch int8 1.80x 98.4%`, or why it was skipped or refused."""
        if self.note:
            return f"{self.name} {self.note}"
        shown = f" {self.agreement:.1%}" if self.agreement is not None else ", cannot win"
        return f"{self.name} {self.speedup:.2f}x{shown}"


def _time(scorer: Any, timed: list[str], rest: list[str], limit: float | None) -> tuple[float, np.ndarray | None]:
    """Seconds to score `timed` (after a warm-up), and probabilities of timed + rest (None: slower than `limit`)."""
    scorer.score(timed[:2])
    seconds, total, runs = float("inf"), 0.0, 0
    while runs < 3 and (runs == 0 or total < MIN_TIMING_S):  # a small model is timed up to 3 times: the fastest
        started = time.perf_counter()
        head = scorer.score(timed)[0]
        runs, lap = runs + 1, time.perf_counter() - started
        seconds, total = min(seconds, lap), total + lap
    if limit is not None and seconds >= limit:
        return seconds, None
    return seconds, np.concatenate([head, scorer.score(rest)[0]]) if rest else head


def _skip_reason(name: str, spent: float, budget: float) -> str:
    if name == "torch bf16" and not native_bf16():
        return "skipped (no native bf16 on this CPU)"
    if name.startswith("onnx") and not _version("onnxruntime"):
        return "skipped (onnxruntime is not installed)"
    if spent > budget:
        return "skipped (trial time spent)"
    return ""


def trial(scorer: Any, opts: PredictConfig, texts: list[str]) -> tuple[Tried, list[Tried]]:
    """Time each candidate on the first documents; the fastest that agrees with float is left on `scorer`."""
    from pipeline import runtime

    float_model, device = scorer.model, scorer.device
    timed, rest = texts[:TIMED_DOCS], texts[TIMED_DOCS:]
    started = time.perf_counter()
    float_s, reference = _time(scorer, timed, rest, None)
    budget = max(BUDGET_S, time.perf_counter() - started)  # a slow model or CPU: as long as the float reference
    spent, best, best_s, best_model = 0.0, Tried(FLOAT, 1.0, 1.0), float_s, (float_model, device)
    tried = []
    for name, spec in CANDIDATES.items():
        tried.append(Tried(name, note=_skip_reason(name, spent, budget)))
        if tried[-1].note:
            continue
        try:
            with warnings.catch_warnings():  # the one-off ONNX export's tracer warnings say nothing to a user
                warnings.simplefilter("ignore")
                tried[-1].tag = runtime.apply(scorer, opts.model_copy(update=spec))
        except PipelineError as exc:
            tried[-1].note = f"failed ({exc})"
            continue
        started = time.perf_counter()
        seconds, probs = _time(scorer, timed, rest, best_s)
        spent += time.perf_counter() - started
        tried[-1].speedup = float_s / seconds
        if probs is not None:
            tried[-1].agreement = _agreement(probs, reference)
            if tried[-1].agreement >= opts.min_agreement:
                best, best_s, best_model = tried[-1], seconds, (scorer.model, scorer.device)
        scorer.model, scorer.device = float_model, device
    scorer.model, scorer.device = best_model
    return best, tried


def _cache_files(directory: Path, weights: str) -> list[Path]:
    """The model directory's choice file, then the user cache's (for a model directory that is read-only)."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pipeline" / "runtime"
    return [directory / CHOICE_FILE, user / f"{weights[:16]}.json"]


def read_choice(directory: Path, weights: str, signature: dict[str, Any], min_agreement: float) -> dict | None:
    """The cached choice for these weights on this CPU, or None (absent, stale, or below today's agreement)."""
    for path in _cache_files(directory, weights):
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (isinstance(saved, dict) and saved.get("weights_sha256") == weights and saved.get("cpu") == signature
                and saved.get("choice") in {FLOAT, *CANDIDATES} and saved.get("agreement", 0) >= min_agreement
                and (saved["choice"] != "torch bf16" or native_bf16())):
            return {**saved, "path": str(path)}
    return None


def write_choice(directory: Path, record: dict[str, Any]) -> Path | None:
    """Write the choice atomically into the model directory, else the user cache; None where neither is writable."""
    for path in _cache_files(directory, record["weights_sha256"]):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
            os.replace(tmp, path)
            return path
        except OSError:
            tmp.unlink(missing_ok=True)
    return None


def _apply_named(scorer: Any, opts: PredictConfig, name: str) -> str:
    from pipeline import runtime

    return runtime.apply(scorer, opts.model_copy(update=CANDIDATES[name])) if name != FLOAT else ""


def choose(scorer: Any, opts: PredictConfig, texts: list[str] | None) -> str:
    """`--runtime auto`: the cached choice for this model and CPU, else a timed trial; returns the output's tag."""
    if scorer.kind != "transformer":
        return ""  # a TF-IDF model has one scorer
    if str(scorer.device) != "cpu":
        _say(f"runtime auto: torch on {scorer.device} (the CPU runtimes are not tried where a GPU runs the model)")
        return ""
    weights, signature = read_info(scorer.directory)["weights_sha256"], cpu_signature(opts.threads)
    cached = read_choice(Path(scorer.directory), weights, signature, opts.min_agreement)
    if not texts:
        why = "stdin has no file to try runtimes on" if texts is None else "the input has no documents to try"
        name = cached["choice"] if cached else FLOAT
        _say(f"runtime auto: {name}, " + (f"cached for this model and CPU in {cached['path']}; {why}" if cached
                                          else f"the float model: {why} and nothing is cached for this CPU"))
        return _apply_named(scorer, opts, name)
    if cached:
        return _use_cached(scorer, opts, texts, cached)
    started = time.perf_counter()
    best, tried = trial(scorer, opts, texts)
    record = {"weights_sha256": weights, "cpu": signature, "choice": best.name, "speedup": best.speedup,
              "agreement": best.agreement, "documents": len(texts), "timed_documents": min(len(texts), TIMED_DOCS),
              "tried": [{k: v for k, v in vars(t).items() if k != "tag"} for t in tried],
              "chosen_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = write_choice(Path(scorer.directory), record)
    others = "; ".join(t.text() for t in tried if t is not best)
    _say(f"runtime auto: {best.name} on {cpu_class()}, {best.speedup:.2f}x the float model on the first "
         f"{record['timed_documents']} documents, label agreement {best.agreement:.1%} on {len(texts)} (also tried: "
         f"{others}; {time.perf_counter() - started:.1f} s); "
         + (f"cached in {path}" if path else "not cached: no writable cache"))
    return best.tag


def _use_cached(scorer: Any, opts: PredictConfig, texts: list[str], cached: dict[str, Any]) -> str:
    """Apply the cached choice after the usual agreement check on this input; float where this input disagrees."""
    float_model, device = scorer.model, scorer.device
    reference = scorer.score(texts)[0]
    tag = _apply_named(scorer, opts, cached["choice"])
    agreement = _agreement(scorer.score(texts)[0], reference) if tag else 1.0
    head = (f"runtime auto: {cached['choice']}, cached for this model and CPU in {cached['path']} "
            f"({cached['speedup']:.2f}x the float model when chosen); label agreement with the float model on the "
            f"first {len(texts)} documents {agreement:.1%}")
    if agreement < opts.min_agreement:
        scorer.model, scorer.device = float_model, device
        _say(f"{head}, below {opts.min_agreement:.0%}: using the float model for this input")
        return ""
    _say(head)
    return tag
