"""Spark `local[2]` against the single-process predictor on the same real articles, same model, same runtime.

Reports docs/s of both, Spark's overhead as a ratio, the per-core rate Spark reached, and on paper what a
10M-article dump costs on N executors at that rate. Reads ../shared/data; skips with a message where it is absent.

    python benchmarks/spark_throughput.py --model models/security-news-tfidf-logreg
    python benchmarks/spark_throughput.py --model models/security-news-e5-small --runtime onnx --quantize int8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
WORK = RESULTS / "work" / "spark"  # ignored by git: the articles never land in the repository


def articles(limit: int) -> list[dict]:
    """Security articles from ../shared/data, cycled with fresh ids where the corpus has fewer than `limit`."""
    rows = []
    with open(SHARED / "security-news" / "labelled.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append({"title": r.get("title", ""), "text": r.get("text", "")})
    return [{"id": str(i), **rows[i % len(rows)]} for i in range(limit)]


def cpu_class() -> str:
    """The CPU model and its AVX-512 features, from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    model = next((x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name")), "?")
    flags = sorted(set(re.findall(r"\b(avx512f|avx512_bf16|avx512_vnni)\b", info)))
    return f"{model} ({os.cpu_count()} cores; {' '.join(flags) or 'no AVX-512'})"


def run_local(model: str, path: Path, flags: dict) -> float:
    """Seconds for `pipeline predict` in this process, model load included."""
    from pipeline.predict import PredictJob, predict

    start = time.perf_counter()
    predict(PredictJob(model, str(path), str(WORK / "local.jsonl"), overwrite=True, progress=False), flags)
    return time.perf_counter() - start


def run_spark(spark, model: str, path: Path, flags: dict, part_rows: int) -> tuple[float, int]:
    """Seconds for `pipeline predict --engine spark` on a started session, driver model check included."""
    from pipeline.spark import SparkJob, predict_spark

    out = WORK / "spark-out"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = predict_spark(SparkJob(model, str(path), str(out), part_rows=part_rows), flags, spark=spark)
    return time.perf_counter() - start, result.loads


def paper(per_core: float, docs: int = 10_000_000, cores_per_executor: int = 4) -> list[dict]:
    """Hours for `docs` articles on N executors of `cores_per_executor` cores at the measured per-core rate."""
    return [{"executors": n, "cores": n * cores_per_executor,
             "hours": docs / (per_core * n * cores_per_executor) / 3600} for n in (1, 4, 16, 64)]


def main() -> int:
    """Measure, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/security-news-tfidf-logreg")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--part-rows", type=int, default=100_000, help="one committed range, as in production")
    parser.add_argument("--runtime")
    parser.add_argument("--quantize")
    parser.add_argument("--precision")
    args = parser.parse_args()
    if not (SHARED / "security-news" / "labelled.jsonl").exists():
        print(f"skipped: {SHARED}/security-news/labelled.jsonl is absent")
        return 0
    if not Path(args.model).is_dir():
        print(f"skipped: {args.model} is absent; build it with pipeline prepare/baseline "
              "-c configs/base.yaml -c configs/exp/security_news.yaml")
        return 0
    sys.path.insert(0, str(ROOT))
    from pipeline.spark import session

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "articles.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in articles(args.docs)), encoding="utf-8")
    flags = {"runtime": args.runtime, "quantize": args.quantize, "precision": args.precision}
    local_s = run_local(args.model, path, flags)  # torch may use every core in one process
    flags_spark = {**flags, "threads": 1}  # one torch thread per Spark task: the cores are Spark's to share
    started = time.perf_counter()
    spark = session(args.master)
    startup_s = time.perf_counter() - started
    cold_s, _ = run_spark(spark, args.model, path, flags_spark, args.part_rows)  # Python workers start, load the model
    warm_s, loads = run_spark(spark, args.model, path, flags_spark, args.part_rows)
    cores = spark.sparkContext.defaultParallelism
    spark.stop()
    figures = {"cpu": cpu_class(), "python": platform.python_version(), "model": args.model, "docs": args.docs,
               "flags": {k: v for k, v in flags.items() if v}, "master": args.master, "cores": cores,
               "local_docs_s": args.docs / local_s, "spark_startup_s": startup_s,
               "spark_cold_docs_s": args.docs / cold_s, "spark_warm_docs_s": args.docs / warm_s,
               "spark_warm_loads": loads}
    figures["overhead_ratio"] = figures["local_docs_s"] / figures["spark_warm_docs_s"]
    figures["per_core_docs_s"] = figures["spark_warm_docs_s"] / cores
    figures["paper_10m"] = paper(figures["per_core_docs_s"])
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "-".join(["spark_throughput", Path(args.model).name, *figures["flags"].values()])
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
