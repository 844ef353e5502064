"""`pipeline predict --engine spark`: the same rows as the local predictor, retried tasks, resume by committed line
range, and MLflow's own `spark_udf` on a logged model. One local[2,2] SparkSession for the module."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import make_corpus

from pipeline import autoruntime
from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.sinks import _schema

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install '.[spark]')")
if not shutil.which("java"):
    pytest.skip("no Java runtime for Spark (apt install openjdk-17-jre-headless)", allow_module_level=True)

from pipeline.spark import SparkJob, predict_spark, session

pytestmark = pytest.mark.slow  # a Spark session: `make test-slow`, run by CI


@pytest.fixture(scope="module")
def spark():
    spark = session("local[2,2]")  # 2 cores, a failed task is retried once
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus) -> Path:
    """A TF-IDF baseline on the fixture corpus: seconds to build, and the predictor path is the same."""
    from helpers import base_overrides, write_jsonl

    from pipeline.baseline import train_baseline
    from pipeline.config import load_config
    from pipeline.data import prepare

    root = tmp_path_factory.mktemp("tfidf")
    cfg = load_config(overrides=base_overrides(root, write_jsonl(root / "c.jsonl", corpus)))
    prepare(cfg)
    return train_baseline(cfg).model_dir


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    """42 articles with bad rows among them: invalid JSON, no text field, empty text, a blank line."""
    rows = [{"url": f"https://news.example/{i}", "title": r["title"], "text": r["text"]}
            for i, r in enumerate(make_corpus(per_label=6, seed=7))]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines[3] = '{"url": "https://news.example/broken", "text": '
    lines[10] = json.dumps({"url": "https://news.example/no-text", "body": "نص"})
    lines[17] = json.dumps({"url": "https://news.example/empty", "title": "", "text": "  "})
    lines.insert(20, "")
    path = tmp_path_factory.mktemp("dump") / "dump.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _args(model_dir: Path, inp: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--model", str(model_dir), "--input", str(inp), "--output", str(out), "--quiet",
            "--id-field", "url", *extra]


def _rows(path: Path) -> list[dict]:
    """Output rows sorted by input line, in JSONL's shape."""
    if path.suffix == ".jsonl":
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    frame = pd.read_parquet(path).sort_values("line").astype(object)
    frame = frame.where(frame.notna(), None)
    return [{**r, "top": [dict(t) for t in r["top"]], "flags": list(r["flags"]),
             **({"labels": list(r["labels"])} if "labels" in r else {})} for r in frame.to_dict("records")]


def _same(got: list[dict], want: list[dict]) -> None:
    def key(r):
        return r["id"], r["line"], r["label"], r["error"], r["needs_review"], r["flags"], r["model"], \
            [t["label"] for t in r["top"]]

    assert [key(r) for r in got] == [key(r) for r in want]
    for a, b in zip(got, want, strict=True):
        if b["label"] is not None:
            assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)
            assert [t["prob"] for t in a["top"]] == pytest.approx([t["prob"] for t in b["top"]], abs=1e-5)


@pytest.fixture(scope="module")
def reference(model_dir, dump, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    assert main(_args(model_dir, dump, out, "--top-k", "3", "--threshold", "0.9")) == 0
    return _rows(out)


def test_spark_equals_the_local_predictor(spark, model_dir, dump, reference, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(_args(model_dir, dump, out, "--engine", "spark", "--part-rows", "20", "--top-k", "3",
                    "--threshold", "0.9"))
    line = capsys.readouterr().out
    assert rc == 0
    got = _rows(out)
    _same(got, reference)
    assert {r["error"] for r in got} == {None, "invalid_json", "missing_text", "empty_text"}
    assert [r["line"] for r in got if r["error"]] == [4, 11, 18]
    assert sorted(p.name for p in out.iterdir()) == [f"lines-{lo:010d}-{lo + 19:010d}" for lo in (1, 21, 41)]
    assert all((p / "_SUCCESS").exists() for p in out.iterdir())
    schema = pq.read_table(next(out.glob("*/*.parquet"))).schema
    assert [(f.name, str(f.type).replace("element", "item")) for f in schema] == \
        [(f.name, str(f.type)) for f in _schema()]
    assert "42 rows, 3 errors" in line and "3 line ranges written" in line
    loads = int(line.split("model loaded ")[1].split("x")[0])
    assert 1 <= loads <= 2  # once per Python worker (2 cores), not once per batch: 6 tasks ran


def test_a_failed_task_is_retried_and_every_row_lands_once(spark, model_dir, dump, reference, tmp_path):
    marker = tmp_path / "failed-once"

    def fail_once(lines: list[int]) -> None:
        if 7 in lines and not marker.exists():
            marker.touch()
            raise RuntimeError("killed mid-task")

    job = SparkJob(str(model_dir), str(dump), str(tmp_path / "out"), part_rows=1000)
    result = predict_spark(job, {"id_field": "url", "top_k": 3, "threshold": 0.9}, spark=spark, hook=fail_once)
    assert marker.exists()
    got = _rows(tmp_path / "out")
    assert sorted(map(str, (r["id"] for r in got))) == sorted(map(str, (r["id"] for r in reference)))
    assert len({r["line"] for r in got}) == len(got) == result.summary.rows == 42
    _same(got, reference)
    assert not list((tmp_path / "out").rglob("_temporary"))


def test_resume_skips_committed_ranges(spark, model_dir, dump, reference, tmp_path, capsys):
    out = tmp_path / "out"
    args = _args(model_dir, dump, out, "--engine", "spark", "--part-rows", "20", "--top-k", "3",
                 "--threshold", "0.9")
    assert main(args) == 0
    first, second, third = sorted(out.iterdir())
    shutil.rmtree(second)  # a killed job: one range never committed, another left half-written
    for p in third.iterdir():
        p.unlink()
    (third / "_temporary").mkdir()
    (third / "_temporary" / "part-00000.parquet").write_bytes(b"half")
    before = {p: p.stat().st_mtime_ns for p in first.iterdir()}
    capsys.readouterr()
    assert main(args) == 2
    assert "exists; pass --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "2 line ranges written, 1 already committed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in first.iterdir()} == before
    _same(_rows(out), reference)
    assert main([*args[:-6], "--part-rows", "7", "--resume"]) == 2
    assert "resume with the --part-rows it was written with" in capsys.readouterr().err


def test_mlflow_spark_udf_on_a_logged_model(spark, cfg_tiny, tmp_path, monkeypatch):
    import mlflow

    from pipeline.baseline import train_baseline
    from pipeline.tracking import promote

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    cfg = cfg_tiny.prepared("tracking.enabled=true", f"tracking.uri={uri}", "tracking.registered_model=spark-news")
    train_baseline(cfg)
    promote(cfg, best="test_macro_f1")
    mlflow.set_tracking_uri(uri)
    texts = [r["text"] for r in make_corpus(per_label=2, seed=3)]
    local = mlflow.pyfunc.load_model("models:/spark-news@champion").predict(pd.DataFrame({"text": texts}))
    result_type = ", ".join(f"{c} {'string' if c == 'label' else 'double'}" for c in local.columns)
    udf = mlflow.pyfunc.spark_udf(spark, "models:/spark-news@champion", env_manager="local", result_type=result_type)
    frame = spark.createDataFrame(pd.DataFrame({"text": texts})).withColumn("p", udf("text")).select("p.*")
    got = frame.toPandas()
    assert list(got.columns)[:2] == ["label", "confidence"] and len(got.columns) == 2 + 7
    assert got["label"].tolist() == local["label"].tolist()
    assert got.drop(columns="label").to_numpy() == pytest.approx(local.drop(columns="label").to_numpy(), abs=1e-6)
    assert got.filter(like="prob_").sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_csv_and_parquet_rows_are_numbered_as_the_local_reader_does(spark, model_dir, ext, tmp_path):
    rows = [{"url": f"u{i}", "title": r["title"], "text": r["text"]} if i != 5 else {"url": "u5", "title": "",
            "text": ""} for i, r in enumerate(make_corpus(per_label=3, seed=11))]
    src = tmp_path / f"dump.{ext}"
    getattr(pd.DataFrame(rows), f"to_{ext}")(src, index=False)
    assert main(_args(model_dir, src, tmp_path / "ref.jsonl")) == 0
    job = SparkJob(str(model_dir), str(src), str(tmp_path / "out"), part_rows=1000)
    predict_spark(job, {"id_field": "url"}, spark=spark)
    got, want = _rows(tmp_path / "out"), _rows(tmp_path / "ref.jsonl")
    _same(got, want)
    assert [r["line"] for r in got][:2] == ([2, 3] if ext == "csv" else [1, 2])
    assert got[5]["error"] == "empty_text"


def test_a_multi_label_model_writes_labels_as_the_local_predictor(spark, tmp_path_factory, dump, tmp_path):
    from helpers import base_overrides, multi_corpus, write_jsonl

    from pipeline.baseline import train_baseline
    from pipeline.config import load_config
    from pipeline.data import prepare
    from pipeline.sinks import MULTI_COLUMNS

    root = tmp_path_factory.mktemp("multi")
    cfg = load_config(overrides=[*base_overrides(root, write_jsonl(root / "c.jsonl", multi_corpus())),
                                 "labels.mode=multi"])
    prepare(cfg)
    model = train_baseline(cfg).model_dir
    out, ref = tmp_path / "out", tmp_path / "ref.jsonl"
    assert main(_args(model, dump, out, "--engine", "spark")) == 0
    assert main(_args(model, dump, ref)) == 0
    got, want = _rows(out), _rows(ref)
    _same(got, want)
    assert [r["labels"] for r in got] == [r["labels"] for r in want]
    assert all(r["labels"][0] == r["label"] for r in got if r["label"])  # the primary first
    schema = pq.read_table(next(out.glob("*/*.parquet"))).schema
    assert schema.names == list(MULTI_COLUMNS) and str(schema.field("labels").type) in (
        "list<element: string>", "list<item: string>")


def test_user_errors_are_one_line(model_dir, dump, tmp_path, capsys, monkeypatch):
    assert main(_args(model_dir, dump, tmp_path / "o.jsonl", "--engine", "spark")) == 2
    assert "writes a Parquet dataset directory" in capsys.readouterr().err
    assert main(_args(model_dir, tmp_path, tmp_path / "o", "--engine", "spark")) == 2
    assert "not folders or stdin" in capsys.readouterr().err
    monkeypatch.setattr(autoruntime, "native_bf16", lambda: False)  # an AVX2 machine: bf16 refused before loading
    assert main(_args(model_dir, dump, tmp_path / "o", "--engine", "spark", "--precision", "bf16")) == 2
    assert "this CPU has no native bf16" in capsys.readouterr().err
    monkeypatch.setattr(autoruntime, "native_bf16", lambda: True)
    assert main(_args(model_dir, dump, tmp_path / "o", "--engine", "spark", "--precision", "bf16")) == 2
    assert "apply to transformer models only" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(PipelineError, match=r"needs pyspark: pip install 'arabic-news-pipeline\[spark\]'"):
        session(None)


def test_a_transformer_runs_the_runtime_auto_chose_on_the_driver(spark, trained, dump, tmp_path, capsys):
    tiny = trained[1].model_dir  # saved with predict.runtime: auto
    out, ref = tmp_path / "out", tmp_path / "ref.jsonl"
    assert main(_args(tiny, dump, out, "--engine", "spark", "--part-rows", "20")) == 0
    chose = [x for x in capsys.readouterr().err.splitlines() if x.startswith("runtime auto: ")]
    assert len(chose) == 1  # settled once, on the driver; the workers were handed its choice
    assert main(_args(tiny, dump, ref)) == 0  # the local predictor, on the choice the driver cached
    got, want = _rows(out), _rows(ref)
    assert [(r["id"], r["line"], r["error"], r["model"], r["label"]) for r in got] == \
        [(r["id"], r["line"], r["error"], r["model"], r["label"]) for r in want]
    for a, b in zip(got, want, strict=True):  # int8 rounds per batch, and Spark batches differently
        assert a["confidence"] is None or a["confidence"] == pytest.approx(b["confidence"], abs=0.05)
