"""200 concurrent runs of one pipeline definition never see each other's credentials.

Threads, asyncio tasks and subprocesses (the Python API and `pipekey run`) at once, on the
real local encrypted store, 100,000 reads in all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

import pipekey
from pipekey.backends.local import LocalBackend, generate_master_key

THREADS, TASKS, SUBPROCS = 120, 60, 20
READS_IN_PROCESS, READS_PER_SUBPROC = 500, 1_000

CHILD = textwrap.dedent("""
    import json, sys, pipekey
    account, expected_token, expected_app = sys.argv[1:4]
    reads = int(sys.argv[4])
    import hashlib
    h = lambda v: hashlib.sha256(v.encode()).hexdigest()
    lk = pipekey.load()
    wrong = done = 0
    with lk.pipeline("ads", account=account) as run:
        for i in range(reads // 2):
            wrong += h(run.secret("access_token")) != expected_token
            app_secret = pipekey.current().get(f"marketing/ads/{account}/app_secret")
            wrong += h(app_secret) != expected_app
            done += 2
    print(json.dumps({"wrong": wrong, "reads": done}))
""")

VIA_RUN = textwrap.dedent("""
    import hashlib, json, os, sys
    h = lambda v: hashlib.sha256(v.encode()).hexdigest()
    reads = int(sys.argv[3])
    wrong = sum(h(os.environ["ACCESS_TOKEN"]) != sys.argv[1]
                or h(os.environ["APP_SECRET"]) != sys.argv[2]
                for _ in range(reads // 2))
    print(json.dumps({"wrong": wrong, "reads": reads,
                      "master_key_visible": "PIPEKEY_MASTER_KEY" in os.environ}))
""")


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A store with 200 accounts' credentials, and a private HOME and TMPDIR."""
    home, tmp, project = tmp_path / "home", tmp_path / "tmp", tmp_path / "project"
    for d in (home, tmp, project):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("PIPEKEY_MASTER_KEY", generate_master_key())
    (project / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\npath = "store.db"\n'
        '[pipelines.ads]\nscope = "marketing/ads/{account}"\n'
        'requires = ["access_token", "app_secret"]\n')
    monkeypatch.setenv("PIPEKEY_CONFIG", str(project / "pipekey.toml"))
    store = LocalBackend("local", project / "store.db")
    values = {}
    for i in range(THREADS + TASKS + SUBPROCS):
        account = f"acct_{i:03d}"
        token = f"fake-token-{account}-{secrets.token_hex(8)}"
        app = f"fake-app-{account}-{secrets.token_hex(8)}"
        store.put(f"marketing/ads/{account}/access_token", token)
        store.put(f"marketing/ads/{account}/app_secret", app)
        values[account] = (token, app)
    store.close()
    return tmp_path, values


def _thread_run(lk, account, expected, barrier, results) -> None:
    wrong = reads = 0
    with lk.pipeline("ads", account=account, run_name=f"thread__{account}") as run:
        barrier.wait(timeout=120)  # every thread's run is open at once
        for _ in range(READS_IN_PROCESS // 2):
            current = pipekey.current()
            wrong += current is not run
            wrong += run.secret("access_token") != expected[0]
            wrong += current.get(f"marketing/ads/{account}/app_secret") != expected[1]
            reads += 2
    results.append((wrong, reads))


async def _task_run(lk, account, expected) -> tuple[int, int]:
    wrong = reads = 0
    async with lk.pipeline("ads", account=account, run_name=f"task__{account}") as run:
        for i in range(READS_IN_PROCESS // 2):
            if i % 10 == 0:
                await asyncio.sleep(0)  # let the other tasks interleave
            current = pipekey.current()
            wrong += current is not run
            wrong += current.secret("access_token") != expected[0]
            wrong += run.get(f"marketing/ads/{account}/app_secret") != expected[1]
            reads += 2
    return wrong, reads


def _start_subprocess(account: str, expected: tuple[str, str], via_run: bool, tmp: Path):
    """Start one child; the scripts are written once beforehand (rewriting a script while
    another child starts reading it would hand that child an empty file)."""
    hashes = [_sha(expected[0]), _sha(expected[1]), str(READS_PER_SUBPROC)]
    if via_run:
        cmd = [sys.executable, "-m", "pipekey", "run", "--pipeline", "ads", "--param",
               f"account={account}", "--", sys.executable, str(tmp / "via_run.py"), *hashes]
    else:
        cmd = [sys.executable, str(tmp / "child.py"), account, *hashes]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp)


@pytest.mark.slow
def test_200_concurrent_runs_never_cross(world) -> None:
    """Zero reads return another run's value; os.environ is unchanged; no value on disk."""
    tmp_path, values = world
    accounts = sorted(values)
    env_before = dict(os.environ)
    lk = pipekey.load()

    (tmp_path / "tmp" / "via_run.py").write_text(VIA_RUN)
    (tmp_path / "tmp" / "child.py").write_text(CHILD)
    procs = [_start_subprocess(a, values[a], i % 2 == 0, tmp_path / "tmp")
             for i, a in enumerate(accounts[THREADS + TASKS:])]

    thread_results: list[tuple[int, int]] = []
    barrier = threading.Barrier(THREADS)
    threads = [threading.Thread(target=_thread_run, args=(lk, a, values[a], barrier,
                                                          thread_results))
               for a in accounts[:THREADS]]
    for t in threads:
        t.start()

    async def all_tasks():
        return await asyncio.gather(*(_task_run(lk, a, values[a])
                                      for a in accounts[THREADS:THREADS + TASKS]))

    task_results = asyncio.run(all_tasks())
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads)

    proc_results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0 and out.strip(), f"exit {p.returncode}: {out!r} {err!r}"
            proc_results.append(json.loads(out.strip().splitlines()[-1]))
            assert all(v not in out + err for pair in values.values() for v in pair)
    finally:
        for p in procs:  # never leave a child behind, even when an assertion failed
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=30)

    assert len(thread_results) == THREADS and len(task_results) == TASKS
    wrong = sum(w for w, _ in thread_results + task_results) + sum(r["wrong"] for r in proc_results)
    reads = sum(n for _, n in thread_results + task_results) + sum(r["reads"] for r in proc_results)
    assert reads >= 100_000
    assert wrong == 0
    assert not any(r.get("master_key_visible") for r in proc_results)
    assert pipekey.current() is None
    assert dict(os.environ) == env_before

    lk.close()
    needles = [v.encode() for pair in values.values() for v in pair]
    for path in tmp_path.rglob("*"):  # HOME, TMPDIR, and the store itself
        if path.is_file():
            data = path.read_bytes()
            leaked = [n for n in needles if n in data]
            assert not leaked, f"{path} holds {len(leaked)} secret values in clear"
