"""The package's shape: imports flow one way down the layer list the README states, and the TF-IDF paths of
`predict` and `evaluate` load neither torch nor mlflow."""

import ast
import re
import subprocess
import sys

import pytest
from helpers import ROOT, write_jsonl

# A module imports only from modules before it (lazy imports inside functions count too).
LAYERS = ["errors", "files", "jobs", "distributed", "yamlio", "config", "redact", "text", "labels", "readers",
          "sinks", "dedup", "data", "uncertainty", "metrics", "multilabel", "card", "artifacts", "checkpoints",
          "model", "runtime", "autoruntime", "backbone", "tracking", "profiles", "runs", "baseline", "audit",
          "finetune", "train", "audit_transformer", "pretrain", "stack", "scoring", "evaluate", "pyfunc_model",
          "predict", "ensemble", "selftrain", "review", "drift", "spark", "cli_args", "cli_predict", "cli_models",
          "cli_loop", "cli"]
PACKAGE = ROOT / "pipeline"


def imports_of(module: str) -> set[str]:
    """The pipeline modules a module imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pipeline.")}
    return found - {module}


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(LAYERS)


@pytest.mark.parametrize("module", LAYERS)
def test_imports_flow_one_way(module):
    above = set(LAYERS[:LAYERS.index(module)])
    upward = sorted(imports_of(module) - above)
    assert not upward, f"{module} imports {upward}, which come after it in the layer list"


def test_readme_states_the_layers():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"Modules import only from modules above them:\s*`([^`]+)`", readme)
    assert found, "README: the layer list is missing"
    assert [m.strip() for m in found.group(1).split("→")] == LAYERS


def test_no_module_is_long():
    lengths = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.glob("*.py")}
    long = {name: n for name, n in lengths.items() if n > 300 and name != "backbone.py"}
    assert not long


@pytest.fixture(scope="module")
def tfidf_model(tmp_path_factory, corpus):
    from helpers import base_overrides

    from pipeline.baseline import train_baseline
    from pipeline.config import load_config
    from pipeline.data import prepare

    root = tmp_path_factory.mktemp("tfidf")
    cfg = load_config(overrides=base_overrides(root, write_jsonl(root / "c.jsonl", corpus)))
    prepare(cfg)
    return train_baseline(cfg).model_dir, root / "processed" / "fixture" / "test.jsonl"


LOADED = ("import sys; from pipeline.cli import main; rc = main(sys.argv[1:]); "
          "print(sorted(m for m in ('torch', 'mlflow', 'transformers') if m in sys.modules)); sys.exit(rc)")


def _heavy_modules(*argv: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", LOADED, *argv], capture_output=True, text=True, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])  # the list printed above


def test_tfidf_predict_imports_neither_torch_nor_mlflow(tfidf_model, tmp_path):
    model, test_file = tfidf_model
    loaded = _heavy_modules("predict", "--model", str(model), "--input", str(test_file), "--output",
                            str(tmp_path / "o.jsonl"), "--quiet", "--runtime", "auto")  # auto: the TF-IDF scorer
    assert loaded == []
    assert (tmp_path / "o.jsonl").read_text(encoding="utf-8").count("\n") > 0


def test_tfidf_evaluate_and_predict_help_import_no_torch(tfidf_model, tmp_path):
    model, test_file = tfidf_model
    assert _heavy_modules("evaluate", "--model", str(model), "--data", str(test_file), "--output",
                          str(tmp_path / "e")) == []
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", "predict", "--help"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0 and "--runtime" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not {"torch", "mlflow", "transformers"} & imported
