"""The only module that knows Hugging Face model classes: load, encode long texts, run, save."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging as hf_logging

from pipeline.artifacts import Scorer
from pipeline.config import ModelConfig
from pipeline.errors import ModelError
from pipeline.labels import LabelMap
from pipeline.metrics import softmax
from pipeline.multilabel import sigmoid


def _offline_hint(name: str) -> str:
    return (f"cannot load model '{name}': it is not a local directory, and the Hugging Face Hub is unreachable "
            f"and has no cached copy. On a connected machine run `hf download {name} --local-dir "
            f"models/pretrained/{name.split('/')[-1]}`, copy that folder here and set "
            f"model.name_or_path=models/pretrained/{name.split('/')[-1]}")


def _check_source(name: str) -> None:
    """A local path must be a model directory; anything else is treated as a hub id."""
    looks_local = (path := Path(name)).exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        how = "" if path.exists() else f"; make it with `pipeline pretrain --output {name}` or `pipeline backbone`"
        raise ModelError(f"{name}: not a model directory (no config.json){how}")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers at error level, without progress bars: this module reads the load report itself."""
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def check_loading(name: str, info: dict[str, Any], pooling: str) -> None:
    """One line on backbone weights that start random: any outside the new head, and the pooler unless mean pooling
    skips it (transformers' own report, a table per load, also lists the head, which is random by design)."""
    skip = {"classifier", "pre_classifier", "score"} | ({"pooler"} if pooling == "mean" else set())
    random = sorted(k for k in info.get("missing_keys", ()) if not skip & set(k.split(".")))
    if random:
        print(f"warning: {name}: {len(random)} weights are not in the checkpoint and start random: "
              f"{', '.join(random[:4])}{' ...' if len(random) > 4 else ''}", file=sys.stderr)


def load_tokenizer(name: str) -> Any:
    """A fast tokenizer (hub id or local directory, no remote code) that tokenises whole texts without a warning."""
    _check_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, use_fast=True, trust_remote_code=False)
    except OSError:
        raise ModelError(_offline_hint(name)) from None
    getattr(tokenizer, "deprecation_warnings", {})["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tokenizer


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT family, DistilBERT/others


def load_pretrained(name: str, labels: LabelMap, attention_dropout: float | None = None, pooling: str = "cls",
                    multi: bool = False) -> PreTrainedModel:
    """A sequence classifier with this label set, from safetensors weights only (`multi`: its config says
    `problem_type: multi_label_classification`, so that plain transformers applies a sigmoid per label).

    `attention_dropout` overrides the backbone's; 0 lets torch's fused attention kernel run during training
    (with dropout on the attention probabilities, sdpa falls back to the unfused path: half the speed on CPU).
    """
    _check_source(name)
    try:
        config = AutoConfig.from_pretrained(name, num_labels=len(labels), id2label=labels.id2label,
                                            label2id=labels.label2id, trust_remote_code=False,
                                            **({"problem_type": "multi_label_classification"} if multi else {}))
        if attention_dropout is not None:
            keys = [k for k in ATTENTION_DROPOUT_KEYS if hasattr(config, k)]
            if not keys:
                raise ModelError(f"{name}: model.attention_dropout is not supported for {config.model_type}")
            for key in keys:
                setattr(config, key, attention_dropout)
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name, config=config, use_safetensors=True, trust_remote_code=False, output_loading_info=True)
    except OSError as exc:
        if Path(name).is_dir():
            raise ModelError(f"{name}: cannot load weights ({str(exc).splitlines()[0]})") from None
        raise ModelError(_offline_hint(name)) from None
    check_loading(name, info, pooling)
    return model


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token vectors that the attention mask keeps (E5's pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class Classifier(nn.Module):
    """A transformers sequence classifier whose head pools the first token (`cls`) or the mean (`mean`)."""

    def __init__(self, inner: PreTrainedModel, pooling: str = "cls") -> None:
        super().__init__()
        self.inner = inner
        self.pooling = pooling
        self.config = inner.config
        if pooling == "mean" and not isinstance(getattr(inner, "classifier", None), nn.Linear):
            raise ModelError(f"model.pooling=mean needs a linear classifier head; {type(inner).__name__} has none")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> SequenceClassifierOutput:
        """Logits for a padded batch."""
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        if self.pooling == "cls":
            return SequenceClassifierOutput(logits=self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                                              **extra).logits)
        hidden = self.inner.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        dropout = getattr(self.inner, "dropout", nn.Identity())
        return SequenceClassifierOutput(logits=self.inner.classifier(dropout(pooled)))


@dataclass
class Encoded:
    """Token ids of model inputs; a document may span several inputs (chunks)."""

    input_ids: list[list[int]] = field(default_factory=list)
    doc_index: list[int] = field(default_factory=list)
    doc_tokens: list[int] = field(default_factory=list)

    def truncated(self, max_length: int, specials: int = 2) -> np.ndarray:
        """Per document: True when it had more tokens than fit into one input."""
        return np.asarray(self.doc_tokens) > max_length - specials


class TextEncoder:
    """Turns texts into model inputs with the configured long-text strategy (head, head_tail, chunks)."""

    def __init__(self, tokenizer: Any, cfg: ModelConfig) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg
        probe = tokenizer("x", add_special_tokens=True)["input_ids"]
        bare = tokenizer("x", add_special_tokens=False)["input_ids"]
        start = next(i for i in range(len(probe)) if probe[i:i + len(bare)] == bare)
        self.prefix, self.suffix = probe[:start], probe[start + len(bare):]
        if cfg.text_prefix:  # inside the special tokens, so every chunk starts with it
            self.prefix = self.prefix + tokenizer(cfg.text_prefix.rstrip(), add_special_tokens=False)["input_ids"]
        self.budget = cfg.max_length - len(self.prefix) - len(self.suffix)
        if self.budget < 4:
            raise ModelError(f"model.max_length={cfg.max_length} leaves no room for text")

    def pieces(self, ids: list[int]) -> list[list[int]]:
        """Cut one document's ids into model-sized pieces."""
        budget, cfg = self.budget, self.cfg
        if len(ids) <= budget or cfg.long_text == "head":
            return [ids[:budget]]
        if cfg.long_text == "head_tail":
            head = max(1, round(budget * cfg.head_fraction))
            return [ids[:head] + (ids[-(budget - head):] if budget > head else [])]
        step = max(1, budget - min(cfg.chunk_stride, budget // 2))
        starts = [*range(0, len(ids) - budget, step), len(ids) - budget]  # last window ends at the end
        if len(starts) > cfg.max_chunks:  # spread the windows over the whole document
            starts = [starts[round(i * (len(starts) - 1) / (cfg.max_chunks - 1))] for i in range(cfg.max_chunks)] \
                if cfg.max_chunks > 1 else starts[:1]
        return [ids[s:s + budget] for s in starts]

    def encode(self, texts: list[str]) -> Encoded:
        """Tokenise a batch (fast tokenizer, no truncation) and apply the long-text strategy."""
        out = Encoded()
        if not texts:
            return out
        ids_batch = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        for doc, ids in enumerate(ids_batch):
            out.doc_tokens.append(len(ids))
            for piece in self.pieces(ids):
                out.input_ids.append(self.prefix + piece + self.suffix)
                out.doc_index.append(doc)
        return out


def pad_batch(tokenizer: Any, input_ids: list[list[int]], device: torch.device | str = "cpu",
              ) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest input of the batch."""
    batch = tokenizer.pad({"input_ids": input_ids}, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def average_by_doc(probs: np.ndarray, doc_index: list[int], n_docs: int) -> np.ndarray:
    """Mean probability over the inputs (chunks) of each document."""
    out = np.zeros((n_docs, probs.shape[1]), dtype=np.float64)
    counts = np.bincount(np.asarray(doc_index, dtype=np.int64), minlength=n_docs).astype(np.float64)
    np.add.at(out, np.asarray(doc_index), probs)
    return out / np.maximum(counts, 1)[:, None]


@torch.inference_mode()
def run_logits(model: nn.Module, tokenizer: Any, input_ids: list[list[int]], batch_size: int,
               device: torch.device | str = "cpu") -> np.ndarray:
    """Logits for every input, batched in length order to cut padding, returned in input order."""
    model.eval()
    order = np.argsort([len(x) for x in input_ids], kind="stable")
    out = np.zeros((len(input_ids), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = pad_batch(tokenizer, [input_ids[i] for i in idx], device)
        out[idx] = model(**batch).logits.float().cpu().numpy()
    return out


def save_model(model: Classifier, tokenizer: Any, directory: str | Path) -> None:
    """Write weights (safetensors), config with id2label, and tokenizer files (called by artifacts)."""
    with quiet_transformers():
        model.inner.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)


def load_model_dir(directory: str | Path, pooling: str) -> tuple[Classifier, Any]:
    """Load a trained model directory for inference."""
    directory = Path(directory)
    missing = [f for f in ("config.json", "model.safetensors") if not (directory / f).is_file()]
    if missing:
        raise ModelError(f"{directory}: incomplete model directory, missing {', '.join(missing)}")
    with quiet_transformers():  # a loading bar per model is noise in batch jobs
        inner, info = AutoModelForSequenceClassification.from_pretrained(
            directory, use_safetensors=True, trust_remote_code=False, output_loading_info=True)
    check_loading(str(directory), info, pooling)
    return Classifier(inner, pooling), load_tokenizer(str(directory))


def pick_device(name: str = "auto") -> torch.device:
    """cuda when asked or available, else cpu."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda asked for, but no CUDA device is available")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def model_family(name_or_path: str) -> str:
    """The architecture family (config model_type) of a local model, or the hub id's name."""
    config = Path(name_or_path) / "config.json"
    if config.is_file():
        return str(json.loads(config.read_text()).get("model_type", "unknown"))
    return name_or_path.split("/")[-1]


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (None keeps the default)."""
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


class TransformerScorer(Scorer):
    """A fine-tuned model directory ready for inference: normaliser, encoder, model, temperature."""

    kind = "transformer"

    def __init__(self, directory: str | Path, device: str = "auto", batch_size: int = 32,
                 threads: int | None = None) -> None:
        super().__init__(directory)
        set_threads(threads)
        self.device = pick_device(device)
        self.model, self.tokenizer = load_model_dir(directory, self.cfg.model.pooling)
        saved = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        if saved != list(self.labels.ids):
            raise ModelError(f"{directory}: labels.json ({', '.join(self.labels.ids)}) does not match "
                             f"config.json id2label ({', '.join(saved)})")
        self.model.to(self.device)
        self.encoder = TextEncoder(self.tokenizer, self.cfg.model)
        self.batch_size = batch_size

    def set_long_text(self, strategy: str) -> None:
        """Use another long-text strategy than the one trained with (e.g. `chunks` for recall, `head` for speed)."""
        self.encoder = TextEncoder(self.tokenizer, self.cfg.model.model_copy(update={"long_text": strategy}))

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities (per-label sigmoid ones, multi-label) for normalised texts, and token counts."""
        enc = self.encoder.encode(texts)
        logits = run_logits(self.model, self.tokenizer, enc.input_ids, self.batch_size, self.device)
        probs = average_by_doc((sigmoid if self.multi else softmax)(logits, self.temperature), enc.doc_index,
                               len(texts))
        return probs, np.asarray(enc.doc_tokens)
