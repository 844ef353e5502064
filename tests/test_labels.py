import json
from pathlib import Path

import pytest

from pipeline.config import LabelsConfig
from pipeline.errors import ConfigError, ModelError
from pipeline.labels import LabelMap, load_labels

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY = ["recruitment", "attack_report", "intelligence_assessment", "security_operation",
            "military_operation", "politics_diplomacy", "other"]


def test_taxonomy_labels_in_fixed_order():
    labels = load_labels(LabelsConfig(file=str(ROOT / "configs/labels.yaml")))
    assert list(labels.ids) == TAXONOMY
    assert labels.ar["recruitment"] == "التجنيد والاستقطاب"
    assert all(labels.descriptions[i] for i in labels.ids)
    assert labels.id2label[0] == "recruitment" and labels.label2id["other"] == 6


def test_save_and_load_round_trip(tmp_path):
    labels = load_labels(LabelsConfig(file=str(ROOT / "configs/labels.yaml")))
    path = labels.save(tmp_path)
    assert json.loads(path.read_text(encoding="utf-8"))["ids"] == TAXONOMY
    assert LabelMap.load(tmp_path) == labels


def test_user_label_set_with_merge_and_rename(tmp_path):
    f = tmp_path / "labels.yaml"
    f.write_text("labels: [news, sport, economy]\n")
    labels = load_labels(LabelsConfig(file=str(f), map={"middleEast": "news", "internationalNews": "news",
                                                         "Sports": "sport"}))
    assert labels.resolve("middleEast") == "news"
    assert labels.resolve("internationalNews") == "news"
    assert labels.resolve("Sports") == "sport"
    assert labels.resolve("economy") == "economy"
    assert labels.resolve("culture") is None


def test_mapping_to_unknown_label_is_an_error(tmp_path):
    f = tmp_path / "labels.yaml"
    f.write_text("labels: [news]\n")
    with pytest.raises(ConfigError, match="'middleEast' maps to 'nws', which is not in the label set"):
        load_labels(LabelsConfig(file=str(f), map={"middleEast": "nws"}))


def test_duplicate_and_empty_label_sets(tmp_path):
    f = tmp_path / "labels.yaml"
    f.write_text("labels: [a, b, a]\n")
    with pytest.raises(ConfigError, match="repeats a"):
        load_labels(LabelsConfig(file=str(f)))
    f.write_text("labels: []\n")
    with pytest.raises(ConfigError, match="expected a non-empty 'labels' list"):
        load_labels(LabelsConfig(file=str(f)))


def test_model_dir_without_labels_json(tmp_path):
    with pytest.raises(ModelError, match=r"no labels\.json"):
        LabelMap.load(tmp_path)


def test_encode_rows():
    labels = LabelMap(ids=("a", "b", "c"))
    assert labels.encode([{"label": "c"}, {"label": "a"}]).tolist() == [2, 0]
    assert labels.encode([{"gold": "b"}], key="gold").tolist() == [1]
    assert labels.encode([]).shape == (0,)
