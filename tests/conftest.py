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

ROOT = Path(__file__).resolve().parents[1]  # the project root
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


def make_corpus(per_label: int = 20, seed: int = 0, words: int = 30) -> list[dict]:
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
    """The fixture corpus (7 labels x 20 rows)."""
    return make_corpus()


@pytest.fixture
def corpus_file(tmp_path: Path, corpus: list[dict]) -> Path:
    """The fixture corpus as a JSONL file."""
    return write_jsonl(tmp_path / "corpus.jsonl", corpus)


def base_overrides(root: Path, corpus_path: Path) -> list[str]:
    """Overrides that point a config at a corpus file and keep every output under `root`."""
    return [f"data.path={corpus_path}", f"data.processed_dir={root / 'processed'}", "data.name=fixture",
            f"output_dir={root / 'models'}", f"labels.file={ROOT / 'configs/labels.yaml'}",
            "tracking.enabled=false", "data.split.validation=0.15", "data.split.test=0.15"]


@pytest.fixture
def overrides(tmp_path: Path, corpus_file: Path) -> list[str]:
    """Base overrides for the fixture corpus in tmp_path."""
    return base_overrides(tmp_path, corpus_file)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip where a clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


def build_tiny_bert(directory: Path, texts: list[str]) -> Path:
    """A tiny BERT (hidden 32, 2 layers) with a WordPiece vocabulary learnt from `texts`, saved like a hub model."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast, set_seed

    # an explicit, sorted vocabulary: WordPiece *training* orders ties differently from one process to the next
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pre = pre_tokenizers.BertPreTokenizer()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    chars = sorted({c for w in words for c in w})
    pieces = [*specials, *chars, *(f"##{c}" for c in chars), *(w for w in words if len(w) > 1)]
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(dict.fromkeys(pieces))}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    set_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict]) -> Path:
    """The tiny BERT directory, built once per session from the fixture corpus."""
    texts = [f"{r['title']}\n{r['text']}" for r in corpus]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), texts)


def tiny_train_overrides(root: Path, corpus_path: Path, model_dir: Path) -> list[str]:
    """Overrides for a fast, learnable tiny-BERT run with every output under `root`."""
    tiny = [f"{k}={v}" for k, v in flat_yaml(ROOT / "configs/tiny.yaml").items()]
    return [*tiny, *base_overrides(root, corpus_path), f"model.name_or_path={model_dir}"]


def flat_yaml(path: Path) -> dict[str, str]:
    """A YAML config as dotted overrides (so tests can layer it under their own)."""
    import yaml

    out: dict[str, str] = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = "null" if node is None else json.dumps(node)

    walk("", yaml.safe_load(path.read_text()))
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, corpus: list[dict], tiny_bert: Path):
    """One tiny training run shared by the tests that only read its outputs."""
    from pipeline.config import load_config
    from pipeline.data import prepare
    from pipeline.train import train

    root = tmp_path_factory.mktemp("trained")
    cfg = load_config(overrides=tiny_train_overrides(root, write_jsonl(root / "corpus.jsonl", corpus), tiny_bert))
    prepare(cfg)
    return cfg, train(cfg)
