"""The files backend's formats, missing files, and parse errors that quote no content."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipekey import StoreCorrupt
from pipekey.backends.files import FilesBackend


def test_toml_nested_tables_scalars_and_lists(tmp_path: Path) -> None:
    """Tables nest into keys; numbers and booleans are text; lists are JSON."""
    f = tmp_path / "secrets.toml"
    f.write_text('[sources.facebook]\naccess_token = "fake-t"\nretries = 3\nverify = true\n'
                 'scopes = ["a", "b"]\n"bad name" = "skipped"\n')
    b = FilesBackend("f", f)
    assert b.list_keys("") == ["sources/facebook/access_token", "sources/facebook/retries",
                          "sources/facebook/scopes", "sources/facebook/verify"]
    got = {k: s.value for k, s in b.get_many(b.list_keys("")).items()}
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


@pytest.mark.parametrize("name, text, why", [
    pytest.param("s.toml", 'a = "fake-leak\nb = 1\n', "toml: Illegal character (line 1, column 15)",
                 id="toml"),
    pytest.param("s.toml", 'a = "fake-leak" b\n',
                 "toml: Expected newline or end of document after a statement (line 1, column 17)",
                 id="toml-trailing"),
    pytest.param("s.toml", 'a = "fake-leak\x01"\n', "toml: Illegal character (line 1, column 15)",
                 id="toml-character"),
    pytest.param("s.json", '{"a": "fake-leak" "b": 1}', "json: Expecting ',' delimiter (line 1",
                 id="json"),
    pytest.param("s.yaml", "a: fake-leak\n  b: [1\n",
                 "yaml: mapping values are not allowed here (line 2", id="yaml"),
    pytest.param("s.yaml", "a: fake-leak\n\tb: 1\n",
                 "yaml: found character that cannot start any token (line 2", id="yaml-tab"),
])
def test_parse_errors_give_the_reason_and_position_not_content(tmp_path: Path, name, text,
                                                                why) -> None:
    """A broken file raises StoreCorrupt with the parser's reason, line and column, and none
    of its text (not even a character the parser quotes)."""
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(StoreCorrupt) as info:
        FilesBackend("f", f).get("a")
    assert f"{f} is not valid {why}" in str(info.value)
    assert "fake-leak" not in str(info.value) and "\\" not in str(info.value)
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
    assert b.list_keys("") == ["db_password"]
    assert b.get("db_password").value == "fake-pw"
    kept = FilesBackend("k8s", tmp_path, strip_newline=False)
    assert kept.get("db_password").value == "fake-pw\n"


def test_dotenv_with_prefix(tmp_path: Path) -> None:
    """dotenv names map like env variables; a prefix filters and is stripped."""
    f = tmp_path / "app.env"
    f.write_text("APP_DB__PASSWORD='fake-pw'\nOTHER=x\n# comment\n")
    b = FilesBackend("d", f, format="dotenv", env_prefix="APP_")
    assert b.list_keys("") == ["db/password"]
    assert b.get("db/password").value == "fake-pw"


def test_non_utf8_file(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported, not decoded into garbage."""
    f = tmp_path / "s.json"
    f.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(StoreCorrupt, match="not UTF-8"):
        FilesBackend("f", f).get("a")


def test_one_key_one_entry_in_structured_files(tmp_path: Path) -> None:
    """A name holding '/' is not a segment, and names reading as the same text (YAML's 1 and
    "1") make that key ambiguous: absent, never the other entry's value."""
    f = tmp_path / "s.json"
    f.write_text('{"acct_43/access_token": "fake-token-slash", "acct_42": {"t": "fake-42"}}')
    b = FilesBackend("f", f)
    assert b.list_keys("") == ["acct_42/t"] and b.get("acct_43/access_token") is None
    y = tmp_path / "s.yaml"
    y.write_text('accounts:\n  43: {token: fake-token-int}\n  "43": {token: fake-token-str}\n'
                 '  "44": {token: fake-token-44}\n')
    b = FilesBackend("y", y)
    assert b.list_keys("") == ["accounts/44/token"] and b.get("accounts/43/token") is None


def test_kubernetes_internal_entries_are_not_second_names(tmp_path: Path) -> None:
    """..data/NAME is the file NAME links to: only NAME reads it."""
    data = tmp_path / "..2026_11_21_00_00_00.000"
    data.mkdir()
    (data / "db_password").write_text("fake-pw\n")
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "db_password").symlink_to("..data/db_password")
    b = FilesBackend("k8s", tmp_path)
    assert b.get("db_password").value == "fake-pw"
    assert b.get_many(["..data/db_password", f"{data.name}/db_password"]) == {}
    assert "hidden" in (b.unmappable("..data/db_password") or "")


def test_folder_keys_match_entries_exactly(tmp_path: Path, monkeypatch) -> None:
    """On a case-insensitive file system ACCT_43/token would open acct_43/token: a key reads
    only the entry spelled exactly like it."""
    (tmp_path / "acct_43").mkdir()
    (tmp_path / "acct_43" / "token").write_text("fake-token-acct43\n")

    def folded(path: Path) -> Path:  # what macOS and Windows do when opening a path
        if not str(path).startswith(str(tmp_path)):
            return path
        return Path(str(tmp_path) + str(path)[len(str(tmp_path)):].lower())

    is_file, read_bytes = Path.is_file, Path.read_bytes
    monkeypatch.setattr(Path, "is_file", lambda self: is_file(folded(self)))
    monkeypatch.setattr(Path, "read_bytes", lambda self: read_bytes(folded(self)))
    b = FilesBackend("dir", tmp_path)
    assert b.get("acct_43/token").value == "fake-token-acct43"
    assert b.get_many(["ACCT_43/token", "acct_43/TOKEN"]) == {}


def test_dotenv_names_map_exactly_as_env_variables(tmp_path: Path) -> None:
    """dotenv keeps env's one-to-one mapping: lower-case and folded names are no keys."""
    f = tmp_path / ".env"
    f.write_text("ACCT_43__TOKEN=fake-43\nacct_43__token=fake-lower\nACCT_42___TOKEN=fake-x\n")
    b = FilesBackend("d", f)
    assert b.list_keys("") == ["acct_43/token"]
    assert b.get_many(["acct_43__token", "ACCT_43/token", "acct_42_/token"]) == {}
    assert b.store_name("acct_43/token") == "ACCT_43__TOKEN"


def test_a_key_the_file_system_cannot_name_is_absent_in_a_folder(tmp_path: Path) -> None:
    """A valid key whose segment is longer than a file name may be (255 bytes) is unmappable
    in a folder of files: absent for reads, with the reason, never 'read failed (OSError)'."""
    (tmp_path / "token").write_text("fake-token\n")
    backend = FilesBackend("k8s", tmp_path)
    key = "x" * 256 + "/token"
    assert backend.get_many([key, "token"]).keys() == {"token"}
    assert "255 bytes" in (backend.unmappable(key) or "")
    assert backend.unmappable("x" * 255) is None
