"""Predictor throughput against `transformers.pipeline("text-classification")`, in one run, on real articles.

Same model, same documents, same batch size and truncation (`head`, model.max_length): docs/s ratio and
label agreement for each runtime of `pipeline predict`; then peak RSS of the predictor on 2,000 vs 20,000
documents (a streaming predictor's memory must not grow with the dump). `auto` is measured like the explicit
runtimes, after a fresh trial (its cached choice is deleted first), and its pick is reported with the CPU class.

    python benchmarks/predict_throughput.py --model models/security-news-e5-small  # from accuracy.py security
    python benchmarks/predict_throughput.py --emulate-avx2  # torch restricted to AVX2 kernels (not ONNX Runtime)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
# ATen, oneDNN, MKL and fbgemm kernels restricted to AVX2; ONNX Runtime has no such switch and keeps the host's ISA
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
RUNTIMES = {"torch fp32": ["--runtime", "torch"], "torch bf16": ["--precision", "bf16"],
            "torch int8": ["--quantize", "int8"],
            "onnx fp32": ["--runtime", "onnx"], "onnx int8": ["--runtime", "onnx", "--quantize", "int8"],
            "auto": ["--runtime", "auto"]}


def articles(limit: int) -> list[dict]:
    """Real articles from ../shared/data: the security corpus first, then ANT (cycled when more are asked)."""
    rows = []
    sec = SHARED / "security-news" / "labelled.jsonl"
    ant = SHARED / "ant-topics" / "ant_multisource.jsonl.gz"
    for path in (sec, ant):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                rows.append({"id": f"{len(rows)}", "title": r.get("title", ""), "text": r.get("text", "")})
                if len(rows) >= limit:
                    return rows
    return [{**rows[i % len(rows)], "id": str(i)} for i in range(limit)]


def reference_pipeline(model_dir: Path, pooling: str, batch_size: int, max_length: int):
    """transformers' text-classification pipeline over the same weights (mean pooling reproduced if used)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
    from transformers.modeling_outputs import SequenceClassifierOutput

    from pipeline.model import mean_pool

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    if pooling == "mean":
        def forward(input_ids=None, attention_mask=None, token_type_ids=None, **_):
            hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return SequenceClassifierOutput(logits=model.classifier(mean_pool(hidden, attention_mask)))
        model.forward = forward
    tok = AutoTokenizer.from_pretrained(model_dir)
    return pipeline("text-classification", model=model, tokenizer=tok, device=-1, batch_size=batch_size,
                    truncation=True, max_length=max_length, top_k=1)


def run_predictor(model: Path, inp: Path, out: Path, batch_size: int, threads: int, extra: list[str],
                  ) -> tuple[float, float]:
    """Steady-state docs/s of `pipeline predict` (model load and agreement check excluded), and total seconds."""
    from pipeline.cli import build_parser
    from pipeline.cli_predict import predict_request
    from pipeline.predict import predict

    agreement = [] if "auto" in extra else ["--min-agreement", "0"]  # auto keeps the default check (0.97)
    args = build_parser().parse_args(["predict", "--model", str(model), "--input", str(inp), "--output", str(out),
                                      "--batch-size", str(batch_size), "--threads", str(threads), "--overwrite",
                                      "--quiet", "--long-text", "head", *agreement, *extra])
    job, flags = predict_request(args)
    started = time.perf_counter()
    summary = predict(job, flags)
    return summary.rows / summary.seconds, time.perf_counter() - started


def peak_rss(model: Path, inp: Path, out: Path, extra: list[str]) -> float:
    """Peak RSS (MiB) of a predictor process classifying `inp`.

    Read from the child's own VmHWM: its ru_maxrss would start at this (large) parent's RSS at fork time.
    """
    cmd = [sys.executable, "-c", "import re, sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
           "status = open('/proc/self/status').read(); "
           "print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr); sys.exit(rc)",
           "predict", "--model", str(model), "--input", str(inp), "--output", str(out), "--overwrite", "--quiet",
           "--long-text", "head", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    """Run the benchmark and write benchmarks/results/predict_throughput.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models/security-news-e5-small",
                    help="a fine-tuned model directory (default: the one `accuracy.py security` trains)")
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss-docs", type=int, nargs=2, default=[2000, 20000],
                    help="0 0: skip the memory runs and keep the previous figures")
    ap.add_argument("--rss-runtime", default="onnx int8", choices=list(RUNTIMES))
    ap.add_argument("--emulate-avx2", action="store_true",
                    help="rerun under " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()) + " (no memory runs)")
    ap.add_argument("--results", default=None, help="file name under benchmarks/results/ (default: "
                    "predict_throughput.json, predict_throughput-avx2-emulated.json with --emulate-avx2)")
    ap.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), help="only these (default: all)")
    ap.add_argument("--label", default="this machine", help="the machine's name in the README's per-CPU table")
    args = ap.parse_args()
    if args.emulate_avx2 and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})  # before torch loads
    results = RESULTS / (args.results or ("predict_throughput-avx2-emulated.json" if args.emulate_avx2
                                          else "predict_throughput.json"))
    if not SHARED.is_dir():
        print("skipped: ../shared/data is absent (the benchmark reads real articles from it)")
        return
    if not (args.model / "model.safetensors").is_file():
        raise SystemExit(f"{args.model}: no fine-tuned model; run `python benchmarks/accuracy.py security` first")
    torch.set_num_threads(args.threads)
    from pipeline.artifacts import read_model_config
    from pipeline.autoruntime import CHOICE_FILE, cpu_class, cpu_signature
    from pipeline.scoring import load_scorer

    cfg = read_model_config(args.model)
    scorer = load_scorer(args.model)
    work = RESULTS / "work"
    work.mkdir(parents=True, exist_ok=True)
    docs = articles(args.docs)
    inp, warm = work / "docs.jsonl", work / "warmup.jsonl"
    inp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    warm.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[:64]), encoding="utf-8")
    texts = [cfg.model.text_prefix + scorer.normalise(f"{d['title']}\n{d['text']}") for d in docs]

    ref = reference_pipeline(args.model, cfg.model.pooling, args.batch_size, cfg.model.max_length)
    ref(texts[: args.batch_size])  # warm-up
    started = time.perf_counter()
    ref_labels = [r[0]["label"] for r in ref(texts)]
    ref_seconds = time.perf_counter() - started
    rows = [{"runtime": "transformers.pipeline (reference)", "docs_per_s": len(docs) / ref_seconds,
             "wall_seconds": ref_seconds, "speedup": 1.0, "agreement": 1.0}]
    print(f"CPU class {cpu_class()}" + (" (torch restricted to AVX2; ONNX Runtime keeps the host's ISA)"
                                        if args.emulate_avx2 else ""), flush=True)
    for name, extra in RUNTIMES.items():
        if args.runtimes and name not in args.runtimes:
            continue
        rows.append(measure(args, name, extra, warm, inp, ref_labels, len(docs) / ref_seconds))
    pick = json.loads((args.model / CHOICE_FILE).read_text())  # written by auto's trial in the warm-up

    rss: dict[int, float] = {}
    previous = RESULTS / "predict_throughput.json"
    if args.emulate_avx2:
        args.rss_docs = []
    elif args.rss_docs == [0, 0] and previous.is_file() and results == previous:  # speed only: keep the memory
        old = json.loads(previous.read_text())
        rss = {int(k): v for k, v in old["peak_rss_mib"].items()}
        args.rss_docs, args.rss_runtime = list(rss), old["rss_runtime"]
    elif args.rss_docs == [0, 0]:  # speed only, written to another file: no memory figures
        args.rss_docs = []
    for n in [] if rss else args.rss_docs:
        path = work / f"rss-{n}.jsonl"
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in articles(n)), encoding="utf-8")
        rss[n] = peak_rss(args.model, path, work / f"rss-{n}.out.jsonl", RUNTIMES[args.rss_runtime])
        print(f"peak RSS on {n} docs ({args.rss_runtime}): {rss[n]:.0f} MiB", flush=True)
    result = {
        "model": args.model.name, "docs": len(docs), "batch_size": args.batch_size, "threads": args.threads,
        "max_length": cfg.model.max_length, "truncation": "head", "machine": f"{platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}", "rows": rows, "cpu_class": cpu_class(),
        "emulation": "torch kernels restricted to AVX2 (" + ", ".join(f"{k}={v}" for k, v in AVX2_ENV.items())
        + "); ONNX Runtime has no such switch and still used the host's ISA" if args.emulate_avx2 else None,
        "auto_pick": {k: pick[k] for k in ("choice", "speedup", "agreement", "documents", "timed_documents",
                                           "tried")},
        "peak_rss_mib": {str(k): round(v, 1) for k, v in rss.items()}, "rss_runtime": args.rss_runtime,
        "rss_growth": rss[args.rss_docs[1]] / rss[args.rss_docs[0]] - 1 if rss else None,
        "self_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "source": f"measured with `python benchmarks/predict_throughput.py {' '.join(sys.argv[1:])}` on "
                  f"{cpu_signature(args.threads)['cpu']}, {cpu_class()}, {time.strftime('%Y-%m-%d')}",
        "label": args.label,
    }
    results.write_text(json.dumps(result, indent=2))
    print(table(result))


def measure(args: argparse.Namespace, name: str, extra: list[str], warm: Path, inp: Path, ref_labels: list[str],
            ref_rate: float) -> dict:
    """One runtime's row: warm-up (exports, auto's fresh trial), then the timed run; a refused runtime says why."""
    from pipeline.autoruntime import CHOICE_FILE
    from pipeline.errors import PipelineError

    out = RESULTS / "work" / f"pred-{name.replace(' ', '-')}.jsonl"
    if name == "auto":
        (args.model / CHOICE_FILE).unlink(missing_ok=True)  # a fresh trial, not a cached choice
    try:
        run_predictor(args.model, warm, out, args.batch_size, args.threads, extra)
        rate, total = run_predictor(args.model, inp, out, args.batch_size, args.threads, extra)
    except PipelineError as exc:
        print(f"pipeline predict, {name:<17} refused: {exc}", flush=True)
        return {"runtime": f"pipeline predict, {name}", "refused": str(exc)}
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    row = {"runtime": f"pipeline predict, {name}", "docs_per_s": rate, "wall_seconds": total,
           "speedup": rate / ref_rate, "model_tag": rows[0]["model"].partition("+")[2] or "torch fp32",
           "agreement": float(np.mean([r["label"] == b for r, b in zip(rows, ref_labels, strict=True)]))}
    print(f"{row['runtime']:<34} {row['docs_per_s']:7.1f} docs/s  x{row['speedup']:.2f}  "
          f"agreement {row['agreement']:.2%}", flush=True)
    return row


def table(result: dict) -> str:
    """The markdown table for the README."""
    lines = ["| runtime | docs/s | speed-up | label agreement |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        if "refused" in r:
            lines.append(f"| {r['runtime']} | refused | | |")
            continue
        name = r["runtime"] + (f" (picked {r['model_tag']})" if r["runtime"].endswith(", auto") else "")
        lines.append(f"| {name} | {r['docs_per_s']:.1f} | {r['speedup']:.2f}x | {r['agreement']:.1%} |")
    rss = result["peak_rss_mib"]
    if rss:
        (a, ra), (b, rb) = list(rss.items())
        lines.append(f"\nPeak RSS ({result['rss_runtime']}): {ra:.0f} MiB on {a} documents, {rb:.0f} MiB on {b} "
                     f"({result['rss_growth']:+.1%}).")
    return "\n".join(lines)


def cpu_table(results: list[dict]) -> str:
    """Speed-ups per CPU class side by side (agreement in brackets where it was measured)."""
    names = list(dict.fromkeys(r["runtime"] for res in results for r in res["rows"]))
    head = ["| runtime | " + " | ".join(f"{res['cpu_class']}: {res.get('label', 'this machine')}" for res in results)
            + " |", "|---|" + "---:|" * len(results)]

    def cell(res: dict, name: str) -> str:
        row = next((r for r in res["rows"] if r["runtime"] == name), None)
        if row is None or "refused" in row:
            return "refused" if row else ""
        text = f"{row['docs_per_s']:.1f} docs/s" if name.endswith("(reference)") else f"{row['speedup']:.2f}x"
        return text + (f" ({row['agreement']:.1%})" if row.get("agreement") is not None and "x" in text else "")

    return "\n".join(head + [f"| {n} | " + " | ".join(cell(res, n) for res in results) + " |" for n in names])


if __name__ == "__main__":
    main()
