"""`pipeline pretrain`: domain-adaptive pretraining, masked-LM training of the backbone on unlabelled Arabic news.

The output is a backbone directory (the encoder with its pooler, and the tokenizer) that `model.name_or_path`
accepts. Articles of the prepared validation and test splits, and of any labelled file named to exclude (a corpus to
be cross-validated), are left out, exact copies or near ones (`data.dedup`), so a fine-tune evaluated on them never
saw their text, not even unlabelled. Masked-LM loss and perplexity on a held-out 5% are measured before and after.

A checkpoint is written every `pretrain.save_steps` steps, and SIGINT/SIGTERM write one and stop; `--resume`
continues from the newest complete one when it was written with the same settings on the same articles (recorded
beside the checkpoints), and refuses in one line otherwise. The checkpoints go once the backbone is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.checkpoints import (
    SETTINGS_FILE,
    complete_checkpoint,
    differing,
    disk_fault_state,
    read_record,
    record_settings,
    refuse_changes,
)
from pipeline.config import Config
from pipeline.data import processed_dir
from pipeline.dedup import KnownTexts
from pipeline.errors import DataError, ModelError
from pipeline.jobs import StopSignals, exclusive, on_disk_fault
from pipeline.readers import iter_rows, read_jsonl
from pipeline.text import Normalizer, join_fields, text_digest
from pipeline.tracking import Tracker

PRETRAIN_FILE = "pretrain.json"
CHECKPOINTS = "checkpoints"


def held_out_texts(cfg: Config, exclude: list[str] = (), normalise: Normalizer | None = None) -> KnownTexts:
    """The prepared validation and test texts (when the config's splits exist) and every article of the `exclude`
    files (normalised as unlabelled text is), to recognise exactly or nearly. An unreadable row of an `exclude` file
    is an error: an article that cannot be read cannot be left out."""
    normalise = normalise or Normalizer(cfg.text, frozenset())
    texts: list[str] = []
    for split in ("validation", "test"):
        path = processed_dir(cfg) / f"{split}.jsonl"
        if path.is_file():
            texts += [r["text"] for r in read_jsonl(path)]
    for path in exclude:
        for row in iter_rows(path):
            if row.error:
                raise DataError(f"{row.where}: {row.error.replace('_', ' ')} ({row.detail}); an article to leave out "
                                "must be readable", row.error)
            if text := normalise(join_fields(row.data.get(f) for f in cfg.data.text_fields)):
                texts.append(text)
    return KnownTexts(texts, cfg.data.dedup)


def unlabelled_texts(cfg: Config, inputs: list[str], limit: int | None, skip: KnownTexts | None = None,
                     normalise: Normalizer | None = None) -> Iterator[str]:
    """Normalised texts of the inputs' rows (the config's text fields), each once, none of them (or a near copy) in
    `skip` (default: the prepared validation and test articles); `normalise` defaults to the config's, without
    chrome."""
    normalise = normalise or Normalizer(cfg.text, frozenset())
    skip = held_out_texts(cfg, normalise=normalise) if skip is None else skip
    seen: set[str] = set()
    given = 0
    for path in inputs:
        for row in iter_rows(path):
            if row.error or not row.data:
                continue
            text = normalise(join_fields(row.data.get(f) for f in cfg.data.text_fields))
            if text and (digest := text_digest(text)) not in seen and text not in skip:
                seen.add(digest)
                yield text
                given += 1
                if limit and given >= limit:
                    return


def masked_positions_loss(model: Any, inputs: dict[str, Any]) -> Any:
    """Masked-LM cross-entropy over the masked positions only: the head projects those hidden states alone, so the
    vocabulary logits of every other position (250k pieces for e5-small: 4 GB a batch of 16 x 256) are never formed.
    The same loss as the model's own. Models whose head is not one module after the encoder, and models wrapped for
    distributed training (whose forward must run for gradients to be shared), use their own loss."""
    import torch

    prefix = getattr(model, "base_model_prefix", None)
    heads = [m for n, m in model.named_children() if n != prefix] if prefix else []
    if len(heads) != 1:
        return model(**inputs).loss
    labels = inputs["labels"]
    hidden = model.base_model(**{k: v for k, v in inputs.items() if k != "labels"}).last_hidden_state
    keep = labels != -100
    logits = heads[0](hidden[keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def pretrain_settings(cfg: Config, texts: list[str]) -> dict[str, Any]:
    """What a pretraining learns from: the base model and its text encoding, the `pretrain` keys that shape the
    steps, the seed, precision and frozen embeddings, and the articles (one digest of them all, in order)."""
    articles = hashlib.sha256("".join(text_digest(t) for t in texts).encode("ascii")).hexdigest()
    return {"model": cfg.model.name_or_path, "max_length": cfg.model.max_length, "text_prefix": cfg.model.text_prefix,
            "pretrain": cfg.pretrain.model_dump(mode="json", exclude={"save_steps"}), "seed": cfg.train.seed,
            "precision": cfg.train.precision, "freeze_embeddings": cfg.train.freeze_embeddings,
            "articles_sha256": articles}


def resume_point(cfg: Config, checkpoints: Path, settings: dict[str, Any]) -> Path | None:
    """With `train.resume`, the newest complete checkpoint, refused in one line unless it was written with the same
    `settings`; otherwise (or with none complete) a fresh start: an earlier run's checkpoints go, `settings` are
    recorded beside the new ones."""
    last = complete_checkpoint(checkpoints) if cfg.train.resume else None
    if last is not None:
        try:
            saved = read_record(checkpoints / SETTINGS_FILE)
        except (OSError, ValueError):
            saved = None
        changed = [f"no readable {SETTINGS_FILE}"] if saved is None else differing(saved, settings)
        refuse_changes(checkpoints, changed, "settings or articles", "pretrain")
        return last
    shutil.rmtree(checkpoints, ignore_errors=True)
    record_settings(checkpoints, settings)
    return None


def pretrain(cfg: Config, inputs: list[str], output: str | Path, exclude: list[str] = (),
             callbacks: list[Any] = (), about: dict[str, Any] | None = None) -> dict[str, Any]:
    """Continue masked-LM training of `model.name_or_path` on the inputs, leaving out the held-out splits' articles
    and those of the `exclude` files; write a backbone directory. `callbacks` join the Trainer's; `about` (how the
    inputs were drawn) is recorded in pretrain.json as its `input`."""
    out = Path(output)
    tracker = Tracker(cfg)
    with exclusive(out, "backbone directory"):
        return _pretrain(cfg, tracker, inputs, out, list(exclude), list(callbacks), about)


def _pretrain(cfg: Config, tracker: Tracker, inputs: list[str], out: Path, exclude: list[str],
              callbacks: list[Any], about: dict[str, Any] | None) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModel,
        AutoModelForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from pipeline.finetune import StopCallback, freeze, precision_flags
    from pipeline.model import load_tokenizer, quiet_transformers, set_threads

    class MaskedPositionsTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = masked_positions_loss(model, inputs)
            return (loss, {"loss": loss}) if return_outputs else loss

    p, name = cfg.pretrain, cfg.model.name_or_path
    set_seed(cfg.train.seed)
    set_threads(cfg.train.threads)
    tokenizer = load_tokenizer(name)
    normalise = Normalizer(cfg.text, frozenset())  # unlabelled text and the articles to leave out alike
    held_out = held_out_texts(cfg, exclude, normalise)
    texts = list(unlabelled_texts(cfg, inputs, p.max_docs, held_out, normalise))
    if len(texts) < 20:
        raise DataError(f"{', '.join(inputs)}: {len(texts)} usable articles; masked-LM pretraining needs at least 20",
                        "too_few_rows")
    checkpoints = out / CHECKPOINTS
    resume = resume_point(cfg, checkpoints, pretrain_settings(cfg, texts))
    enc = tokenizer([cfg.model.text_prefix + t for t in texts], truncation=True, max_length=cfg.model.max_length)
    data = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    parts = data.train_test_split(test_size=max(0.05, 10 / len(texts)), seed=cfg.train.seed)
    with quiet_transformers():
        mlm, loading = AutoModelForMaskedLM.from_pretrained(name, use_safetensors=True, trust_remote_code=False,
                                                            output_loading_info=True)
    # a sentence-embedding checkpoint (e5) ships no masked-LM head: it starts random, and the first steps train it
    new_head = sorted(k for k in loading["missing_keys"] if not k.startswith(mlm.base_model_prefix))
    freeze(mlm, cfg.train.freeze_embeddings, 0)  # as the fine-tune does; ties the output projection too
    args = TrainingArguments(output_dir=str(checkpoints), num_train_epochs=p.epochs, max_steps=p.max_steps,
                             learning_rate=p.learning_rate, per_device_train_batch_size=p.batch_size,
                             per_device_eval_batch_size=p.batch_size, warmup_steps=0.06, weight_decay=0.01,
                             save_strategy="steps", save_steps=p.save_steps, save_total_limit=1, report_to=[],
                             logging_steps=cfg.train.logging_steps,
                             seed=cfg.train.seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                             prediction_loss_only=True, **precision_flags(cfg.train.precision))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=p.mlm_probability, seed=cfg.train.seed)
    stop = StopSignals("saving a checkpoint, then stopping")
    trainer = MaskedPositionsTrainer(model=mlm, args=args, train_dataset=parts["train"], eval_dataset=parts["test"],
                                     data_collator=collator, callbacks=[*callbacks, StopCallback(stop)])

    with stop, tracker.run(f"{Path(name.rstrip('/')).name}-dapt", "pretrain", {"base_model": Path(name).name}):
        started = time.time()
        before = trainer.evaluate()["eval_loss"]  # the base model's: a checkpoint is loaded by train()
        with on_disk_fault(f"pretraining into {out}", partial(disk_fault_state, checkpoints)):
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        stop.check(f"pretraining stopped at step {trainer.state.global_step}; the checkpoint is in {checkpoints}")
        after = trainer.evaluate()["eval_loss"]
        report = {"base_model": Path(name).name, "articles": len(texts), "held_out": len(parts["test"]),
                  "steps": trainer.state.global_step, "new_head_tensors": len(new_head),
                  "mlm_loss_before": round(before, 4), "mlm_loss_after": round(after, 4),
                  "perplexity_before": round(math.exp(before), 2), "perplexity_after": round(math.exp(after), 2),
                  "seconds": round(time.time() - started, 1), "settings": p.model_dump(mode="json"),
                  "left_out": {"articles": held_out.hits, "known": len(held_out),
                               "exclude": [str(Path(e).resolve()) for e in exclude]}}
        if about:
            report["input"] = about
        with quiet_transformers():
            encoder = AutoModel.from_pretrained(name, use_safetensors=True, trust_remote_code=False)
        loaded = encoder.load_state_dict(mlm.base_model.state_dict(), strict=False)  # the pooler stays the base's
        if loaded.unexpected_keys or any("pooler" not in k for k in loaded.missing_keys):
            raise ModelError(f"{name}: the masked-LM encoder does not match the backbone "
                             f"({(loaded.unexpected_keys or loaded.missing_keys)[0]})")
        encoder.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / PRETRAIN_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
        tracker.log_metrics({k: v for k, v in report.items() if k.startswith(("mlm_", "perplexity_"))})
        if tracker.enabled:
            tracker.mlflow.log_artifact(str(out / PRETRAIN_FILE))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return report
