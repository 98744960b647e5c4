"""The files backend's formats, missing files, and parse errors that quote no content."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from latchkey import StoreCorrupt
from latchkey.backends.files import FilesBackend


def test_toml_nested_tables_scalars_and_lists(tmp_path: Path) -> None:
    """Tables nest into keys; numbers and booleans are text; lists are JSON."""
    f = tmp_path / "secrets.toml"
    f.write_text('[sources.facebook]\naccess_token = "fake-t"\nretries = 3\nverify = true\n'
                 'scopes = ["a", "b"]\n"bad name" = "skipped"\n')
    b = FilesBackend("f", f)
    assert b.list("") == ["sources/facebook/access_token", "sources/facebook/retries",
                          "sources/facebook/scopes", "sources/facebook/verify"]
    got = {k: s.value for k, s in b.get_many(b.list("")).items()}
    assert got["sources/facebook/retries"] == "3"
    assert got["sources/facebook/verify"] == "true"
    assert got["sources/facebook/scopes"] == '["a", "b"]'


def test_reload_after_the_file_changes(tmp_path: Path) -> None:
    """A rewritten file is read again (the parse is cached by mtime and size)."""
    f = tmp_path / "s.json"
    f.write_text('{"k": "fake-1"}')
    b = FilesBackend("f", f)
    assert b.get("k").value == "fake-1"
    f.write_text('{"k": "fake-22"}')
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert b.get("k").value == "fake-22"


@pytest.mark.parametrize("name, text, where", [
    pytest.param("s.toml", 'a = "fake-leak\nb = 1\n', "line 1", id="toml"),
    pytest.param("s.json", '{"a": "fake-leak" "b": 1}', "line 1", id="json"),
    pytest.param("s.yaml", "a: fake-leak\n  b: [1\n", "line 2", id="yaml"),
])
def test_parse_errors_give_position_not_content(tmp_path: Path, name, text, where) -> None:
    """A broken file raises StoreCorrupt with line and column and none of its text."""
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(StoreCorrupt) as info:
        FilesBackend("f", f).get("a")
    assert where in str(info.value)
    assert "fake-leak" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_file_is_an_error_unless_optional(tmp_path: Path) -> None:
    """A missing path is an error (a typo must not look empty), unless optional = true."""
    with pytest.raises(StoreCorrupt, match="does not exist"):
        FilesBackend("f", tmp_path / "nope.toml").get("a")
    assert FilesBackend("f", tmp_path / "nope.toml", optional=True).get_many(["a"]) == {}


def test_kubernetes_secret_volume_layout(tmp_path: Path) -> None:
    """A Kubernetes volume (..data symlinks) lists only the secret names, values stripped."""
    data = tmp_path / "..2026_11_21_00_00_00.000"
    data.mkdir()
    (data / "db_password").write_text("fake-pw\n")
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "db_password").symlink_to("..data/db_password")
    b = FilesBackend("k8s", tmp_path)
    assert b.list("") == ["db_password"]
    assert b.get("db_password").value == "fake-pw"
    assert FilesBackend("k8s", tmp_path, strip_newline=False).get("db_password").value == "fake-pw\n"


def test_dotenv_with_prefix(tmp_path: Path) -> None:
    """dotenv names map like env variables; a prefix filters and is stripped."""
    f = tmp_path / "app.env"
    f.write_text("APP_DB__PASSWORD='fake-pw'\nOTHER=x\n# comment\n")
    b = FilesBackend("d", f, format="dotenv", env_prefix="APP_")
    assert b.list("") == ["db/password"]
    assert b.get("db/password").value == "fake-pw"


def test_non_utf8_file(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported, not decoded into garbage."""
    f = tmp_path / "s.json"
    f.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(StoreCorrupt, match="not UTF-8"):
        FilesBackend("f", f).get("a")
