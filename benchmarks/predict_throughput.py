"""Predictor throughput against `transformers.pipeline("text-classification")`, in one run, on real articles.

Same model, same documents, same batch size and truncation (`head`, model.max_length): docs/s ratio and
label agreement for each runtime of `pipeline predict`; then peak RSS of the predictor on 2,000 vs 20,000
documents (a streaming predictor's memory must not grow with the dump).

    python benchmarks/predict_throughput.py --model models/security-news-e5-small  # from accuracy.py security
"""

from __future__ import annotations

import argparse
import gzip
import json
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
RUNTIMES = {"torch fp32": [], "torch bf16": ["--precision", "bf16"], "torch int8": ["--quantize", "int8"],
            "onnx fp32": ["--runtime", "onnx"], "onnx int8": ["--runtime", "onnx", "--quantize", "int8"]}


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
    from pipeline.cli import build_parser, predict_request
    from pipeline.predict import predict

    args = build_parser().parse_args(["predict", "--model", str(model), "--input", str(inp), "--output", str(out),
                                      "--batch-size", str(batch_size), "--threads", str(threads), "--overwrite",
                                      "--quiet", "--long-text", "head", "--min-agreement", "0", *extra])
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
    args = ap.parse_args()
    if not SHARED.is_dir():
        print("skipped: ../shared/data is absent (the benchmark reads real articles from it)")
        return
    if not (args.model / "model.safetensors").is_file():
        raise SystemExit(f"{args.model}: no fine-tuned model; run `python benchmarks/accuracy.py security` first")
    torch.set_num_threads(args.threads)
    from pipeline.artifacts import read_model_config
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
    for name, extra in RUNTIMES.items():
        out = work / f"pred-{name.replace(' ', '-')}.jsonl"
        run_predictor(args.model, warm, out, args.batch_size, args.threads, extra)  # warm-up: exports, caches
        rate, total = run_predictor(args.model, inp, out, args.batch_size, args.threads, extra)
        labels = [json.loads(x)["label"] for x in out.read_text(encoding="utf-8").splitlines()]
        rows.append({"runtime": f"pipeline predict, {name}", "docs_per_s": rate, "wall_seconds": total,
                     "speedup": rate / (len(docs) / ref_seconds),
                     "agreement": float(np.mean([a == b for a, b in zip(labels, ref_labels, strict=True)]))})
        print(f"{rows[-1]['runtime']:<34} {rows[-1]['docs_per_s']:7.1f} docs/s  x{rows[-1]['speedup']:.2f}  "
              f"agreement {rows[-1]['agreement']:.2%}", flush=True)

    rss: dict[int, float] = {}
    previous = RESULTS / "predict_throughput.json"
    if args.rss_docs == [0, 0] and previous.is_file():  # speed only: keep the last memory measurement
        old = json.loads(previous.read_text())
        rss = {int(k): v for k, v in old["peak_rss_mib"].items()}
        args.rss_docs, args.rss_runtime = list(rss), old["rss_runtime"]
    for n in [] if rss else args.rss_docs:
        path = work / f"rss-{n}.jsonl"
        path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in articles(n)), encoding="utf-8")
        rss[n] = peak_rss(args.model, path, work / f"rss-{n}.out.jsonl", RUNTIMES[args.rss_runtime])
        print(f"peak RSS on {n} docs ({args.rss_runtime}): {rss[n]:.0f} MiB", flush=True)
    result = {
        "model": args.model.name, "docs": len(docs), "batch_size": args.batch_size, "threads": args.threads,
        "max_length": cfg.model.max_length, "truncation": "head", "machine": f"{platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}", "rows": rows,
        "peak_rss_mib": {str(k): round(v, 1) for k, v in rss.items()}, "rss_runtime": args.rss_runtime,
        "rss_growth": rss[args.rss_docs[1]] / rss[args.rss_docs[0]] - 1 if rss else None,
        "self_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    (RESULTS / "predict_throughput.json").write_text(json.dumps(result, indent=2))
    print(table(result))


def table(result: dict) -> str:
    """The markdown table for the README."""
    lines = ["| runtime | docs/s | speed-up | label agreement |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['runtime']} | {r['docs_per_s']:.1f} | {r['speedup']:.2f}x | {r['agreement']:.1%} |")
    rss = result["peak_rss_mib"]
    if rss:
        (a, ra), (b, rb) = list(rss.items())
        lines.append(f"\nPeak RSS ({result['rss_runtime']}): {ra:.0f} MiB on {a} documents, {rb:.0f} MiB on {b} "
                     f"({result['rss_growth']:+.1%}).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
