"""The label set: ids in fixed order, Arabic names, definitions, and source-label mapping."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import LabelsConfig
from pipeline.errors import ConfigError, DataError, ModelError
from pipeline.yamlio import read_yaml

LABELS_FILE = "labels.json"
LABELS_FIELD = "labels"  # a corpus row's every applicable label, the primary first


@dataclass(frozen=True)
class LabelMap:
    """Label ids in model order, with Arabic names, definitions and a source-label mapping."""

    ids: tuple[str, ...]
    ar: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    mapping: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ids:
            raise ConfigError("label set is empty")
        dupes = sorted({i for i in self.ids if self.ids.count(i) > 1})
        if dupes:
            raise ConfigError(f"label set repeats {', '.join(dupes)}")
        bad = {src: dst for src, dst in self.mapping.items() if dst not in self.ids}
        if bad:
            src, dst = next(iter(bad.items()))
            raise ConfigError(f"labels.map: '{src}' maps to '{dst}', which is not in the label set")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def id2label(self) -> dict[int, str]:
        """Index to label id, as transformers' config wants it."""
        return dict(enumerate(self.ids))

    @property
    def label2id(self) -> dict[str, int]:
        """Label id to index."""
        return {name: i for i, name in enumerate(self.ids)}

    def encode(self, rows: Iterable[dict[str, Any]], key: str = "label") -> np.ndarray:
        """Label indices of rows (their `key` field), in row order."""
        index = self.label2id
        return np.asarray([index[r[key]] for r in rows], dtype=np.int64)

    def resolve(self, source_label: str) -> str | None:
        """Map a corpus label through `labels.map`; None when it is not in the set."""
        label = self.mapping.get(source_label, source_label)
        return label if label in self.ids else None

    def to_dict(self) -> dict:
        """Plain dict for labels.json."""
        data = asdict(self)
        data["ids"] = list(self.ids)
        return data

    def save(self, directory: str | Path) -> Path:
        """Write labels.json into a model directory."""
        path = Path(directory) / LABELS_FILE
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LabelMap:
        """Read labels.json from a model directory."""
        path = Path(directory) / LABELS_FILE
        if not path.is_file():
            raise ModelError(f"{directory}: no {LABELS_FILE}; not a model directory written by this pipeline")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(ids=tuple(data["ids"]), ar=data.get("ar", {}),
                       descriptions=data.get("descriptions", {}), mapping=data.get("mapping", {}))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: unreadable label map ({exc})") from None


def check_labels(value: Any, label: str, where: str, labels: LabelMap) -> list[str]:
    """A row's `labels` list (in CSV a JSON array), mapped through `labels.map`, primary first, without repeats;
    DataError otherwise."""
    field_name = f"{where}: field '{LABELS_FIELD}'"
    if isinstance(value, str) and value.lstrip().startswith("["):  # CSV: a JSON array, as the CSV sink writes it
        value = _json_or(value)
    if not isinstance(value, list):
        raise DataError(f"{field_name}: expected a list of labels, got {type(value).__name__}", "bad_labels")
    if not value:
        raise DataError(f"{field_name}: empty list; it holds every applicable label, the primary one first",
                        "bad_labels")
    mapped = []
    for item in value:
        resolved = labels.resolve(str(item).strip())
        if resolved is None:
            raise DataError(f"{field_name}: label '{item}' is not in the label set ({', '.join(labels.ids)}); "
                            "map it with labels.map", "bad_labels")
        mapped.append(resolved)
    return [label] + [x for x in dict.fromkeys(mapped) if x != label]


def _json_or(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_labels(cfg: LabelsConfig) -> LabelMap:
    """Build the LabelMap from the labels YAML file and the configured mapping."""
    raw = read_yaml(cfg.file).get("labels")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{cfg.file}: expected a non-empty 'labels' list")
    ids, ar, desc = [], {}, {}
    for i, entry in enumerate(raw, 1):
        entry = {"id": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not entry.get("id"):
            raise ConfigError(f"{cfg.file}: label {i} has no 'id'")
        ids.append(str(entry["id"]))
        ar[entry["id"]] = entry.get("ar", "")
        desc[entry["id"]] = entry.get("description", "")
    return LabelMap(ids=tuple(ids), ar=ar, descriptions=desc, mapping=dict(cfg.map))
