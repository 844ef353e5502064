import json

import numpy as np
import pytest
import torch
from helpers import ROOT, write_jsonl
from transformers import AutoModelForSequenceClassification, TrainerCallback

from pipeline.config import LabelsConfig, load_config
from pipeline.data import load_split
from pipeline.errors import ConfigError
from pipeline.evaluate import evaluate
from pipeline.finetune import class_weights, freeze, param_groups, precision_flags, weighted_loss
from pipeline.labels import LabelMap, load_labels
from pipeline.model import TransformerScorer, load_pretrained
from pipeline.train import train

LABELS = load_labels(LabelsConfig(file=str(ROOT / "configs/labels.yaml")))


def test_learns_the_fixture(trained):
    _, result = trained
    assert result.metrics["test"]["accuracy"] >= 0.9
    assert result.metrics["validation"]["macro_f1"] >= 0.8


def test_model_directory_is_self_describing(trained):
    cfg, result = trained
    files = {p.name for p in result.model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "labels.json", "pipeline.yaml", "metrics.json",
            "calibration.json", "classification_report.txt", "confusion_matrix.png", "errors.csv"} <= files
    assert not any(result.model_dir.glob("*.bin"))
    plain = AutoModelForSequenceClassification.from_pretrained(result.model_dir)  # plain transformers loads it
    assert plain.config.id2label[0] == "recruitment"
    saved = load_config([result.model_dir / "pipeline.yaml"])
    assert saved == cfg  # the full resolved config, normaliser included
    assert not (result.model_dir / "checkpoints").exists()  # removed once the run finished


def test_kept_checkpoints_are_pruned(cfg_tiny):
    result = train(cfg_tiny.prepared("train.epochs=3", "train.keep_checkpoints=true"))
    checkpoints = list((result.model_dir / "checkpoints").glob("checkpoint-*"))
    assert 1 <= len(checkpoints) <= 2  # pruned to best and last


def test_calibration_and_token_audit_reported(trained):
    _, result = trained
    cal = json.loads((result.model_dir / "calibration.json").read_text())
    assert cal["temperature"] > 0 and cal["ece_after"] <= cal["ece_before"] + 1e-9
    audit = result.metrics["token_audit"]["train"]
    assert 0.0 <= audit["share_longer_than_max_length"] <= 1.0 and audit["docs"] > 0


def test_reloaded_model_reproduces_test_metrics(trained, tmp_path):
    cfg, result = trained
    test_file = tmp_path / "test.jsonl"
    write_jsonl(test_file, load_split(cfg, "test"))
    _, metrics = evaluate(result.model_dir, test_file, tmp_path / "eval")
    for key in ("accuracy", "macro_f1", "weighted_f1"):
        assert metrics[key] == pytest.approx(result.metrics["test"][key])
    assert metrics["ece"] == pytest.approx(result.metrics["test"]["ece"], abs=1e-6)


def test_same_seed_same_predictions(cfg_tiny, trained):
    cfg, result = trained
    second = train(cfg_tiny.prepared())
    texts = [r["text"] for r in load_split(cfg, "test")]
    a = TransformerScorer(result.model_dir).predict_proba(texts)
    b = TransformerScorer(second.model_dir).predict_proba(texts)
    assert np.array_equal(a, b)


class _CrashAfter(TrainerCallback):
    """Dies right after the checkpoint of `epoch` is written, as a killed job would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_save(self, args, state, control, **kwargs):
        if state.epoch >= self.epoch:
            raise KeyboardInterrupt


class _FirstStep(TrainerCallback):
    first = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.first is None:
            self.first = state.global_step


def test_resume_continues_from_checkpoint(tmp_path, cfg_tiny):
    cfg = cfg_tiny.prepared("train.epochs=4")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_CrashAfter(2)])
    assert (tmp_path / "models").exists() and list(tmp_path.glob("models/*/checkpoints/checkpoint-*"))
    steps_per_epoch = -(-len(load_split(cfg, "train")) // 8)
    probe = _FirstStep()
    resumed = train(cfg_tiny("train.epochs=4", "train.resume=true"), callbacks=[probe])
    assert probe.first == 2 * steps_per_epoch + 1
    assert max(h["epoch"] for h in resumed.metrics["history"]) == 4


def test_class_weights():
    cfg = load_config()
    labels = LabelMap(ids=("a", "b", "c"))
    y = [0] * 8 + [1] * 2 + [2] * 2
    auto = class_weights(cfg.model_copy(update={"train": cfg.train.model_copy(update={"class_weights": "auto"})}),
                         labels, y)
    assert auto.tolist() == pytest.approx([0.5, 2.0, 2.0])
    sqrt = class_weights(cfg.model_copy(update={"train": cfg.train.model_copy(update={"class_weights": "sqrt"})}),
                         labels, y)
    assert sqrt.tolist() == pytest.approx([0.5 ** 0.5, 2 ** 0.5, 2 ** 0.5])
    explicit = cfg.model_copy(update={"train": cfg.train.model_copy(update={"class_weights": {"b": 3.0}})})
    assert class_weights(explicit, labels, y).tolist() == [1.0, 3.0, 1.0]
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    targets = torch.tensor([0, 1])
    plain = weighted_loss(None)({"logits": logits}, targets)
    weighted = weighted_loss(auto)({"logits": logits}, targets)
    assert not torch.isclose(plain, weighted)  # the rare class's error counts more


def test_layerwise_learning_rates(tiny_bert):
    model = load_pretrained(str(tiny_bert), LABELS)
    groups = param_groups(model, lr=1e-3, head_lr=1e-2, decay=0.5, weight_decay=0.01)
    rates = sorted({g["lr"] for g in groups})
    assert rates == pytest.approx([1e-3 * 0.5 ** 3, 1e-3 * 0.5 ** 2, 1e-3 * 0.5, 1e-2])
    assert any(g["weight_decay"] == 0.0 for g in groups)


def test_freezing_embeddings_and_lower_layers(tiny_bert):
    model = load_pretrained(str(tiny_bert), LABELS)
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    layer0 = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
    assert freeze(model, embeddings=True, layers=0) == total - embeddings
    assert freeze(model, embeddings=True, layers=1) == total - embeddings - layer0
    assert all(p.requires_grad for p in model.bert.encoder.layer[1].parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    groups = param_groups(model, lr=1e-3, head_lr=None, decay=1.0, weight_decay=0.0)
    assert sum(p.numel() for g in groups for p in g["params"]) == total - embeddings - layer0
    with pytest.raises(ConfigError, match="freeze_layers=3, but the model has 2 layers"):
        freeze(model, embeddings=False, layers=3)


def test_precision_on_cpu(monkeypatch):
    import pipeline.finetune as train_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    assert precision_flags("auto") == {"bf16": True, "fp16": False}
    assert precision_flags("fp32") == {"bf16": False, "fp16": False}
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        precision_flags("fp16")
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    assert precision_flags("auto") == {"bf16": False, "fp16": False}
    with pytest.raises(ConfigError, match="needs AVX512-BF16 or AMX"):
        precision_flags("bf16")


def test_epoch_metrics_match_final_evaluation(trained):
    """Per-epoch validation metrics are computed on documents in order (not a shuffled eval sampler)."""
    _, result = trained
    history = [h for h in result.metrics["history"] if "eval_accuracy" in h]
    best = max(h["eval_macro_f1"] for h in history)
    # the final (calibrated) model is the best epoch; temperature scaling never changes the argmax
    assert result.metrics["validation"]["macro_f1"] == pytest.approx(best)


def test_linear_probe_fits_the_head_on_frozen_features(cfg_tiny, tiny_bert):
    from pipeline.finetune import linear_probe
    from pipeline.model import Classifier, TextEncoder, load_tokenizer

    cfg = cfg_tiny.prepared()
    labels = LABELS
    tok = load_tokenizer(str(tiny_bert))
    rows = load_split(cfg, "train")
    enc = TextEncoder(tok, cfg.model).encode([r["text"] for r in rows])
    y = labels.encode(rows).tolist()
    model = Classifier(load_pretrained(str(tiny_bert), labels), "mean")
    before = model.inner.classifier.weight.detach().clone()
    train_acc = linear_probe(model, tok, enc, y, len(labels), seed=0)
    assert train_acc >= 0.9  # the random-init encoder's mean features already separate the fixture
    assert not torch.equal(before, model.inner.classifier.weight)
    from pipeline.model import run_logits

    logits = run_logits(model, tok, enc.input_ids, 16)
    assert (logits.argmax(1) == np.asarray(y)).mean() == pytest.approx(train_acc)


@pytest.mark.parametrize("strategy", ["head", "head_tail", "chunks"])
def test_saved_model_scores_a_document_five_times_too_long(trained, strategy):
    _, result = trained
    scorer = TransformerScorer(result.model_dir)
    scorer.set_long_text(strategy)
    long_doc = " ".join(["غارات قصف الجيش القوات الجوية الدبابات"] * 60)  # > 5 x 64 tokens
    probs, tokens = scorer.score([long_doc, "مباراة الفريق"])
    assert tokens[0] > 5 * 64 and probs.shape == (2, 7)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert probs[0].argmax() == 4  # military_operation
