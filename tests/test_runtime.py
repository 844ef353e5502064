import pytest

from pipeline.runtime import _keep_float


@pytest.mark.parametrize(("name", "keep"), [
    ("inner.classifier", True),
    ("inner.bert.encoder.layer.0.output.dense", True),
    ("/model/inner/bert/encoder/layer.3/output/dense/MatMul", True),
    ("inner.bert.encoder.layer.0.attention.output.dense", False),
    ("/model/inner/bert/encoder/layer.3/attention/output/dense/MatMul", False),
    ("inner.bert.encoder.layer.0.intermediate.dense", False),
    ("inner.bert.encoder.layer.0.attention.self.query", False),
])
def test_int8_keeps_sensitive_layers_in_float(name, keep):
    assert _keep_float(name) is keep
