"""`train(cfg) -> RunResult`: seed, data, model, Trainer, calibrate, evaluate, save, log."""

from __future__ import annotations

import contextlib
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, TrainingArguments, set_seed

from pipeline.artifacts import CHECKPOINTS, model_dir, run_name
from pipeline.baseline import against_baseline
from pipeline.checkpoints import check_settings, complete_checkpoint, disk_fault_state
from pipeline.config import Config
from pipeline.data import SPLITS, load_split
from pipeline.distributed import (
    any_rank,
    backend,
    barrier,
    is_main,
    lead,
    process_group,
    threads,
    world_size,
)
from pipeline.errors import DataError
from pipeline.finetune import (
    LayerwiseTrainer,
    StopCallback,
    TrackerCallback,
    class_weights,
    freeze,
    freeze_unused_pooler,
    linear_probe,
    precision_flags,
    weighted_loss,
)
from pipeline.jobs import StopSignals, exclusive, on_disk_fault
from pipeline.labels import LabelMap, load_labels
from pipeline.metrics import calibrated_metrics, classification_metrics, softmax
from pipeline.model import (
    Classifier,
    Encoded,
    TextEncoder,
    average_by_doc,
    load_pretrained,
    load_tokenizer,
    model_family,
    run_logits,
    save_model,
    set_threads,
)
from pipeline.multilabel import calibrated_multilabel, label_sets, multi_hot, multilabel_metrics, sigmoid
from pipeline.runs import RunResult, finish_run
from pipeline.tracking import Tracker, run_tags

KIND = "transformer"


def to_dataset(enc: Encoded, doc_labels: list[int] | np.ndarray) -> Dataset:
    """A datasets.Dataset of model inputs; each chunk carries its document's label (a label index, or in
    multi-label mode its multi-hot float row)."""
    labels = [doc_labels[d] for d in enc.doc_index]
    if isinstance(doc_labels, np.ndarray) and doc_labels.ndim == 2:
        labels = [[float(v) for v in row] for row in labels]
    return Dataset.from_dict({"input_ids": enc.input_ids, "labels": labels,
                              "length": [len(x) for x in enc.input_ids]})


def token_audit(enc: Encoded, max_length: int) -> dict[str, float]:
    """How many documents did not fit into one input."""
    tokens = np.asarray(enc.doc_tokens or [0])
    return {"docs": len(enc.doc_tokens), "share_longer_than_max_length": float(enc.truncated(max_length).mean())
            if enc.doc_tokens else 0.0, "tokens_median": float(np.median(tokens)),
            "tokens_p95": float(np.percentile(tokens, 95)), "inputs_per_doc": len(enc.input_ids) / max(1, len(tokens))}


def training_args(cfg: Config, out: Path, n_train: int) -> TrainingArguments:
    """TrainingArguments from the train section: per-epoch eval, best by validation macro-F1."""
    t = cfg.train
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS), num_train_epochs=t.epochs, max_steps=t.max_steps,
        learning_rate=t.learning_rate, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="steps", logging_steps=max(1, min(t.logging_steps, math.ceil(n_train / t.batch_size))),
        load_best_model_at_end=True, metric_for_best_model="macro_f1", greater_is_better=True,
        save_total_limit=2, save_only_model=False, seed=t.seed, data_seed=t.seed, report_to="none",
        label_names=["labels"], train_sampling_strategy="group_by_length", length_column_name="length",
        dataloader_num_workers=0, disable_tqdm=False, use_cpu=not torch.cuda.is_available(),
        # DDP: our loss is a plain mean, which the Trainer would multiply by the process count if it averaged
        # tokens across devices; every parameter gets a gradient, so DDP need not search for unused ones
        ddp_backend=backend() if world_size() > 1 else None, ddp_timeout=t.ddp_timeout,
        ddp_find_unused_parameters=False, average_tokens_across_devices=False, **precision_flags(t.precision))


def effective_batch_size(cfg: Config) -> int:
    """Examples per optimizer step: per-device batch x processes x accumulation steps."""
    return cfg.train.batch_size * world_size() * cfg.train.gradient_accumulation_steps


def doc_probs(model: Classifier, tokenizer: Any, enc: Encoded, n_docs: int, batch_size: int, multi: bool = False,
              ) -> tuple[np.ndarray, Any]:
    """Logits per input, and a function giving document probabilities at a temperature (sigmoid per label when
    `multi`)."""
    logits = run_logits(model, tokenizer, enc.input_ids, batch_size, next(model.parameters()).device)
    activation = sigmoid if multi else softmax
    return logits, lambda temp=1.0: average_by_doc(activation(logits, temp), enc.doc_index, n_docs)


def _prepare_inputs(cfg: Config, labels: LabelMap, encoder: TextEncoder) -> dict[str, Any]:
    splits = {}
    for split in SPLITS:
        rows = load_split(cfg, split)
        unknown = {r["label"] for r in rows} - set(labels.ids)
        if unknown:
            raise DataError(f"{split} split has labels outside the label set: {', '.join(sorted(unknown))}",
                            "not_in_the_label_set")
        splits[split] = {"rows": rows, "enc": encoder.encode([r["text"] for r in rows]),
                         "y": labels.encode(rows).tolist(), "multi_hot": multi_hot(label_sets(rows), labels.ids)}
    if not splits["train"]["rows"] or not splits["validation"]["rows"]:
        raise DataError("training needs non-empty train and validation splits; check data.split", "too_few_rows")
    return splits


def _compute_metrics(labels: LabelMap, enc: Encoded, y: list[int], y_multi: np.ndarray | None = None) -> Any:
    """Per-epoch validation metrics; multi-label (`y_multi`) adds the label-set F1 at thresholds of 0.5."""
    def compute(pred: Any) -> dict[str, float]:
        logits = np.asarray(pred.predictions)
        if y_multi is None:
            m = classification_metrics(np.asarray(y), average_by_doc(softmax(logits), enc.doc_index, len(y)),
                                       list(labels.ids))
            return {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "ece")}
        probs = average_by_doc(sigmoid(logits), enc.doc_index, len(y))
        m = multilabel_metrics(np.asarray(y), y_multi, probs, None, list(labels.ids))
        return {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "ece", "multilabel_micro_f1",
                                  "multilabel_macro_f1")}

    return compute


def fit(cfg: Config, labels: LabelMap, splits: dict[str, Any], tokenizer: Any, out: Path, callbacks: list[Any],
        resume: Path | None = None) -> tuple[Classifier, LayerwiseTrainer]:
    """Fine-tune with the HF Trainer from `resume` (a checkpoint) or the start; returns the best model by
    validation macro-F1."""
    multi = cfg.labels.mode == "multi"
    model = Classifier(load_pretrained(cfg.model.name_or_path, labels, cfg.model.attention_dropout,
                                       cfg.model.pooling, multi), cfg.model.pooling)
    tr, va = splits["train"], splits["validation"]
    tr_y, va_y = (tr["multi_hot"], va["multi_hot"]) if multi else (tr["y"], va["y"])
    if cfg.train.linear_probe and resume is None:
        linear_probe(model, tokenizer, tr["enc"], tr["y"], len(labels), cfg.train.seed, tr_y if multi else None)
    freeze(model, cfg.train.freeze_embeddings, cfg.train.freeze_layers)
    freeze_unused_pooler(model, cfg.model.pooling)
    stop = [EarlyStoppingCallback(cfg.train.early_stopping_patience)] if cfg.train.early_stopping_patience else []
    trainer = LayerwiseTrainer(
        model=model, args=training_args(cfg, out, len(tr["enc"].input_ids)),
        train_dataset=to_dataset(tr["enc"], tr_y), eval_dataset=to_dataset(va["enc"], va_y),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_loss_func=weighted_loss(class_weights(cfg, labels, tr["y"], tr_y if multi else None), multi),
        compute_metrics=_compute_metrics(labels, va["enc"], va["y"], va_y if multi else None),
        callbacks=stop + callbacks,
        head_lr=cfg.train.head_learning_rate, lr_decay=cfg.train.layerwise_lr_decay)
    with on_disk_fault(f"training into {out}", partial(disk_fault_state, out / CHECKPOINTS)):
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    barrier()  # every rank has loaded the best checkpoint before rank 0 may remove the checkpoints
    return trainer.model, trainer


def evaluate_splits(model: Classifier, tokenizer: Any, labels: LabelMap, splits: dict[str, Any],
                    cfg: Config) -> tuple[dict[str, Any], float, dict[str, np.ndarray], dict[str, float] | None]:
    """Calibrate a temperature on validation, then score validation and test at it; in multi-label mode tune
    per-label thresholds on validation instead (no temperature: 1). Returns metrics, temperature, probabilities and
    the thresholds (None in single-label mode)."""
    multi = cfg.labels.mode == "multi"
    probs_at = {s: doc_probs(model, tokenizer, splits[s]["enc"], len(splits[s]["y"]), cfg.train.eval_batch_size,
                             multi)[1] for s in ("validation", "test")}
    y = {s: np.asarray(splits[s]["y"]) for s in probs_at}
    if multi:
        metrics, thresholds, probs = calibrated_multilabel(probs_at, y, {s: splits[s]["multi_hot"] for s in y},
                                                           list(labels.ids))
        return metrics, 1.0, probs, thresholds
    return (*calibrated_metrics(probs_at, y, list(labels.ids), calibrate=cfg.train.calibrate), None)


def train(cfg: Config, callbacks: list[Any] | None = None) -> RunResult:
    """Fine-tune, calibrate and evaluate one model; write `models/<run_name>/` and log the run.

    One process per model directory, or one torchrun job: there rank 0 alone locks, tracks, evaluates and writes,
    and the other ranks only train (their result has no metrics). SIGINT/SIGTERM save a checkpoint, mark the run
    KILLED and raise `Interrupted`; `train.resume` continues from the newest complete checkpoint.
    """
    out = model_dir(cfg, KIND)
    with process_group(cfg.train.ddp_timeout), contextlib.ExitStack() as held:
        trackers: list[Tracker] = []

        def start() -> Path | None:
            trackers.append(Tracker(cfg))  # connects first: an unreachable server fails before anything is written
            held.enter_context(exclusive(out, "model directory"))
            return _resume_point(cfg, out)

        resume = lead(start)
        return _train(cfg, trackers[0] if trackers else Tracker(cfg, enabled=False), out, callbacks or [], resume)


def _resume_point(cfg: Config, out: Path) -> Path | None:
    """The checkpoint to continue from (None: from the start), after checking it was written by as many processes
    with the same settings on the same data (`checkpoints.check_settings`)."""
    out.mkdir(parents=True, exist_ok=True)
    resume = complete_checkpoint(out / CHECKPOINTS) if cfg.train.resume else None
    check_settings(out / CHECKPOINTS, cfg, resuming=resume is not None)
    return resume


def _train(cfg: Config, tracker: Tracker, out: Path, callbacks: list[Any], resume: Path | None) -> RunResult:
    set_seed(cfg.train.seed, deterministic=True)
    set_threads(threads(cfg.train.threads))
    labels = load_labels(cfg.labels)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    splits = _prepare_inputs(cfg, labels, TextEncoder(tokenizer, cfg.model))
    tags = run_tags(cfg, list(labels.ids), model_family(cfg.model.name_or_path))
    batch = {"train.effective_batch_size": effective_batch_size(cfg), "train.world_size": world_size()}
    with StopSignals("saving a checkpoint, then stopping") as stop, \
            tracker.run(run_name(cfg, KIND), "train", tags, params=batch):
        started = time.time()
        extra = [TrackerCallback(tracker)] if tracker.enabled else []
        model, trainer = fit(cfg, labels, splits, tokenizer, out, callbacks + extra + [StopCallback(stop, any_rank)],
                             resume)
        stop.check(f"training stopped at step {trainer.state.global_step}; the checkpoint is in {out / CHECKPOINTS}")
        if not is_main():
            return RunResult(model_dir=out, metrics={})
        stop.doing = "finishing the run first: calibrating, writing the model and logging it"
        metrics, temp, probs, thresholds = evaluate_splits(model, tokenizer, labels, splits, cfg)
        metrics["token_audit"] = {s: token_audit(splits[s]["enc"], cfg.model.max_length) for s in splits}
        metrics["train_seconds"] = round(time.time() - started, 1)
        metrics.update(effective_batch_size=batch["train.effective_batch_size"], world_size=world_size())
        metrics["history"] = [h for h in trainer.state.log_history if "eval_macro_f1" in h or "loss" in h]
        paired = against_baseline(cfg, splits["test"]["rows"], probs["test"])
        if paired:
            metrics["test"]["vs_baseline"] = paired
        return finish_run(tracker, out, kind=KIND, cfg=cfg, labels=labels, metrics=metrics, temperature=temp,
                          save_weights=partial(save_model, model, tokenizer), test_rows=splits["test"]["rows"],
                          test_probs=probs["test"], thresholds=thresholds)
