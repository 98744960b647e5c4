"""Time to a ready run of 40 secrets in a multi-team Airflow deployment: broker vs direct.

    python benchmarks/airflow_broker.py [--repeat 20] [--dir DIR]

One deployment (examples/airflow/deploy.py with ``teams=`` and ``broker=True``: api-server,
scheduler with LocalExecutor, dag-processor, on 127.0.0.1; the local encrypted store, 40
fake secrets), one team bundle with one DAG of two tasks, run one after the other; each
opens the pipeline's run ``--repeat`` times each way, alternating, one task starting with
the broker and the other with direct mode (the first open in a process pays for imports and
masking set-up, so each way gets a cold sample of its own):

* ``broker``: ``task_run()`` in a task process without store credentials: one Variable
  request task -> supervisor -> Execution API -> the API server, whose
  ``PipekeySecretsBackend(mode="broker")`` opens the run for the task's team and answers
  with its 40 values;
* ``direct``: ``task_run(pipekey.load())`` in the same task, reading the store itself. Only
  for this measurement the task reads the store's key from a file the benchmark wrote
  (``PIPEKEY_MASTER_KEY`` set in the task for the direct opens alone); no other process but
  the API server has it.

Each sample is the wall time from before ``task_run`` (the manifest's load included) to
holding the 40 values, each read once with ``run.secret`` (so registered with the maskers in
both ways: the broker registers a payload's values when it arrives, direct mode on first
read). The script prints each way's cold sample (the first open in its task
process), the median and p95 of the others, the broker request's round trip alone, and the
ratio of the medians. Values are fake.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRETS = 40
TEAM = "bench"
DAG_ID = "broker_bench"

DAG_FILE = textwrap.dedent('''
    """Broker vs direct benchmark DAG (written by benchmarks/airflow_broker.py)."""
    import json
    import os
    import time
    from datetime import datetime
    from pathlib import Path

    from airflow.sdk import dag, task

    REPEAT, SECRETS, KEY_FILE = {repeat}, {secrets}, {key_file!r}


    def measure(first):
        import pipekey
        from pipekey.integrations import airflow as integration
        from pipekey.integrations.airflow import task_run

        fetches = []
        fetch = integration._fetch_variable

        def timed_fetch(key):  # the request's round trip, task -> API server -> task
            start = time.perf_counter()
            try:
                return fetch(key)
            finally:
                fetches.append(time.perf_counter() - start)

        integration._fetch_variable = timed_fetch

        def broker():
            start = time.perf_counter()
            with task_run() as run:
                assert len([run.secret(name) for name in run.names]) == SECRETS
                return time.perf_counter() - start

        def direct():
            os.environ["PIPEKEY_MASTER_KEY"] = Path(KEY_FILE).read_text().strip()
            try:
                start = time.perf_counter()
                with task_run(pipekey.load()) as run:
                    assert len([run.secret(name) for name in run.names]) == SECRETS
                    return time.perf_counter() - start
            finally:
                del os.environ["PIPEKEY_MASTER_KEY"]

        ways = {{"broker": broker, "direct": direct}}
        order = [first, *(w for w in ways if w != first)]
        samples = {{w: [] for w in ways}}
        for _ in range(REPEAT):
            for way in order:
                samples[way].append(ways[way]())
        print("BENCH " + json.dumps({{"first": first, "samples": samples,
                                      "broker_round_trips": fetches}}))


    @dag(dag_id={dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1))
    def broker_bench():
        @task
        def broker_first():
            measure("broker")

        @task
        def direct_first():
            measure("direct")

        broker_first() >> direct_first()  # one after the other: neither slows the other


    broker_bench()
''')

MANIFEST = textwrap.dedent('''
    env = "dev"
    chain = ["local"]

    [backends.local]
    type = "local"
    path = ".pipekey/{{env}}.db"

    [pipelines.bench]
    teams = ["{team}"]
    dags = ["{dag_id}"]
    scope = "bench/p00"
    requires = [{names}]
''')


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered) * 1000:10.1f}{p95 * 1000:10.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="runs opened each way")
    parser.add_argument("--dir", type=Path, help="work folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 500:
        parser.error("--repeat is 1..500")
    deploy = _module("pipekey_airflow_deploy", ROOT / "examples" / "airflow" / "deploy.py")
    work = (args.dir or Path(tempfile.mkdtemp(prefix="pipekey-broker-bench-"))).resolve()
    bundle = work / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    key_file = work / "bench-direct.key"
    (bundle / "broker_bench.py").write_text(DAG_FILE.format(
        repeat=args.repeat, secrets=SECRETS, key_file=str(key_file), dag_id=DAG_ID))
    names = ", ".join(f'"secret_{i:02d}"' for i in range(SECRETS))
    (work / "bench-pipekey.toml").write_text(MANIFEST.format(team=TEAM, dag_id=DAG_ID,
                                                              names=names))
    values = {f"bench/p00/secret_{i:02d}": f"fake-bench-{i:02d}-value" for i in range(SECRETS)}

    def seed(d) -> None:
        d.pipekey_set_many("dev", values)
        key_file.write_text(d.master_key)
        key_file.chmod(0o600)

    print(f"== working in {work}")
    deployment = deploy.Deployment(work / "deployment", dag_ids=(DAG_ID,), seed=seed,
                                   manifest_source=work / "bench-pipekey.toml",
                                   teams={TEAM: bundle}, broker=True)
    try:
        deployment.start()
        deployment.trigger((DAG_ID,))
        states = deployment.wait(timeout=600, dag_ids=(DAG_ID,))
        print(f"== {DAG_ID}: {states[DAG_ID]}")
        samples = [json.loads(line.split("BENCH ", 1)[1])
                   for text in deployment.task_logs().values()
                   for line in (deploy._event(raw) for raw in text.splitlines())
                   if line.startswith("BENCH ")]
    finally:
        deployment.stop()
        key_file.unlink(missing_ok=True)
    if len(samples) != 2:
        print(f"missing samples (see the task logs under {work})")
        return 1
    by_first = {got["first"]: got for got in samples}
    print(f"\ntime to a ready run of {SECRETS} secrets, {args.repeat} runs each way in each of "
          "2 tasks (ms)")
    print(f"{'':<8}{'cold':>10}{'median':>10}{'p95':>10}   (cold: the first open in a task "
          "process; median, p95: the others)")
    medians = {}
    for way in ("broker", "direct"):
        cold = by_first[way]["samples"][way][0]
        warm = [x for got in samples for x in got["samples"][way]]
        warm.remove(cold)
        medians[way] = statistics.median(warm)
        print(f"{way:<8}{cold * 1000:10.1f}{_summary(warm)}")
    trips = [x for got in samples for x in got["broker_round_trips"]]
    print(f"broker request round trip alone (task -> API server -> task): cold "
          f"{by_first['broker']['broker_round_trips'][0] * 1000:.1f} ms, median "
          f"{statistics.median(trips) * 1000:.1f} ms")
    print(f"ratio of medians (broker / direct): {medians['broker'] / medians['direct']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
