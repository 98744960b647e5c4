"""The local encrypted store: encryption binding, key handling, damage, crashes, concurrency."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from pipekey import NoMasterKey, StoreCorrupt, WrongMasterKey
from pipekey.backends.local import LocalBackend, generate_master_key

from ..conftest import FAKE

KEY = generate_master_key()


def store(path: Path, key: str = KEY) -> LocalBackend:
    return LocalBackend("local", path, master_key=key)


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain SQLite connection to damage the store with, closed after."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def test_ciphertext_copied_to_another_key_fails(tmp_path: Path) -> None:
    """A row's ciphertext moved to another key does not decrypt: the key path is bound."""
    db = tmp_path / "s.db"
    b = store(db)
    b.put("a/one", "fake-one")
    b.put("a/two", "fake-two")
    b.close()
    with raw(db) as c:
        nonce, ct = c.execute("SELECT nonce, ciphertext FROM versions WHERE key='a/one'").fetchone()
        c.execute("UPDATE versions SET nonce=?, ciphertext=? WHERE key='a/two'", (nonce, ct))
    b = store(db)
    with pytest.raises(StoreCorrupt, match=r"'a/two' version 1 .* failed authentication"):
        b.get("a/two")
    assert b.get("a/one").value == "fake-one"


def test_ciphertext_copied_to_another_version_fails(tmp_path: Path) -> None:
    """An old version's ciphertext replayed as the newest version does not decrypt."""
    db = tmp_path / "s.db"
    b = store(db)
    b.put("k", "fake-old")
    b.put("k", "fake-new")
    b.close()
    with raw(db) as c:
        nonce, ct = c.execute("SELECT nonce, ciphertext FROM versions WHERE version=1").fetchone()
        c.execute("UPDATE versions SET nonce=?, ciphertext=? WHERE version=2", (nonce, ct))
    with pytest.raises(StoreCorrupt, match="version 2"):
        store(db).get("k")


def test_tampered_byte_is_detected(tmp_path: Path) -> None:
    """Flipping one ciphertext byte makes the read fail with StoreCorrupt, not garbage."""
    db = tmp_path / "s.db"
    store(db).put("k", FAKE)
    with raw(db) as c:
        (ct,) = c.execute("SELECT ciphertext FROM versions").fetchone()
        c.execute("UPDATE versions SET ciphertext=?", (bytes([ct[0] ^ 1]) + ct[1:],))
    with pytest.raises(StoreCorrupt) as info:
        store(db).get("k")
    assert FAKE not in str(info.value)


def test_wrong_master_key_is_named_and_writes_nothing(tmp_path: Path) -> None:
    """Another key gives WrongMasterKey on read and on write, and the store is unchanged."""
    db = tmp_path / "s.db"
    store(db).put("k", "fake-v1")
    other = store(db, generate_master_key())
    with pytest.raises(WrongMasterKey, match="does not open"):
        other.get("k")
    with pytest.raises(WrongMasterKey):
        other.put("k", "fake-v2")
    assert [v.version for v in store(db).history("k")] == ["1"]
    assert store(db).get("k").value == "fake-v1"


@pytest.mark.parametrize("content", [
    pytest.param(b"this is not a database at all" * 100, id="garbage"),
    pytest.param(b"SQLite format 3\x00" + b"\xff" * 4000, id="broken-header"),
])
def test_corrupt_file_is_reported_and_never_overwritten(tmp_path: Path, content: bytes) -> None:
    """A damaged store file raises StoreCorrupt on read and write and keeps its bytes."""
    db = tmp_path / "s.db"
    db.write_bytes(content)
    with pytest.raises(StoreCorrupt, match="s.db"):
        store(db).get("k")
    with pytest.raises(StoreCorrupt):
        store(db).put("k", "fake")
    assert db.read_bytes() == content


def test_foreign_sqlite_file_is_not_taken_over(tmp_path: Path) -> None:
    """An SQLite file of another program is refused, and gains no pipekey tables."""
    db = tmp_path / "other.db"
    with raw(db) as c:
        c.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreCorrupt, match="not a pipekey store"):
        store(db).put("k", "fake")
    with raw(db) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    assert tables == {"customers"}


def test_no_key_reads_absent_but_write_fails_without_creating(tmp_path: Path) -> None:
    """Without a key, a missing store reads as empty; a write names the fix and creates nothing."""
    b = LocalBackend("local", tmp_path / "d" / "s.db")
    assert b.get_many(["k"]) == {}
    assert b.list_keys("") == []
    with pytest.raises(NoMasterKey, match="PIPEKEY_MASTER_KEY or run `pipekey init`"):
        b.put("k", "fake")
    assert not (tmp_path / "d").exists()


def test_invalid_env_key_error_does_not_echo_it(tmp_path: Path, monkeypatch) -> None:
    """A malformed PIPEKEY_MASTER_KEY is named by variable, never quoted."""
    monkeypatch.setenv("PIPEKEY_MASTER_KEY", "fake-not-base64-key-material")
    with pytest.raises(NoMasterKey) as info:
        LocalBackend("local", tmp_path / "s.db").put("k", "fake")
    assert "PIPEKEY_MASTER_KEY" in str(info.value)
    assert "fake-not-base64" not in str(info.value)


def test_init_makes_private_files_and_never_overwrites(tmp_path: Path) -> None:
    """init writes a 0600 key file and a 0600 store; a second init keeps both as they are."""
    b = LocalBackend("local", tmp_path / ".pipekey" / "store.db")
    first = b.init()
    assert first["key_created"] and first["store_created"]
    key_file = tmp_path / ".pipekey" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / ".pipekey" / "store.db").stat().st_mode) == 0o600
    assert (tmp_path / ".pipekey" / ".gitignore").read_text().strip().endswith("*")
    before = key_file.read_bytes()
    b.put("k", "fake")
    again = LocalBackend("local", tmp_path / ".pipekey" / "store.db").init()
    assert not again["key_created"] and not again["store_created"]
    assert key_file.read_bytes() == before


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A key file with group or other permissions is refused with the chmod to run."""
    b = LocalBackend("local", tmp_path / "s.db")
    b.init()
    os.chmod(b.key_file, 0o644)
    b2 = LocalBackend("local", tmp_path / "s.db")
    with pytest.raises(NoMasterKey, match="chmod 600"):
        b2.get("k")


def test_values_are_not_on_disk_in_clear(tmp_path: Path) -> None:
    """Neither the store file nor its WAL holds the value's bytes."""
    db = tmp_path / "s.db"
    b = store(db)
    for i in range(20):
        b.put(f"k/{i}", f"{FAKE}-{i}")
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    b.close()
    blobs += b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert FAKE.encode() not in blobs
    assert b"k/19" in blobs  # key names are stored (and listed); values are not


def test_history_records_who(tmp_path: Path, monkeypatch) -> None:
    """Each version records when and by whom (PIPEKEY_ACTOR overrides user@host)."""
    monkeypatch.setenv("PIPEKEY_ACTOR", "ci-bot")
    b = store(tmp_path / "s.db")
    b.put("k", "fake")
    (v,) = b.history("k")
    assert v.created_by == "ci-bot" and v.created_at is not None


def test_threads_writing_one_key_lose_no_update(tmp_path: Path) -> None:
    """8 threads x 25 writes to one key give 200 contiguous versions."""
    b = store(tmp_path / "s.db")
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait(timeout=10)
        for i in range(25):
            b.put("k", f"fake-{n}-{i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [v.version for v in b.history("k")] == [str(i) for i in range(1, 201)]


WRITER = textwrap.dedent("""
    import os, sys, time
    from pipekey.backends.local import LocalBackend
    mode, path = sys.argv[1], sys.argv[2]
    b = LocalBackend("local", path, master_key=os.environ["KEY"])
    if mode == "loop":
        i = 0
        while True:
            i += 1
            b.put("k", "fake-%d-" % i + "y" * (i * 997 % 300_000))
            if i == 1:
                print("writing", flush=True)
    conn = b._open(create=True)
    conn.execute("PRAGMA cache_size=8")      # spill the uncommitted insert into the WAL file
    wal = path + "-wal"
    base = os.path.getsize(wal) if os.path.exists(wal) else 0
    def pause():
        if os.path.exists(wal) and os.path.getsize(wal) > base + 1_000_000:
            print("mid-write", flush=True)
            time.sleep(60)
        return 0
    conn.set_progress_handler(pause, 1)
    b.put("k", "fake-v2-" + "y" * 3_000_000)
    print("committed", flush=True)
""")


@pytest.mark.slow
def test_kill_9_mid_write_keeps_previous_version(tmp_path: Path) -> None:
    """A writer SIGKILLed with half its insert on disk leaves version 1 intact and readable."""
    db = tmp_path / "s.db"
    store(db).put("k", "fake-v1")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    with subprocess.Popen([sys.executable, str(script), "once", str(db)],
                          stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "KEY": KEY}) as proc:
        try:
            line = proc.stdout.readline().strip()
            assert line == "mid-write", f"the writer never paused mid-write: {line!r}"
            assert os.path.getsize(str(db) + "-wal") > 1_000_000  # the torn write is on disk
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    b = store(db)
    assert b.get("k").value == "fake-v1"
    assert [v.version for v in b.history("k")] == ["1"]
    b.put("k", "fake-v2")  # and the store still takes writes
    assert b.get("k").version == "2"


@pytest.mark.slow
def test_kill_9_at_random_moments_never_tears_a_version(tmp_path: Path) -> None:
    """12 writers killed at random times: every version left decrypts, numbered 1..n."""
    db = tmp_path / "s.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(1234)
    deadline = time.monotonic() + 60
    for _ in range(12):
        if time.monotonic() > deadline:
            break
        proc = subprocess.Popen([sys.executable, str(script), "loop", str(db)],
                                env={**os.environ, "KEY": KEY}, stdout=subprocess.PIPE, text=True)
        # the random moment counts from the first write, however slow the start-up was
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(rng.random() * 0.4)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        b = store(db)
        history = b.history("k")
        assert [v.version for v in history] == [str(i) for i in range(1, len(history) + 1)]
        for version in history:  # every version decrypts (GCM authenticates) and is whole
            _, n, padding = b.get_version("k", version.version).value.split("-")
            assert padding == "y" * (int(n) * 997 % 300_000)
        b.close()
    assert len(store(db).history("k")) > 0


def _forge_tombstone(db: Path, key: str, version: int, nonce: bytes | None = None) -> None:
    with raw(db) as c:
        c.execute("INSERT INTO versions VALUES (?, ?, ?, NULL, '2024-01-01T00:00:00+00:00', "
                  "'forger')", (key, version, nonce))


def test_forged_tombstone_is_detected_not_read_as_deleted(tmp_path: Path) -> None:
    """A deletion row written into the file without the key fails authentication on get,
    get_version, ls and rm, naming the key; it never makes the secret read as absent."""
    db = tmp_path / "s.db"
    b = store(db)
    b.put("a/k", "fake-secret-acct42")
    b.close()
    _forge_tombstone(db, "a/k", 2)
    b = store(db)
    for read in (lambda: b.get_many(["a/k"]), lambda: b.get_version("a/k", "2"),
                 lambda: b.list_keys("a"), lambda: b.delete("a/k")):
        with pytest.raises(StoreCorrupt, match=r"'a/k' version 2 .* deletion that failed "
                                               r"authentication") as info:
            read()
        assert "fake-secret" not in str(info.value)


def test_tombstone_is_bound_to_its_row(tmp_path: Path) -> None:
    """A real deletion marker copied to another key (or version) fails authentication."""
    db = tmp_path / "s.db"
    b = store(db)
    b.put("gone", "fake-1")
    b.delete("gone")
    b.put("kept", "fake-kept-acct42")
    assert b.get_many(["gone"]) == {} and b.list_keys("") == ["kept"]
    b.close()
    with raw(db) as c:
        (proof,) = c.execute("SELECT nonce FROM versions WHERE key='gone' AND version=2"
                             ).fetchone()
    _forge_tombstone(db, "kept", 2, proof)
    with pytest.raises(StoreCorrupt, match="'kept' version 2"):
        store(db).get("kept")


def _format_1_store(db: Path) -> None:
    """Rewrite a store as pipekey's format 1 made it: bare tombstones, key check unbound."""
    import base64

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with raw(db) as c:
        (store_id,) = c.execute("SELECT value FROM meta WHERE name='store_id'").fetchone()
        nonce = os.urandom(12)
        check = nonce + AESGCM(base64.b64decode(KEY)).encrypt(
            nonce, b"pipekey key check", b"key-check\x00" + store_id)
        c.execute("UPDATE meta SET value=? WHERE name='key_check'", (check,))
        c.execute("UPDATE meta SET value=? WHERE name='format'", (b"1",))
        c.execute("UPDATE versions SET nonce=NULL WHERE ciphertext IS NULL")


def test_format_1_store_is_upgraded_and_cannot_be_turned_back(tmp_path: Path) -> None:
    """A format-1 store keeps its data and deletions when opened; afterwards a bare
    tombstone is refused, and setting the format back to 1 is detected."""
    db = tmp_path / "s.db"
    b = store(db)
    b.put("gone", "fake-1")
    b.delete("gone")
    b.put("kept", "fake-kept")
    b.close()
    _format_1_store(db)
    b = store(db)
    assert b.get_many(["gone", "kept"])["kept"].value == "fake-kept"
    assert [v.deleted for v in b.history("gone")] == [False, True]
    b.close()
    with raw(db) as c:
        assert c.execute("SELECT value FROM meta WHERE name='format'").fetchone() == (b"2",)
        c.execute("UPDATE meta SET value=? WHERE name='format'", (b"1",))
    with pytest.raises(StoreCorrupt, match="format in its header was changed"):
        store(db).get("kept")
