"""The env backend's naming rules."""

from __future__ import annotations

import pytest

from latchkey.backends.env import EnvBackend, key_to_name, name_to_key


def test_documented_mapping() -> None:
    """marketing/facebook/access_token <-> LATCHKEY__MARKETING__FACEBOOK__ACCESS_TOKEN."""
    name = "LATCHKEY__MARKETING__FACEBOOK__ACCESS_TOKEN"
    assert key_to_name("marketing/facebook/access_token", "LATCHKEY__") == name
    assert name_to_key(name, "LATCHKEY__") == "marketing/facebook/access_token"


@pytest.mark.parametrize("name", ["OTHER__X", "LATCHKEY__", "LATCHKEY__A____B", "LATCHKEY__A__"])
def test_foreign_or_malformed_names_are_ignored(name: str) -> None:
    """Variables outside the prefix or with empty segments are not keys."""
    assert name_to_key(name, "LATCHKEY__") is None


def test_read_at_call_time_with_custom_prefix_and_separator() -> None:
    """The backend reads the environment on every call, with its own prefix and separator."""
    environ: dict[str, str] = {}
    b = EnvBackend("e", prefix="APP_", separator="_X_", environ=environ)
    assert b.get("db/password") is None
    environ["APP_DB_X_PASSWORD"] = "fake-pw"
    assert b.get("db/password").value == "fake-pw"
    assert b.locate("db/password") == "$APP_DB_X_PASSWORD"
    assert b.list("db") == ["db/password"]


def test_dashes_and_dots_map_to_underscores() -> None:
    """Characters a shell cannot name become '_'."""
    assert key_to_name("my-app/api.key", "P_") == "P_MY_APP__API_KEY"
