"""Typed configuration: YAML files merged left to right, then dotted overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.yamlio import deep_merge, parse_override, read_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_S = TypeVar("_S", bound=_Section)
# a path; `~/...` (how saved configs write the home directory) is expanded
LocalPath = Annotated[str, AfterValidator(lambda p: str(Path(p).expanduser()) if p.startswith("~") else p)]


class DedupConfig(_Section):
    exact: bool = True
    near: bool = True
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of word shingles")
    num_perm: int = 128
    shingle_size: int = 3


class SplitConfig(_Section):
    validation: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)
    seed: int = 42
    group_by: str | None = None
    files: dict[Literal["train", "validation", "test"], LocalPath] | None = None


class DataConfig(_Section):
    name: str = "sample"
    path: LocalPath | list[LocalPath] = "data/sample/articles.jsonl"
    sources: list[LocalPath] = Field([], description="extra labelled files, e.g. filled review queues: rows with "
                                     "an empty label are skipped, duplicates of the corpus dropped, the rest split "
                                     "with the corpus")
    format: Literal["auto", "jsonl", "csv", "parquet", "folder"] = "auto"
    text_fields: list[str] = ["title", "text"]
    label_field: str = "label"
    id_field: str = "id"
    extra_fields: list[str] = ["labels", "source"]
    on_bad_rows: Literal["error", "skip"] = "error"
    min_per_class: int = 3
    dedup: DedupConfig = DedupConfig()
    split: SplitConfig = SplitConfig()
    processed_dir: LocalPath = "data/processed"


class TextConfig(_Section):
    remove_diacritics: bool = True
    remove_tatweel: bool = True
    normalize_alef: bool = False
    normalize_alef_maqsura: bool = False
    normalize_ta_marbuta: bool = False
    normalize_digits: bool = True
    remove_urls: bool = True
    remove_emails: bool = True
    collapse_punctuation: bool = True
    normalize_whitespace: bool = True
    strip_boilerplate: bool = True
    boilerplate_patterns: list[str] = []
    repeated_line_min_docs: int = Field(5, ge=2, description="a line in this many documents is chrome")


class LabelsConfig(_Section):
    file: LocalPath = "configs/labels.yaml"
    map: dict[str, str] = {}
    mode: Literal["single", "multi"] = Field("single", description="multi: every applicable label (`labels`), "
                                             "sigmoid per label, per-label thresholds tuned on validation")


class ModelConfig(_Section):
    name_or_path: LocalPath = "aubmindlab/bert-base-arabertv02"
    max_length: int = Field(256, ge=8)
    long_text: Literal["head", "head_tail", "chunks"] = "head_tail"
    head_fraction: float = Field(0.5, gt=0, le=1, description="share of head_tail budget given to the head")
    chunk_stride: int = Field(64, ge=0)
    max_chunks: int = Field(8, ge=1)
    pooling: Literal["cls", "mean"] = "cls"
    text_prefix: str = Field("", description='text put before every input (and every chunk), e.g. E5\'s "query: ", '
                             "which E5 recommends for linear probing and classification")
    attention_dropout: float | None = Field(None, ge=0, lt=1, description="override the backbone's attention "
                                            "dropout; 0 keeps torch's fused attention in training (2x on CPU)")


class TrainConfig(_Section):
    epochs: float = 3.0
    learning_rate: float = 5e-5
    head_learning_rate: float | None = None
    layerwise_lr_decay: float = Field(1.0, gt=0, le=1)
    freeze_embeddings: bool = Field(False, description="keep the embedding layer fixed (a 250k-piece vocabulary "
                                    "is most of a small model's weights; freezing it trains ~2x faster)")
    freeze_layers: int = Field(0, ge=0, description="keep the lowest N encoder layers fixed")
    batch_size: int = 16
    eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    class_weights: Literal["auto", "sqrt", "none"] | dict[str, float] = "auto"
    early_stopping_patience: int | None = 2
    seed: int = 42
    resume: bool = False
    keep_checkpoints: bool = Field(False, description="keep checkpoints/ after a run that finished (they exist "
                                   "to resume a run that died; for e5-small they take 1.3 GB)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    logging_steps: int = 10
    max_steps: int = -1
    calibrate: bool = True
    linear_probe: bool = False
    threads: int | None = None
    unlabelled: LocalPath | None = Field(None, description="unlabelled articles for self-training (pseudo-labels)")
    self_training_rounds: int = Field(2, ge=1)
    pseudo_threshold: float = Field(0.9, ge=0, le=1, description="calibrated confidence a pseudo-label needs")
    pseudo_per_class: int = Field(100, ge=1, description="pseudo-labels added per label and round, at most")
    ensemble_combiner: Literal["mean", "fitted"] = Field("mean", description="mean: the unweighted mean of the "
                                                         "log-probabilities of the subset of members best on "
                                                         "validation (a member alone is a subset); fitted: weights "
                                                         "or a logistic regression fitted on validation")
    ensemble_offsets: Literal["none", "count_match"] = Field(
        "none", description="count_match: before combining, add per-label offsets to each member's log-probabilities "
        "so that on validation it predicts every label as often as validation has it (fitted on validation only; a "
        "TF-IDF member under-predicts rare labels)")
    ensemble_criterion: Literal["log_loss", "macro_f1"] = Field(
        "log_loss", description="how the ensemble's candidates are compared on validation: calibrated log-loss "
        "(read from every article's probability) or macro-F1 (from the argmax alone: noisy on a few hundred articles)")
    ensemble_lead_words: int | None = Field(None, ge=1, description="with ensemble_with_baseline: stack the "
                                            "baseline trained with baseline.lead_words=N as well")
    ensemble_with_baseline: bool = Field(False, description="after `train`, stack the model with this config's "
                                         "TF-IDF baseline (`pipeline ensemble`); train the baseline first")
    ddp_timeout: int = Field(1800, ge=1, description="seconds a torchrun rank waits for its peers before the job "
                             "fails (a dead peer then stops the run instead of hanging it)")


class BaselineConfig(_Section):
    classifier: Literal["logreg", "linear_svc"] = "logreg"
    C: list[float] = Field([0.5, 2.0, 8.0, 32.0], min_length=1, description="grid, picked on validation macro-F1")
    char_ngrams: tuple[int, int] = (2, 5)
    word_ngrams: tuple[int, int] = (1, 2)
    max_features: int = 300_000
    min_df: int = 2
    class_weight: Literal["balanced", "none"] = "balanced"
    lead_words: int | None = Field(None, ge=1, description="read only the first N words (title and lead, what "
                                   "annotators label from): a member for an ensemble beside the full-text model")


class PretrainConfig(_Section):
    """`pipeline pretrain`: masked-LM training of the backbone on unlabelled news before fine-tuning."""

    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 5e-5
    batch_size: int = 16
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    max_docs: int | None = Field(None, ge=1, description="read at most this many articles")
    save_steps: int = Field(50, ge=1, description="write a checkpoint every this many steps (--resume continues)")


class TrackingConfig(_Section):
    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None
    registered_model: str | None = None
    run_name: str | None = None


class PredictConfig(_Section):
    """How `pipeline predict` runs: saved with the model, each key overridable by the flag of the same name."""

    batch_size: int = Field(32, ge=1)
    threshold: float = Field(0.5, description="needs_review below this calibrated confidence")
    top_k: int | None = Field(None, ge=1)
    window: int = Field(512, ge=1, description="rows sorted by length together")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    min_arabic_share: float = Field(0.5, ge=0, le=1)
    max_chars: int = 200_000
    text_fields: list[str] | None = Field(None, description="None: the model's data.text_fields")
    id_field: str | None = Field(None, description="None: the model's data.id_field")
    long_text: Literal["head", "head_tail", "chunks"] | None = Field(None, description="None: as trained")
    runtime: Literal["auto", "torch", "onnx"] = "auto"  # auto: the fastest that agrees with float on this CPU
    quantize: Literal["none", "int8"] = "none"
    precision: Literal["fp32", "bf16"] = "fp32"
    min_agreement: float = Field(0.97, ge=0, description="a faster runtime must agree with float this often")

    @field_validator("threshold")
    @classmethod
    def _confidence(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("expected a confidence between 0 and 1")
        return value

    @model_validator(mode="before")
    @classmethod
    def _explicit(cls, data: Any) -> Any:
        """`--quantize int8` or `--precision bf16` alone mean the torch runtime, as before `auto` existed."""
        explicit = isinstance(data, dict) and (data.get("quantize", "none"), data.get("precision", "fp32")) != (
            "none", "fp32")
        return {**data, "runtime": "torch"} if explicit and data.get("runtime", "auto") == "auto" else data

    @model_validator(mode="after")
    def _runtime(self) -> PredictConfig:
        if self.runtime == "onnx" and self.precision != "fp32":
            raise ValueError("--precision bf16 applies to --runtime torch")
        return self

    @property
    def fast_runtime(self) -> bool:
        """An explicit runtime other than the float torch model: checked against it on the input's first documents."""
        return self.runtime != "auto" and (self.runtime, self.quantize, self.precision) != ("torch", "none", "fp32")


class Config(_Section):
    name: str = "run"
    output_dir: LocalPath = "models"
    data: DataConfig = DataConfig()
    text: TextConfig = TextConfig()
    labels: LabelsConfig = LabelsConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    baseline: BaselineConfig = BaselineConfig()
    pretrain: PretrainConfig = PretrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    predict: PredictConfig = PredictConfig()


def with_flags(section: _S, flags: dict[str, Any]) -> _S:
    """A config section with command-line flags laid over it (None: not given), validated by the section's own
    model; an error names the flag, e.g. `--threshold 1.5: expected a confidence between 0 and 1`."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return type(section).model_validate({**section.model_dump(), **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:
            raise ConfigError(msg) from None
        flag = "--" + str(err["loc"][0]).replace("_", "-")
        if flag[2:].replace("-", "_") not in type(section).model_fields:
            raise ConfigError(f"unknown option {flag}") from None
        raise ConfigError(f"{flag} {err.get('input')}: {msg}") from None


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    return f"config key '{key}': {err['msg']} (got {err.get('input')!r})"


def build_config(raw: dict[str, Any]) -> Config:
    """Validate a merged mapping into a Config, with a one-line error naming the key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def load_config(files: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Merge YAML files left to right, then dotted overrides, into a validated Config."""
    raw: dict[str, Any] = {}
    for path in files or []:
        raw = deep_merge(raw, read_yaml(path))
    for item in overrides or []:
        raw = deep_merge(raw, parse_override(item))
    return build_config(raw)


def to_yaml(cfg: Config | dict[str, Any]) -> str:
    """The resolved config (or its dump) as YAML, the form saved with every model and run."""
    data = cfg if isinstance(cfg, dict) else cfg.model_dump(mode="json")
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def flatten(cfg: Config) -> dict[str, str]:
    """Flat `section.key` params for tracking; lists and dicts become short strings."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and prefix.count(".") < 2:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            out[prefix] = str(value)

    walk("", cfg.model_dump(mode="json"))
    return out
