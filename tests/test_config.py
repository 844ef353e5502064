from pathlib import Path

import pytest

from pipeline.config import ConfigError, flatten, load_config, to_yaml
from pipeline.yamlio import parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid():
    cfg = load_config()
    assert cfg.model.long_text == "head_tail"
    assert cfg.text.normalize_alef is False  # don't fold letters BERT vocabularies keep


def test_files_merge_left_to_right(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("name: a\ntrain: {epochs: 2, learning_rate: 1.0e-4}\n")
    b.write_text("train: {epochs: 7}\n")
    cfg = load_config([a, b])
    assert cfg.name == "a"
    assert cfg.train.epochs == 7
    assert cfg.train.learning_rate == 1e-4  # kept from a: nested sections merge


def test_overrides_apply_last_and_are_typed(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("train: {epochs: 2}\n")
    cfg = load_config([a], ["train.epochs=5", "model.max_length=128", "data.text_fields=[title, body]",
                            "tracking.uri=null"])
    assert cfg.train.epochs == 5.0
    assert cfg.model.max_length == 128
    assert cfg.data.text_fields == ["title", "body"]
    assert cfg.tracking.uri is None


def test_unknown_key_names_the_key(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("train: {epochz: 2}\n")
    with pytest.raises(ConfigError, match=r"^unknown config key 'train\.epochz'$"):
        load_config([a])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"config key 'train\.batch_size': .*integer.*'lots'"):
        load_config(overrides=["train.batch_size=lots"])


def test_bad_choice_names_the_key():
    with pytest.raises(ConfigError, match=r"config key 'model\.long_text'"):
        load_config(overrides=["model.long_text=middle"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.epochs")


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config([bad])


def test_missing_file():
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config"):
        load_config(["nope.yaml"])


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(Exception, match="frozen"):
        cfg.train.epochs = 3


def test_shipped_configs_resolve():
    for files in (["configs/base.yaml"], ["configs/base.yaml", "configs/exp/security_news.yaml"]):
        cfg = load_config([ROOT / f for f in files])
        assert cfg.model.name_or_path
    recipe = ["base.yaml", "exp/security_news.yaml", "exp/e5_small.yaml", "exp/dapt.yaml", "exp/cpu.yaml"]
    cfg = load_config([ROOT / "configs" / f for f in recipe])  # the real-data recipe: e5-small's settings, DAPT weights
    assert (cfg.model.name_or_path, cfg.model.pooling) == ("models/pretrained/e5-small-ant-dapt", "mean")
    assert cfg.train.linear_probe and cfg.train.epochs == 4


def test_yaml_round_trip_and_flat_params():
    cfg = load_config(overrides=["train.epochs=4"])
    again = load_config(overrides=[])  # defaults
    assert to_yaml(cfg) != to_yaml(again)
    flat = flatten(cfg)
    assert flat["train.epochs"] == "4.0"
    assert flat["model.name_or_path"] == "aubmindlab/bert-base-arabertv02"
    assert "data.dedup.threshold" in flat


def test_flags_override_a_saved_section_and_are_validated_by_it():
    from pipeline.config import PredictConfig, with_flags

    saved = PredictConfig(threshold=0.8, batch_size=8)
    merged = with_flags(saved, {"threshold": None, "batch_size": 64, "runtime": "onnx"})
    assert (merged.threshold, merged.batch_size, merged.runtime) == (0.8, 64, "onnx")  # None: not given
    assert merged.fast_runtime and not saved.fast_runtime
    with pytest.raises(ConfigError, match=r"^--threshold 1\.5: expected a confidence between 0 and 1$"):
        with_flags(saved, {"threshold": 1.5})
    with pytest.raises(ConfigError, match=r"^--batch-size 0: Input should be greater than or equal to 1$"):
        with_flags(saved, {"batch_size": 0})
    with pytest.raises(ConfigError, match=r"^--precision bf16 applies to --runtime torch$"):
        with_flags(saved, {"runtime": "onnx", "precision": "bf16"})
