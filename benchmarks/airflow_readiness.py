"""Per-task readiness in a real Airflow deployment, pipekey next to Airflow's SSM backend.

    python benchmarks/airflow_readiness.py [--tasks 20] [--latency-ms 20] [--dir DIR]

One deployment (examples/airflow/deploy.py: api-server, scheduler with LocalExecutor,
dag-processor, on 127.0.0.1), one moto server behind the latency proxy (as ``pipekey bench
--compare``), 40 secrets per task seeded in SSM Parameter Store. Two DAGs of ``--tasks``
mapped tasks each, run one after the other:

* ``readiness_pipekey``: each task opens a pipekey run (``task_run``) whose pipeline
  requires its 40 secrets: batched ``GetParameters``, 10 a call, concurrently;
* ``readiness_airflow_ssm``: each task makes the same 40 lookups with Airflow's own
  ``SystemsManagerParameterStoreBackend`` (``get_variable``: one ``GetParameter`` each).

Each task reports three times to having all 40 values: from entering its function (imports
and boto3 client construction included), of the lookups alone (pipekey: the run's
``ready_seconds``; Airflow: the 40 ``get_variable`` calls, its lazy client included), and
from Airflow's task start (``ti.start_date``, process start-up included). The script prints
both contenders side by side, the ratios of medians and the API calls moto saw. On a small
machine the 20 task processes starting at once are CPU-bound (imports), which the first and
last columns include for both contenders alike. Values are fake.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRETS = 40
DAG_IDS = ("readiness_pipekey", "readiness_airflow_ssm")

DAG_FILE = textwrap.dedent('''
    """Readiness benchmark DAGs (written by benchmarks/airflow_readiness.py)."""
    import json
    import time
    from datetime import datetime, timezone

    from airflow.sdk import dag, get_current_context, task

    TAG, TASKS, SECRETS, REGION = {tag!r}, {tasks}, {secrets}, "eu-central-1"
    PIPELINES = [f"p{{p:02d}}" for p in range(TASKS)]


    def report(contender, p, started, lookups_s):
        ready = time.perf_counter()
        start_date = get_current_context()["ti"].start_date
        since_start = (datetime.now(timezone.utc) - start_date).total_seconds()
        print("READY " + json.dumps({{"contender": contender, "pipeline": p,
                                      "in_task_s": ready - started, "lookups_s": lookups_s,
                                      "since_task_start_s": since_start}}))


    @dag(dag_id="readiness_pipekey", schedule=None, start_date=datetime(2026, 1, 1),
         max_active_tasks=TASKS)
    def readiness_pipekey():
        @task
        def ready(p: str):
            started = time.perf_counter()
            from pipekey.integrations.airflow import task_run

            with task_run(p=p) as run:
                assert len(run.names) == SECRETS
                report("pipekey", p, started, run.ready_seconds)

        ready.expand(p=PIPELINES)


    @dag(dag_id="readiness_airflow_ssm", schedule=None, start_date=datetime(2026, 1, 1),
         max_active_tasks=TASKS)
    def readiness_airflow_ssm():
        @task
        def ready(p: str):
            started = time.perf_counter()
            from airflow.providers.amazon.aws.secrets.systems_manager import (
                SystemsManagerParameterStoreBackend)

            backend = SystemsManagerParameterStoreBackend(
                variables_prefix=f"/{{TAG}}/bench/{{p}}", connections_prefix=None,
                config_prefix=None, region_name=REGION)
            lookups = time.perf_counter()
            values = [backend.get_variable(f"secret_{{i:02d}}") for i in range(SECRETS)]
            assert all(values)
            report("airflow_ssm", p, started, time.perf_counter() - lookups)

        ready.expand(p=PIPELINES)


    readiness_pipekey()
    readiness_airflow_ssm()
''')

MANIFEST = textwrap.dedent('''
    chain = ["ssm"]
    [backends.ssm]
    type = "aws_ssm"
    prefix = "/{tag}"
    region = "eu-central-1"
    max_concurrency = 16

    [pipelines.readiness]
    dags = ["readiness_pipekey"]
    scope = "bench/{{p}}"
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
    return (f"{statistics.median(ordered) * 1000:7.0f} {p95 * 1000:7.0f} "
            f"{ordered[-1] * 1000:7.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20, help="mapped tasks per DAG (max 20)")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.tasks <= 20:
        parser.error("--tasks is 1..20 (20 pipelines are seeded)")
    if str(ROOT) not in sys.path:  # benchmarks/ is a package of the source checkout
        sys.path.insert(0, str(ROOT))
    from benchmarks.compare import _seed, _servers

    deploy = _module("pipekey_airflow_deploy", ROOT / "examples" / "airflow" / "deploy.py")
    work = (args.dir or Path(tempfile.mkdtemp(prefix="pipekey-airflow-bench-"))).resolve()
    tag = f"airflow-bench-{uuid.uuid4().hex[:8]}"
    dags = work / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "readiness.py").write_text(DAG_FILE.format(tag=tag, tasks=args.tasks,
                                                       secrets=SECRETS))
    names = ", ".join(f'"secret_{i:02d}"' for i in range(SECRETS))
    (work / "bench-pipekey.toml").write_text(MANIFEST.format(tag=tag, names=names))
    print(f"== working in {work}")
    with _servers(args.latency_ms / 1000) as (moto_url, proxy):
        _seed(moto_url, 20, tag)
        aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "eu-central-1", "AWS_ENDPOINT_URL": proxy.url,
               "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(16, args.tasks))}
        deployment = deploy.Deployment(work, dags_folder=dags, dag_ids=DAG_IDS, seed=False,
                                       manifest_source=work / "bench-pipekey.toml",
                                       extra_env=aws)
        calls = {}
        try:
            deployment.start()
            for dag_id in DAG_IDS:  # one after the other: neither slows the other down
                proxy.counts.clear()
                deployment.trigger((dag_id,))
                states = deployment.wait(timeout=900, dag_ids=(dag_id,))
                calls[dag_id] = dict(proxy.counts)
                print(f"== {dag_id}: {states[dag_id]}")
            reports = [json.loads(line.split("READY ", 1)[1])
                       for text in deployment.task_logs().values()
                       for line in (deploy._event(raw) for raw in text.splitlines())
                       if line.startswith("READY ")]
        finally:
            deployment.stop()
    by = {c: [r for r in reports if r["contender"] == c] for c in ("pipekey", "airflow_ssm")}
    print(f"\n{args.tasks} concurrent mapped tasks x {SECRETS} secrets, "
          f"{args.latency_ms:.0f} ms round trip (ms: median, p95, max)")
    columns = (("in_task_s", "in the task"), ("lookups_s", "lookups alone"),
                ("since_task_start_s", "since Airflow task start"))
    print(f"{'contender':<14}" + "".join(f"{title:>26}" for _, title in columns) + "  API calls")
    for contender, dag_id in zip(("pipekey", "airflow_ssm"), DAG_IDS):
        rows = by[contender]
        if not rows:
            print(f"{contender:<14} no reports (see the task logs in {work})")
            continue
        print(f"{contender:<14}" + "".join(f"{_summary([r[k] for r in rows]):>26}"
                                           for k, _ in columns) + f"  {calls.get(dag_id)}")
    if by["pipekey"] and by["airflow_ssm"]:
        for key, title in columns:
            ratio = (statistics.median(r[key] for r in by["airflow_ssm"])
                     / statistics.median(r[key] for r in by["pipekey"]))
            print(f"ratio of medians (Airflow SSM backend / pipekey), {title}: {ratio:.1f}x")
    return 0 if len(by["pipekey"]) == len(by["airflow_ssm"]) == args.tasks else 1


if __name__ == "__main__":
    sys.exit(main())
