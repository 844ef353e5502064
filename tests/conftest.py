"""Shared fixtures: an offline session, a small separable Arabic corpus, a config shrunk into tmp_path."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Words that mark each label, and words every label shares; documents are seeded
# random mixtures, so the fixture is separable but no two documents are near-duplicates.
LABEL_WORDS = {
    "recruitment": "تجنيد استقطاب مقاتلين أجانب دعاية تطرف شبكات التواصل الشباب الانضمام التنظيم".split(),
    "attack_report": "انفجار هجوم انتحاري عبوة ناسفة قتلى جرحى استهدف مسلحون تبنى اغتيال".split(),
    "intelligence_assessment": "تقرير تقييم التهديد مستوى الخطر تحليل دراسة الاستخبارات تقديرات مراقبة إحصاءات".split(),
    "security_operation": "اعتقال مداهمة تفكيك خلية ضبط أسلحة محكمة حكم السجن الشرطة المشتبه".split(),
    "military_operation": "غارات قصف الجيش القوات الجوية هجوم بري السيطرة الدبابات الصواريخ اعتراض المناورات".split(),
    "politics_diplomacy": "مفاوضات قمة الرئيس وزير الخارجية اتفاق البرلمان الانتخابات العقوبات زيارة رسمية".split(),
    "other": "الاقتصاد الأسعار المباراة الفريق مهرجان ثقافي الطقس أمطار التكنولوجيا الصحة".split(),
}
COMMON = ("في من على إلى أن قال اليوم أمس العاصمة المدينة مصادر محلية "
          "بيان الأسبوع الماضي وذلك بعد حيث كما أيضا خلال منذ عدد مسؤول").split()
LABELS = list(LABEL_WORDS)


def make_corpus(per_label: int = 12, seed: int = 0, words: int = 30) -> list[dict]:
    """A deterministic, separable corpus of short Arabic pseudo-articles."""
    rng = random.Random(seed)
    rows = []
    for label, vocab in LABEL_WORDS.items():
        for i in range(per_label):
            body = [rng.choice(vocab) if rng.random() < 0.6 else rng.choice(COMMON) for _ in range(words)]
            rows.append({"id": f"{label}-{i:03d}", "title": " ".join(rng.sample(vocab, 3)),
                         "text": " ".join(body), "label": label, "source": f"outlet-{i % 4}"})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSONL."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def corpus() -> list[dict]:
    """The fixture corpus (7 labels x 12 rows)."""
    return make_corpus()


@pytest.fixture
def corpus_file(tmp_path: Path, corpus: list[dict]) -> Path:
    """The fixture corpus as a JSONL file."""
    return write_jsonl(tmp_path / "corpus.jsonl", corpus)


@pytest.fixture
def overrides(tmp_path: Path, corpus_file: Path) -> list[str]:
    """Overrides that point a config at the fixture corpus and keep every output in tmp_path."""
    return [f"data.path={corpus_file}", f"data.processed_dir={tmp_path / 'processed'}", "data.name=fixture",
            f"output_dir={tmp_path / 'models'}", f"labels.file={ROOT / 'configs/labels.yaml'}",
            "tracking.enabled=false", "data.split.validation=0.15", "data.split.test=0.15"]


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip where a clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
