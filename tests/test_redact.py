import pytest

from pipeline.config import load_config, to_yaml
from pipeline.redact import public_dump, redact_mapping, redact_text, redact_tree, redact_value


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home directory under tmp_path (Path.home() reads $HOME)."""
    path = tmp_path / "alice"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ("http://alice:s3cret@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
    ("https://ghp_abc123@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
    ("https://store/x.jsonl?X-Amz-Signature=abc&part=1", "https://store/x.jsonl?X-Amz-Signature=***&part=1"),
    ("https://host/api?token=abc", "https://host/api?token=***"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("write to news@example.org", "write to news@example.org"),
    ("aubmindlab/bert-base-arabertv02", "aubmindlab/bert-base-arabertv02"),
])
def test_credentials_in_uris_are_masked(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize("key", ["hf_token", "tracking.password", "api_key", "aws_secret_access_key",
                                 "tracking.apikey", "db.credentials", "auth"])
def test_keys_that_name_a_credential_hide_the_whole_value(key):
    assert redact_value(key, "plain-looking-value") == "***"
    assert redact_value(key, "None") == "None"  # nothing there, nothing to hide


@pytest.mark.parametrize("key", ["model.tokenizer", "train.max_tokens", "labels.file", "model.name_or_path",
                                 "author"])
def test_ordinary_keys_keep_their_value(key):
    assert redact_value(key, "value") == "value"


def test_home_directory_becomes_tilde(home):
    assert redact_text(f"{home}/corpora/news.jsonl") == "~/corpora/news.jsonl"
    assert redact_text(str(home)) == "~"
    assert redact_text(f"sqlite:///{home}/mlflow.db") == "sqlite:///~/mlflow.db"
    assert redact_text(f"{home}2/other") == f"{home}2/other"  # another user's directory is not ours


def test_nested_dumps_and_flat_mappings(home):
    tree = {"tracking": {"uri": "http://u:pw@h", "token": "abc"}, "data": {"path": [f"{home}/a.jsonl"]}, "n": 3}
    assert redact_tree(tree) == {"tracking": {"uri": "http://u:***@h", "token": "***"},
                                 "data": {"path": ["~/a.jsonl"]}, "n": 3}
    assert redact_mapping({"tracking.uri": "http://u:pw@h", "train.epochs": 3}) == {
        "tracking.uri": "http://u:***@h", "train.epochs": "3"}


def test_saved_config_hides_secrets_and_still_loads(home, tmp_path):
    cfg = load_config(overrides=[f"data.path={home}/corpora/news.jsonl", "tracking.uri=http://alice:s3cret@h:5000",
                                 f"output_dir={home}/models"])
    saved = tmp_path / "pipeline.yaml"
    saved.write_text(to_yaml(public_dump(cfg)), encoding="utf-8")
    text = saved.read_text(encoding="utf-8")
    assert "s3cret" not in text and str(home) not in text
    assert "path: ~/corpora/news.jsonl" in text and "uri: http://alice:***@h:5000" in text
    loaded = load_config([saved])
    assert loaded.data.path == f"{home}/corpora/news.jsonl" and loaded.output_dir == f"{home}/models"  # `~` expanded
