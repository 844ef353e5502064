"""What may leave the machine: credentials masked and the home directory written as `~` in every config value,
MLflow param and tag, saved `pipeline.yaml` and model card.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.config import Config

MASK = "***"
# a key that names a credential: `hf_token`, `tracking.password`, `api_key`, `aws_secret_access_key`, ...
SECRET_KEY = re.compile(r"(?:^|[._-])(?:[a-z]*token|password|passwd|pwd|secret|api_?key|access_?key|private_?key|"
                        r"credentials?|auth)(?:$|[._-])", re.IGNORECASE)
# `scheme://user:password@host` (the password masked) or `scheme://token@host` (the whole userinfo masked)
USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]*)(?P<password>:[^/@\s]*)?@",
                      re.IGNORECASE)
# `?token=...`, `&sig=...`, `&X-Amz-Signature=...` in URLs
QUERY_SECRET = re.compile(r"(?P<key>[?&][^=&\s]*(?:token|password|secret|key|sig|signature)[^=&\s]*=)[^&\s#]*",
                          re.IGNORECASE)


def _userinfo(match: re.Match[str]) -> str:
    if match["password"]:
        return f"{match['scheme']}{match['user']}:{MASK}@"
    return f"{match['scheme']}{MASK}@" if match["user"] else match[0]


def home_prefix() -> re.Pattern[str] | None:
    """The user's home directory as a pattern (a whole path component only), None when it is `/` or unknown."""
    try:
        home = str(Path.home()).rstrip("/")
    except RuntimeError:  # no home directory can be determined
        return None
    return re.compile(re.escape(home) + r"(?![\w.-])") if home else None


def redact_text(text: str) -> str:
    """A string with URL credentials and secret query parameters masked and the home directory written as `~`."""
    text = USERINFO.sub(_userinfo, text)
    text = QUERY_SECRET.sub(lambda m: m["key"] + MASK, text)
    home = home_prefix()
    return home.sub("~", text) if home else text


def redact_value(key: str, value: str) -> str:
    """A value masked entirely when its key names a credential, else `redact_text`."""
    if SECRET_KEY.search(key) and value not in ("", "None", "null"):
        return MASK
    return redact_text(value)


def redact_mapping(values: dict[str, Any]) -> dict[str, str]:
    """Flat params or tags, each value redacted by its key."""
    return {key: redact_value(key, str(value)) for key, value in values.items()}


def redact_tree(data: Any, key: str = "") -> Any:
    """A nested dump (dicts, lists, strings) with every string value redacted by its dotted key."""
    if isinstance(data, dict):
        return {k: redact_tree(v, f"{key}.{k}" if key else str(k)) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_tree(v, key) for v in data]
    return redact_value(key, data) if isinstance(data, str) else data


def public_dump(cfg: Config) -> dict[str, Any]:
    """The resolved config as it may be shared (saved with a model, in a model card): credentials masked, `~` for
    the home directory (expanded again when the file is loaded as a config)."""
    return redact_tree(cfg.model_dump(mode="json"))
