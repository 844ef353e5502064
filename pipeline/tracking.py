"""MLflow tracking: runs, params, metrics, artifacts, model logging, the registry. A no-op when tracking is off.

The only module that imports mlflow, with `pyfunc_model.py` (the logged model's entry point), and it does so only
when a store is used: importing this module loads neither mlflow nor torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from pipeline.artifacts import RUN_ARTIFACTS
from pipeline.config import Config, flatten
from pipeline.data import splits_sha256
from pipeline.errors import PipelineError
from pipeline.jobs import Interrupted
from pipeline.redact import redact_mapping, redact_text

DEFAULT_URI = "sqlite:///mlflow.db"
PYFUNC_NAME = "model"
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class TrackingError(PipelineError):
    """The tracking store cannot be reached or queried."""


def tracking_uri(cfg: Config | None = None) -> str:
    """`tracking.uri`, else MLFLOW_TRACKING_URI, else the embedded sqlite store in the working directory."""
    return (cfg.tracking.uri if cfg and cfg.tracking.uri else None) or os.environ.get("MLFLOW_TRACKING_URI") \
        or DEFAULT_URI


def connect(uri: str) -> Any:
    """Point mlflow at `uri` and fail fast, in one line, when it cannot be reached.

    Only this probe runs without retries: once the store answered, a run's requests keep MLflow's retries with
    backoff, so one dropped keep-alive connection mid-training does not kill the job.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        with mock.patch.dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # mlflow raises many types for a dead server
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow tracking store {redact_text(uri)} is unreachable ({redact_text(reason)}); "
                            "start the server, fix tracking.uri / MLFLOW_TRACKING_URI, or set tracking.enabled=false"
                            ) from None
    return mlflow


def _end(mlflow: Any, status: str) -> None:
    """End the active run with a status; a store that fails too (a full disk) must not hide the first error."""
    with contextlib.suppress(Exception):
        mlflow.end_run(status=status)


def git_commit() -> str:
    """The current git commit, or 'unknown' outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                             check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def experiment_name(cfg: Config) -> str:
    """`tracking.experiment`, else one experiment per dataset."""
    return cfg.tracking.experiment or cfg.data.name


class Tracker:
    """One MLflow run: params, tags, per-epoch and final metrics, artifacts, the pyfunc model."""

    def __init__(self, cfg: Config, enabled: bool = True) -> None:
        self.cfg = cfg
        self.enabled = enabled and cfg.tracking.enabled  # False: a DDP rank other than 0, which never logs
        self.mlflow: Any = connect(tracking_uri(cfg)) if self.enabled else None
        self.run_id: str | None = None

    @contextlib.contextmanager
    def run(self, name: str, kind: str, tags: dict[str, str],
            params: dict[str, Any] | None = None) -> Iterator[Tracker]:
        """A run that ends FINISHED, FAILED on an error, or KILLED on Ctrl-C; never left RUNNING.

        `params` are logged next to the flattened config (derived values such as `train.effective_batch_size`).
        """
        if not self.enabled:
            yield self
            return
        mlflow = self.mlflow
        mlflow.set_experiment(experiment_name(self.cfg))
        with mlflow.start_run(run_name=name) as active:
            self.run_id = active.info.run_id
            mlflow.log_params({**redact_mapping(flatten(self.cfg)), **(params or {})})
            ours = {"kind": kind, "git_commit": git_commit(), "dataset": self.cfg.data.name, **tags}
            mlflow.set_tags(public_tags(active.data.tags, ours))
            try:
                yield self
            except (KeyboardInterrupt, Interrupted):
                _end(mlflow, "KILLED")
                raise
            except BaseException:
                _end(mlflow, "FAILED")
                raise

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Numeric metrics (others are skipped)."""
        if self.enabled:
            clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
            self.mlflow.log_metrics(clean, step=step)

    def log_final(self, metrics: dict[str, Any], labels: list[str]) -> None:
        """test_/val_ accuracy, macro/weighted F1, ECE, and test_f1_<label>, equal for every model kind; a
        multi-label run adds its label-set metrics (`test_multilabel_micro_f1`, `test_subset_accuracy`, ...)."""
        flat: dict[str, float] = {}
        for split, prefix in (("test", "test"), ("validation", "best_val")):
            m = metrics.get(split, {})
            for key in ("accuracy", "macro_f1", "weighted_f1", "ece", "ece_uncalibrated", "log_loss",
                        "multilabel_micro_f1", "multilabel_macro_f1", "subset_accuracy", "hamming_loss"):
                if key in m:
                    flat[f"{prefix}_{key}"] = m[key]
        for label in labels:
            flat[f"test_f1_{label}"] = metrics["test"]["per_class"][label]["f1"]
        ci = metrics["test"].get("intervals", {}).get("macro_f1")
        if ci:  # the 95% bootstrap interval, so runs are compared with their spread in the MLflow UI
            flat["test_macro_f1_ci_low"], flat["test_macro_f1_ci_high"] = ci
        paired = metrics["test"].get("vs_baseline")
        if paired:
            flat["test_macro_f1_vs_baseline"] = paired["macro_f1_diff"]
            flat["test_vs_baseline_p"] = paired.get("p_bootstrap", paired["p_mcnemar"])
        flat["train_seconds"] = metrics.get("train_seconds", 0.0)
        self.log_metrics(flat)

    def log_dir(self, model_dir: Path) -> None:
        """The run artifacts that a model directory holds (no weights, no checkpoints)."""
        if not self.enabled:
            return
        for name in RUN_ARTIFACTS:
            if (model_dir / name).is_file():
                self.mlflow.log_artifact(str(model_dir / name))

    def log_files(self, paths: list[Path]) -> None:
        """Log files as artifacts of the run (the outputs of a run that has no model directory)."""
        if self.enabled:
            for path in paths:
                self.mlflow.log_artifact(str(path))

    def log_model(self, model_dir: Path, exclude: tuple[str, ...] = ()) -> str | None:
        """Log the model directory as a pyfunc (wrapping the project's predictor) and register it.

        Entries named in `exclude` (a run's kept checkpoints) stay out of the store: the directory is then
        staged as hard links without them, so nothing is copied twice on disk.
        """
        if not self.enabled:
            return None
        import pandas as pd

        import pipeline

        package = Path(pipeline.__file__).parent
        with contextlib.ExitStack() as stack:  # no bar for mlflow's local copy of the model it loads to check it
            stack.enter_context(mock.patch.dict(os.environ, {PROGRESS_BAR: os.environ.get(PROGRESS_BAR, "false")}))
            if any((model_dir / name).exists() for name in exclude):
                staged = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=model_dir.parent))) / model_dir.name
                shutil.copytree(model_dir, staged, ignore=shutil.ignore_patterns(*exclude), copy_function=_link)
                model_dir = staged
            info = self.mlflow.pyfunc.log_model(
                name=PYFUNC_NAME, python_model=str(package / "pyfunc_model.py"),
                artifacts={"model_dir": str(model_dir)}, code_paths=[str(package)],
                input_example=pd.DataFrame({"text": ["أعلن الجيش السيطرة على المدينة بعد معارك عنيفة"]}),
                pip_requirements=_requirements(), registered_model_name=self.cfg.tracking.registered_model)
        return info.model_uri


def _link(src: str, dst: str) -> None:
    """Hard-link a file into a staging tree, copying where the filesystem cannot link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _requirements() -> list[str]:
    """Pinned runtime requirements of the pyfunc (skips mlflow's slow inference by loading the model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "scikit-learn", "scipy", "numpy",
                 "pandas", "pydantic", "pyyaml", "joblib", "datasets", "datasketch", "matplotlib"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{dist}=={version(dist)}")
    return out


def run_tags(cfg: Config, labels: list[str], family: str) -> dict[str, str]:
    """Tags that make runs comparable: data content hash, label set, model family."""
    return {"dataset_hash": splits_sha256(cfg)[:16], "labels": ",".join(labels), "model_family": family,
            "model": Path(cfg.model.name_or_path.rstrip("/")).name if family != "tfidf" else "tfidf"}


def public_tags(context: dict[str, str], ours: dict[str, str]) -> dict[str, str]:
    """Our tags, and MLflow's own (`mlflow.source.name`, a git remote URL) where they held a secret or home path."""
    clean = redact_mapping({**context, **ours})
    return {k: v for k, v in clean.items() if k in ours or v != context[k]}


def _client(cfg: Config) -> tuple[Any, Any]:
    mlflow = connect(tracking_uri(cfg))
    return mlflow, mlflow.MlflowClient()


def promote(cfg: Config, run_id: str | None = None, best: str | None = None, alias: str = "champion") -> str:
    """Set `alias` on the registered version logged by a run, or by the best run on a metric."""
    name = cfg.tracking.registered_model
    if not name:
        raise TrackingError("tracking.registered_model is not set; nothing to promote")
    mlflow, client = _client(cfg)
    versions = client.search_model_versions(f"name='{name}'")
    by_run = {v.run_id: v for v in versions}
    if best:
        experiment = experiment_name(cfg)
        runs = mlflow.search_runs(experiment_names=[experiment], order_by=[f"metrics.{best} DESC"],
                                  output_format="list")
        ranked = [r.info.run_id for r in runs if best in r.data.metrics and r.info.run_id in by_run]
        if not ranked:
            raise TrackingError(f"no run in experiment '{experiment}' has metric '{best}' and a version of '{name}'")
        run_id = ranked[0]
    if run_id not in by_run:
        raise TrackingError(f"run {run_id} has no registered version of '{name}'")
    version = by_run[run_id].version
    client.set_registered_model_alias(name, alias, version)
    return f"models:/{name}@{alias} -> version {version} (run {run_id})"


def list_runs(cfg: Config, experiment: str | None = None, sort: str = "test_macro_f1") -> list[dict[str, Any]]:
    """Runs of an experiment as rows for a terminal table, best first on `sort`."""
    mlflow, _ = _client(cfg)
    name = experiment or experiment_name(cfg)
    if mlflow.get_experiment_by_name(name) is None:
        raise TrackingError(f"no experiment named '{name}' in {redact_text(tracking_uri(cfg))}")
    runs = mlflow.search_runs(experiment_names=[name], output_format="list")
    rows = []
    for r in runs:
        p, m, t = r.data.params, r.data.metrics, r.data.tags
        end = r.info.end_time or r.info.start_time
        rows.append({"run": t.get("mlflow.runName", r.info.run_id[:8]), "id": r.info.run_id[:8],
                     "kind": t.get("kind", ""), "model": t.get("model", ""),
                     "lr": p.get("train.learning_rate", "") if t.get("kind") == "train" else "",
                     "epochs": p.get("train.epochs", "") if t.get("kind") == "train" else "",
                     "max_len": p.get("model.max_length", "") if t.get("kind") == "train" else "",
                     "test_macro_f1": m.get("test_macro_f1"), "test_accuracy": m.get("test_accuracy"),
                     "minutes": f"{(end - r.info.start_time) / 60000:.1f}", "status": r.info.status})
    rows.sort(key=lambda row: -(row.get(sort) if isinstance(row.get(sort), int | float) else float("-inf")))
    return rows


def resolve_model_uri(uri: str) -> Path:
    """A local model directory for a `models:/` or `runs:/` URI (downloaded from the tracking store)."""
    mlflow = connect(tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:  # registry and store errors come in many types
        raise TrackingError(f"cannot resolve {uri}: {redact_text(str(exc).splitlines()[0][:200])}") from None
    flavor = mlflow.models.Model.load(str(local / "MLmodel")).flavors.get("python_function", {})
    entry = flavor.get("artifacts", {}).get("model_dir")
    if not entry or not (local / entry["path"]).is_dir():
        raise TrackingError(f"{uri} is not a model logged by this pipeline (no model_dir artifact)")
    return local / entry["path"]
