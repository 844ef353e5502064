import subprocess
import sys

import yaml

from pipeline.cli import main


def test_config_prints_resolved_yaml(capsys, overrides):
    assert main(["config", *overrides, "train.epochs=9"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["epochs"] == 9.0
    assert resolved["data"]["name"] == "fixture"


def test_bad_config_is_one_line_and_exit_2(capsys):
    assert main(["config", "train.epochz=9"]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown config key 'train.epochz'\n"


def test_prepare_prints_counts(capsys, overrides):
    assert main(["prepare", *overrides]) == 0
    out = capsys.readouterr().out
    assert "read 140 rows, kept 140" in out
    assert "test" in out and "recruitment=" in out


def test_prepare_bad_data_is_one_line(tmp_path, capsys, overrides):
    (tmp_path / "corpus.jsonl").write_text('{"text": "نص", "label": "other"}\n{oops\n', encoding="utf-8")
    assert main(["prepare", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and "corpus.jsonl:2: invalid json" in err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "prepare" in proc.stdout
