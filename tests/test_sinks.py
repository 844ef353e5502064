import json

import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.sinks import COLUMNS, CsvSink, JsonlSink, ParquetSink, open_sink


def _rows(lines):
    return [{"id": f"r{n}", "line": n, "label": "other", "confidence": 0.9, "needs_review": False, "flags": [],
             "top": [{"label": "other", "prob": 0.9}], "model": "m@1", "error": None} for n in lines]


@pytest.mark.parametrize(("name", "kind"), [("o.jsonl", JsonlSink), ("o.ndjson", JsonlSink), ("o.CSV", CsvSink),
                                            ("o.parquet", ParquetSink), ("o.pq", ParquetSink)])
def test_sink_by_extension(tmp_path, name, kind):
    assert isinstance(open_sink(tmp_path / name), kind)


@pytest.mark.parametrize("name", ["o.txt", "o.tsv", "o.jsonl.gz", "o"])
def test_unsupported_output_is_one_line(tmp_path, name):
    with pytest.raises(DataError, match=r"output must end in \.jsonl, \.csv or \.parquet"):
        open_sink(tmp_path / name)


def test_jsonl_recover_drops_a_cut_row(tmp_path):
    sink = JsonlSink(tmp_path / "o.jsonl")
    assert sink.recover() == 0  # nothing there yet
    sink.write(_rows([1, 2, 4]))
    whole = sink.path.read_bytes()
    sink.path.write_bytes(whole + b'{"id": "r5", "line": 5, "lab')  # killed mid-row
    assert sink.recover() == 4
    assert sink.path.read_bytes() == whole


def test_jsonl_recover_of_a_file_without_a_complete_row(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_bytes(b'{"id": "r1", "li')
    assert JsonlSink(path).recover() == 0 and path.read_bytes() == b""


def test_csv_writes_one_header_and_recovers(tmp_path):
    sink = CsvSink(tmp_path / "o.csv")
    sink.write(_rows([1, 2]))
    sink.write(_rows([3]))
    frame = pd.read_csv(sink.path)
    assert list(frame.columns) == list(COLUMNS) and frame["line"].tolist() == [1, 2, 3]
    assert json.loads(frame["top"][0]) == [{"label": "other", "prob": 0.9}]
    sink.path.write_bytes(sink.path.read_bytes() + b"r4,4,oth")
    assert sink.recover() == 3 and len(pd.read_csv(sink.path)) == 3


def test_parquet_parts_merge_on_close_and_survive_a_kill(tmp_path):
    sink = ParquetSink(tmp_path / "o.parquet")
    sink.write(_rows([1, 2]))
    sink.write(_rows([3]))
    (sink.parts / "part-000002.tmp").write_bytes(b"half a part")  # killed while writing a part
    again = ParquetSink(tmp_path / "o.parquet")
    assert again.recover() == 3 and not list(again.parts.glob("*.tmp"))
    again.write(_rows([5]))
    again.close()
    assert not again.parts.exists()
    frame = pd.read_parquet(again.path)
    assert frame["line"].tolist() == [1, 2, 3, 5] and list(frame.columns) == list(COLUMNS)


def test_parquet_resume_of_a_finished_output_appends_after_it(tmp_path):
    sink = ParquetSink(tmp_path / "o.parquet")
    sink.write(_rows([1, 2]))
    sink.close()
    resumed = ParquetSink(tmp_path / "o.parquet")
    assert resumed.recover() == 2  # the finished file moves back to part 0
    resumed.write(_rows([3]))
    resumed.close()
    assert pd.read_parquet(resumed.path)["line"].tolist() == [1, 2, 3]
