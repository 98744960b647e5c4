"""Benchmarks printed by ``pipekey bench``: how fast a run becomes ready, and warm reads.

Numbers, not assertions: they are measured on the machine at hand and printed.

* ``ready_local``: a pipeline needing 40 secrets, opened cold on the local encrypted store.
* ``ready_remote``: the same on two simulated remote stores with ``latency`` each, the first
  holding every secret; ready time is shown in round trips, with the store calls a run costs
  under ``lookup = "sequential"`` (``ready_remote``) and ``"parallel"``
  (``ready_remote_parallel``).
* ``warm_secret`` / ``warm_get``: one ``run.secret(name)`` / ``run.get(key)`` after prefetch.
* ``startup``: fresh interpreters. ``import pipekey`` (timed inside the child), and the wall
  time of ``pipekey run --pipeline P -- true`` on a one-secret local store over a bare
  ``python -c pass``; medians, against :data:`STARTUP_TARGETS_MS`, PASS/FAIL printed. Beside
  them, the part of the run's figure that validating the manifest costs (pydantic's import and
  the models' first build), timed inside a fresh interpreter: what remains while pydantic is
  the manifest's one schema.
* ``environments``: a manifest whose cached local store is ``{env}.db``, one run in each of
  ``ENVIRONMENTS`` environment names: resident memory growth per open environment, and the
  chains and shared caches alive while open (bounded by ``MAX_ENVIRONMENTS`` and
  ``MAX_SHARED``) and after ``close()``.
* ``credentials`` (``pipekey bench --credentials NAME``): ``runs`` runs opening at once, each
  minting its own login from the manifest's ``[credentials.NAME]`` against the real database:
  time to ready (median, p90, slowest), time to close, and the logins left (should be 0).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .backends.local import LocalBackend, generate_master_key
from .client import Pipekey
from .manifest import parse_manifest
from .testing import MemoryBackend

if TYPE_CHECKING:
    from .manifest import Manifest

__all__ = ["run_benchmarks"]

SECRETS = 40

#: start-up targets (issue 19), milliseconds: ``import pipekey``, and ``pipekey run ... --
#: true`` wall time over ``python -c pass``
STARTUP_TARGETS_MS = {"import": 60.0, "run_over_python": 120.0}

_TIME_IMPORT = ("import time; t = time.perf_counter(); import pipekey; "
                "print(time.perf_counter() - t)")
#: pydantic's import, then that plus pipekey.manifest's import and a first validation (the
#: models' validators are built on first use), in seconds
_TIME_MANIFEST = ("import time; t = time.perf_counter(); from pydantic import BaseModel; "
                  "p = time.perf_counter(); from pipekey.manifest import load_manifest; "
                  "load_manifest(); print(p - t, time.perf_counter() - t)")
_STARTUP_MANIFEST = """chain = ["local"]
[backends.local]
type = "local"
path = "store.db"
[pipelines.startup]
scope = "bench/startup"
requires = ["token"]
"""


def _manifest(names: list[str]) -> Manifest:
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


def _ready(lk: Pipekey, repeat: int,
           fresh: Callable[[], Pipekey] | None = None) -> list[float]:
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


def _many_runs(manifest: Manifest, data: dict[str, str], latency: float,
               runs: int = 200) -> dict[str, Any]:
    """200 runs of one pipeline starting together, without and with the cache: store calls."""
    from .cache import CacheConfig, wrap

    out: dict[str, Any] = {}
    for label, cached in (("uncached", False), ("cached", True)):
        store = MemoryBackend("remote", data, latency=latency)
        backend = wrap(store, CacheConfig(ttl=300)) if cached else store
        lk = Pipekey([backend], manifest=manifest)
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

        def fresh() -> Pipekey:  # a new process's view: connection and key opened cold
            return Pipekey([LocalBackend("local", Path(tmp) / "bench.db", master_key=key)],
                            manifest=manifest)

        results["ready_local"] = _stats(_ready(fresh(), repeat, fresh))

    for lookup, label in (("sequential", "ready_remote"), ("parallel", "ready_remote_parallel")):
        remote = [MemoryBackend("remote_a", data, latency=latency),
                  MemoryBackend("remote_b", {}, latency=latency)]
        lk = Pipekey(remote, manifest=manifest, lookup=lookup)
        ready: dict[str, Any] = _stats(_ready(lk, max(3, repeat // 2)))
        ready["round_trips"] = ready["median"] / latency if latency else None
        ready["calls_per_run"] = sum(len(b.calls) for b in remote) / ready["runs"]
        results[label] = ready

    results["runs_200"] = _many_runs(manifest, data, latency)
    results["environments"] = environments_memory()

    lk = Pipekey([MemoryBackend("mem", data)], manifest=manifest)
    with lk.pipeline("bench", account="acct_1") as run:
        number = 200_000
        for label, stmt in (("warm_secret_ns", lambda: run.secret("secret_07")),
                            ("warm_get_ns", lambda: run.get("bench/acct_1/secret_07"))):
            best = min(timeit.repeat(stmt, number=number, repeat=5))
            results[label] = best / number * 1e9
    return results


ENVIRONMENTS = 40
_ENV_MANIFEST = """chain = ["local"]
[backends.local]
type = "local"
path = "{env}.db"
cache = true
[pipelines.bench]
scope = "bench"
requires = ["token"]
"""


def _rss_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def environments_memory(n: int = ENVIRONMENTS) -> dict[str, Any]:
    """One run in each of ``n`` environments of one ``Pipekey``: memory and live state."""
    import gc

    from .cache import shared_count
    from .client import MAX_ENVIRONMENTS, load

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pipekey.toml").write_text(_ENV_MANIFEST, encoding="utf-8")
        key = generate_master_key()
        envs = [f"bench_env_{i:03d}" for i in range(n)]
        for env in envs:
            store = LocalBackend("local", Path(tmp) / f"{env}.db", master_key=key)
            store.put("bench/token", f"fake-bench-{env}")
            store.close()
        previous = os.environ.get("PIPEKEY_MASTER_KEY")
        os.environ["PIPEKEY_MASTER_KEY"] = key
        try:
            baseline = shared_count()
            lk = load(Path(tmp) / "pipekey.toml", env=envs[0])
            gc.collect()
            before = _rss_bytes()
            for env in envs:
                with lk.pipeline("bench", env=env) as run:
                    run.secret("token")
            gc.collect()
            grown = _rss_bytes() - before
            open_envs, open_caches = len(lk.open_environments), shared_count() - baseline
            lk.close()
            gc.collect()
            after_close = _rss_bytes() - before
        finally:
            if previous is None:
                os.environ.pop("PIPEKEY_MASTER_KEY", None)
            else:
                os.environ["PIPEKEY_MASTER_KEY"] = previous
    return {"environments": n, "rss_growth_bytes": grown,
            "rss_per_environment_bytes": grown / n, "rss_after_close_bytes": after_close,
            "environments_open": open_envs, "environments_bound": MAX_ENVIRONMENTS + 1,
            "caches_open": open_caches, "environments_after_close": len(lk.open_environments),
            "caches_after_close": shared_count() - baseline}


def credentials_burst(lk: Pipekey, definition: str, runs: int = 50) -> dict[str, Any]:
    """``runs`` runs opening at once, each minting a login of ``definition``; seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from .manifest import PipelineConfig
    from .run import Run

    minter = lk.minter(definition)
    config = PipelineConfig(scope="bench/credentials",
                            connections={"db": f"dynamic:{definition}"})
    barrier = threading.Barrier(runs, timeout=120)

    def one(i: int) -> tuple[float, float, str]:
        run = Run("bench-credentials", config, lk.chain_for(lk.env), lk.env, {},
                  f"bench-{i}", auditor=lk.audit, minters={definition: minter})
        barrier.wait()
        start = time.perf_counter()
        with run:
            ready = time.perf_counter() - start
            login = run.lease("db").login
            closing = time.perf_counter()
        return ready, time.perf_counter() - closing, login

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=runs, thread_name_prefix="pipekey-bench") as pool:
        results = list(pool.map(one, range(runs), timeout=600))
    wall = time.perf_counter() - start
    return {"definition": definition, "runs": runs, "wall": wall,
            "ready": _stats([r[0] for r in results]), "close": _stats([r[1] for r in results]),
            "logins": len({r[2] for r in results})}


def _timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and stdout of one fresh child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        # the child's stderr is pipekey's own one-line error (fake values only); show its end
        raise RuntimeError(f"start-up benchmark: {argv[1:4]} exited {done.returncode}: "
                           f"{done.stderr.strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def startup(repeat: int = 10) -> dict[str, Any]:
    """Start-up cost in fresh interpreters (``repeat`` of each, interleaved so that a change in
    machine load hits each alike); milliseconds, medians.

    ``import_ms`` is ``import pipekey`` timed inside the child; ``manifest_ms`` is pydantic's
    import (``pydantic_import_ms``), ``pipekey.manifest``'s and a first ``load_manifest()``,
    timed inside the child: the part of the run's figure that validating the manifest costs.
    ``run_over_python_ms`` is the wall time of ``python -m pipekey run --pipeline startup --
    true`` (one fake secret on a temporary local store) minus that of ``python -c pass``. CPU
    medians are given beside the wall ones: on a busy machine they move less.
    """
    python = sys.executable
    child = [shutil.which("true") or "true"]
    with tempfile.TemporaryDirectory() as tmp:
        key = generate_master_key()
        store = LocalBackend("local", Path(tmp) / "store.db", master_key=key)
        store.put("bench/startup/token", "fake-startup-token")
        store.close()
        (Path(tmp) / "pipekey.toml").write_text(_STARTUP_MANIFEST, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKEY")}
        env.update(PIPEKEY_CONFIG=str(Path(tmp) / "pipekey.toml"), PIPEKEY_MASTER_KEY=key)
        # Measure what an installed package costs: modules load from cached bytecode (pip
        # writes it at install). A private cache keeps the source tree untouched even where
        # PYTHONDONTWRITEBYTECODE is set; the warm-up below fills it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        commands = {
            "python": [python, "-c", "pass"],
            "import": [python, "-c", _TIME_IMPORT],
            "manifest": [python, "-c", _TIME_MANIFEST],
            "run": [python, "-m", "pipekey", "run", "--pipeline", "startup", "--", *child],
        }
        for argv in commands.values():  # warm the OS file cache and the bytecode cache
            _timed(argv, env, tmp)
        samples: dict[str, list[tuple[float, float, str]]] = {name: [] for name in commands}
        for _ in range(repeat):
            for name, argv in commands.items():
                samples[name].append(_timed(argv, env, tmp))

    def median_ms(name: str, index: int) -> float:
        return statistics.median(float(sample[index]) for sample in samples[name]) * 1000

    def inside_ms(name: str, field: int = -1) -> float:  # timed inside the child, printed
        return statistics.median(float(s[2].split()[field]) for s in samples[name]) * 1000

    import_ms = inside_ms("import")
    over = median_ms("run", 0) - median_ms("python", 0)
    targets = STARTUP_TARGETS_MS
    load = os.getloadavg()[0] if sys.platform != "win32" else None
    return {
        "runs": repeat,
        "python_ms": median_ms("python", 0),
        "python_cpu_ms": median_ms("python", 1),
        "import_ms": import_ms,
        "import_process_ms": median_ms("import", 0) - median_ms("python", 0),
        "run_ms": median_ms("run", 0),
        "run_cpu_ms": median_ms("run", 1),
        "run_over_python_ms": over,
        "run_over_python_cpu_ms": median_ms("run", 1) - median_ms("python", 1),
        "manifest_ms": inside_ms("manifest"),
        "pydantic_import_ms": inside_ms("manifest", 0),
        "targets_ms": dict(targets),
        "import_pass": import_ms <= targets["import"],
        "run_pass": over <= targets["run_over_python"],
        # wall numbers are only comparable on an idle CPU: the 1-minute load shows how busy
        "load_average": load,
        "cpus": os.cpu_count(),
    }
