"""The committed sample corpus stays valid: the demo and README depend on it."""

import json
from collections import Counter

from helpers import ROOT

from pipeline.config import load_config
from pipeline.data import prepare

SAMPLE = ROOT / "data/sample"


def _rows(name):
    return [json.loads(line) for line in (SAMPLE / name).read_text(encoding="utf-8").splitlines()]


def test_labelled_sample_covers_every_label():
    rows = _rows("articles.jsonl")
    counts = Counter(r["label"] for r in rows)
    assert len(counts) == 7 and min(counts.values()) >= 30
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(80 <= len(r["text"].split()) <= 400 for r in rows)
    assert all(r["labels"][0] == r["label"] for r in rows)
    assert {"title", "text", "source", "date"} <= set(rows[0])


def test_dump_has_the_hard_rows():
    rows = _rows("dump.jsonl")
    assert len(rows) >= 60
    assert any(not r["text"].strip() for r in rows)
    assert max(len(r["text"].split()) for r in rows) > 2000
    assert sum("زر الذهاب إلى الأعلى" in r["text"] for r in rows) >= 3


def test_sample_prepares_cleanly(tmp_path):
    cfg = load_config([ROOT / "configs/base.yaml"], [f"data.processed_dir={tmp_path}",
                                                     f"data.path={SAMPLE / 'articles.jsonl'}",
                                                     f"labels.file={ROOT / 'configs/labels.yaml'}"])
    report = json.loads((prepare(cfg) / "data_report.json").read_text())
    assert report["rows_kept"] == report["rows_read"] >= 210
    assert all(n >= 4 for n in report["label_counts"]["test"].values())
