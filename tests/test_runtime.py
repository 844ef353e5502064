import shutil

import pytest

from pipeline.runtime import _keep_float, export_onnx


@pytest.mark.parametrize(("name", "keep"), [
    ("inner.classifier", True),
    ("/model/inner/classifier/Gemm", True),
    ("inner.bert.encoder.layer.0.output.dense", False),
    ("inner.bert.encoder.layer.0.attention.self.query", False),
])
def test_int8_keeps_only_the_classifier_in_float(name, keep):
    assert _keep_float(name) is keep


def _op_types(path):
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_onnx_export_fuses_attention_and_quantises_every_encoder_matmul(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from pipeline.scoring import load_scorer

    model_dir = shutil.copytree(trained[1].model_dir, tmp_path / "model")
    scorer = load_scorer(model_dir)
    layers = scorer.model.config.num_hidden_layers
    attention = scorer.model.inner.config._attn_implementation
    fp32 = _op_types(export_onnx(scorer.model, scorer.tokenizer, model_dir, quantize=False))
    assert scorer.model.inner.config._attn_implementation == attention  # the caller's model is left as it came
    # one fused Attention op per layer: the unfused sdpa export spends a third of its time in Where/IsNaN
    assert fp32.count("Attention") == layers and "IsNaN" not in fp32 and "Softmax" not in fp32
    int8 = _op_types(export_onnx(scorer.model, scorer.tokenizer, model_dir, quantize=True))
    assert int8.count("QAttention") == layers
    assert int8.count("DynamicQuantizeMatMul") + int8.count("MatMulInteger") >= 2 * layers  # both FFN matmuls
    assert "Gemm" in int8 or "MatMul" in int8  # the classifier, kept in float
    again = export_onnx(scorer.model, scorer.tokenizer, model_dir, quantize=True)
    assert again == model_dir / "onnx" / "model.int8.onnx"  # cached: no second export
