import json
import signal

import pytest
from helpers import FirstStep, SignalAt, make_corpus, write_jsonl
from safetensors.torch import load_file

from pipeline.checkpoints import SettingsChanged
from pipeline.cli import main
from pipeline.data import processed_dir
from pipeline.errors import DataError
from pipeline.jobs import Interrupted
from pipeline.pretrain import held_out_texts, masked_positions_loss, pretrain, unlabelled_texts
from pipeline.readers import read_jsonl


@pytest.mark.slow  # fine-tunes the tiny model: `make test-slow`, which CI runs too
def test_pretrain_writes_a_backbone_that_fine_tunes_and_never_reads_held_out_articles(cfg_tiny, tiny_bert,
                                                                                     tmp_path, capsys):
    cfg = cfg_tiny.prepared("pretrain.max_steps=6", "pretrain.batch_size=8")
    held_out = [r["text"] for s in ("validation", "test") for r in read_jsonl(processed_dir(cfg) / f"{s}.jsonl")]
    unlabelled = [{"title": r["title"], "text": r["text"]} for r in make_corpus(per_label=6, seed=5)]
    dump = write_jsonl(tmp_path / "dump.jsonl", unlabelled + read_jsonl(processed_dir(cfg) / "test.jsonl"))
    texts = list(unlabelled_texts(cfg, [str(dump)], None))
    assert len(texts) == len(unlabelled) and not set(held_out) & set(texts)  # test articles left out
    out, excluded = tmp_path / "dapt", write_jsonl(tmp_path / "other-corpus.jsonl", unlabelled[:3])
    assert main(["pretrain", *cfg_tiny.args("pretrain.max_steps=6", "pretrain.batch_size=8"), "--input", str(dump),
                 "--output", str(out), "--exclude", str(excluded)]) == 0
    printed = capsys.readouterr().out
    assert "held-out masked-LM perplexity" in printed
    report = json.loads((out / "pretrain.json").read_text())
    n_test = len(read_jsonl(processed_dir(cfg) / "test.jsonl"))
    assert report["steps"] == 6 and report["articles"] == len(unlabelled) - 3
    assert report["left_out"] == {"articles": n_test + 3, "known": report["left_out"]["known"],
                                  "exclude": [str(excluded.resolve())]}
    assert f"({n_test + 3} left out as copies of held-out or excluded ones)" in printed
    assert report["settings"]["max_steps"] == 6 and report["settings"]["batch_size"] == 8  # self-describing
    assert report["new_head_tensors"] > 0 and "has no masked-LM head" in printed  # the tiny encoder ships none
    before, after = load_file(tiny_bert / "model.safetensors"), load_file(out / "model.safetensors")
    layer = next(k for k in after if "encoder" in k and k.endswith("query.weight"))
    assert not before.get(layer, before.get("bert." + layer)).equal(after[layer])  # the encoder learned
    assert any("pooler" in k for k in after)  # kept from the base model, for cls pooling
    from pipeline.train import train

    tuned = train(cfg_tiny("train.max_steps=2", f"model.name_or_path={out}"))
    assert tuned.metrics["test"]["n"] > 0


def test_an_excluded_corpus_and_near_copies_of_its_articles_are_never_pretrained_on(cfg_tiny, tmp_path):
    cfg = cfg_tiny()
    corpus = make_corpus(per_label=3, seed=7)
    excluded = write_jsonl(tmp_path / "labelled.jsonl", corpus)
    words = corpus[0]["text"].split()
    edited = {"title": corpus[0]["title"], "text": " ".join([*words[:-1], "تحديث"])}  # a copy, last word edited
    fresh = [{"title": r["title"], "text": r["text"]} for r in make_corpus(per_label=2, seed=8)]
    dump = str(write_jsonl(tmp_path / "dump.jsonl", [*fresh, *corpus, edited]))
    known = held_out_texts(cfg, [str(excluded)])
    assert len(list(unlabelled_texts(cfg, [dump], None, known))) == len(fresh)
    assert known.hits == len(corpus) + 1  # every corpus article, and the edited copy
    exact_only = held_out_texts(cfg_tiny("data.dedup.near=false"), [str(excluded)])
    assert len(list(unlabelled_texts(cfg, [dump], None, exact_only))) == len(fresh) + 1  # near matching caught it
    broken = tmp_path / "broken.jsonl"
    broken.write_text(excluded.read_text(encoding="utf-8").splitlines()[0] + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.jsonl:2: invalid json .*must be readable"):
        held_out_texts(cfg, [str(broken)])


def test_a_stopped_pretraining_continues_from_its_checkpoint_and_only_with_the_same_settings(cfg_tiny, tmp_path):
    steps = ("pretrain.max_steps=6", "pretrain.batch_size=4", "pretrain.save_steps=2")
    dump = [str(write_jsonl(tmp_path / "dump.jsonl", make_corpus(per_label=4, seed=5)))]
    out = tmp_path / "backbone"
    with pytest.raises(Interrupted, match=r"SIGTERM: pretraining stopped at step 3; the checkpoint is in "):
        pretrain(cfg_tiny(*steps), dump, out, callbacks=[SignalAt(3, signal.SIGTERM)])
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3"]  # the newest only
    assert not (out / "pretrain.json").exists() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(SettingsChanged, match=r"other settings or articles \(changed: pretrain\)"):
        pretrain(cfg_tiny(*steps, "pretrain.learning_rate=1e-3", "train.resume=true"), dump, out)
    more = str(write_jsonl(tmp_path / "more.jsonl", make_corpus(per_label=1, seed=9)))
    with pytest.raises(SettingsChanged, match=r"\(changed: articles_sha256\)"):
        pretrain(cfg_tiny(*steps, "train.resume=true"), [*dump, more], out)
    record = out / "checkpoints" / "settings.json"
    kept = record.read_text(encoding="utf-8")
    record.write_text("[1, 2", encoding="utf-8")
    with pytest.raises(SettingsChanged, match=r"\(changed: no readable settings\.json\); resume with the ones"):
        pretrain(cfg_tiny(*steps, "train.resume=true"), dump, out)
    record.write_text(kept, encoding="utf-8")
    probe = FirstStep()
    report = pretrain(cfg_tiny(*steps, "train.resume=true"), dump, out, callbacks=[probe], about={"seed": 42})
    assert probe.first == 4 and report["steps"] == 6  # continued after the checkpoint, not from the start
    assert json.loads((out / "pretrain.json").read_text(encoding="utf-8"))["input"] == {"seed": 42}
    assert not (out / "checkpoints").exists()


def test_too_little_text_is_a_one_line_error(cfg_tiny, tmp_path):
    cfg = cfg_tiny()
    dump = write_jsonl(tmp_path / "few.jsonl", [{"text": "نص قصير"}] * 3)
    with pytest.raises(DataError, match=r"few\.jsonl: 1 usable articles"):
        pretrain(cfg, [str(dump)], tmp_path / "out")


def test_the_loss_over_masked_positions_only_equals_the_models_own(tiny_bert):
    import torch
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    ids = torch.randint(5, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[:, [2, 7]] = ids[:, [2, 7]]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        assert masked_positions_loss(model, inputs).item() == pytest.approx(model(**inputs).loss.item(), abs=1e-5)
