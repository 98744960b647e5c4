"""Benchmarks printed by ``latchkey bench``: how fast a run becomes ready, and warm reads.

Numbers, not assertions: they are measured on the machine at hand and printed.

* ``ready_local``: a pipeline needing 40 secrets, opened cold on the local encrypted store.
* ``ready_remote``: the same on two simulated remote stores with ``latency`` each; ready
  time is shown in round trips (the backends are asked in parallel, once each).
* ``warm_secret`` / ``warm_get``: one ``run.secret(name)`` / ``run.get(key)`` after prefetch.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

from .backends.local import LocalBackend, generate_master_key
from .client import Latchkey
from .manifest import parse_manifest
from .testing import MemoryBackend

__all__ = ["run_benchmarks"]

SECRETS = 40


def _manifest(names: list[str]):
    return parse_manifest({"pipelines": {"bench": {
        "scope": "bench/{account}", "requires": names}}}, Path("bench.toml"))


def _seed(n: int) -> tuple[list[str], dict[str, str]]:
    names = [f"secret_{i:02d}" for i in range(n)]
    # every secret at the pipeline's own scope level, and one shared secret beside them
    data = {f"bench/acct_1/{name}": f"fake-bench-{i}" for i, name in enumerate(names)}
    data["shared/slack_token"] = "fake-bench-shared"
    return names, data


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": statistics.median(ordered), "p90": ordered[int(len(ordered) * 0.9) - 1],
            "min": ordered[0], "max": ordered[-1], "runs": len(ordered)}


def _ready(lk: Latchkey, repeat: int, fresh=None) -> list[float]:
    samples = []
    for _ in range(repeat):
        if fresh is not None:
            lk = fresh()
        start = time.perf_counter()
        with lk.pipeline("bench", account="acct_1"):
            samples.append(time.perf_counter() - start)
        if fresh is not None:
            lk.close()
    return samples


def _many_runs(manifest, data: dict[str, str], latency: float, runs: int = 200) -> dict:
    """200 runs of one pipeline starting together, without and with the cache: store calls."""
    from .cache import CacheConfig, CachedBackend

    out = {}
    for label, cached in (("uncached", False), ("cached", True)):
        store = MemoryBackend("remote", data, latency=latency)
        backend = CachedBackend(store, CacheConfig(ttl=300)) if cached else store
        lk = Latchkey([backend], manifest=manifest)
        barrier = threading.Barrier(runs)

        def one() -> None:
            # Threads are joined before the loop moves on: B023's late binding cannot bite.
            barrier.wait(timeout=60)  # noqa: B023
            with lk.pipeline("bench", account="acct_1"):  # noqa: B023
                pass

        start = time.perf_counter()
        threads = [threading.Thread(target=one) for _ in range(runs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        out[label] = {"store_calls": len(store.calls),
                      "seconds": round(time.perf_counter() - start, 3)}
    out["runs"] = runs
    out["calls_saved"] = out["uncached"]["store_calls"] - out["cached"]["store_calls"]
    return out


def run_benchmarks(repeat: int = 20, latency: float = 0.02) -> dict[str, Any]:
    """Run every benchmark; returns the numbers (seconds unless the key says otherwise)."""
    names, data = _seed(SECRETS)
    manifest = _manifest(names)
    results: dict[str, Any] = {"secrets": SECRETS, "repeat": repeat, "latency_s": latency}
    with tempfile.TemporaryDirectory() as tmp:
        key = generate_master_key()
        store = LocalBackend("local", Path(tmp) / "bench.db", master_key=key)
        for k, v in data.items():
            store.put(k, v)
        store.close()

        def fresh() -> Latchkey:  # a new process's view: connection and key opened cold
            return Latchkey([LocalBackend("local", Path(tmp) / "bench.db", master_key=key)],
                            manifest=manifest)

        results["ready_local"] = _stats(_ready(fresh(), repeat, fresh))

    remote = [MemoryBackend("remote_a", data, latency=latency),
              MemoryBackend("remote_b", {}, latency=latency)]
    lk = Latchkey(remote, manifest=manifest)
    ready = _stats(_ready(lk, max(3, repeat // 2)))
    ready["round_trips"] = ready["median"] / latency if latency else None
    ready["calls_per_run"] = sum(len(b.calls) for b in remote) / ready["runs"]
    results["ready_remote"] = ready

    results["runs_200"] = _many_runs(manifest, data, latency)

    lk = Latchkey([MemoryBackend("mem", data)], manifest=manifest)
    with lk.pipeline("bench", account="acct_1") as run:
        number = 200_000
        for label, stmt in (("warm_secret_ns", lambda: run.secret("secret_07")),
                            ("warm_get_ns", lambda: run.get("bench/acct_1/secret_07"))):
            best = min(timeit.repeat(stmt, number=number, repeat=5))
            results[label] = best / number * 1e9
    return results
