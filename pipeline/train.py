"""`train(cfg) -> RunResult`: seed, data, model, Trainer, calibrate, evaluate, save, log."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

from pipeline.artifacts import write_common, write_evaluation
from pipeline.config import Config
from pipeline.data import load_split
from pipeline.errors import ConfigError, DataError
from pipeline.labels import LabelMap, load_labels
from pipeline.metrics import classification_metrics, fit_temperature
from pipeline.model import (
    Classifier,
    Encoded,
    TextEncoder,
    average_by_doc,
    load_pretrained,
    load_tokenizer,
    run_logits,
    save_model,
    set_threads,
    softmax,
)
from pipeline.tracking import EpochLogger, Tracker, run_tags, write_token_audit

CHECKPOINTS = "checkpoints"  # under the model directory: the Trainer's output, kept only while a run can resume


@dataclass
class RunResult:
    """What a training run produced."""

    model_dir: Path
    metrics: dict[str, Any]
    run_id: str | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)


def run_name(cfg: Config) -> str:
    """Short readable run name: config name, backbone, long-text setting, learning rate, epochs."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    backbone = Path(cfg.model.name_or_path.rstrip("/")).name
    return (f"{cfg.name}-{backbone}-{cfg.model.long_text}{cfg.model.max_length}"
            f"-lr{cfg.train.learning_rate:g}-ep{cfg.train.epochs:g}")


def class_weights(cfg: Config, labels: LabelMap, y: list[int]) -> torch.Tensor | None:
    """Loss weights per label: balanced (`auto`), square-root balanced (`sqrt`), none, or explicit."""
    spec = cfg.train.class_weights
    if spec == "none":
        return None
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(labels.ids))
        if unknown:
            raise ConfigError(f"train.class_weights: unknown label '{unknown[0]}'")
        return torch.tensor([float(spec.get(lb, 1.0)) for lb in labels.ids])
    counts = np.bincount(np.asarray(y), minlength=len(labels)).astype(float)
    balanced = np.where(counts > 0, len(y) / (len(labels) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(np.sqrt(balanced) if spec == "sqrt" else balanced, dtype=torch.float32)


def weighted_loss(weights: torch.Tensor | None) -> Any:
    """A Trainer `compute_loss_func`: cross-entropy with optional class weights."""

    def loss_fn(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"]
        w = weights.to(logits.device, logits.dtype) if weights is not None else None
        return torch.nn.functional.cross_entropy(logits, labels, weight=w)

    return loss_fn


def to_dataset(enc: Encoded, doc_labels: list[int]) -> Dataset:
    """A datasets.Dataset of model inputs; each chunk carries its document's label."""
    return Dataset.from_dict({"input_ids": enc.input_ids, "labels": [doc_labels[d] for d in enc.doc_index],
                              "length": [len(x) for x in enc.input_ids]})


def token_audit(enc: Encoded, max_length: int) -> dict[str, float]:
    """How many documents did not fit into one input."""
    tokens = np.asarray(enc.doc_tokens or [0])
    return {"docs": len(enc.doc_tokens), "share_longer_than_max_length": float(enc.truncated(max_length).mean())
            if enc.doc_tokens else 0.0, "tokens_median": float(np.median(tokens)),
            "tokens_p95": float(np.percentile(tokens, 95)), "inputs_per_doc": len(enc.input_ids) / max(1, len(tokens))}


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX): autocast then trains about twice as fast as fp32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def precision_flags(choice: str) -> dict[str, bool]:
    """`auto`: bf16 (else fp16) on a GPU, bf16 autocast on a CPU with native bf16, otherwise fp32."""
    cuda = torch.cuda.is_available()
    if choice == "auto":
        choice = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else (
            "bf16" if cpu_has_bf16() else "fp32")
    if choice == "fp16" and not cuda:
        raise ConfigError("train.precision=fp16 needs a GPU; use auto, bf16 or fp32 on CPU")
    if choice == "bf16" and not cuda and not cpu_has_bf16():
        raise ConfigError("train.precision=bf16 on CPU needs AVX512-BF16 or AMX (this CPU has neither); "
                          "use auto or fp32")
    return {"bf16": choice == "bf16", "fp16": choice == "fp16"}


def depth(name: str, n_layers: int) -> int:
    """A parameter's place in the stack: 0 embeddings, 1..n_layers encoder layers, n_layers + 1 head and pooler."""
    if ".encoder.layer." in name:
        return int(name.split(".encoder.layer.")[1].split(".")[0]) + 1
    return 0 if ".embeddings." in name else n_layers + 1


def freeze(model: torch.nn.Module, embeddings: bool, layers: int) -> int:
    """Fix the embeddings and/or the lowest `layers` encoder layers; returns the trainable parameter count."""
    n_layers = getattr(model.config, "num_hidden_layers", 0)
    if layers > n_layers:
        raise ConfigError(f"train.freeze_layers={layers}, but the model has {n_layers} layers")
    for name, param in model.named_parameters():
        d = depth(name, n_layers)
        if (embeddings and d == 0) or 1 <= d <= layers:
            param.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
        **precision_flags(t.precision))


class _Optimised(Trainer):
    """Trainer whose optimizer gives the head its own learning rate and decays rates layer by layer."""

    def __init__(self, *args: Any, head_lr: float | None = None, lr_decay: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_lr, self.lr_decay = head_lr, lr_decay

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler:
        """Evaluate in dataset order: compute_metrics maps predictions back to documents by position."""
        return torch.utils.data.SequentialSampler(eval_dataset)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """AdamW over parameter groups: (layer depth, decay or not)."""
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(
                param_groups(self.model, self.args.learning_rate, self.head_lr, self.lr_decay,
                             self.args.weight_decay))
        return self.optimizer


def param_groups(model: torch.nn.Module, lr: float, head_lr: float | None, decay: float,
                 weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups with layer-wise learning-rate decay; no weight decay on biases and norms."""
    n_layers = getattr(model.config, "num_hidden_layers", 0)
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        d = depth(name, n_layers)
        rate = (head_lr or lr) if d == n_layers + 1 else lr * decay ** (n_layers + 1 - d)
        wd = 0.0 if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else weight_decay
        groups.setdefault((rate, wd), []).append(param)
    return [{"params": p, "lr": rate, "weight_decay": wd} for (rate, wd), p in groups.items()]


def doc_probs(model: Classifier, tokenizer: Any, enc: Encoded, n_docs: int, batch_size: int,
              ) -> tuple[np.ndarray, Any]:
    """Logits per input, and a function giving document probabilities at a temperature."""
    logits = run_logits(model, tokenizer, enc.input_ids, batch_size, next(model.parameters()).device)
    return logits, lambda temp: average_by_doc(softmax(logits, temp), enc.doc_index, n_docs)


def _prepare_inputs(cfg: Config, labels: LabelMap, encoder: TextEncoder) -> dict[str, Any]:
    splits = {}
    for split in ("train", "validation", "test"):
        rows = load_split(cfg, split)
        unknown = {r["label"] for r in rows} - set(labels.ids)
        if unknown:
            raise DataError(f"{split} split has labels outside the label set: {', '.join(sorted(unknown))}")
        enc = encoder.encode([r["text"] for r in rows])
        splits[split] = {"rows": rows, "enc": enc, "y": [labels.label2id[r["label"]] for r in rows]}
    if not splits["train"]["rows"] or not splits["validation"]["rows"]:
        raise DataError("training needs non-empty train and validation splits; check data.split")
    return splits


def _compute_metrics(labels: LabelMap, enc: Encoded, y: list[int]) -> Any:
    def compute(pred: Any) -> dict[str, float]:
        probs = average_by_doc(softmax(np.asarray(pred.predictions)), enc.doc_index, len(y))
        m = classification_metrics(np.asarray(y), probs, list(labels.ids))
        return {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "ece")}

    return compute


@torch.inference_mode()
def head_inputs(model: Classifier, tokenizer: Any, input_ids: list[list[int]], batch_size: int) -> np.ndarray:
    """What the classifier layer sees for each input (pooled features), captured with a forward hook."""
    captured: list[np.ndarray] = []
    hook = model.inner.classifier.register_forward_hook(
        lambda _m, args, _o: captured.append(args[0].float().cpu().numpy()))
    try:
        run_logits(model, tokenizer, sorted(input_ids, key=len), batch_size, next(model.parameters()).device)
    finally:
        hook.remove()
    feats = np.concatenate(captured)
    order = np.argsort([len(x) for x in input_ids], kind="stable")
    out = np.empty_like(feats)
    out[order] = feats
    return out


def linear_probe(model: Classifier, tokenizer: Any, enc: Encoded, y: list[int], n_labels: int, seed: int) -> float:
    """LP-FT: fit the head on frozen features (balanced logistic regression) before fine-tuning the whole model."""
    from sklearn.linear_model import LogisticRegression

    head = model.inner.classifier
    if not isinstance(head, torch.nn.Linear):
        raise ConfigError("train.linear_probe needs a linear classifier head")
    model.eval()
    feats = head_inputs(model, tokenizer, enc.input_ids, 32)
    targets = np.asarray([y[d] for d in enc.doc_index])
    probe = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed).fit(feats, targets)
    weight = np.zeros((n_labels, feats.shape[1]), dtype=np.float32)
    bias = np.full(n_labels, -10.0, dtype=np.float32)  # labels absent from training stay unlikely
    weight[probe.classes_] = probe.coef_ if len(probe.classes_) > 2 else np.vstack([-probe.coef_, probe.coef_])
    bias[probe.classes_] = probe.intercept_ if len(probe.classes_) > 2 else [-probe.intercept_[0],
                                                                              probe.intercept_[0]]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return float(probe.score(feats, targets))


def fit(cfg: Config, labels: LabelMap, splits: dict[str, Any], tokenizer: Any, out: Path,
        callbacks: list[Any]) -> tuple[Classifier, Trainer]:
    """Fine-tune with the HF Trainer; returns the best model by validation macro-F1."""
    model = Classifier(load_pretrained(cfg.model.name_or_path, labels, cfg.model.attention_dropout),
                       cfg.model.pooling)
    tr, va = splits["train"], splits["validation"]
    resume = cfg.train.resume and any((out / CHECKPOINTS).glob("checkpoint-*"))
    if cfg.train.linear_probe and not resume:
        linear_probe(model, tokenizer, tr["enc"], tr["y"], len(labels), cfg.train.seed)
    freeze(model, cfg.train.freeze_embeddings, cfg.train.freeze_layers)
    stop = [EarlyStoppingCallback(cfg.train.early_stopping_patience)] if cfg.train.early_stopping_patience else []
    trainer = _Optimised(
        model=model, args=training_args(cfg, out, len(tr["enc"].input_ids)),
        train_dataset=to_dataset(tr["enc"], tr["y"]), eval_dataset=to_dataset(va["enc"], va["y"]),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_loss_func=weighted_loss(class_weights(cfg, labels, tr["y"])),
        compute_metrics=_compute_metrics(labels, va["enc"], va["y"]), callbacks=stop + callbacks,
        head_lr=cfg.train.head_learning_rate, lr_decay=cfg.train.layerwise_lr_decay)
    trainer.train(resume_from_checkpoint=True if resume else None)
    return trainer.model, trainer


def evaluate_splits(model: Classifier, tokenizer: Any, labels: LabelMap, splits: dict[str, Any],
                    cfg: Config) -> tuple[dict[str, Any], float, dict[str, np.ndarray]]:
    """Calibrate a temperature on validation, then score validation and test at it."""
    probs_at = {}
    for split in ("validation", "test"):
        s = splits[split]
        _, probs_at[split] = doc_probs(model, tokenizer, s["enc"], len(s["y"]), cfg.train.eval_batch_size)
    y_val = np.asarray(splits["validation"]["y"])
    temp = fit_temperature(probs_at["validation"], y_val) if cfg.train.calibrate else 1.0
    metrics, probs = {}, {}
    for split in ("validation", "test"):
        y = np.asarray(splits[split]["y"])
        probs[split] = probs_at[split](temp)
        metrics[split] = classification_metrics(y, probs[split], list(labels.ids))
        metrics[split]["ece_uncalibrated"] = classification_metrics(y, probs_at[split](1.0), list(labels.ids))["ece"]
    return metrics, temp, probs


def model_family(name_or_path: str) -> str:
    """The architecture family (config model_type) of a local model, or the hub id's name."""
    config = Path(name_or_path) / "config.json"
    if config.is_file():
        return str(json.loads(config.read_text()).get("model_type", "unknown"))
    return name_or_path.split("/")[-1]


def train(cfg: Config, callbacks: list[Any] | None = None) -> RunResult:
    """Fine-tune, calibrate and evaluate one model; write `models/<run_name>/` and log the run."""
    tracker = Tracker(cfg)  # connects first: an unreachable server fails before any work is done
    set_seed(cfg.train.seed, deterministic=True)
    set_threads(cfg.train.threads)
    labels = load_labels(cfg.labels)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    encoder = TextEncoder(tokenizer, cfg.model)
    splits = _prepare_inputs(cfg, labels, encoder)
    out = Path(cfg.output_dir) / run_name(cfg)
    out.mkdir(parents=True, exist_ok=True)
    tags = run_tags(cfg, list(labels.ids), model_family(cfg.model.name_or_path))
    with tracker.run(run_name(cfg), "train", tags):
        started = time.time()
        extra = [EpochLogger(tracker).callback()] if tracker.enabled else []
        model, trainer = fit(cfg, labels, splits, tokenizer, out, (callbacks or []) + extra)
        metrics, temp, probs = evaluate_splits(model, tokenizer, labels, splits, cfg)
        metrics["token_audit"] = {s: token_audit(splits[s]["enc"], cfg.model.max_length) for s in splits}
        metrics["train_seconds"] = round(time.time() - started, 1)
        metrics["history"] = [h for h in trainer.state.log_history if "eval_macro_f1" in h or "loss" in h]
        save_model(model, tokenizer, out)
        write_common(out, cfg, labels, metrics, temp)
        test = splits["test"]
        write_evaluation(out, test["rows"], np.asarray(test["y"]), probs["test"], labels, metrics_file=False)
        write_token_audit(out, metrics)
        if not cfg.train.keep_checkpoints:  # the model is written: nothing left to resume
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        tracker.log_final(metrics, list(labels.ids))
        tracker.log_dir(out)
        tracker.log_model(out, exclude=(CHECKPOINTS,))  # kept checkpoints stay local, never in the store
    return RunResult(model_dir=out, metrics=metrics, run_id=tracker.run_id)
