"""Benchmarks printed by ``pipekey bench``: how fast a run becomes ready, and warm reads.

Numbers, not assertions: they are measured on the machine at hand and printed.

* ``ready_local``: a pipeline needing 40 secrets, opened cold on the local encrypted store.
* ``ready_remote``: the same on two simulated remote stores with ``latency`` each, the first
  holding every secret; ready time is shown in round trips, with the store calls a run costs
  under ``lookup = "sequential"`` (``ready_remote``) and ``"parallel"``
  (``ready_remote_parallel``).
* ``warm_secret`` / ``warm_get``: one ``run.secret(name)`` / ``run.get(key)`` after prefetch.
* ``startup``: fresh interpreters, interleaved with a bare ``python -c pass``; CPU and wall
  medians over it, against :data:`STARTUP_TARGETS_MS` (CPU: on a shared machine it moves
  less than wall), PASS/FAIL printed: ``pipekey run --pipeline P -- true`` and ``pipekey get
  KEY`` on a local store, for the minimal manifest and a realistic one
  (:func:`realistic_manifest`: 30 pipelines, teams, credentials, 4 backends), ``pipekey
  --help``, ``pipekey run --help``, ``import pipekey`` (timed inside the child), and loading
  the realistic manifest in-process (timed inside a fresh child: its msgspec validation
  cold, and ``load_manifest()`` whole, with TOML and pipekey's own checks, cold and warm).
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

#: start-up targets (issues 19 and 27), milliseconds: ``import pipekey`` inside the child; the
#: CPU time of ``pipekey run --pipeline P -- true``, ``pipekey get KEY`` and ``pipekey --help``
#: over ``python -c pass``; loading the realistic manifest in-process (its validation cold,
#: and ``load_manifest()`` whole, warm)
STARTUP_TARGETS_MS = {"import": 60.0, "run_over_python_cpu": 120.0,
                      "get_over_python_cpu": 100.0, "help_over_python_cpu": 60.0,
                      "manifest_validate": 5.0, "manifest_load": 5.0}

_TIME_IMPORT = ("import time; t = time.perf_counter(); import pipekey; "
                "print(time.perf_counter() - t)")
#: in a fresh child, seconds: the modules' import; the msgspec validation of every table of
#: the manifest, cold (its backends' modules imported first); load_manifest() whole (TOML,
#: validation, pipekey's checks) the first time and the median of 9 more
_TIME_MANIFEST = """
import sys, time
from pathlib import Path
t = time.perf_counter()
from pipekey import manifest as m
from pipekey._compat import tomllib
from pipekey.backends import backend_class
imported = time.perf_counter() - t
path = Path(sys.argv[1]).resolve()
raw = tomllib.loads(path.read_text(encoding="utf-8"))
for body in raw.get("backends", {}).values():
    backend_class(body["type"])
t = time.perf_counter()
doc = m._convert(path, raw, m._Document, ())
for n, b in doc.pipelines.items():
    m._convert(path, b, m.PipelineConfig, ("pipelines", n))
for n, b in doc.teams.items():
    m._convert(path, b, m.TeamConfig, ("teams", n))
backends = {n: m._backend_config(path, n, b) for n, b in doc.backends.items()}
for n, b in doc.credentials.items():
    m._credential_config(path, n, b, backends)
validate = time.perf_counter() - t
t = time.perf_counter()
m.load_manifest(path)
cold = time.perf_counter() - t
warm = []
for _ in range(9):
    t = time.perf_counter()
    m.load_manifest(path)
    warm.append(time.perf_counter() - t)
print(imported, validate, cold, sorted(warm)[4])
"""
_STARTUP_MANIFEST = """chain = ["local"]
[backends.local]
type = "local"
path = "store.db"
[pipelines.startup]
scope = "bench/startup"
requires = ["token"]
"""


REALISTIC_TEAMS = ("marketing", "finance", "ops")


def realistic_manifest(pipelines: int = 30) -> str:
    """A manifest as a data platform writes one (about 400 lines): 4 backends (env, the local
    store, files, SSM with a cache and a rate limit), 3 teams with read roles, 2 credentials
    minted per run, ``pipelines`` pipelines with scopes, names, stored and minted connections,
    grants, DAG patterns, AWS roles, teams and variables; and the start-up pipeline."""
    lines = [
        'env = "dev"', 'environments = ["dev", "staging", "prod"]',
        'chain = ["env", "local", "files", "ssm"]', "",
        "[backends.env]", 'type = "env"', 'prefix = "PIPEKEY__"', "",
        "[backends.local]", 'type = "local"', 'path = "store.db"', "",
        "[backends.files]", 'type = "files"', 'path = "secrets.{env}.toml"', "optional = true",
        "",
        "[backends.ssm]", 'type = "aws_ssm"', 'prefix = "/data-platform/{env}"',
        'region = "eu-central-1"', 'endpoint_url = "http://127.0.0.1:9"',
        "cache = { ttl = 600, negative_ttl = 60, max_entries = 5000 }",
        "rate_limit = { rps = 20, burst = 40 }", "",
        "[pipelines.startup]", 'scope = "bench/startup"', 'requires = ["token"]', "",
    ]
    for team in REALISTIC_TEAMS:
        lines += [f"[teams.{team}]",
                  f'aws_role = {{ arn = "arn:aws:iam::123456789012:role/{team}-read", '
                  f'session_name = "{team}-reads" }}', ""]
    for name, db in (("warehouse_rw", "warehouse"), ("reporting_ro", "reporting")):
        lines += [f"[credentials.{name}]", 'type = "postgres_role"',
                  f'admin = "admin/{db}_{{env}}"', 'member_of = ["etl_writer", "etl_reader"]',
                  "ttl = 3600", "connection_limit = 3", ""]
    for i in range(pipelines):
        team = REALISTIC_TEAMS[i % len(REALISTIC_TEAMS)]
        minted = "warehouse_rw" if i % 2 else "reporting_ro"
        lines += [
            f"[pipelines.{team}_p{i:02d}]",
            f'description = "{team} pipeline {i}"',
            f'scope = "{team}/p{i:02d}/{{account}}"',
            'requires = ["access_token", "app_secret", "client_id"]',
            'optional = ["refresh_token"]',
            f'connections = {{ wh_p{i:02d} = "connections/{team}_wh_{{env}}", '
            f'db_p{i:02d} = "dynamic:{minted}" }}',
            f'grants = ["reference/{team}/currency_rates"]',
            f'dags = ["{team}_p{i:02d}*"]',
            f'aws_role = {{ arn = "arn:aws:iam::123456789012:role/{team}-p{i:02d}", '
            "duration = 900 }",
            f'teams = ["{team}"]',
            f'env_vars = {{ ACCOUNT_NAME = "{team}_p{i:02d}" }}',
            "",
        ]
    return "\n".join(lines) + "\n"


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

    For each manifest (``minimal``: one pipeline on a local store; ``realistic``:
    :func:`realistic_manifest`), ``run_<manifest>`` is ``python -m pipekey run --pipeline
    startup -- true`` and ``get_<manifest>`` is ``python -m pipekey get KEY`` (one fake secret
    on a temporary local store), each as ``{"cpu": ..., "wall": ...}`` over ``python -c pass``;
    ``help`` and ``run_help`` likewise for ``pipekey --help`` and ``pipekey run --help``.
    ``import_ms`` is ``import pipekey`` timed inside the child. ``manifest`` is timed inside a
    child on the realistic manifest: ``validate_ms`` (msgspec over every table, cold),
    ``load_cold_ms`` and ``load_warm_ms`` (``load_manifest()`` whole) and ``import_ms`` (the
    manifest module and the backends' registry).
    """
    python = sys.executable
    child = [shutil.which("true") or "true"]
    with tempfile.TemporaryDirectory() as tmp:
        key = generate_master_key()
        for kind, text in (("minimal", _STARTUP_MANIFEST), ("realistic", realistic_manifest())):
            folder = Path(tmp) / kind
            folder.mkdir()
            store = LocalBackend("local", folder / "store.db", master_key=key)
            store.put("bench/startup/token", "fake-startup-token")
            store.close()
            (folder / "pipekey.toml").write_text(text, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKEY")}
        env.update(PIPEKEY_MASTER_KEY=key)
        # Measure what an installed package costs: modules load from cached bytecode (pip
        # writes it at install). A private cache keeps the source tree untouched even where
        # PYTHONDONTWRITEBYTECODE is set; the warm-up below fills it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        pipekey = [python, "-m", "pipekey"]
        commands: dict[str, tuple[list[str], str]] = {
            "python": ([python, "-c", "pass"], "minimal"),
            "import": ([python, "-c", _TIME_IMPORT], "minimal"),
            "manifest": ([python, "-c", _TIME_MANIFEST, "pipekey.toml"], "realistic"),
            "help": ([*pipekey, "--help"], "minimal"),
            "run_help": ([*pipekey, "run", "--help"], "minimal"),
        }
        for kind in ("minimal", "realistic"):
            commands[f"run_{kind}"] = ([*pipekey, "run", "--pipeline", "startup", "--", *child],
                                       kind)
            commands[f"get_{kind}"] = ([*pipekey, "get", "bench/startup/token"], kind)

        def one(name: str) -> tuple[float, float, str]:
            argv, kind = commands[name]
            folder = Path(tmp) / kind
            return _timed(argv, {**env, "PIPEKEY_CONFIG": str(folder / "pipekey.toml")},
                          str(folder))

        for name in commands:  # warm the OS file cache and the bytecode cache
            one(name)
        samples: dict[str, list[tuple[float, float, str]]] = {name: [] for name in commands}
        for _ in range(repeat):
            for name in commands:
                samples[name].append(one(name))

    def median_ms(name: str, index: int) -> float:
        return statistics.median(float(sample[index]) for sample in samples[name]) * 1000

    def inside_ms(name: str, field: int = -1) -> float:  # timed inside the child, printed
        return statistics.median(float(s[2].split()[field]) for s in samples[name]) * 1000

    def over(name: str) -> dict[str, float]:
        return {"cpu": median_ms(name, 1) - median_ms("python", 1),
                "wall": median_ms(name, 0) - median_ms("python", 0)}

    targets = STARTUP_TARGETS_MS
    results: dict[str, Any] = {
        "runs": repeat,
        "python_ms": median_ms("python", 0),
        "python_cpu_ms": median_ms("python", 1),
        "import_ms": inside_ms("import"),
        "manifest": {"import_ms": inside_ms("manifest", 0),
                     "validate_ms": inside_ms("manifest", 1),
                     "load_cold_ms": inside_ms("manifest", 2),
                     "load_warm_ms": inside_ms("manifest", 3)},
        "targets_ms": dict(targets),
    }
    for name in ("run_minimal", "run_realistic", "get_minimal", "get_realistic", "help",
                 "run_help"):
        results[name] = over(name)
    results["pass"] = {
        "import": results["import_ms"] <= targets["import"],
        **{f"{c}_{k}": results[f"{c}_{k}"]["cpu"] <= targets[f"{c}_over_python_cpu"]
           for c in ("run", "get") for k in ("minimal", "realistic")},
        "help": results["help"]["cpu"] <= targets["help_over_python_cpu"],
        "run_help": results["run_help"]["cpu"] <= targets["help_over_python_cpu"],
        "manifest_validate": results["manifest"]["validate_ms"] <= targets["manifest_validate"],
        "manifest_load": results["manifest"]["load_warm_ms"] <= targets["manifest_load"],
    }
    # wall numbers are only comparable on an idle CPU: the 1-minute load shows how busy
    results["load_average"] = os.getloadavg()[0] if sys.platform != "win32" else None
    results["cpus"] = os.cpu_count()
    return results
