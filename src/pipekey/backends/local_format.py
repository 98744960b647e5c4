"""The ``local`` store's file format and master key, apart from the backend
(:mod:`pipekey.backends.local`) that reads and writes it.

The format: the SQLite schema, the format version (``FORMAT``; format 1 had unauthenticated
tombstones), the key-check record's plaintext and associated data. The master key: 32 random
bytes, base64-encoded, from the key given, ``PIPEKEY_MASTER_KEY`` or a key file (mode 0600).
Also who and when a version is written (``actor``, ``utc_now``). The DynamoDB backend
encrypts with the same master key (``load_aead``) and records the same ``actor``.
"""

from __future__ import annotations

import base64
import binascii
import os
import sqlite3
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NoMasterKey

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["BATCH", "CHECK_PLAINTEXT", "FORMAT", "LEGACY_FORMAT", "MASTER_KEY_ENV", "SCHEMA",
           "actor", "check_key_file_mode", "decode_key", "generate_master_key", "key_check_ad",
           "load_aead", "next_version", "parse_time", "utc_now", "write_key_file"]

MASTER_KEY_ENV = "PIPEKEY_MASTER_KEY"
FORMAT = b"2"  # 2: tombstones are authenticated
LEGACY_FORMAT = b"1"
CHECK_PLAINTEXT = b"pipekey key check"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    nonce BLOB,
    ciphertext BLOB,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (key, version)
);
"""
BATCH = 500  # stays under SQLite's bound-variable limit


def generate_master_key() -> str:
    """A new random master key, base64-encoded, as the key file and the env var hold it."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def load_aead(backend: str, explicit: str | None, key_file: Path, purpose: str) -> AESGCM:
    """An AES-256-GCM cipher under the master key: the one given, else
    ``$PIPEKEY_MASTER_KEY``, else the key file (which must not be readable by others).

    Raises:
        NoMasterKey: none of them is there, or the key is malformed (never quoted).
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if explicit is not None:
        return AESGCM(decode_key(backend, explicit, "the key given"))
    env_value = os.environ.get(MASTER_KEY_ENV)
    if env_value:
        return AESGCM(decode_key(backend, env_value, MASTER_KEY_ENV))
    if not key_file.exists():
        raise NoMasterKey(backend, f"no master key {purpose}: set {MASTER_KEY_ENV} or run "
                                   f"`pipekey init` (looked for {key_file})")
    check_key_file_mode(backend, key_file)
    text = key_file.read_text(encoding="ascii", errors="replace").strip()
    return AESGCM(decode_key(backend, text, f"key file {key_file}"))


def decode_key(backend: str, text: str, source: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise NoMasterKey(backend, f"{source} is not a base64-encoded 32-byte key")
    return raw


def write_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    gitignore = path.parent / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("# pipekey: the key and the store never belong in git\n*\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(generate_master_key() + "\n")


def check_key_file_mode(backend: str, path: Path) -> None:
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise NoMasterKey(
            backend,
            f"key file {path} is readable by others (mode {mode:04o}); run chmod 600 {path}",
        )


def key_check_ad(store_id: bytes, fmt: bytes) -> bytes:
    ad = b"key-check\x00" + store_id
    return ad if fmt == LEGACY_FORMAT else ad + b"\x00format=" + fmt


def next_version(conn: sqlite3.Connection, key: str) -> int:
    (current,) = conn.execute(
        "SELECT COALESCE(MAX(version), 0) FROM versions WHERE key = ?", (key,)
    ).fetchone()
    return int(current) + 1


def actor() -> str:
    """Who writes: ``$PIPEKEY_ACTOR``, else user@host."""
    named = os.environ.get("PIPEKEY_ACTOR")
    if named:
        return named
    import getpass  # writes only: reads (``pipekey run``) skip them (start-up cost)
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid()) if sys.platform != "win32" else "unknown"
    return f"{user}@{socket.gethostname()}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
