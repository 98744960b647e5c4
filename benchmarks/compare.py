"""``pipekey bench --compare``: pipekey against what teams use instead, on one moto server.

    python -m benchmarks.compare [--repeat 3] [--latency-ms 20] [--pipelines 20] [--json]

Run from a source checkout (this directory is not in the wheel); ``pipekey bench --compare``
loads this module from the checkout next to the installed package.

moto runs on 127.0.0.1 behind a proxy that adds a round-trip time (default 20 ms) to every
request and counts requests per API action. Seeded: ``--pipelines`` pipelines (20) with 40
secrets each at their own scope level, 10 shared secrets, in SSM; the same per key in
Secrets Manager for the Secrets Manager contenders, and one JSON document per pipeline. Then,
each ``--repeats`` times, with a fresh client per repeat (a new process's view):

* pipekey: one cold run (SSM), warm ``run.secret()``, 20 concurrent cold runs without and
  with the cache, and one cold run on Secrets Manager documents;
* a hand-written boto3 loop, one ``GetParameter`` per key;
* Airflow's ``SystemsManagerParameterStoreBackend`` and ``SecretsManagerBackend``, one lookup
  per key as Airflow does;
* dlt's ``AwsSecretsManagerProvider``;
* ``aws-secretsmanager-caching``.

Prints a table (median and spread of wall time, API calls by action, ratio to pipekey),
PASS/FAIL for the targets, and writes ``results.md``, ``results.json`` and PNG plots.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import threading
import time
import tracemalloc
import urllib.request
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from pipekey.errors import MissingDependency

from .proxy import LoopbackProxy

__all__ = ["run_comparison"]

SECRETS, SHARED, REGION = 40, 10, "eu-central-1"


@contextmanager
def _servers(rtt: float):
    """moto in a process of its own (its CPU work must not share our interpreter's lock),
    behind the latency proxy in this one."""
    import socket
    import subprocess
    import sys

    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise MissingDependency("pipekey bench --compare", "bench") from None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moto_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(moto_url + "/moto-api/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or moto.poll() is not None:
                moto.kill()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.2)
    proxy = LoopbackProxy(moto_url, rtt)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=proxy.url)
    try:
        yield moto_url, proxy
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        proxy.close()
        moto.terminate()
        moto.wait(timeout=30)


def _seed(moto_url: str, pipelines: int, tag: str) -> None:
    import boto3

    ssm = boto3.client("ssm", endpoint_url=moto_url, region_name=REGION)
    sm = boto3.client("secretsmanager", endpoint_url=moto_url, region_name=REGION)
    for p in range(pipelines):
        for i in range(SECRETS):
            ssm.put_parameter(Name=f"/{tag}/bench/p{p:02d}/secret_{i:02d}", Type="SecureString",
                              Value=f"fake-bench-{p}-{i}")
    for i in range(SHARED):
        ssm.put_parameter(Name=f"/{tag}/shared/shared_{i:02d}", Type="SecureString",
                          Value=f"fake-shared-{i}")
    for i in range(SECRETS):  # per key, for the one-lookup-per-key contenders
        sm.create_secret(Name=f"{tag}/bench/p00/secret_{i:02d}", SecretString=f"fake-sm-{i}")
        sm.create_secret(Name=f"dlt/sources/bench_p00/secret_{i:02d}",
                         SecretString=f"fake-dlt-{i}")
    sm.create_secret(Name=f"{tag}-doc/bench/p00", SecretString=json.dumps(
        {f"secret_{i:02d}": f"fake-doc-{i}" for i in range(SECRETS)}))
    return {"tag": tag}


def _manifest(tag: str, pipelines: int, cache: bool, sm: bool = False, shared: bool = True):
    from pipekey.manifest import parse_manifest

    backend = ({"type": "aws_secrets_manager", "prefix": f"{tag}-doc/"} if sm else
               {"type": "aws_ssm", "prefix": f"/{tag}", "max_concurrency": 16})
    backend["cache"] = {"ttl": 300} if cache else False  # remote stores are cached by default
    names = [f"secret_{i:02d}" for i in range(SECRETS)]
    pipes = {f"p{p:02d}": {"scope": f"bench/p{p:02d}", "requires": names,
                           **({"shared": [f"shared_{i:02d}" for i in range(SHARED)]}
                              if shared else {})}
             for p in range(pipelines)}
    if sm:  # one JSON document per pipeline: its fields are the keys
        pipes = {"p00": {"scope": "bench/p00", "requires": names}}
    return parse_manifest({"backends": {"store": backend}, "pipelines": pipes},
                          Path(f"/tmp/pipekey-bench-{uuid.uuid4().hex}.toml"))


def _pipekey(manifest):
    from pipekey.client import Pipekey, _build_chain

    chain = _build_chain(manifest, manifest.env)
    for backend in chain:
        getattr(backend, "inner", backend).client  # a warm client: measure the run, not boto3
    return Pipekey(chain.backends, manifest=manifest)


def _measure(name: str, proxy: LoopbackProxy, repeats: int, setup: Callable[[], Any],
             action: Callable[[Any], Any]) -> dict:
    times, nets, calls = [], [], Counter()
    for _ in range(repeats):
        state = setup()
        proxy.reset()
        start = time.perf_counter()
        action(state)
        times.append(time.perf_counter() - start)
        # moto answers one request at a time; AWS answers them in parallel: take moto's own
        # service time off the clock to count network round trips
        nets.append(max(0.0, times[-1] - _union(proxy.busy)))
        calls = Counter(proxy.counts)
    return {"name": name, "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "net_s": statistics.median(nets), "calls": dict(calls),
            "total_calls": sum(calls.values())}


def _union(intervals: list[tuple[float, float]]) -> float:
    """Total time covered by the intervals (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def run_comparison(rtt: float = 0.02, repeats: int = 3, pipelines: int = 20,
                   out: Path | None = None, progress: Callable[[str], None] = print) -> dict:
    """Run everything; returns the results (and writes them under ``out`` if given)."""
    import boto3

    tag = f"lkb{uuid.uuid4().hex[:6]}"
    keys = [f"secret_{i:02d}" for i in range(SECRETS)]
    rows: list[dict] = []
    with _servers(rtt) as (moto_url, proxy):
        progress(f"seeding {pipelines} pipelines x {SECRETS} secrets + {SHARED} shared ...")
        _seed(moto_url, pipelines, tag)

        def add(name: str, setup, action) -> None:
            progress(f"measuring {name} ...")
            rows.append(_measure(name, proxy, repeats, setup, action))

        def open_run(lk, pipeline="p00"):
            with lk.pipeline(pipeline):
                pass

        add("pipekey: one cold run (SSM)",
            lambda: _pipekey(_manifest(tag, 1, cache=False, shared=False)), open_run)
        add("pipekey: one cold run (Secrets Manager documents)",
            lambda: _pipekey(_manifest(tag, 1, cache=False, sm=True)), open_run)

        def concurrent(lk):
            threads = [threading.Thread(target=open_run, args=(lk, f"p{p:02d}"))
                       for p in range(pipelines)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)

        add(f"pipekey: {pipelines} concurrent cold runs",
            lambda: _pipekey(_manifest(tag, pipelines, cache=False)), concurrent)
        add(f"pipekey: {pipelines} concurrent cold runs, cached",
            lambda: _pipekey(_manifest(tag, pipelines, cache=True)), concurrent)

        add("boto3 loop: GetParameter per key",
            lambda: boto3.client("ssm", region_name=REGION), lambda c: [
            c.get_parameter(Name=f"/{tag}/bench/p00/{k}", WithDecryption=True) for k in keys])
        _airflow(add, tag, keys, pipelines)
        _dlt_provider(add, keys)
        _aws_caching(add, tag, keys)

        warm = _warm_read(tag)
        memory = _memory_per_run()
    base = rows[0]
    for row in rows:
        row["ratio_time"] = round(row["median_s"] / base["median_s"], 2)
        row["ratio_calls"] = round(row["total_calls"] / max(base["total_calls"], 1), 2)
    results = {"rtt_s": rtt, "repeats": repeats, "pipelines": pipelines, "rows": rows,
               "warm_secret_ns": warm, "memory_per_run_bytes": memory}
    results["targets"] = _targets(results)
    if out is not None:
        _write(results, out)
    return results


def _airflow(add, tag: str, keys: list[str], pipelines: int) -> None:
    try:
        from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend
        from airflow.providers.amazon.aws.secrets.systems_manager import (
            SystemsManagerParameterStoreBackend)
    except ImportError:
        return
    ssm = lambda: SystemsManagerParameterStoreBackend(  # noqa: E731
        variables_prefix=f"/{tag}/bench/p00", connections_prefix=None, config_prefix=None,
        region_name=REGION)
    add("Airflow SystemsManagerParameterStoreBackend", ssm,
        lambda b: [b.get_variable(k) for k in keys])
    sm = lambda: SecretsManagerBackend(  # noqa: E731
        variables_prefix=f"{tag}/bench/p00", connections_prefix=None, config_prefix=None,
        region_name=REGION)
    add("Airflow SecretsManagerBackend", sm, lambda b: [b.get_variable(k) for k in keys])

    def many(_):
        def one(p: int) -> None:
            b = SystemsManagerParameterStoreBackend(
                variables_prefix=f"/{tag}", connections_prefix=None, config_prefix=None,
                region_name=REGION)
            for k in keys:
                b.get_variable(f"bench/p{p:02d}/{k}")
            for i in range(SHARED):
                b.get_variable(f"shared/shared_{i:02d}")
        threads = [threading.Thread(target=one, args=(p,)) for p in range(pipelines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)

    add(f"Airflow SSM backend: {pipelines} concurrent runs", lambda: None, many)


def _dlt_provider(add, keys: list[str]) -> None:
    try:
        from dlt.common.configuration.providers.aws_secrets import AwsSecretsManagerProvider
        from dlt.common.configuration.specs import AwsCredentials
    except ImportError:
        return

    def setup():
        creds = AwsCredentials()
        creds.update({"aws_access_key_id": "bench", "aws_secret_access_key": "bench",
                      "region_name": REGION, "endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
        creds.resolve()
        return AwsSecretsManagerProvider(creds, only_secrets=False, only_toml_fragments=False)

    add("dlt AwsSecretsManagerProvider", setup,
        lambda p: [p.get_value(k, str, None, "sources", "bench_p00") for k in keys])


def _aws_caching(add, tag: str, keys: list[str]) -> None:
    try:
        import boto3
        from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
    except ImportError:
        return
    add("aws-secretsmanager-caching (cold)",
        lambda: SecretCache(SecretCacheConfig(), boto3.client("secretsmanager",
                                                              region_name=REGION)),
        lambda c: [c.get_secret_string(f"{tag}/bench/p00/{k}") for k in keys])


def _warm_read(tag: str) -> float:
    import timeit

    from pipekey.client import Pipekey
    from pipekey.testing import MemoryBackend

    manifest = _manifest(tag, 1, cache=False)
    data = {f"bench/p00/secret_{i:02d}": "fake" for i in range(SECRETS)}
    data.update({f"shared/shared_{i:02d}": "fake" for i in range(SHARED)})
    lk = Pipekey([MemoryBackend("mem", data)], manifest=manifest)
    with lk.pipeline("p00") as run:
        return min(timeit.repeat(lambda: run.secret("secret_07"), number=200_000,
                                 repeat=5)) / 200_000 * 1e9


def _memory_per_run(runs: int = 100) -> float:
    """Bytes held per open run of 40 secrets (tracemalloc, 100 runs open at once)."""
    from contextlib import ExitStack

    from pipekey.client import Pipekey
    from pipekey.manifest import parse_manifest
    from pipekey.testing import MemoryBackend

    names = [f"secret_{i:02d}" for i in range(SECRETS)]
    data = {f"m/a{r}/{n}": f"fake-{r}-{n}-" + "x" * 24 for r in range(runs) for n in names}
    manifest = parse_manifest({"pipelines": {"p": {"scope": "m/{account}", "requires": names}}},
                              Path("m.toml"))
    lk = Pipekey([MemoryBackend("mem", data)], manifest=manifest)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    with ExitStack() as stack:
        for r in range(runs):
            stack.enter_context(lk.pipeline("p", account=f"a{r}", run_name=f"r{r}"))
        after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    return grown / runs


def _targets(results: dict) -> list[dict]:
    rows = {r["name"]: r for r in results["rows"]}
    cold = rows["pipekey: one cold run (SSM)"]
    n = results["pipelines"]
    ours = rows[f"pipekey: {n} concurrent cold runs, cached"]["total_calls"]
    theirs = rows.get(f"Airflow SSM backend: {n} concurrent runs", {}).get("total_calls")
    rtt = results["rtt_s"]
    return [
        {"target": "40-secret pipeline ready cold within 2 round trips",
         "value": f"{cold['net_s'] / rtt:.2f} RTT net of moto's service time "
                  f"({cold['median_s'] / rtt:.2f} raw)",
         "pass": cold["net_s"] <= 2 * rtt},
        {"target": "at most 4 SSM calls for it",
         "value": str(cold["calls"].get("GetParameters", 0)),
         "pass": cold["total_calls"] <= 4},
        {"target": "warm run.secret() under 2 us",
         "value": f"{results['warm_secret_ns']:.0f} ns", "pass": results["warm_secret_ns"] < 2000},
        {"target": f"{n} concurrent cold runs: >= 10x fewer API calls than Airflow's backend",
         "value": f"{ours} vs {theirs}" if theirs else "Airflow not installed",
         "pass": bool(theirs) and theirs >= 10 * ours},
        {"target": "under 50 KB per open run of 40 secrets",
         "value": f"{results['memory_per_run_bytes'] / 1024:.1f} KB",
         "pass": results["memory_per_run_bytes"] < 50 * 1024},
    ]


def markdown(results: dict) -> str:
    lines = [f"Round trip {results['rtt_s'] * 1000:g} ms, {results['repeats']} repeats, "
             f"{results['pipelines']} pipelines x {SECRETS} secrets + {SHARED} shared.", "",
             "Times are wall clock; 'net' takes off the time moto spent serving (it answers "
             "one request at a time, AWS answers in parallel).", "",
             "| contender | median | spread | net of moto | API calls | by action | "
             "time vs pipekey | calls vs pipekey |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in results["rows"]:
        actions = ", ".join(f"{k} {v}" for k, v in sorted(r["calls"].items()))
        lines.append(f"| {r['name']} | {r['median_s'] * 1000:.0f} ms | "
                     f"{r['min_s'] * 1000:.0f}-{r['max_s'] * 1000:.0f} ms | "
                     f"{r['net_s'] * 1000:.0f} ms | {r['total_calls']} | "
                     f"{actions} | {r['ratio_time']}x | {r['ratio_calls']}x |")
    lines += ["", "| target | measured | result |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'PASS' if t['pass'] else 'FAIL'} |"
              for t in results["targets"]]
    return "\n".join(lines) + "\n"


def _write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = [r["name"] for r in results["rows"]]
    for field, label, file in (("median_s", "wall time (s)", "time.png"),
                               ("total_calls", "API calls", "calls.png")):
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) + 1.5))
        ax.barh(names[::-1], [r[field] for r in results["rows"]][::-1],
                color=["#2b8a3e" if n.startswith("pipekey") else "#868e96" for n in names][::-1])
        ax.set_xlabel(label)
        ax.set_title(f"{label}, {results['rtt_s'] * 1000:g} ms round trip")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        (out / file).write_bytes(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.compare``: run the comparison, print the table (or JSON)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--pipelines", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from contextlib import redirect_stdout

    with redirect_stdout(sys.stderr):  # Airflow and others log to stdout when imported
        results = run_comparison(rtt=args.latency_ms / 1000, repeats=args.repeat,
                                 pipelines=args.pipelines, out=args.out,
                                 progress=lambda m: print(m, file=sys.stderr))
    print(json.dumps(results, indent=2) if args.json else markdown(results))
    return 0 if all(t["pass"] for t in results["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
