"""``local``: the embedded encrypted store, one SQLite file, no server.

Every value is encrypted with AES-256-GCM under the master key, with the store's id, the key
path and the version bound as associated data: a ciphertext copied to another row, another
key or another store fails to decrypt. A key-check record tells a wrong master key apart from
a tampered row.

The master key is 32 random bytes, base64-encoded, from ``PIPEKEY_MASTER_KEY`` or from a key
file (mode 0600) that ``pipekey init`` creates. A key file readable by others is refused.

Every version is kept, with when and by whom, for ``history``; a delete adds a tombstone, a
row without a ciphertext whose ``nonce`` column holds a nonce and the AES-GCM tag of an empty
plaintext bound to the store, the key, the version and ``deleted``: a forged or replayed
tombstone fails authentication like a forged value, rather than hiding the value. Stores of
format 1 (unauthenticated tombstones) are upgraded in place when first opened with their key;
the key-check record is bound to the format, so a store cannot be turned back to format 1.
A write is one SQLite transaction (``BEGIN IMMEDIATE``, WAL, ``synchronous=FULL``): a writer
killed mid-write leaves the previous version intact. A file that is not a pipekey store is
reported and never overwritten.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from ..errors import BackendUnavailable, NoMasterKey, StoreCorrupt, WrongMasterKey
from ..keys import is_under
from .base import (
    BackendConfig,
    BuildContext,
    Secret,
    VersionedBackend,
    VersionInfo,
    WritableBackend,
)
from .local_format import (
    BATCH,
    CHECK_PLAINTEXT,
    FORMAT,
    LEGACY_FORMAT,
    MASTER_KEY_ENV,
    SCHEMA,
    actor,
    generate_master_key,
    key_check_ad,
    load_aead,
    next_version,
    parse_time,
    utc_now,
    write_key_file,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["LocalBackend", "MASTER_KEY_ENV", "generate_master_key", "load_aead"]

DEFAULT_PATH = ".pipekey/store.db"


class LocalConfig(BackendConfig):
    path: str = DEFAULT_PATH
    key_file: str | None = None


class LocalBackend(WritableBackend, VersionedBackend):
    """The encrypted SQLite store. Thread-safe; reopens itself after a fork."""

    kind = "local"
    Config = LocalConfig

    def __init__(
        self,
        name: str = "local",
        path: str | os.PathLike[str] = DEFAULT_PATH,
        key_file: str | os.PathLike[str] | None = None,
        master_key: str | None = None,
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.key_file = Path(key_file) if key_file else self.path.parent / "master.key"
        self._master_key = master_key
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._aead: AESGCM | None = None
        self._store_id = b""

    @classmethod
    def from_config(cls, name: str, config: BackendConfig, ctx: BuildContext) -> "LocalBackend":
        assert isinstance(config, LocalConfig)
        key_file = ctx.path(config.key_file) if config.key_file else None
        return cls(name, ctx.path(config.path), key_file)

    # -- diagnostics ----------------------------------------------------------------------
    def locate(self, key: str) -> str:
        return f"{self.path}#{key}"

    def describe(self) -> str:
        return f"local (encrypted SQLite: {self.path}; key from {self.key_source()})"

    def key_source(self) -> str:
        if self._master_key is not None:
            return "the caller"
        if os.environ.get(MASTER_KEY_ENV):
            return MASTER_KEY_ENV
        return f"key file {self.key_file}"

    def check(self) -> str:
        if not self.path.exists():
            if self._has_key():
                return f"no store yet at {self.path} (the first `pipekey set` creates it)"
            return f"no store yet at {self.path} and no master key (run `pipekey init`)"
        with self._lock:
            conn = self._open(create=False)
            (count,) = conn.execute("SELECT COUNT(DISTINCT key) FROM versions").fetchone()
        return f"ok ({count} keys)"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn, self._aead = None, None

    # -- init -----------------------------------------------------------------------------
    def init(self) -> dict[str, object]:
        """Create the key file (unless a key is given another way) and the store.

        Never overwrites: an existing key file or store is kept and reported as such.
        """
        made_key = False
        self._refuse_lost_key()  # a new key would never open the existing store
        if self._master_key is None and not os.environ.get(MASTER_KEY_ENV):
            if not self.key_file.exists():
                write_key_file(self.key_file)
                made_key = True
        existed = self.path.exists()
        with self._lock:
            self._open(create=True)
        return {"store": str(self.path), "store_created": not existed,
                "key_file": str(self.key_file), "key_created": made_key,
                "key_source": self.key_source()}

    # -- the contract ---------------------------------------------------------------------
    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        if not self.path.exists():
            return {}
        found: dict[str, Secret] = {}
        with self._lock:
            conn = self._open(create=False)
            for i in range(0, len(keys), BATCH):
                chunk = keys[i:i + BATCH]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT v.key, v.version, v.nonce, v.ciphertext, v.created_at FROM versions v"
                    f" WHERE v.key IN ({marks}) AND v.version ="
                    " (SELECT MAX(version) FROM versions w WHERE w.key = v.key)",
                    chunk,
                ).fetchall()
                for key, version, nonce, ciphertext, created_at in rows:
                    if ciphertext is None:  # tombstone
                        self._check_tombstone(key, version, nonce)
                        continue
                    value = self._decrypt(key, version, nonce, ciphertext)
                    found[key] = self._secret(key, value, str(version),
                                              created_at=parse_time(created_at))
        return found

    def _get_version(self, key: str, version: str) -> Secret | None:
        if not self.path.exists() or not version.isdigit():
            return None
        with self._lock:
            row = self._open(create=False).execute(
                "SELECT nonce, ciphertext, created_at FROM versions WHERE key = ? AND version = ?",
                (key, int(version)),
            ).fetchone()
        if row is None:
            return None
        if row[1] is None:
            self._check_tombstone(key, int(version), row[0])
            return None
        value = self._decrypt(key, int(version), row[0], row[1])
        return self._secret(key, value, version, created_at=parse_time(row[2]))

    def versions(self, keys: Sequence[str]) -> dict[str, VersionInfo]:
        """The current version of each key (absent or deleted keys left out), without
        decrypting anything: the cache's cheap probe. ``created_at`` tells a store made
        again at the same path (versions from 1 again) from the one read before."""
        if not self.path.exists() or not keys:
            return {}
        with self._lock:
            conn = self._open(create=False)
            marks = ",".join("?" * len(keys))
            rows = conn.execute(  # SQLite takes the bare columns from the MAX(version) row
                f"SELECT key, MAX(version), created_at, ciphertext IS NULL FROM versions"
                f" WHERE key IN ({marks}) GROUP BY key", list(keys)).fetchall()
        return {k: VersionInfo(str(v), parse_time(at)) for k, v, at, gone in rows if not gone}

    def _list(self, prefix: str) -> Iterable[str]:
        if not self.path.exists():
            return []
        with self._lock:
            conn = self._open(create=False)
            rows = conn.execute(
                "SELECT v.key, v.version, v.nonce, v.ciphertext IS NULL FROM versions v"
                " WHERE v.version = (SELECT MAX(version) FROM versions w WHERE w.key = v.key)"
            ).fetchall()
            for key, version, nonce, gone in rows:
                if gone and is_under(key, prefix):
                    self._check_tombstone(key, version, nonce)
        return [k for k, _, _, gone in rows if not gone and is_under(k, prefix)]

    def _put(self, key: str, value: str) -> Secret:
        now = utc_now()
        with self._lock, self._transaction() as conn:
            version = next_version(conn, key)
            nonce = os.urandom(12)
            ciphertext = self._opened_aead().encrypt(nonce, value.encode("utf-8"),
                                                     self._ad(key, version))
            conn.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?)",
                (key, version, nonce, ciphertext, now.isoformat(), actor()),
            )
        return self._secret(key, value, str(version), created_at=now)

    def _delete(self, key: str) -> bool:
        if not self.path.exists():
            return False
        with self._lock, self._transaction() as conn:
            row = conn.execute(
                "SELECT version, nonce, ciphertext IS NULL FROM versions WHERE key = ?"
                " ORDER BY version DESC LIMIT 1",
                (key,),
            ).fetchone()
            if row is None:
                return False
            if row[2]:
                self._check_tombstone(key, row[0], row[1])
                return False
            version = next_version(conn, key)
            conn.execute(
                "INSERT INTO versions VALUES (?, ?, ?, NULL, ?, ?)",
                (key, version, self._tombstone(key, version), utc_now().isoformat(), actor()),
            )
        return True

    def _history(self, key: str) -> list[VersionInfo]:
        if not self.path.exists():
            return []
        with self._lock:
            rows = self._open(create=False).execute(
                "SELECT version, created_at, created_by, ciphertext IS NULL FROM versions"
                " WHERE key = ? ORDER BY version",
                (key,),
            ).fetchall()
        return [VersionInfo(str(v), parse_time(at), by, bool(gone)) for v, at, by, gone in rows]

    # -- storage --------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._open(create=True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _open(self, create: bool) -> sqlite3.Connection:
        """The connection, opened and verified on first use (and again after a fork)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        aead = self._load_key()  # before touching the file: no key, nothing created
        if not create and not self.path.exists():
            raise StoreCorrupt(self.name, f"{self.path} disappeared")
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Values are encrypted; key names and history are not: keep the file private.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            self._store_id = self._verify_or_create(conn, aead)
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(self.name, f"{self.path} is not a readable pipekey store "
                                          f"({exc})") from exc
        self._conn, self._aead, self._pid = conn, aead, os.getpid()
        return conn

    def _verify_or_create(self, conn: sqlite3.Connection, aead: AESGCM) -> bytes:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreCorrupt(self.name, f"{self.path} is an SQLite file but not a pipekey store")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if not tables:
            self._create(conn, aead)
        meta = dict(conn.execute("SELECT name, value FROM meta"))
        fmt = meta.get("format")
        if fmt not in (FORMAT, LEGACY_FORMAT) or "store_id" not in meta \
                or "key_check" not in meta:
            raise StoreCorrupt(self.name, f"{self.path} has no valid pipekey header")
        store_id: bytes = meta["store_id"]
        self._check_key(aead, store_id, meta["key_check"], fmt)
        if fmt == LEGACY_FORMAT:
            self._upgrade(conn, aead, store_id)
        return store_id

    def _check_key(self, aead: AESGCM, store_id: bytes, check: bytes, fmt: bytes) -> None:
        """The key-check record opens under this key and format (bound in its AD)."""
        from cryptography.exceptions import InvalidTag

        try:
            aead.decrypt(check[:12], check[12:], key_check_ad(store_id, fmt))
            return
        except InvalidTag:
            pass
        other = LEGACY_FORMAT if fmt == FORMAT else FORMAT
        try:
            aead.decrypt(check[:12], check[12:], key_check_ad(store_id, other))
        except InvalidTag:
            raise WrongMasterKey(
                self.name, f"the master key from {self.key_source()} does not open {self.path}"
            ) from None
        raise StoreCorrupt(self.name, f"{self.path}: the format in its header was changed "
                                      "(tampered with)")

    def _upgrade(self, conn: sqlite3.Connection, aead: AESGCM, store_id: bytes) -> None:
        """Format 1 -> 2: authenticate every tombstone, bind the key check to the format."""
        self._aead, self._store_id = aead, store_id
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(self.name, f"{self.path} is a format-1 store and could not "
                                                f"be upgraded ({exc})") from exc
        try:
            (fmt,) = conn.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()
            if fmt == LEGACY_FORMAT:  # not upgraded meanwhile by another process
                rows = conn.execute("SELECT key, version FROM versions"
                                    " WHERE ciphertext IS NULL AND nonce IS NULL").fetchall()
                for key, version in rows:
                    conn.execute("UPDATE versions SET nonce = ? WHERE key = ? AND version = ?",
                                 (self._tombstone(key, version), key, version))
                nonce = os.urandom(12)
                check = nonce + aead.encrypt(nonce, CHECK_PLAINTEXT,
                                             key_check_ad(store_id, FORMAT))
                conn.execute("UPDATE meta SET value = ? WHERE name = 'key_check'", (check,))
                conn.execute("UPDATE meta SET value = ? WHERE name = 'format'", (FORMAT,))
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise BackendUnavailable(self.name, f"{self.path} is a format-1 store and "
                                                    f"could not be upgraded ({exc})") from exc
            raise
        conn.execute("COMMIT")

    def _create(self, conn: sqlite3.Connection, aead: AESGCM) -> None:
        store_id = os.urandom(16)
        nonce = os.urandom(12)
        check = nonce + aead.encrypt(nonce, CHECK_PLAINTEXT, key_check_ad(store_id, FORMAT))
        conn.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (store_id,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('key_check', ?)", (check,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)",
                     (utc_now().isoformat(),))
        conn.execute("COMMIT")

    def _load_key(self) -> AESGCM:
        self._refuse_lost_key()
        return load_aead(self.name, self._master_key, self.key_file, f"for {self.path}")

    def _has_key(self) -> bool:
        return (self._master_key is not None or bool(os.environ.get(MASTER_KEY_ENV))
                or self.key_file.exists())

    def _refuse_lost_key(self) -> None:
        """A store exists but its key is nowhere: say how to get the key back. `init` must not
        be the answer: it would write a new key that never opens this store."""
        if self.path.exists() and not self._has_key():
            raise NoMasterKey(self.name, f"the store {self.path} exists but its key file "
                                         f"{self.key_file} is missing: restore the key file from "
                                         f"your backup, or set {MASTER_KEY_ENV} to the key")

    def _opened_aead(self) -> AESGCM:
        """The cipher ``_open`` loaded: every caller has opened the store first."""
        assert self._aead is not None, "the store is opened before its cipher is used"
        return self._aead

    def _ad(self, key: str, version: int) -> bytes:
        return b"\x00".join([b"pipekey/v1", self._store_id, key.encode(), str(version).encode()])

    def _tombstone(self, key: str, version: int) -> bytes:
        """A deletion marker's proof: a nonce and the GCM tag of nothing, bound to the row."""
        nonce = os.urandom(12)
        return nonce + self._opened_aead().encrypt(nonce, b"",
                                                   self._ad(key, version) + b"\x00deleted")

    def _check_tombstone(self, key: str, version: int, proof: bytes | None) -> None:
        from cryptography.exceptions import InvalidTag

        if isinstance(proof, bytes) and len(proof) == 28:  # nonce + tag
            try:
                self._opened_aead().decrypt(proof[:12], proof[12:],
                                   self._ad(key, version) + b"\x00deleted")
                return
            except InvalidTag:
                pass
        raise StoreCorrupt(self.name, f"key {key!r} version {version} in {self.path} is a "
                                      "deletion that failed authentication (forged or "
                                      "tampered with)")

    def _decrypt(self, key: str, version: int, nonce: bytes, ciphertext: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        try:
            plain = self._opened_aead().decrypt(nonce, ciphertext, self._ad(key, version))
        except (InvalidTag, ValueError, TypeError):
            raise StoreCorrupt(
                self.name,
                f"key {key!r} version {version} in {self.path} failed authentication "
                "(tampered with, or copied from another row)",
            ) from None
        return plain.decode("utf-8")
