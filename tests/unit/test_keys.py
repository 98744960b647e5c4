"""Key rules: what is a key, and errors that quote it."""

from __future__ import annotations

import pytest

from pipekey import InvalidKey, validate_key
from pipekey.keys import is_under, join, validate_prefix


@pytest.mark.parametrize("key", ["a", "shared/slack_token", "marketing/facebook/acct_42/token",
                                 "a.b-c_d/E9", "...x/y", "a" * 512])
def test_valid_keys(key: str) -> None:
    """Keys made of allowed segments are returned unchanged."""
    assert validate_key(key) == key


@pytest.mark.parametrize("key, reason", [
    pytest.param("", "empty key", id="empty"),
    pytest.param("a//b", "empty segment at position 2", id="double-slash"),
    pytest.param("/a", "keys do not start with '/'", id="leading-slash"),
    pytest.param("a/", "empty segment at position 2", id="trailing-slash"),
    pytest.param("a/./b", "segment 2 is '.'", id="dot"),
    pytest.param("a/../b", "segment 2 is '..'", id="dotdot"),
    pytest.param("a\x00b", "control character", id="nul"),
    pytest.param("a\nb", "control character", id="newline"),
    pytest.param("a b", "segment 1 has ' '", id="space"),
    pytest.param("ü/x", "segment 1 has 'ü'", id="non-ascii"),
    pytest.param("a" * 513, "513 characters, the limit is 512", id="too-long"),
    pytest.param(42, "a key is a string, not int", id="not-str"),
])
def test_invalid_keys_quote_key_and_rule(key: object, reason: str) -> None:
    """InvalidKey quotes the key (control characters escaped) and says which rule broke."""
    with pytest.raises(InvalidKey) as info:
        validate_key(key)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message and "\x00" not in message
    assert message.startswith("invalid key " + repr(key)[:40])
    assert isinstance(info.value, ValueError) and info.value.exit_code == 2


def test_prefix_and_under() -> None:
    """Prefixes allow a trailing slash and the empty prefix; is_under respects segments."""
    assert validate_prefix("a/b/") == "a/b" and validate_prefix("") == ""
    assert is_under("a/b/c", "a/b") and is_under("a/b", "a/b") and is_under("x", "")
    assert not is_under("a/bc", "a/b")
    assert join("a/", "/b", "", "c") == "a/b/c"


SEGMENT_CANDIDATES = ["a", "acct_42", "a.b-c_D9", "...x", "-", ".", "..", "", "a/b", "a b",
                      "é", "a:b", "a*", "a\nb", "{x}"]


@pytest.mark.parametrize("text", SEGMENT_CANDIDATES)
def test_one_segment_rule(text: str, tmp_path) -> None:
    """A key segment, a scope parameter, a secret name in `requires` and an environment name
    follow one rule (pipekey.keys.is_segment): each accepts exactly what the others accept."""
    from pipekey.errors import PipekeyError
    from pipekey.keys import is_segment
    from pipekey.manifest import parse_manifest
    from pipekey.policy import fill_template

    def accepts(check) -> bool:
        try:
            check()
        except PipekeyError:
            return False
        return True

    path = tmp_path / "pipekey.toml"
    verdicts = {
        "key segment": "/" not in text and accepts(lambda: validate_key(f"x/{text}/y")),
        "scope parameter": accepts(lambda: fill_template("x/{p}", {"p": text}, "scope")),
        "secret name": accepts(lambda: parse_manifest(
            {"pipelines": {"p": {"scope": "x", "requires": [text]}}}, path)),
        "environment": accepts(lambda: parse_manifest({"env": text}, path)),
    }
    assert verdicts == dict.fromkeys(verdicts, is_segment(text))
