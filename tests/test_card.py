import json
import re

import pytest
import yaml
from helpers import ROOT

from pipeline.card import MEAN_POOLING_WARNING, CardFacts, model_card
from pipeline.config import LabelsConfig, load_config
from pipeline.data import load_split
from pipeline.labels import load_labels

LABELS = load_labels(LabelsConfig(file=str(ROOT / "configs/labels.yaml")))
NEEDS = "This directory needs this pipeline"


def front_matter(card: str) -> dict:
    """The YAML between the leading `---` lines."""
    found = re.match(r"---\n(.*?)\n---\n", card, re.DOTALL)
    assert found, card[:200]
    return yaml.safe_load(found.group(1))


@pytest.fixture(scope="module")
def cards(trained):
    """The model cards of the session's tiny fine-tune (mean pooling) and of a baseline on the same splits."""
    from pipeline.baseline import train_baseline

    cfg, result = trained
    base = train_baseline(cfg)
    return {"transformer": result.model_dir, "baseline": base.model_dir}


@pytest.mark.parametrize(("kind", "library"), [("transformer", "transformers"), ("baseline", "sklearn")])
def test_every_model_directory_has_a_card_whose_metrics_are_its_own(cards, kind, library):
    out = cards[kind]
    card = (out / "README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["language"] == "ar" and meta["pipeline_tag"] == "text-classification"
    assert meta["library_name"] == library and "arabic" in meta["tags"]
    assert "base_model" not in meta  # a local backbone directory is no hub id
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "fixture"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": metrics["accuracy"],
                                                                  "f1": metrics["macro_f1"]}
    for label, scores in metrics["per_class"].items():
        low, high = metrics["intervals"]["per_class_f1"][label]  # the 95% bootstrap interval beside each F1
        assert (f"| `{label}` | {scores['precision']:.3f} | {scores['recall']:.3f} | {scores['f1']:.3f} "
                f"[{low:.3f}, {high:.3f}] | {scores['support']} |") in card
    report = json.loads((out / "data_report.json").read_text())
    sizes = {s: sum(c.values()) for s, c in report["label_counts"].items()}
    assert f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}" in card
    assert re.search(r"sha256 of the prepared splits .*`[0-9a-f]{64}`", card)
    assert "التجنيد والاستقطاب" in card and f"--model path/to/{out.name}" in card
    assert "/tmp/" not in card and str(ROOT) not in card  # no absolute path of this machine
    assert NEEDS in card  # the normaliser and the calibration apply only through this pipeline


def test_mean_pooled_card_says_plain_transformers_gives_wrong_labels(cards, trained):
    from transformers import pipeline as hf_pipeline

    from pipeline.model import TransformerScorer

    card = (cards["transformer"] / "README.md").read_text(encoding="utf-8")
    assert NEEDS in card and MEAN_POOLING_WARNING in card and "mean-pooling" in front_matter(card)["tags"]
    assert MEAN_POOLING_WARNING not in (cards["baseline"] / "README.md").read_text(encoding="utf-8")
    rows = load_split(trained[0], "test")  # and the warning is true:
    texts, truth = [r["text"] for r in rows], [r["label"] for r in rows]
    scorer = TransformerScorer(cards["transformer"])
    ours = [scorer.labels.ids[i] for i in scorer.predict_proba(texts).argmax(1)]
    plain = [o["label"] for o in hf_pipeline("text-classification", model=str(cards["transformer"]))(texts)]
    accuracy = {name: sum(p == t for p, t in zip(pred, truth, strict=True)) / len(truth)
                for name, pred in (("ours", ours), ("plain", plain))}
    assert accuracy["ours"] >= 0.9 and accuracy["plain"] < accuracy["ours"] - 0.3


def _facts(*overrides: str, temperature: float = 1.0) -> CardFacts:
    cfg = load_config(overrides=["tracking.enabled=false", *overrides])
    return CardFacts(kind="transformer", name="m", cfg=cfg, labels=LABELS, metrics={"test": {}},
                     temperature=temperature)


def test_a_hub_backbone_is_the_base_model_and_a_plain_model_needs_nothing_else():
    plain = [f"text.{k}=false" for k in ("remove_diacritics", "remove_tatweel", "normalize_digits", "remove_urls",
                                         "remove_emails", "collapse_punctuation", "normalize_whitespace")]
    card = model_card(_facts("model.name_or_path=aubmindlab/bert-base-arabertv02", "model.pooling=cls",
                             "model.long_text=head", *plain))
    assert front_matter(card)["base_model"] == "aubmindlab/bert-base-arabertv02"
    assert NEEDS not in card and "The weights load with plain `transformers`" in card
    assert "No test metrics were recorded" in card and "model-index" not in front_matter(card)
    assert "This run was not tracked" in card


@pytest.mark.parametrize(("override", "reason"), [
    ("model.text_prefix='query: '", "every input starts with the prefix `query: `"),
    ("model.long_text=chunks", "up to 8 overlapping windows"),
    ("model.pooling=mean", MEAN_POOLING_WARNING),
])
def test_each_reason_to_need_the_pipeline_is_named(override, reason):
    card = model_card(_facts("model.name_or_path=aubmindlab/bert-base-arabertv02", "model.pooling=cls",
                             "model.long_text=head", override))
    assert NEEDS in card and reason in card
    assert "calibrated with temperature 1.500" in model_card(_facts(override, temperature=1.5))


def test_card_carries_no_credentials_or_home_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "e5").mkdir()
    (tmp_path / "e5" / "backbone.json").write_text('{"model": "intfloat/multilingual-e5-small"}')
    card = model_card(_facts(f"model.name_or_path={tmp_path / 'e5'}", f"data.path={tmp_path}/news.jsonl",
                             "tracking.uri=http://alice:s3cret@host"))
    assert "base_model" not in front_matter(card)
    assert "local directory `e5`, converted from `intfloat/multilingual-e5-small`" in card
    assert "`~/news.jsonl`" in card and str(tmp_path) not in card and "s3cret" not in card
