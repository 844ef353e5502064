import gzip
import json

import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.readers import detect_format, iter_rows, read_jsonl, write_jsonl

ROWS = [{"id": "a", "text": "نص أول", "label": "other"}, {"id": "b", "text": "نص ثان", "label": "other"}]


def test_jsonl_and_gz(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    assert [r.data for r in iter_rows(path)] == ROWS
    gz = tmp_path / "x.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert [r.data for r in iter_rows(gz)] == ROWS
    assert [r.line for r in iter_rows(gz)] == [1, 2]


def test_csv_tsv_and_parquet(tmp_path):
    df = pd.DataFrame(ROWS)
    df.to_csv(tmp_path / "x.csv", index=False)
    df.to_csv(tmp_path / "x.tsv", index=False, sep="\t")
    df.to_parquet(tmp_path / "x.parquet")
    for name in ("x.csv", "x.tsv", "x.parquet"):
        assert [r.data for r in iter_rows(tmp_path / name)] == ROWS, name
    assert [r.line for r in iter_rows(tmp_path / "x.csv")] == [2, 3]  # header is line 1


def test_csv_with_multiline_and_huge_field(tmp_path):
    big = "كلمة " * 60_000  # beyond csv's default field limit
    pd.DataFrame([{"id": "a", "text": "سطر\nسطر", "label": "x"}, {"id": "b", "text": big, "label": "x"}]).to_csv(
        tmp_path / "x.csv", index=False)
    rows = list(iter_rows(tmp_path / "x.csv"))
    assert rows[0].data["text"] == "سطر\nسطر"
    assert len(rows[1].data["text"]) == len(big)


def test_folder_per_label(tmp_path):
    for label, name, text in [("sport", "a.txt", "مباراة"), ("economy", "b.txt", "أسعار")]:
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / name).write_text(text, encoding="utf-8")
    (tmp_path / "sport" / "c.json").write_text(json.dumps({"title": "عنوان", "text": "نص"}), encoding="utf-8")
    rows = list(iter_rows(tmp_path))
    assert [(r.data["id"], r.data["label"]) for r in rows] == [
        ("economy/b", "economy"), ("sport/a", "sport"), ("sport/c", "sport")]
    assert rows[2].data["title"] == "عنوان"


def test_bad_rows_are_yielded_not_raised(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"id": 1}\n{broken\n[1, 2]\n\n{"id": "\xff\xfe"}\n{"id": 5}\n')
    rows = list(iter_rows(path))
    assert [(r.line, r.error) for r in rows] == [
        (1, None), (2, "invalid_json"), (3, "invalid_json"), (5, "invalid_utf8"), (6, None)]
    assert rows[1].where.endswith("x.jsonl:2")


def test_csv_invalid_utf8_row(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,text\n1,good\n2,bad \xff byte\n3,fine\n")
    assert [(r.line, r.error) for r in iter_rows(path)] == [(2, None), (3, "invalid_utf8"), (4, None)]


def test_start_line_skips(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    assert [r.data["id"] for r in iter_rows(path, start_line=1)] == ["b"]


def test_unreadable_inputs(tmp_path):
    with pytest.raises(DataError, match=r"missing\.jsonl: file not found"):
        list(iter_rows(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(tmp_path / "x.docx")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        list(iter_rows(tmp_path / "bad.parquet"))
    (tmp_path / "bad.jsonl.gz").write_text("not gzip")
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz: cannot read"):
        list(iter_rows(tmp_path / "bad.jsonl.gz"))


def test_read_jsonl_is_strict(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\nnope\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: invalid_json"):
        read_jsonl(path)


def test_shards_are_dealt_by_position_and_survive_a_resume(tmp_path):
    rows = [{"id": str(i), "text": "x"} for i in range(10)]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    shards = [[r.data["id"] for r in iter_rows(path, shard=(i, 3))] for i in range(3)]
    assert shards == [["0", "3", "6", "9"], ["1", "4", "7"], ["2", "5", "8"]]
    # shard 1 resumed after its row on line 5: the rows it still owes, not a re-dealt shard
    assert [r.data["id"] for r in iter_rows(path, start_line=5, shard=(1, 3))] == ["7"]
