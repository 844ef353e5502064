from itertools import pairwise

import numpy as np
import pytest
import torch
from helpers import ROOT

from pipeline.config import LabelsConfig, ModelConfig
from pipeline.errors import ModelError
from pipeline.labels import load_labels
from pipeline.metrics import softmax
from pipeline.model import (
    Classifier,
    TextEncoder,
    average_by_doc,
    check_loading,
    load_pretrained,
    load_tokenizer,
    run_logits,
)

LABELS = load_labels(LabelsConfig(file=str(ROOT / "configs/labels.yaml")))


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return load_tokenizer(str(tiny_bert))


def _long_doc(tokenizer, n_tokens: int) -> tuple[str, list[int]]:
    words = " ".join(["الجيش", "قصف", "مفاوضات", "الاقتصاد", "اعتقال"] * n_tokens)
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids), ids


@pytest.mark.parametrize("strategy", ["head", "head_tail", "chunks"])
def test_long_document_strategies(tokenizer, strategy):
    cfg = ModelConfig(max_length=32, long_text=strategy, chunk_stride=8, max_chunks=8)
    enc = TextEncoder(tokenizer, cfg)
    text, _ = _long_doc(tokenizer, 5 * 32)  # 5x longer than max_length
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = enc.encode([text, "قصير"])
    assert all(len(x) <= 32 for x in out.input_ids)
    assert all(x[0] == tokenizer.cls_token_id and x[-1] == tokenizer.sep_token_id for x in out.input_ids)
    assert out.doc_tokens[0] == len(ids) and out.truncated(32).tolist() == [True, False]
    pieces = [x[1:-1] for x, d in zip(out.input_ids, out.doc_index, strict=True) if d == 0]
    if strategy == "head":
        assert pieces == [ids[:30]]
    elif strategy == "head_tail":
        assert pieces == [ids[:15] + ids[-15:]]
    else:
        assert 1 < len(pieces) <= 8
        assert pieces[0] == ids[:30] and pieces[-1] == ids[-30:]
        starts = [s for p in pieces for s in range(len(ids)) if ids[s:s + 30] == p][:len(pieces)]
        assert all(b - a <= 30 for a, b in pairwise(starts))  # windows leave no gap
    assert out.doc_index.count(1) == 1


@pytest.mark.parametrize("strategy", ["head", "chunks"])
def test_text_prefix_starts_every_input(tokenizer, strategy):
    cfg = ModelConfig(max_length=32, long_text=strategy, chunk_stride=8, text_prefix="query: ")
    text, ids = _long_doc(tokenizer, 3 * 32)
    prefix = tokenizer("query:", add_special_tokens=False)["input_ids"]
    out = TextEncoder(tokenizer, cfg).encode([text, "قصير"])
    assert len(out.input_ids) > 2 if strategy == "chunks" else len(out.input_ids) == 2
    for x in out.input_ids:
        assert len(x) <= 32 and x[0] == tokenizer.cls_token_id and x[1:1 + len(prefix)] == prefix
    assert out.input_ids[0][1 + len(prefix):-1] == ids[:32 - 2 - len(prefix)]  # the prefix takes from the budget
    short = tokenizer("query: قصير")["input_ids"]
    assert out.input_ids[-1] == short  # same ids as tokenising the prefixed text whole


def test_chunk_probabilities_average_per_document():
    probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    assert np.allclose(average_by_doc(probs, [0, 0, 1], 2), [[0.6, 0.4], [0.1, 0.9]])
    assert np.allclose(softmax(np.array([[0.0, np.log(3.0)]])), [[0.25, 0.75]])
    assert np.allclose(softmax(np.array([[0.0, 2.0]]), temperature=2.0), softmax(np.array([[0.0, 1.0]])))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_logits(tiny_bert, tokenizer, pooling):
    model = Classifier(load_pretrained(str(tiny_bert), LABELS), pooling)
    enc = TextEncoder(tokenizer, ModelConfig(max_length=64)).encode(["هجوم على السوق", "قمة " * 40])
    alone = run_logits(model, tokenizer, enc.input_ids[:1], batch_size=1)
    batched = run_logits(model, tokenizer, enc.input_ids, batch_size=2)
    assert np.allclose(alone[0], batched[0], atol=1e-5)


def test_classifier_head_has_label_names(tiny_bert):
    model = load_pretrained(str(tiny_bert), LABELS)
    assert model.config.id2label[0] == "recruitment" and model.config.num_labels == 7
    out = Classifier(model, "mean")(input_ids=torch.tensor([[2, 10, 3]]), attention_mask=torch.ones(1, 3, dtype=int))
    assert out.logits.shape == (1, 7)


def test_attention_dropout_override(tiny_bert):
    model = load_pretrained(str(tiny_bert), LABELS, attention_dropout=0.0)
    assert model.config.attention_probs_dropout_prob == 0.0
    assert model.bert.encoder.layer[0].attention.self.dropout.p == 0.0
    assert load_pretrained(str(tiny_bert), LABELS).config.attention_probs_dropout_prob > 0  # the backbone's own


def test_unknown_model_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"cannot load model 'aubmindlab/bert-base-arabertv02'.*unreachable.*"
                                         r"model\.name_or_path=models/pretrained/bert-base-arabertv02") as err:
        load_pretrained("aubmindlab/bert-base-arabertv02", LABELS)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="cannot load model"):
        load_tokenizer("aubmindlab/bert-base-arabertv02")


def test_local_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match=r"not a model directory \(no config\.json\)$"):
        load_tokenizer(str(tmp_path))
    missing = tmp_path / "e5-small-ant-dapt"  # a backbone not made yet: say how to make it, on one line
    with pytest.raises(ModelError, match=r"no config\.json\); make it with `pipeline pretrain --output "
                                         rf"{missing}` or `pipeline backbone`") as err:
        load_pretrained(str(missing), LABELS)
    assert "\n" not in str(err.value)


def test_loading_prints_no_report_for_the_new_head(tiny_bert, capfd):
    load_pretrained(str(tiny_bert), LABELS)  # classifier.weight/bias are new: expected, not reported
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.fixture(scope="module")
def no_pooler(tiny_bert, tmp_path_factory):
    """The tiny BERT saved without its pooler, as E5 ships."""
    from transformers import BertModel

    out = tmp_path_factory.mktemp("no-pooler")
    BertModel.from_pretrained(tiny_bert, add_pooling_layer=False).save_pretrained(out)
    return out


def test_random_backbone_weights_are_one_warning_line(no_pooler, capfd):
    load_pretrained(str(no_pooler), LABELS, pooling="mean")  # mean pooling never reads the pooler
    assert capfd.readouterr().err == ""
    load_pretrained(str(no_pooler), LABELS, pooling="cls")
    err = capfd.readouterr().err
    assert err.startswith(f"warning: {no_pooler}: 2 weights are not in the checkpoint and start random: ")
    assert "bert.pooler.dense.bias" in err and err.count("\n") == 1 and "LOAD REPORT" not in err


def test_missing_encoder_weights_are_named(capsys):
    keys = [f"bert.encoder.layer.{i}.output.dense.weight" for i in range(6)] + ["classifier.weight"]
    check_loading("backbone", {"missing_keys": keys}, "mean")
    err = capsys.readouterr().err
    assert err.startswith("warning: backbone: 6 weights are not in the checkpoint and start random: ")
    assert err.rstrip().endswith("...") and "classifier" not in err


def test_whole_documents_tokenise_without_the_over_length_warning(tiny_bert, caplog):
    from transformers import AutoTokenizer

    from pipeline.model import load_tokenizer

    long = "كلمة " * 50
    bare = AutoTokenizer.from_pretrained(str(tiny_bert))
    bare.model_max_length = 8
    bare(long, truncation=False)
    assert "Token indices sequence length is longer" in caplog.text  # what transformers says unasked
    caplog.clear()
    tokenizer = load_tokenizer(str(tiny_bert))
    tokenizer.model_max_length = 8
    assert len(tokenizer(long, add_special_tokens=False, truncation=False)["input_ids"]) > 8  # counted whole
    assert "Token indices sequence length" not in caplog.text
