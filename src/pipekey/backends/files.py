"""``files``: read-only secrets from a TOML, JSON, YAML or dotenv file, or a directory.

* TOML / JSON / YAML: nested tables become key segments, so ``[sources.facebook]``
  ``access_token = "..."`` is the key ``sources/facebook/access_token``. Numbers and booleans
  are returned as text, lists as JSON. Entries whose names are not valid key segments are
  skipped, and so are keys two entries would share (YAML's ``1`` and ``"1"``).
* dotenv: variable names map to keys exactly as in the ``env`` backend
  (``SOURCES__FACEBOOK__TOKEN`` is ``sources/facebook/token``), with an optional name prefix.
* a directory (``/run/secrets``, a Kubernetes secret volume): one file per secret, sub-folders
  as segments; hidden entries (Kubernetes' ``..data``) are skipped and are no keys; a key
  reads only the entry spelled exactly like it (case-insensitive file systems included); one
  trailing newline is stripped unless ``strip_newline = false``.

A missing file is an error unless ``optional = true``: a typo in a path must not look like a
store with no secrets in it. Parse errors give the line and column, never the text.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from ..errors import StoreCorrupt
from ..keys import is_under, validate_key
from .base import Backend, BackendConfig, BuildContext, Secret
from .env import key_to_name, mapping_problem, name_to_key

__all__ = ["FilesBackend", "flatten"]

Format = Literal["auto", "toml", "json", "yaml", "dotenv", "dir"]
_SUFFIXES = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".env": "dotenv"}


class FilesConfig(BackendConfig, kw_only=True):
    path: str
    format: Format = "auto"
    optional: bool = False
    strip_newline: bool = True
    env_prefix: str = ""
    separator: str = "__"


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested mappings to ``{key: text}``; invalid segment names are skipped.

    One key, one entry: a name holding ``/`` is not a segment, and names that read as the same
    text (YAML's ``1`` and ``"1"``) make that key ambiguous, so it is left out.
    """
    out, ambiguous = _flatten(data, prefix)
    return {k: v for k, v in out.items() if not any(is_under(k, a) for a in ambiguous)}


def _flatten(data: Any, prefix: str) -> tuple[dict[str, str], set[str]]:
    out: dict[str, str] = {}
    ambiguous: set[str] = set()
    if not isinstance(data, dict):
        return out, ambiguous
    seen = Counter(str(name) for name in data)
    for raw, value in data.items():
        name = str(raw)
        key = f"{prefix}/{name}" if prefix else name
        if seen[name] > 1:
            ambiguous.add(key)
        try:
            if "/" in name:
                raise ValueError(name)
            validate_key(key)
        except ValueError:
            continue
        if isinstance(value, dict):
            below, unclear = _flatten(value, key)
            out.update(below)
            ambiguous |= unclear
        elif value is None:
            continue
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = json.dumps(value, default=str)
        else:
            out[key] = str(value)
    return out, ambiguous


class FilesBackend(Backend):
    """A file or a folder of files on local disk."""

    kind = "files"
    Config = FilesConfig

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        format: Format = "auto",
        optional: bool = False,
        strip_newline: bool = True,
        env_prefix: str = "",
        separator: str = "__",
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.format = format
        self.optional = optional
        self.strip_newline = strip_newline
        self.env_prefix = env_prefix
        self.separator = separator
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], dict[str, str]] | None = None

    @classmethod
    def from_config(cls, name: str, config: BackendConfig, ctx: BuildContext) -> "FilesBackend":
        assert isinstance(config, FilesConfig)
        return cls(name, ctx.path(config.path), config.format, config.optional,
                   config.strip_newline, config.env_prefix, config.separator)

    def locate(self, key: str) -> str:
        if self._kind() == "dir":
            return str(self.path / key)
        if self._kind() == "dotenv":
            return f"{self.path}#{self.store_name(key) or '(no variable for this key)'}"
        return f"{self.path}#{key}"

    def store_name(self, key: str) -> str | None:
        if self.unmappable(key) is not None:
            return None
        if self._kind() == "dotenv":
            return key_to_name(key, self.env_prefix, self.separator)
        return key

    def unmappable(self, key: str) -> str | None:
        kind = self._kind()
        if kind == "dotenv":
            return mapping_problem(key, self.separator)
        if kind == "dir" and any(s.startswith(".") for s in key.split("/")):
            # Kubernetes' ..data/NAME is the very file NAME links to: one file, two keys
            return "a hidden entry (a segment starting with '.') is not a key in a folder"
        if kind == "dir" and any(len(s.encode()) > _NAME_MAX for s in key.split("/")):
            return (f"a segment longer than {_NAME_MAX} bytes cannot name a file or folder "
                    "(the file system's limit)")
        return None

    def describe(self) -> str:
        return f"files ({self._kind()}: {self.path})"

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        if self._kind() == "dir":
            return {k: self._secret(k, v) for k in keys if (v := self._read_one(k)) is not None}
        data = self._load()
        return {k: self._secret(k, data[k]) for k in keys if k in data}

    def _list(self, prefix: str) -> Iterable[str]:
        if self._kind() == "dir":
            return [k for k in self._walk() if is_under(k, prefix)]
        return [k for k in self._load() if is_under(k, prefix)]

    # -- file formats ---------------------------------------------------------------------
    def _kind(self) -> str:
        if self.format != "auto":
            return self.format
        if self.path.is_dir():
            return "dir"
        if self.path.name == ".env" or self.path.name.startswith(".env."):
            return "dotenv"
        return _SUFFIXES.get(self.path.suffix.lower(), "dotenv")

    def _missing(self) -> bool:
        if self.path.exists():
            return False
        if self.optional:
            return True
        raise StoreCorrupt(self.name, f"{self.path} does not exist (set optional = true to allow)")

    def _load(self) -> dict[str, str]:
        if self._missing():
            return {}
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._cached is None or self._cached[0] != stamp:
                self._cached = (stamp, self._parse(self._kind()))
            return self._cached[1]

    def _parse(self, kind: str) -> dict[str, str]:
        if kind == "dotenv":
            from dotenv import dotenv_values

            out = {}
            for var, value in dotenv_values(self.path).items():
                key = name_to_key(var, self.env_prefix, self.separator)
                if key is not None and value is not None:
                    out[key] = value
            return out
        text = self._read_text(self.path)
        return flatten(self._decode(kind, text))

    def _decode(self, kind: str, text: str) -> Any:
        try:
            if kind == "toml":
                from .._compat import tomllib

                return tomllib.loads(text)
            if kind == "json":
                return json.loads(text)
            import yaml

            return yaml.safe_load(text)
        except Exception as exc:
            # `from None`: parser messages of some formats quote the offending line.
            why, where = _error_reason(exc), _error_position(exc)
            raise StoreCorrupt(self.name, f"{self.path} is not valid {kind}{why}{where}") from None

    def _read_text(self, path: Path) -> str:
        try:
            return path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise StoreCorrupt(self.name, f"{path} is not UTF-8 text") from None

    # -- directory layout -----------------------------------------------------------------
    def _read_one(self, key: str) -> str | None:
        if self._missing():
            return None
        file = self.path / key
        if not file.is_file() or not _spelled_exactly(self.path, key):
            return None
        text = self._read_text(file)
        if self.strip_newline and text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        return text

    def _walk(self) -> list[str]:
        if self._missing():
            return []
        keys = []
        for root, dirs, files in os.walk(self.path, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = Path(root).relative_to(self.path)
            for f in files:
                if f.startswith("."):
                    continue
                key = "/".join([*rel.parts, f])
                try:
                    keys.append(validate_key(key))
                except ValueError:
                    continue
        return keys


#: the longest file or folder name the common file systems take (ext4, APFS, NTFS: 255)
_NAME_MAX = 255


def _spelled_exactly(root: Path, key: str) -> bool:
    """True if each segment of ``key`` is an entry of that exact spelling: on a
    case-insensitive file system (macOS, Windows) ``ACCT_43/token`` opens ``acct_43/token``."""
    folder = root
    for segment in key.split("/"):
        if segment not in os.listdir(folder):
            return False
        folder = folder / segment
    return True


#: the position tomllib (before 3.14) appends to its message, and a character a parser quotes
_POSITION = re.compile(r" \((?:at line \d+, column \d+|at end of document)\)$")
_QUOTED_CHAR = re.compile(r"""character (?:'[^']*'|"[^"]*")""")


def _error_reason(exc: Exception) -> str:
    """The parser's reason, never the content of the line (values may be secrets): json's and
    tomllib's message without its position, YAML's problem without its snippet; a character
    the parser quotes is left out too."""
    reason = getattr(exc, "problem", None) or getattr(exc, "msg", None) or str(exc)
    if not isinstance(reason, str) or "\n" in reason.strip():
        return ""  # a parser that quotes lines: nothing of it
    reason = _QUOTED_CHAR.sub("character", _POSITION.sub("", reason.strip()))
    return f": {reason}" if reason else ""


def _error_position(exc: Exception) -> str:
    line = getattr(exc, "lineno", None)
    col = getattr(exc, "colno", None)
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line, col = mark.line + 1, mark.column + 1
    if line is None:  # tomllib before 3.14 puts the position only in its message
        found = re.search(r"at line (\d+), column (\d+)", str(exc))
        line, col = (found.group(1), found.group(2)) if found else (None, None)
    return f" (line {line}, column {col})" if line else ""
