"""Fixtures: an offline session, the fixture corpus, the tiny BERT, a tiny config in tmp_path, one trained model.

Helpers live in tests/helpers.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import SHARED_DATA, Tiny, base_overrides, build_tiny_bert, make_corpus, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def corpus() -> list[dict]:
    """The fixture corpus (7 labels x 20 rows)."""
    return make_corpus()


@pytest.fixture
def corpus_file(tmp_path: Path, corpus: list[dict]) -> Path:
    """The fixture corpus as a JSONL file."""
    return write_jsonl(tmp_path / "corpus.jsonl", corpus)


@pytest.fixture
def overrides(tmp_path: Path, corpus_file: Path) -> list[str]:
    """Base overrides for the fixture corpus in tmp_path (default model, no training)."""
    return base_overrides(tmp_path, corpus_file)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip where a clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict]) -> Path:
    """The tiny BERT directory, built once per session from the fixture corpus."""
    texts = [f"{r['title']}\n{r['text']}" for r in corpus]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), texts)


@pytest.fixture
def cfg_tiny(tmp_path: Path, corpus: list[dict], tiny_bert: Path) -> Tiny:
    """The tiny config on the fixture corpus, every output under tmp_path: `cfg_tiny("train.epochs=2")`."""
    return Tiny(tmp_path, write_jsonl(tmp_path / "c.jsonl", corpus), tiny_bert)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict], tiny_bert: Path):
    """One tiny training run shared by the tests that only read its outputs."""
    from pipeline.train import train

    root = tmp_path_factory.mktemp("trained")
    cfg = Tiny(root, write_jsonl(root / "corpus.jsonl", corpus), tiny_bert).prepared()
    return cfg, train(cfg)
