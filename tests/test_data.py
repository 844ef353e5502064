import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_corpus, write_jsonl

from pipeline.config import DataConfig, DedupConfig, LabelsConfig, SplitConfig, load_config
from pipeline.data import deduplicate, load_labelled, prepare, shingles, split_rows
from pipeline.errors import DataError
from pipeline.labels import load_labels

ROOT = Path(__file__).resolve().parents[1]
LABELS = load_labels(LabelsConfig(file=str(ROOT / "configs/labels.yaml")))


def _load(tmp_path, lines: list[str], **kw):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_labelled(path, DataConfig(**kw), LABELS)


GOOD = json.dumps({"id": "1", "title": "عنوان", "text": "نص", "label": "other"}, ensure_ascii=False)


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", r"in\.jsonl:2: invalid json"),
    ('{"id": "2", "label": "other"}', r"in\.jsonl:2: missing text field 'title', 'text'"),
    ('{"id": "2", "title": "", "text": " ", "label": "other"}', r"in\.jsonl:2: field 'text' is empty"),
    ('{"id": "2", "text": "نص"}', r"in\.jsonl:2: missing label field 'label'"),
    ('{"id": "2", "text": "نص", "label": "sports"}',
     r"in\.jsonl:2: field 'label': label 'sports' is not in the label set \(recruitment, .*\); map it"),
])
def test_validation_errors_name_file_line_and_field(tmp_path, line, message):
    with pytest.raises(DataError, match=message):
        _load(tmp_path, [GOOD, line])


def test_skip_mode_counts_bad_rows(tmp_path):
    loaded = _load(tmp_path, [GOOD, "{bad", '{"text": "نص", "label": "sports"}', '{"text": "", "label": "other"}'],
                   on_bad_rows="skip")
    assert len(loaded.rows) == 1 and loaded.read == 4
    assert loaded.skipped == Counter({"invalid_json": 1, "not_in_the_label_set": 1, "is_empty": 1})


def test_csv_missing_column(tmp_path):
    pd.DataFrame([{"body": "نص", "label": "other"}]).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(DataError, match=r"x\.csv:2: missing text field 'title', 'text' \(has body, label\)"):
        load_labelled(tmp_path / "x.csv", DataConfig(), LABELS)


def test_fields_ids_and_label_mapping(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"url": "u1", "headline": "عنوان", "body": "نص", "section": "Sport"},
                                              {"headline": "آخر", "body": "نص", "section": "Sport"}])
    labels = load_labels(LabelsConfig(file=str(ROOT / "configs/labels.yaml"), map={"Sport": "other"}))
    cfg = DataConfig(text_fields=["headline", "body"], label_field="section", id_field="url")
    rows = load_labelled(path, cfg, labels).rows
    assert rows[0] == {"id": "u1", "text": "عنوان\nنص", "label": "other"}
    assert rows[1]["id"].startswith("sha1-")
    assert load_labelled(path, cfg, labels).rows[1]["id"] == rows[1]["id"]  # stable


def test_every_reader_feeds_validation(tmp_path, corpus):
    df = pd.DataFrame(corpus)
    df.to_csv(tmp_path / "c.csv", index=False)
    df.to_parquet(tmp_path / "c.parquet")
    for row in corpus[:5]:
        (tmp_path / "tree" / row["label"]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / row["label"] / f"{row['id']}.txt").write_text(row["text"], encoding="utf-8")
    for name in ("c.csv", "c.parquet"):
        assert len(load_labelled(tmp_path / name, DataConfig(), LABELS).rows) == len(corpus)
    tree = load_labelled(tmp_path / "tree", DataConfig(text_fields=["text"]), LABELS).rows
    assert sorted(r["label"] for r in tree) == sorted(r["label"] for r in corpus[:5])


def _rows(texts_labels):
    return [{"id": str(i), "text": t, "label": lb} for i, (t, lb) in enumerate(texts_labels)]


def test_exact_and_near_duplicates_removed():
    base = " ".join(f"كلمة{i}" for i in range(60))
    near = base.replace("كلمة30", "تعديل")  # one word changed: Jaccard of 3-shingles ~0.9
    other = " ".join(f"لفظ{i}" for i in range(60))
    kept, stats = deduplicate(_rows([(base, "other"), (base, "other"), (near, "other"), (other, "other")]),
                              DedupConfig())
    assert [r["id"] for r in kept] == ["0", "3"]
    assert stats["duplicates_removed"] == 2 and stats["conflict_clusters"] == 0


def test_conflicting_duplicates_dropped_and_reported():
    base = " ".join(f"كلمة{i}" for i in range(60))
    kept, stats = deduplicate(_rows([(base, "other"), (base, "attack_report"), ("نص مختلف تماما", "other")]),
                              DedupConfig())
    assert [r["id"] for r in kept] == ["2"]
    assert stats["conflict_clusters"] == 1 and stats["conflict_examples"] == [["0", "1"]]


def test_near_duplicate_off():
    base = " ".join(f"كلمة{i}" for i in range(60))
    near = base.replace("كلمة30", "تعديل")
    kept, _ = deduplicate(_rows([(base, "other"), (near, "other")]), DedupConfig(near=False))
    assert len(kept) == 2


def _jaccard(a: str, b: str, k: int = 3) -> float:
    sa, sb = set(shingles(a, k)), set(shingles(b, k))
    return len(sa & sb) / len(sa | sb)


def test_prepare_leaves_no_near_duplicate_across_splits(tmp_path, overrides, corpus):
    # plant wire copies: each of 20 articles reappears with its last word changed
    rows = list(corpus)
    for i, row in enumerate(corpus[:20]):
        words = row["text"].split()
        rows.append({**row, "id": f"copy-{i}", "text": " ".join(words[:-1]) + " تحديث"})
    write_jsonl(tmp_path / "corpus.jsonl", rows)
    out = prepare(load_config(overrides=overrides))
    splits = {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()]
              for s in ("train", "validation", "test")}
    report = json.loads((out / "data_report.json").read_text())
    assert report["duplicates_removed"] == 20
    assert report["rows_kept"] == len(corpus) == sum(len(v) for v in splits.values())
    train = [r["text"] for r in splits["train"]]
    for held in splits["validation"] + splits["test"]:
        assert max(_jaccard(held["text"], t) for t in train) < 0.8


def test_stratified_and_seeded(corpus):
    rows = [{**r, "text": r["text"]} for r in corpus]
    a = split_rows(rows, SplitConfig(validation=0.25, test=0.25, seed=1))
    b = split_rows(rows, SplitConfig(validation=0.25, test=0.25, seed=1))
    c = split_rows(rows, SplitConfig(validation=0.25, test=0.25, seed=2))
    assert {k: [r["id"] for r in v] for k, v in a.items()} == {k: [r["id"] for r in v] for k, v in b.items()}
    assert [r["id"] for r in a["test"]] != [r["id"] for r in c["test"]]
    for part in ("validation", "test"):
        counts = Counter(r["label"] for r in a[part])
        assert set(counts.values()) == {5}  # 20 per label x 0.25
    assert sum(len(v) for v in a.values()) == len(rows)


def test_grouped_split_keeps_groups_together():
    rows = make_corpus(per_label=16)
    for i, r in enumerate(rows):
        r["story"] = f"s{i // 2}"
    parts = split_rows(rows, SplitConfig(validation=0.2, test=0.2, seed=0, group_by="story"))
    seen = {s: {r["story"] for r in p} for s, p in parts.items()}
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["validation"]
    assert not seen["validation"] & seen["test"]
    assert all(len(p) for p in parts.values())


def test_too_few_examples_for_a_class(tmp_path, overrides, corpus):
    rows = [r for r in corpus if r["label"] != "recruitment"] + [r for r in corpus if r["label"] == "recruitment"][:2]
    write_jsonl(tmp_path / "corpus.jsonl", rows)
    with pytest.raises(DataError, match="label 'recruitment' has 2 example\\(s\\) after deduplication; at least 3"):
        prepare(load_config(overrides=overrides))


def test_user_split_files_drop_leaked_copies(tmp_path, overrides, corpus):
    train, test = corpus[:100], corpus[100:]
    leaked = {**train[0], "id": "leak"}
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "test.jsonl", [*test, leaked])
    write_jsonl(tmp_path / "val.jsonl", corpus[50:55])  # exact copies of train rows
    cfg = load_config(overrides=[*overrides, f"data.split.files={{train: {tmp_path / 'train.jsonl'}, "
                                 f"validation: {tmp_path / 'val.jsonl'}, test: {tmp_path / 'test.jsonl'}}}"])
    out = prepare(cfg)
    lines = {s: (out / f"{s}.jsonl").read_text().splitlines() for s in ("train", "validation", "test")}
    assert len(lines["train"]) == 100 and len(lines["validation"]) == 0 and len(lines["test"]) == len(test)


def test_prepare_report(tmp_path, overrides, corpus):
    out = prepare(load_config(overrides=overrides))
    report = json.loads((out / "data_report.json").read_text())
    assert report["rows_read"] == report["rows_kept"] == len(corpus)
    assert sum(report["label_counts"]["test"].values()) == len((out / "test.jsonl").read_text().splitlines())
    assert report["lengths"]["train"]["words"]["min"] > 0
    assert set(report["lengths"]["train"]) == {"chars", "words"}


@pytest.mark.parametrize(("line", "code"), [
    ("{not json", "invalid_json"), ('{"id": "2", "label": "other"}', "missing_text"),
    ('{"id": "2", "text": " ", "label": "other"}', "is_empty"), ('{"id": "2", "text": "نص"}', "missing_label"),
    ('{"id": "2", "text": "نص", "label": "sports"}', "not_in_the_label_set")])
def test_every_row_error_carries_its_code(tmp_path, line, code):
    with pytest.raises(DataError) as err:
        _load(tmp_path, [GOOD, line])
    assert err.value.code == code  # the report counts by this code, whatever the message says
