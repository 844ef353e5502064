"""Faster CPU runtimes for a fine-tuned model: torch bf16 or int8, and ONNX Runtime (graph-optimised, int8).

Each is a drop-in replacement for `TransformerScorer.model`: called with padded
`input_ids` and `attention_mask`, it returns an object with `.logits`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pipeline.config import PredictConfig
from pipeline.errors import PipelineError
from pipeline.model import Classifier

ONNX_DIR = "onnx"
EXPORT_VERSION = 3  # bump when export or quantisation changes, so cached graphs are rebuilt


class _Logits(torch.nn.Module):
    """Exportable wrapper: tensors in, the logits tensor out."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits only."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class Bf16Model(torch.nn.Module):
    """Runs the float model under CPU bf16 autocast (fast where the CPU has AVX512-BF16 or AMX)."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, **batch: torch.Tensor) -> Any:
        """Logits computed in bf16, returned as float32."""
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = self.model(**batch).logits
        return SimpleNamespace(logits=logits.float())


class OrtModel:
    """An ONNX Runtime session that quacks like the torch model for `run_logits`."""

    def __init__(self, path: Path, config: Any, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config = config

    def eval(self) -> OrtModel:
        """No training mode to leave."""
        return self

    def parameters(self) -> Any:
        """run_logits asks for a device through the first parameter."""
        yield torch.zeros(1)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> Any:
        """Logits from the ONNX graph."""
        feeds = {"input_ids": input_ids.cpu().numpy().astype(np.int64),
                 "attention_mask": attention_mask.cpu().numpy().astype(np.int64)}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))


def _stamp(model_dir: Path) -> dict[str, Any]:
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    return {"weights_size": stat.st_size, "weights_mtime": stat.st_mtime_ns, "export_version": EXPORT_VERSION}


def _keep_float(name: str) -> bool:
    """The classifier head stays float: it is tiny, and its logits decide the label."""
    return "classifier" in name


def export_onnx(model: Classifier, tokenizer: Any, model_dir: Path, quantize: bool) -> Path:
    """Export once (cached in MODEL/onnx/), fuse attention with ORT's transformer optimizer, optionally int8."""
    out = model_dir / ONNX_DIR
    target = out / ("model.int8.onnx" if quantize else "model.opt.onnx")
    stamp_file = out / "stamp.json"
    if target.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == _stamp(model_dir):
        return target
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        raise PipelineError("--runtime onnx needs onnxruntime and onnx: pip install onnx onnxruntime") from None
    out.mkdir(exist_ok=True)
    raw, opt = out / "model.onnx", out / "model.opt.onnx"
    attention = model.inner.config._attn_implementation
    model.inner.set_attn_implementation("eager")  # the pattern ORT's optimizer fuses into one Attention op
    try:
        sample = tokenizer.pad({"input_ids": [[0, 5, 6, 2], [0, 7, 2]]}, padding=True, return_tensors="pt")
        torch.onnx.export(_Logits(model).eval(), (sample["input_ids"], sample["attention_mask"]), str(raw),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "attention_mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}},
                          dynamo=False)
    finally:
        model.inner.set_attn_implementation(attention)  # the caller's model is left as it came
    cfg = model.config
    optimize_model(str(raw), model_type="bert", num_heads=cfg.num_attention_heads,
                   hidden_size=cfg.hidden_size).save_model_to_file(str(opt))
    if quantize:
        import onnx

        # the fused graph has ops shape inference cannot type; their weights are float
        keep = [n.name for n in onnx.load(str(opt), load_external_data=False).graph.node if _keep_float(n.name)]
        keep += [f"{name}_MatMul" for name in keep]  # the quantiser splits a Gemm into `<name>_MatMul` + Add
        quantize_dynamic(str(opt), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=keep, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    raw.unlink(missing_ok=True)
    stamp_file.write_text(json.dumps(_stamp(model_dir)))
    return target


def apply(scorer: Any, opts: PredictConfig) -> str:
    """Swap the scorer's model for the runtime `opts` asks for; returns a tag for the output's `model` field.

    `PredictConfig` has already refused combinations that do not exist (ONNX with bf16).
    """
    if not opts.fast_runtime:
        return ""
    if scorer.kind != "transformer":
        raise PipelineError("--runtime, --quantize and --precision apply to transformer models only")
    if opts.runtime == "onnx":
        path = export_onnx(scorer.model.cpu().eval(), scorer.tokenizer, scorer.directory, opts.quantize == "int8")
        scorer.model, scorer.device = OrtModel(path, scorer.model.config, opts.threads), torch.device("cpu")
        return "+onnx" + ("-int8" if opts.quantize == "int8" else "")
    if opts.quantize == "int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {name: per_channel_dynamic_qconfig for name, module in scorer.model.named_modules()
                if isinstance(module, torch.nn.Linear) and not _keep_float(name)}
        scorer.model = quantize_dynamic(scorer.model.cpu(), spec, dtype=torch.qint8)
        scorer.device = torch.device("cpu")
        return "+int8"
    scorer.model = Bf16Model(scorer.model)
    return "+bf16"
