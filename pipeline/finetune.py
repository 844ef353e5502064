"""The parts of the fine-tuning recipe around the HF Trainer: class-weighted loss, freezing, layer-wise learning
rates, LP-FT (a linear probe fitted before fine-tuning), the Trainer subclass, precision, per-epoch tracking, a
checkpoint and a clean stop on SIGINT/SIGTERM (which checkpoint a resume starts from: `pipeline.checkpoints`)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.jobs import StopSignals
from pipeline.labels import LabelMap
from pipeline.model import Classifier, Encoded, run_logits
from pipeline.tracking import Tracker


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX): autocast then runs about twice as fast as fp32."""
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


def class_weights(cfg: Config, labels: LabelMap, y: list[int], y_multi: np.ndarray | None = None,
                  ) -> torch.Tensor | None:
    """Loss weights per label: balanced (`auto`), square-root balanced (`sqrt`), none, or explicit.

    Multi-label (`y_multi`, the multi-hot targets): BCE's `pos_weight` per label instead, negatives over positives
    (`auto`), its square root (`sqrt`), or explicit; 1 for a label without positive or negative rows.
    """
    spec = cfg.train.class_weights
    if spec == "none":
        return None
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(labels.ids))
        if unknown:
            raise ConfigError(f"train.class_weights: unknown label '{unknown[0]}'")
        return torch.tensor([float(spec.get(lb, 1.0)) for lb in labels.ids])
    if y_multi is not None:
        pos = y_multi.sum(axis=0).astype(float)
        neg = len(y_multi) - pos
        ratio = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
        return torch.tensor(np.sqrt(ratio) if spec == "sqrt" else ratio, dtype=torch.float32)
    counts = np.bincount(np.asarray(y), minlength=len(labels)).astype(float)
    balanced = np.where(counts > 0, len(y) / (len(labels) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(np.sqrt(balanced) if spec == "sqrt" else balanced, dtype=torch.float32)


def weighted_loss(weights: torch.Tensor | None, multi: bool = False) -> Any:
    """A Trainer `compute_loss_func`: cross-entropy with optional class weights, or (`multi`) binary cross-entropy
    over multi-hot targets, a sigmoid per label, with the weights as `pos_weight`."""

    def loss_fn(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"]
        w = weights.to(logits.device, logits.dtype) if weights is not None else None
        if multi:
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype),
                                                                        pos_weight=w)
        return torch.nn.functional.cross_entropy(logits, labels, weight=w)

    return loss_fn


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


def freeze_unused_pooler(model: torch.nn.Module, pooling: str) -> int:
    """With mean pooling the backbone's pooler is computed but never reaches the loss: mark it fixed (it gets no
    gradient either way) so DDP does not wait for its gradients; returns how many tensors were fixed."""
    if pooling != "mean":
        return 0
    pooler = [p for name, p in model.named_parameters() if ".pooler." in f".{name}" and p.requires_grad]
    for param in pooler:
        param.requires_grad_(False)
    return len(pooler)


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


class LayerwiseTrainer(Trainer):
    """A Trainer whose optimizer gives the head its own learning rate and decays the rates layer by layer, and
    which evaluates in dataset order.

    The order matters because `compute_metrics` maps chunk predictions back to documents by position. Trainer
    has no public hook for the evaluation sampler, so this overrides the private `_get_eval_sampler`: if a
    transformers release renames it, per-epoch validation metrics would be computed on shuffled chunks, which
    `test_epoch_metrics_match_final_evaluation` catches.
    """

    def __init__(self, *args: Any, head_lr: float | None = None, lr_decay: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_lr, self.lr_decay = head_lr, lr_decay

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler:
        """Evaluate in dataset order."""
        return torch.utils.data.SequentialSampler(eval_dataset)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """AdamW over parameter groups: (layer depth, decay or not)."""
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(
                param_groups(self.model, self.args.learning_rate, self.head_lr, self.lr_decay,
                             self.args.weight_decay))
        return self.optimizer


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


def linear_probe(model: Classifier, tokenizer: Any, enc: Encoded, y: list[int], n_labels: int, seed: int,
                 y_multi: np.ndarray | None = None) -> float:
    """LP-FT: fit the head on frozen features (balanced logistic regression) before fine-tuning the whole model;
    one-vs-rest on the multi-hot targets `y_multi` in multi-label mode."""
    from sklearn.linear_model import LogisticRegression

    head = model.inner.classifier
    if not isinstance(head, torch.nn.Linear):
        raise ConfigError("train.linear_probe needs a linear classifier head")
    model.eval()
    feats = head_inputs(model, tokenizer, enc.input_ids, 32)
    if y_multi is not None:
        return _multi_probe(head, feats, y_multi[np.asarray(enc.doc_index)], seed)
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


def _multi_probe(head: torch.nn.Linear, feats: np.ndarray, targets: np.ndarray, seed: int) -> float:
    """One balanced logistic regression per label on frozen features, copied into the head (sigmoid logits)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    probe = OneVsRestClassifier(LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000,
                                                   random_state=seed)).fit(feats, targets)
    weight = np.zeros((targets.shape[1], feats.shape[1]), dtype=np.float32)
    bias = np.zeros(targets.shape[1], dtype=np.float32)
    for j, est in enumerate(probe.estimators_):
        if hasattr(est, "coef_"):
            weight[j], bias[j] = est.coef_[0], est.intercept_[0]
        else:  # a label that is never (always) there in training
            bias[j] = 10.0 if np.ravel(est.y_)[0] else -10.0
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return float(probe.score(feats, targets))


class TrackerCallback(TrainerCallback):
    """Sends per-epoch validation metrics and the training loss to the run's tracker."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **_: Any) -> None:
        """`eval_*` metrics as `val_*`, one step per epoch."""
        vals = {k.replace("eval_", "val_"): v for k, v in (metrics or {}).items()
                if k.startswith("eval_") and "runtime" not in k and "per_second" not in k}
        self.tracker.log_metrics(vals, step=round(state.epoch or 0))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **_: Any) -> None:
        """The loss and learning rate at the global step."""
        logs = logs or {}
        if "loss" in logs:
            self.tracker.log_metrics({"train_loss": logs["loss"], "learning_rate": logs.get("learning_rate", 0)},
                                     step=state.global_step)


class StopCallback(TrainerCallback):
    """After SIGINT/SIGTERM, save a checkpoint at the end of the current step and end training there.

    `agree` turns this process's flag into the job's (under DDP an all-reduce at every step end): every rank then
    stops at the same step, and none waits forever in a collective its stopped peer never joins.
    """

    def __init__(self, stop: StopSignals, agree: Callable[[bool], bool] = bool) -> None:
        self.stop, self.agree = stop, agree

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
        """Ask the Trainer for a checkpoint and a stop once a signal came (to any rank)."""
        if self.agree(self.stop.signum is not None):
            self.stop.signum = self.stop.signum or signal.SIGTERM  # a peer's signal stops this rank as well
            control.should_save = True
            control.should_training_stop = True
        return control
