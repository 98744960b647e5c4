"""Per-task readiness in a real Airflow deployment: pipekey's modes next to Airflow's SSM backend.

    python benchmarks/airflow_readiness.py [--tasks 5,20,50] [--latency-ms 20] [--dir DIR]
                                           [--contenders airflow_ssm,direct,dropin,broker]
                                           [--json FILE]

One deployment (examples/airflow/deploy.py, multi-team, ``broker=True``: api-server, scheduler
with LocalExecutor, dag-processor, on 127.0.0.1), one moto server behind the latency proxy
(as ``pipekey bench --compare``), 40 secrets per scope seeded in SSM Parameter Store
(SecureString). For each ``--tasks`` size, one DAG per contender whose ``size`` mapped tasks
all need the same 40 secrets (one scope per size, so no size starts with another's cache),
run one DAG after the other (the order rotates with the size):

* ``airflow_ssm``: Airflow's own ``SystemsManagerParameterStoreBackend`` built in the task,
  40 ``get_variable`` calls (one ``GetParameter`` each);
* ``direct``: ``task_run(p=...)`` in direct mode (the task reads SSM itself: batched
  ``GetParameters``, 10 names a call, concurrently), as a task of a direct-mode deployment;
* ``dropin``: ``PipekeySecretsBackend(compat="ssm", ...)`` built in the task with the very
  kwargs Airflow's backend got, 40 ``get_variable`` calls (left out where pipekey has no
  ``compat``);
* ``broker``: ``task_run(p=...)`` in broker mode: the task builds no store client and sends
  one Variable request through the Execution API; the API server's
  ``PipekeySecretsBackend(mode="broker")`` opens the run from its cache or the store.

Each task reports, at the moment it holds all 40 values: the time from Airflow's task start
(``ti.start_date``: process start-up included), from entering its function (imports
included), of the lookups alone (after the imports: store client, manifest and run, or
Airflow's 40 ``get_variable`` calls), the CPU time (user + system) its process has used and
the part its function used, and whether boto3 is imported in it. The script prints, per
size, each contender's median and p95 and the store calls its DAG run made (at the proxy:
for the broker these are the API server's), the ratios to Airflow's backend (Airflow's
median / the contender's: above 1 the contender is faster or cheaper), and a summary of
every size; it exits 1 if a task did not report or a brokered task imported boto3.
Every component runs on this machine: on a small one the task
processes starting at once are CPU-bound, for every contender alike. Values are fake.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRETS = 40
TEAM = "bench"
CONTENDERS = ("airflow_ssm", "direct", "dropin", "broker")
BASELINE = "airflow_ssm"
#: (report field, column title)
COLUMNS = (("since_task_start_s", "since task start"), ("in_task_s", "in the task"),
           ("lookups_s", "lookups alone"), ("cpu_s", "task CPU"),
           ("cpu_in_task_s", "CPU in the task"))

DAG_FILE = textwrap.dedent('''
    """Readiness benchmark DAGs (written by benchmarks/airflow_readiness.py)."""
    import gc
    import json
    import os
    import resource
    import sys
    import time
    from datetime import datetime, timezone

    from airflow.sdk import dag, get_current_context, task

    TAG, SECRETS, REGION = {tag!r}, {secrets}, "eu-central-1"
    RUNS = {runs!r}  # dag_id -> (contender, size, the scope's parameter p)
    NAMES = [f"secret_{{i:02d}}" for i in range(SECRETS)]
    DETAIL = bool(os.environ.get("READINESS_DETAIL"))


    def cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime


    class Clock:
        """The task's clocks: wall and process CPU at entry, after the imports, at ready."""

        def __init__(self):
            self.modules = set(sys.modules) if DETAIL else None
            self.full_gcs = gc.get_stats()[2]["collections"]
            self.cpu, self.started = cpu(), time.perf_counter()

        def imported(self):
            self.cpu_imported, self.after_import = cpu(), time.perf_counter()

        def report(self, contender, lookups_s=None):
            ready, used = time.perf_counter(), cpu()
            ti = get_current_context()["ti"]
            since_start = (datetime.now(timezone.utc) - ti.start_date).total_seconds()
            data = {{"contender": contender, "dag_id": ti.dag_id, "size": RUNS[ti.dag_id][1],
                     "map_index": ti.map_index,
                     "since_task_start_s": since_start, "in_task_s": ready - self.started,
                     "lookups_s": ready - self.after_import if lookups_s is None else lookups_s,
                     "cpu_s": used, "cpu_in_task_s": used - self.cpu,
                     "cpu_imports_s": self.cpu_imported - self.cpu,
                     "boto3": "boto3" in sys.modules or "botocore" in sys.modules}}
            if DETAIL:  # what the contender imported that the task process had not
                data["new_modules"] = sorted({{m.split(".")[0] for m in sys.modules}}
                                             - {{m.split(".")[0] for m in self.modules}})
                data["new_module_count"] = len(set(sys.modules) - self.modules)
                data["full_gcs"] = gc.get_stats()[2]["collections"] - self.full_gcs
                data["frozen"] = gc.get_freeze_count()
            print("READY " + json.dumps(data))


    def airflow_ssm(p):
        clock = Clock()
        from airflow.providers.amazon.aws.secrets.systems_manager import (
            SystemsManagerParameterStoreBackend)

        clock.imported()
        backend = SystemsManagerParameterStoreBackend(
            variables_prefix=f"/{{TAG}}/bench/{{p}}", connections_prefix=None,
            config_prefix=None, region_name=REGION)
        values = [backend.get_variable(name) for name in NAMES]
        assert all(values)
        clock.report("airflow_ssm")


    def dropin(p):
        clock = Clock()
        from pipekey.integrations.airflow import PipekeySecretsBackend

        clock.imported()
        backend = PipekeySecretsBackend(
            compat="ssm", variables_prefix=f"/{{TAG}}/bench/{{p}}", connections_prefix=None,
            config_prefix=None, region_name=REGION)
        values = [backend.get_variable(name) for name in NAMES]
        assert all(values)
        clock.report("dropin")


    def pipekey_run(contender, p):
        clock = Clock()
        from pipekey.integrations.airflow import task_run

        clock.imported()
        with task_run(p=p) as run:
            values = [run.secret(name) for name in run.names]
            assert len(values) == SECRETS and all(values)
            clock.report(contender)


    def direct(p):
        # this deployment is in broker mode; a task of a direct-mode deployment has the
        # store's credentials and PIPEKEY_AIRFLOW_MODE unset or "direct"
        os.environ["PIPEKEY_AIRFLOW_MODE"] = "direct"
        pipekey_run("direct", p)


    def broker(p):
        pipekey_run("broker", p)


    def make(dag_id, contender, size, p):
        @dag(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1),
             max_active_tasks=size)
        def readiness():
            @task
            def ready(i: int):
                globals()[contender](p)

            ready.expand(i=list(range(size)))

        return readiness()


    for dag_id, (contender, size, p) in RUNS.items():
        globals()[dag_id] = make(dag_id, contender, size, p)
''')

MANIFEST = textwrap.dedent('''
    chain = ["ssm"]
    [backends.ssm]
    type = "aws_ssm"
    prefix = "/{tag}"
    region = "eu-central-1"
    max_concurrency = 16

    [pipelines.readiness]
    teams = ["{team}"]
    dags = ["readiness_direct_*", "readiness_broker_*"]
    scope = "bench/{{p}}"
    requires = [{names}]
''')


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tasks {text!r}: sizes separated by commas, "
                                         "e.g. 5,20,50") from None
    if not sizes or not all(1 <= s <= 100 for s in sizes) or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"--tasks {text!r}: distinct sizes of 1..100")
    return sizes


def has_dropin() -> bool:
    """True if this pipekey's PipekeySecretsBackend takes Airflow's kwargs (``compat``)."""
    try:
        from pipekey.integrations.airflow import PipekeySecretsBackend
    except Exception:  # noqa: BLE001 - no Airflow here: the deployment cannot run either
        return False
    return "compat" in inspect.signature(PipekeySecretsBackend).parameters


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def dag_id_of(contender: str, size: int, round_: int = 0) -> str:
    return f"readiness_{contender}_{size}" + (f"_r{round_}" if round_ else "")


def summarise(reports: list[dict], calls: dict[str, dict[str, int]], sizes: list[int],
              contenders: list[str], busy: dict[str, float] | None = None,
              rounds: int = 1) -> dict:
    """Per size and contender, over every round: median and p95 of each column, tasks
    reported, tasks with boto3 imported, store calls per DAG run (the most of any round, and
    each round's) and the seconds moto was busy answering them (mean), and the ratios to
    Airflow's backend."""
    out: dict = {}
    for size in sizes:
        rows: dict = {}
        for contender in contenders:
            dag_ids = [dag_id_of(contender, size, k) for k in range(rounds)]
            got = [r for r in reports if r["dag_id"] in dag_ids]
            per_run = [sum(calls.get(d, {}).values()) for d in dag_ids if d in calls]
            busy_s = [(busy or {})[d] for d in dag_ids if d in (busy or {})]
            row = {"tasks": len(got), "boto3": sum(bool(r["boto3"]) for r in got),
                   "calls": max(per_run, default=0), "calls_per_run": per_run,
                   "calls_by_action": [calls.get(d, {}) for d in dag_ids],
                   "moto_busy_s": statistics.mean(busy_s) if busy_s else None}
            for key, _ in COLUMNS:
                values = [r[key] for r in got]
                row[key] = ({"median": statistics.median(values), "p95": _p95(values)}
                            if values else None)
            rows[contender] = row
        base = rows.get(BASELINE)
        for row in rows.values():
            row["ratios"] = {}
            for key, _ in [*COLUMNS, ("calls", "")]:
                mine = row[key]["median"] if key != "calls" and row[key] else row[key]
                theirs = (base[key]["median"] if key != "calls" and base and base[key]
                          else (base or {}).get(key))
                row["ratios"][key] = (theirs / mine) if mine and theirs else None
        out[size] = rows
    return out


def _ms(stat: dict | None) -> str:
    return "-" if stat is None else f"{stat['median'] * 1000:6.0f} {stat['p95'] * 1000:6.0f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render(summary: dict, latency_ms: float) -> str:
    lines = []
    for size, rows in summary.items():
        lines.append(f"\n{size} mapped tasks x {SECRETS} secrets, {latency_ms:.0f} ms round trip "
                     "(ms: median p95)")
        lines.append(f"{'contender':<12}" + "".join(f"{title:>18}" for _, title in COLUMNS)
                     + f"{'store calls/DAG run':>22}{'moto busy s':>13}  boto3 in task")
        for contender, row in rows.items():
            lines.append(f"{contender:<12}" + "".join(f"{_ms(row[k]):>18}" for k, _ in COLUMNS)
                         + f"{row['calls']:>22}{_seconds(row['moto_busy_s']):>13}"
                         + f"  {row['boto3']}/{row['tasks']}")
        lines.append(f"ratio to {BASELINE} (its median / the contender's; > 1: faster, "
                     "cheaper, fewer calls)")
        for contender, row in rows.items():
            if contender != BASELINE:
                lines.append(f"{contender:<12}" + "".join(
                    f"{_ratio(row['ratios'][k]):>18}" for k, _ in COLUMNS)
                    + f"{_ratio(row['ratios']['calls']):>22}")
    lines.append("\nsummary: median since Airflow's task start (s), ratio to airflow_ssm, "
                 "task CPU (s), store calls per DAG run")
    for size, rows in summary.items():
        cells = []
        for contender, row in rows.items():
            since = row["since_task_start_s"]
            cpu = row["cpu_s"]
            cells.append(f"{contender} {since['median'] if since else float('nan'):.2f} "
                         f"({_ratio(row['ratios']['since_task_start_s'])}) "
                         f"cpu {cpu['median'] if cpu else float('nan'):.2f} "
                         f"calls per DAG run {row['calls_per_run']}")
        lines.append(f"{size:>3} tasks: " + " | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=_sizes, default=[20],
                        help="mapped tasks per DAG, comma-separated sizes (default 20; the "
                             "docs' figures: 5,20,50)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated, of {', '.join(CONTENDERS)} (dropin only where "
                             "pipekey has compat='ssm')")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every size this many times (each round on scopes no round "
                             "read before); the figures pool the rounds' tasks")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds to wait before each DAG run (the previous one's tail)")
    parser.add_argument("--detail", action="store_true",
                        help="tasks also report the modules their contender imported")
    args = parser.parse_args(argv)
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown:
        parser.error(f"--contenders: unknown {unknown} (known: {', '.join(CONTENDERS)})")
    if "dropin" in contenders and not has_dropin():
        print("== dropin left out: this pipekey's PipekeySecretsBackend has no compat='ssm'")
        contenders.remove("dropin")
    if BASELINE not in contenders:
        contenders.insert(0, BASELINE)
    if str(ROOT) not in sys.path:  # benchmarks/ is a package of the source checkout
        sys.path.insert(0, str(ROOT))
    from benchmarks.compare import _seed, _servers, _union

    sizes = args.tasks
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds is 1..10")
    # a cold scope per size and round: no DAG run starts with another's cache
    plan = [(k, size, contender, dag_id_of(contender, size, k), f"p{k * len(sizes) + i:02d}")
            for k in range(args.rounds) for i, size in enumerate(sizes)
            for contender in contenders]
    deploy = _module("pipekey_airflow_deploy", ROOT / "examples" / "airflow" / "deploy.py")
    work = (args.dir or Path(tempfile.mkdtemp(prefix="pipekey-airflow-bench-"))).resolve()
    tag = f"airflow-bench-{uuid.uuid4().hex[:8]}"
    bundle = work / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "readiness.py").write_text(DAG_FILE.format(
        tag=tag, secrets=SECRETS, runs={d: (c, s, p) for _, s, c, d, p in plan}))
    names = ", ".join(f'"secret_{i:02d}"' for i in range(SECRETS))
    (work / "bench-pipekey.toml").write_text(MANIFEST.format(tag=tag, team=TEAM, names=names))
    dag_ids = tuple(d for _, _, _, d, _ in plan)
    print(f"== working in {work}")
    with _servers(args.latency_ms / 1000) as (moto_url, proxy):
        _seed(moto_url, len(sizes) * args.rounds, tag)
        most = max(sizes)
        # every component gets the store's address and (fake) credentials: Airflow's backend
        # and direct mode read SSM from the task; in broker mode only the API server does
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_DEFAULT_REGION": "eu-central-1", "AWS_ENDPOINT_URL": proxy.url,
               "AIRFLOW__CORE__PARALLELISM": str(max(32, most)),
               "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(16, most))}
        if args.detail:
            env["READINESS_DETAIL"] = "1"
        deployment = deploy.Deployment(work / "deployment", dags_folder=bundle,
                                       dag_ids=dag_ids, seed=False,
                                       manifest_source=work / "bench-pipekey.toml",
                                       extra_env=env, teams={TEAM: bundle}, broker=True)
        calls: dict[str, dict[str, int]] = {}
        busy: dict[str, float] = {}
        try:
            deployment.start()
            for index, (round_, size) in enumerate(
                    (k, s) for k in range(args.rounds) for s in sizes):
                turn = index % len(contenders)  # who goes first rotates
                for contender in contenders[turn:] + contenders[:turn]:
                    dag_id = dag_id_of(contender, size, round_)
                    time.sleep(args.settle)
                    proxy.reset()  # one DAG run at a time: its calls alone
                    deployment.trigger((dag_id,))
                    states = deployment.wait(timeout=300 + 20 * size, dag_ids=(dag_id,))
                    calls[dag_id] = dict(proxy.counts)
                    busy[dag_id] = _union(proxy.busy)  # moto answers one call at a time
                    print(f"== {dag_id}: {states[dag_id]}, store calls {calls[dag_id]}")
            reports = [json.loads(line.split("READY ", 1)[1])
                       for text in deployment.task_logs().values()
                       for line in (deploy._event(raw) for raw in text.splitlines())
                       if line.startswith("READY ")]
        finally:
            deployment.stop()
    summary = summarise(reports, calls, sizes, contenders, busy, args.rounds)
    print(render(summary, args.latency_ms))
    if args.detail:
        for contender in contenders:
            got = [r for r in reports if r["contender"] == contender]
            modules = sorted({m for r in got for m in r.get("new_modules", ())})
            counts = sorted(r.get("new_module_count", 0) for r in got)
            gcs = sorted(r.get("full_gcs", 0) for r in got)
            print(f"\n{contender}: imported {counts[len(counts) // 2] if counts else 0} modules "
                  f"(median) new to the task process, of packages {modules}; full garbage "
                  f"collections in the task (median) {gcs[len(gcs) // 2] if gcs else 0}, "
                  f"objects frozen {sorted({r.get('frozen') for r in got})}")
    if args.json:
        args.json.write_text(json.dumps({"latency_ms": args.latency_ms, "secrets": SECRETS,
                                         "sizes": {str(k): v for k, v in summary.items()}},
                                        indent=2, sort_keys=True))
    complete = all(row["tasks"] == size * args.rounds for size, rows in summary.items()
                   for row in rows.values())
    if not complete:
        print(f"some tasks did not report (see the task logs under {work})")
    sdk = [size for size, rows in summary.items() if rows.get("broker", {}).get("boto3")]
    if sdk:
        print(f"brokered tasks imported boto3 (sizes {sdk}): broker mode builds no store client")
    return 0 if complete and not sdk else 1


if __name__ == "__main__":
    sys.exit(main())
