"""``pipekey bench --inventory``: how fast the inventory's pages render at size.

A temporary local store with ``keys`` keys over ``pipelines`` pipelines (each requiring
``keys / pipelines`` names in its own scope; every 20th one missing, and 20 orphans beside
them, so the findings have work to do), an audit file of ``events`` records
(reads spread over 30 days and every key, some denials), then the pages served by uvicorn
on 127.0.0.1 and fetched over HTTP: the first request (the audit read from its start,
incrementally, line by line) and warm ones (only what was appended since: here a few
hundred new events before each). Each figure is the whole request: listing the store, its
version metadata, the audit's new lines, the findings, the HTML. Nothing is asserted:
the target (< 1 s for the matrix page) is printed as PASS or FAIL.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["run"]

TARGET_S = 1.0


def _manifest(root: Path, pipelines: int, per: int) -> Path:
    lines = ['env = "dev"', 'rotate_after = "90d"', "[backends.local]", 'type = "local"',
             "[audit]", 'sinks = [{ type = "file", path = "audit.jsonl" }]']
    for p in range(pipelines):
        names = ", ".join(f'"secret_{n:03d}"' for n in range(per))
        lines += [f"[pipelines.p{p:02d}]", f'scope = "team{p % 5}/p{p:02d}"',
                  f"requires = [{names}]", f'dags = ["dag_{p:02d}"]']
    path = root / "pipekey.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _audit(path: Path, keys: list[str], events: int, start: int = 0) -> None:
    day = 86400
    now = time.time()
    with open(path, "a", encoding="utf-8") as f:
        for i in range(start, start + events):
            key = keys[i % len(keys)]
            pipeline = key.split("/")[1]
            when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00",
                                 time.gmtime(now - (i * 7919 % (30 * day))))
            denied = i % 97 == 0
            f.write(json.dumps({
                "event": "deny" if denied else "read", "key": key,
                "outcome": "denied" if denied else "ok",
                "pipeline": "p00" if denied else pipeline, "run": f"{pipeline}__run_{i % 500}",
                "backend": "local", "version": "1", "latency_ms": 0.4, "cached": False,
                "detail": None, "time": when, "id": f"{i:032x}"}, sort_keys=True) + "\n")


def run(keys: int = 1000, pipelines: int = 50, events: int = 100_000,
        repeat: int = 5) -> dict[str, Any]:
    """Build the store and audit, serve the pages, time them (seconds)."""
    import uvicorn

    import pipekey
    from pipekey.backends.local import MASTER_KEY_ENV, generate_master_key

    from .ui.app import InventorySource, create_app

    per = max(1, keys // pipelines)
    with tempfile.TemporaryDirectory(prefix="pipekey-bench-inventory-") as tmp:
        root = Path(tmp)
        manifest = _manifest(root, pipelines, per)
        saved = os.environ.get(MASTER_KEY_ENV)
        os.environ[MASTER_KEY_ENV] = generate_master_key()
        try:
            lk = pipekey.load(manifest, env="dev")
            all_keys = [f"team{p % 5}/p{p:02d}/secret_{n:03d}"
                        for p in range(pipelines) for n in range(per)]
            # every 20th key missing, and 20 orphans: the findings have work to do
            orphans = [f"team{i % 5}/p{i:02d}/old_{i:03d}" for i in range(20)]
            started = time.perf_counter()
            for key in [k for i, k in enumerate(all_keys) if i % 20] + orphans:
                lk.set(key, f"fake-bench-{key}")
            seeded = time.perf_counter() - started
            audit = root / "audit.jsonl"
            _audit(audit, all_keys, events)
            source = InventorySource(lk)
            app = create_app(source)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                   access_log=False))
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                      daemon=True)
            thread.start()
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.02)
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                cold, size = _fetch(f"{base}/")
                findings = len(source.inventory().findings)
                pages: dict[str, list[float]] = {}
                written = events
                for _ in range(repeat):
                    _audit(audit, all_keys, 200, start=written)
                    written += 200
                    for name, path in (("matrix", "/"), ("findings", "/findings"),
                                       ("graph", "/graph"), ("pipeline", "/pipeline/p07"),
                                       ("key", f"/key/{all_keys[123]}")):
                        pages.setdefault(name, []).append(_fetch(base + path)[0])
            finally:
                server.should_exit = True
                thread.join(timeout=10)
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            lk.close()
        finally:
            if saved is None:
                os.environ.pop(MASTER_KEY_ENV, None)
            else:
                os.environ[MASTER_KEY_ENV] = saved
    warm = {name: statistics.median(times) for name, times in pages.items()}
    return {"keys": len(all_keys), "pipelines": pipelines, "audit_events": events,
            "seed_seconds": seeded, "cold_matrix_seconds": cold, "matrix_bytes": size,
            "warm_seconds": warm, "repeat": repeat, "target_seconds": TARGET_S,
            "pass": cold < TARGET_S and warm["matrix"] < TARGET_S,
            "maxrss_growth_kib": max(0, rss_after - rss_before),
            "audit_events_indexed": source.audit.events, "findings": findings}


def _fetch(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        size = len(response.read())
        assert response.status == 200
    return time.perf_counter() - started, size
