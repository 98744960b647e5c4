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
ratio of the medians.

With Debian's PostgreSQL and psycopg2, a second DAG then opens ``--repeat`` brokered runs of
a pipeline whose connection is a login minted per run (``dynamic:bench_pg``, a
``postgres_role`` on a throwaway cluster the script starts on 127.0.0.1): the time to open
(the API server mints), to connect as the login, and to close (one more request: the API
server revokes), and, from the API server's audit file, its mint and revoke latency. A
pipekey that refuses minted logins in broker mode is reported as refused. Values are fake.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
SECRETS = 40
TEAM = "bench"
DAG_ID = "broker_bench"
MINT_DAG_ID = "broker_bench_mint"

DAG_FILE = textwrap.dedent('''
    """Broker vs direct benchmark DAG (written by benchmarks/airflow_broker.py)."""
    import json
    import os
    import time
    from datetime import datetime
    from pathlib import Path

    from airflow.sdk import dag, task

    REPEAT, SECRETS, KEY_FILE = {repeat}, {secrets}, {key_file!r}


    def time_requests():
        """Time each run request's round trip (task -> API server -> task) where every
        layout of pipekey's modules sends it: Airflow's own Variable.get."""
        from airflow.sdk import Variable

        fetches, get = [], Variable.get.__func__

        def timed_get(cls, key, *args, **kwargs):
            start = time.perf_counter()
            try:
                return get(cls, key, *args, **kwargs)
            finally:
                if str(key).startswith("pipekey.run."):
                    fetches.append(time.perf_counter() - start)

        Variable.get = classmethod(timed_get)
        return fetches


    def measure(first):
        import pipekey
        from pipekey.integrations.airflow import task_run

        fetches = time_requests()

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


    @dag(dag_id={mint_dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1))
    def broker_bench_mint():
        @task
        def minted():
            """REPEAT brokered runs of a pipeline whose connection is a login minted per run:
            open (the API server mints), connect with the login, close (one more request: the
            API server revokes). Records a refusal instead of failing the DAG."""
            import psycopg2
            from pipekey.integrations.airflow import task_run

            fetches = time_requests()
            opens, connects, closes, logins, refused = [], [], [], [], None
            for _ in range(REPEAT):
                start = time.perf_counter()
                try:
                    with task_run() as run:
                        opened = time.perf_counter()
                        conn = run.connection("db")
                        db = psycopg2.connect(host=conn.host, port=conn.port, user=conn.login,
                                              password=conn.password, dbname=conn.schema,
                                              connect_timeout=10)
                        db.close()
                        connected = time.perf_counter()
                        logins.append(conn.login)
                except Exception as exc:  # pipekey's messages name keys, never values
                    refused = f"{{type(exc).__name__}}: {{str(exc).splitlines()[0][:300]}}"
                    refused += f" (after {{time.perf_counter() - start:.1f}} s)"
                    break
                closed = time.perf_counter()
                opens.append(opened - start)
                connects.append(connected - opened)
                closes.append(closed - connected)
            print("MINT " + json.dumps({{"opens": opens, "connects": connects,
                                         "closes": closes, "logins": len(set(logins)),
                                         "refused": refused, "round_trips": fetches}}))

        minted()


    broker_bench_mint()
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

    [audit]
    sinks = [{{ type = "file", path = "{audit}" }}]

    [credentials.bench_pg]
    type = "postgres_role"
    admin = "connections/bench_pg_admin"
    member_of = ["bench_group"]
    ttl = 600

    [pipelines.minted]
    teams = ["{team}"]
    dags = ["{mint_dag_id}"]
    scope = "bench/mint"
    connections = {{ db = "dynamic:bench_pg" }}
''')


ADMIN_PASSWORD = "fake-bench-admin-pw"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _postgres(work: Path, free_port) -> Iterator[int | None]:
    """A throwaway PostgreSQL on 127.0.0.1 (Debian's, as tests/servers.py starts it) with an
    admin role that may create roles and the group the minted logins join; yields its port,
    or None (and the mint figures are skipped) without PostgreSQL or psycopg2."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found or importlib.util.find_spec("psycopg2") is None:
        print("== no PostgreSQL or psycopg2: the minted-login figures are skipped")
        yield None
        return
    bindir, base = Path(found[-1]).parent, work / "pg"
    base.mkdir()
    owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*owner, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(base / "data"), "-U", "postgres",
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w", "-t",
        "60", "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
    try:
        for sql in (f"CREATE ROLE bench_admin LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}'",
                    "GRANT pg_signal_backend TO bench_admin", "CREATE ROLE bench_group NOLOGIN"):
            run(str(bindir / "psql"), "-h", str(base), "-p", str(port), "-U", "postgres",
                "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql)
        yield port
    finally:
        subprocess.run([*owner, str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m",
                        "immediate", "stop"], capture_output=True, timeout=60)


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered) * 1000:10.1f}{p95 * 1000:10.1f}"


def _lines(deployment, deploy, tag: str) -> list[dict]:
    return [json.loads(line.split(tag + " ", 1)[1])
            for text in deployment.task_logs().values()
            for line in (deploy._event(raw) for raw in text.splitlines())
            if line.startswith(tag + " ")]


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
    audit = work / "api-server-audit.jsonl"
    (bundle / "broker_bench.py").write_text(DAG_FILE.format(
        repeat=args.repeat, secrets=SECRETS, key_file=str(key_file), dag_id=DAG_ID,
        mint_dag_id=MINT_DAG_ID))
    names = ", ".join(f'"secret_{i:02d}"' for i in range(SECRETS))
    (work / "bench-pipekey.toml").write_text(MANIFEST.format(
        team=TEAM, dag_id=DAG_ID, names=names, audit=str(audit), mint_dag_id=MINT_DAG_ID))
    values = {f"bench/p00/secret_{i:02d}": f"fake-bench-{i:02d}-value" for i in range(SECRETS)}

    print(f"== working in {work}")
    with _postgres(work, deploy.free_port) as pg_port:
        if pg_port is not None:
            values["connections/bench_pg_admin"] = json.dumps({
                "conn_type": "postgres", "host": "127.0.0.1", "port": pg_port,
                "login": "bench_admin", "password": ADMIN_PASSWORD, "schema": "postgres"})

        def seed(d) -> None:
            d.pipekey_set_many("dev", values)
            key_file.write_text(d.master_key)
            key_file.chmod(0o600)

        dag_ids = (DAG_ID, MINT_DAG_ID) if pg_port is not None else (DAG_ID,)
        deployment = deploy.Deployment(work / "deployment", dag_ids=dag_ids, seed=seed,
                                       manifest_source=work / "bench-pipekey.toml",
                                       teams={TEAM: bundle}, broker=True)
        try:
            deployment.start()
            for dag_id in dag_ids:  # one after the other: neither slows the other
                deployment.trigger((dag_id,))
                states = deployment.wait(timeout=600, dag_ids=(dag_id,))
                print(f"== {dag_id}: {states[dag_id]}")
            samples = _lines(deployment, deploy, "BENCH")
            minted = _lines(deployment, deploy, "MINT")
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
    if pg_port is not None:
        _print_minted(minted, audit)
    return 0


def _print_minted(minted: list[dict], audit: Path) -> None:
    print("\nbrokered runs with a login minted per run (PostgreSQL, postgres_role)")
    if len(minted) != 1:
        print("  no samples (see the task logs)")
        return
    got = minted[0]
    if got["refused"]:
        print(f"  refused: {got['refused']}")
    if got["opens"]:
        print(f"{'(ms)':<18}{'cold':>10}{'median':>10}{'p95':>10}")
        for label, key in (("open (mints)", "opens"), ("connect as login", "connects"),
                           ("close (revokes)", "closes")):
            series = got[key]
            print(f"{label:<18}{series[0] * 1000:10.1f}"
                  + (_summary(series[1:]) if len(series) > 1 else ""))
        print(f"  {got['logins']} distinct logins for {len(got['opens'])} runs")
    events: dict[str, list[float]] = {}
    for line in audit.read_text().splitlines() if audit.exists() else ():
        record = json.loads(line)
        if record.get("key", "").startswith("dynamic:") and record.get("outcome") == "ok":
            events.setdefault(record["event"], []).append(record.get("latency_ms") or 0.0)
    for event in ("mint", "revoke"):
        if events.get(event):
            ms = sorted(events[event])
            print(f"  API server {event} latency (its audit): median "
                  f"{statistics.median(ms):.1f} ms, p95 "
                  f"{ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]:.1f} ms, n={len(ms)}")


if __name__ == "__main__":
    sys.exit(main())
