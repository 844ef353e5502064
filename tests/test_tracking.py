"""MLflow against a real server started here: runs, params, metrics, artifacts, registry, pyfunc, failures."""

import http.server
import re
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import Tiny, free_port, mlflow_server, write_jsonl
from transformers import TrainerCallback

from pipeline.baseline import train_baseline
from pipeline.cli import main
from pipeline.data import load_split
from pipeline.errors import PipelineError
from pipeline.model import TransformerScorer
from pipeline.tracking import TrackingError, connect, resolve_model_uri
from pipeline.train import train

mlflow = pytest.importorskip("mlflow")
MODEL = "test-news-topics"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root) as uri:
        yield uri


TRACKED = ("tracking.enabled=true", f"tracking.registered_model={MODEL}", "tracking.experiment=fixture-news")


@pytest.fixture(scope="module")
def runs(server, tmp_path_factory, corpus, tiny_bert):
    root = tmp_path_factory.mktemp("tracked")
    tiny = Tiny(root, write_jsonl(root / "c.jsonl", corpus), tiny_bert)
    args = tiny.args(*TRACKED, f"tracking.uri={server}", "train.epochs=6")
    cfg = tiny.prepared(*TRACKED, f"tracking.uri={server}", "train.epochs=6")
    result = train(cfg)
    base = train_baseline(cfg)
    mlflow.set_tracking_uri(server)
    return cfg, args, result, base.model_dir, base.run_id


def test_runs_record_params_metrics_tags_and_artifacts(runs):
    _, _, result, _, base_run = runs
    client = mlflow.MlflowClient()
    for run_id, kind in ((result.run_id, "train"), (base_run, "baseline")):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        assert params["train.learning_rate"] == "0.003" and params["model.max_length"] == "64"
        assert len(params) < 120  # the resolved config, not hundreds of HF internals
        for key in ("test_accuracy", "test_macro_f1", "test_weighted_f1", "test_ece", "best_val_macro_f1"):
            assert key in metrics, (kind, key)
        assert all(f"test_f1_{label}" in metrics for label in
                   ("recruitment", "attack_report", "intelligence_assessment", "security_operation",
                    "military_operation", "politics_diplomacy", "other"))
        assert tags["kind"] == kind and tags["dataset"] == "fixture" and len(tags["dataset_hash"]) == 16
        assert tags["labels"].startswith("recruitment,attack_report") and tags["git_commit"]
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"pipeline.yaml", "labels.json", "data_report.json", "classification_report.txt",
                "confusion_matrix.png", "errors.csv"} <= artifacts
        assert not any("checkpoint" in a for a in artifacts)
    assert client.get_run(result.run_id).data.tags["model_family"] == "bert"
    assert "token_audit.json" in {a.path for a in client.list_artifacts(result.run_id)}
    history = client.get_metric_history(result.run_id, "val_macro_f1")
    assert [m.step for m in history] == list(range(1, 7))  # one value per epoch
    assert client.get_run(result.run_id).data.tags["mlflow.runName"] == result.model_dir.name


def test_same_metric_names_for_both_kinds(runs):
    _, _, result, _, base_run = runs
    client = mlflow.MlflowClient()
    tuned = {k for k in client.get_run(result.run_id).data.metrics if k.startswith("test_")}
    base = {k for k in client.get_run(base_run).data.metrics if k.startswith("test_")}
    assert tuned == base


def test_promote_and_pyfunc_from_registry(runs, capsys):
    cfg, args, result, _, _ = runs
    assert main(["promote", *args, "--run", result.run_id]) == 0
    assert f"models:/{MODEL}@champion" in capsys.readouterr().out
    texts = [r["text"] for r in load_split(cfg, "test")]
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out = pyfunc.predict(pd.DataFrame({"text": texts}))
    local = TransformerScorer(result.model_dir).predict_proba(texts)
    labels = list(result.metrics["test"]["per_class"])
    assert out["label"].tolist() == [labels[i] for i in local.argmax(1)]
    assert np.allclose(out["confidence"], local.max(1), atol=1e-5)
    assert {f"prob_{lb}" for lb in labels} <= set(out.columns)
    local_dir = resolve_model_uri(f"models:/{MODEL}@champion")
    assert (local_dir / "labels.json").is_file()
    assert not (local_dir / "checkpoints").exists()  # removed before logging: the store gets the model only


def test_kept_checkpoints_stay_out_of_the_store(server, cfg_tiny):
    result = train(cfg_tiny.prepared("tracking.enabled=true", f"tracking.uri={server}",
                                     "tracking.experiment=kept-checkpoints", "train.epochs=2",
                                     "train.keep_checkpoints=true"))
    assert list((result.model_dir / "checkpoints").glob("checkpoint-*"))  # still here, to resume from
    mlflow.set_tracking_uri(server)
    logged = resolve_model_uri(f"runs:/{result.run_id}/model")
    assert (logged / "model.safetensors").is_file() and (logged / "labels.json").is_file()
    assert not (logged / "checkpoints").exists()
    assert not [p for p in result.model_dir.parent.iterdir() if p.name.startswith("tmp")]  # staging removed


def test_promote_best_and_runs_table(runs, capsys):
    _, args, result, _, base_run = runs
    assert main(["promote", *args, "--best", "test_macro_f1"]) == 0
    promoted = capsys.readouterr().out
    assert result.run_id in promoted or base_run in promoted
    assert main(["runs", *args, "--sort", "test_macro_f1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["run", "id", "kind", "model"]
    assert len(table) == 3
    f1 = [float(line.split()[-4]) for line in table[1:]]
    assert f1 == sorted(f1, reverse=True)


def test_unreachable_server_fails_before_training(tmp_path, cfg_tiny, capsys):
    overrides = ("tracking.enabled=true", f"tracking.uri=http://127.0.0.1:{free_port()}")
    cfg_tiny.prepared(*overrides)
    assert main(["train", *cfg_tiny.args(*overrides)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLflow tracking store http://127.0.0.1:") and "unreachable" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "models").exists()  # no half run


class _Boom(TrainerCallback):
    def on_epoch_end(self, args, state, control, **kwargs):
        raise RuntimeError("simulated crash")


def test_crashed_run_is_marked_failed(server, runs, cfg_tiny):
    cfg = cfg_tiny.prepared(*TRACKED, f"tracking.uri={server}", "train.epochs=2", "tracking.run_name=crash",
                            "tracking.registered_model=null")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, callbacks=[_Boom()])
    found = mlflow.search_runs(experiment_names=["fixture-news"], filter_string="tags.mlflow.runName = 'crash'",
                               output_format="list")
    assert [r.info.status for r in found] == ["FAILED"]


def test_bad_uri_for_predictor(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    with pytest.raises(PipelineError, match="cannot resolve models:/no-such-model@champion"):
        resolve_model_uri("models:/no-such-model@champion")


class _DroppingProxy(http.server.ThreadingHTTPServer):
    """Forwards to the MLflow server but closes every third POST without a response, as a server does when it
    drops an idle keep-alive connection the client is about to reuse (the failure CI once hit mid-training)."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.posts, self.dropped = upstream, 0, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, body: bytes | None) -> None:
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                             headers={"Content-Type": self.headers.get("Content-Type", "")})
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, payload, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.posts += 1
                if proxy.posts % 3 == 0:
                    proxy.dropped += 1
                    self.close_connection = True
                    return
                self._forward(body)

            def do_PUT(self):  # artifact uploads; PATCH and DELETE for logged models
                self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            do_PATCH = do_DELETE = do_PUT

        super().__init__(("127.0.0.1", 0), Handler)


def test_run_survives_dropped_connections(server, runs, cfg_tiny):
    proxy = _DroppingProxy(server)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{proxy.server_address[1]}"
        cfg = cfg_tiny.prepared(*TRACKED, f"tracking.uri={uri}", "train.epochs=2", "tracking.run_name=flaky",
                                "tracking.registered_model=null")
        result = train(cfg)
    finally:
        proxy.shutdown()
        proxy.server_close()
        mlflow.set_tracking_uri(server)
    assert proxy.dropped >= 3  # the run really met dropped requests, and retried them
    run = mlflow.MlflowClient(server).get_run(result.run_id)
    assert run.info.status == "FINISHED" and "test_macro_f1" in run.data.metrics
    assert "pipeline.yaml" in {a.path for a in mlflow.MlflowClient(server).list_artifacts(result.run_id)}


@pytest.fixture
def own_uri(monkeypatch):
    """A test that points mlflow elsewhere (mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI) and then puts
    back what the module's other tests use."""
    previous = mlflow.get_tracking_uri()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    mlflow.set_tracking_uri(previous)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_params_tags_and_shared_files_carry_no_secret_or_home(server, own_uri, tmp_path, monkeypatch, corpus,
                                                              tiny_bert):
    monkeypatch.setenv("HOME", str(tmp_path))  # every path of this run lies under the home directory
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bin" / "pipeline"), "baseline"])  # mlflow.source.name
    host = server.removeprefix("http://")
    tiny = Tiny(tmp_path, write_jsonl(tmp_path / "c.jsonl", corpus), tiny_bert)
    result = train_baseline(tiny.prepared("tracking.enabled=true", f"tracking.uri=http://alice:s3cret@{host}",
                                          "tracking.experiment=secrets", "tracking.registered_model=null"))
    client = mlflow.MlflowClient(server)
    run = client.get_run(result.run_id)
    values = {**run.data.params, **run.data.tags}
    leaks = {k: v for k, v in values.items() if "s3cret" in v or str(tmp_path) in v}
    assert not leaks
    assert run.data.params["tracking.uri"] == f"http://alice:***@{host}"
    assert run.data.params["data.path"] == "~/c.jsonl" and run.data.tags["mlflow.source.name"] == "~/bin/pipeline"
    for name in ("pipeline.yaml", "README.md"):
        text = Path(client.download_artifacts(result.run_id, name, str(tmp_path))).read_text(encoding="utf-8")
        assert "s3cret" not in text and str(tmp_path) not in text, name


def test_unreachable_store_error_hides_the_password(own_uri):
    with pytest.raises(TrackingError) as err:
        connect(f"http://alice:s3cret@127.0.0.1:{free_port()}")
    assert "s3cret" not in str(err.value) and "store http://alice:***@127.0.0.1:" in str(err.value)


def test_demo_sequence_logs_quietly_and_ends_with_a_champion(cfg_tiny, own_uri, tmp_path, monkeypatch, capfd):
    """`make demo` in small: prepare, baseline, train on the default store (sqlite:///mlflow.db in the working
    directory), then `promote --best test_macro_f1`; the README's `models:/NAME@champion` snippet then loads."""
    monkeypatch.chdir(tmp_path)
    args = cfg_tiny.args("tracking.enabled=true", "tracking.registered_model=demo-news", "train.epochs=2")
    for command in ("prepare", "baseline", "train"):
        assert main([command, *args]) == 0
    out, err = capfd.readouterr()
    assert "baseline: test accuracy" in out and "fine-tuned: test accuracy" in out
    for noise in ("LOAD REPORT", "MISSING", "Loading weights", "Writing model shards", "Downloading artifacts"):
        assert noise not in out + err, noise
    assert main(["promote", *args, "--best", "test_macro_f1"]) == 0
    promoted = capfd.readouterr().out
    assert promoted.startswith("models:/demo-news@champion -> version ")
    assert mlflow.get_tracking_uri() == "sqlite:///mlflow.db" and (tmp_path / "mlflow.db").is_file()
    runs = mlflow.search_runs(experiment_names=["fixture"], output_format="list")
    f1 = {r.info.run_id: r.data.metrics["test_macro_f1"] for r in runs}
    assert len(f1) == 2 and f1[re.search(r"\(run (\w+)\)", promoted).group(1)] == max(f1.values())
    rows = load_split(cfg_tiny(), "test")
    pred = mlflow.pyfunc.load_model("models:/demo-news@champion").predict(
        pd.DataFrame({"text": [r["text"] for r in rows]}))
    assert np.mean([p == r["label"] for p, r in zip(pred["label"], rows, strict=True)]) >= 0.8
