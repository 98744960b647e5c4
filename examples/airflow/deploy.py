"""A complete local Airflow 3 deployment running the pipekey example, on 127.0.0.1 only.

    python examples/airflow/deploy.py [--executor local|celery] [--dir DIR] [--keep-running]

What it does, step by step (each step prints what it runs):

1. a work folder: the manifest (examples/airflow/pipekey.toml, copied to DIR/config, away
   from the components' working directory), a master key for the local stores (``PIPEKEY_MASTER_KEY``), fake values seeded per environment with ``pipekey set``;
2. an Airflow home with a SQLite metadata DB (``airflow db migrate``) and the settings every
   component shares: LocalExecutor, the execution API on a loopback port, one JWT secret,
   ``[workers] secrets_backend = PipekeySecretsBackend`` with ``secrets_backend_kwargs``
   naming the manifest (and no ``PIPEKEY_CONFIG``: task runs find it from the kwargs);
3. two stand-in ads APIs (dev and prod) that accept only each account's own token;
4. ``airflow api-server``, ``airflow scheduler``, ``airflow dag-processor`` (and, with
   ``--executor celery``, Debian's ``redis-server`` as broker and ``airflow celery worker``),
   each in its own process group with its console in ``DIR/console/<name>.log``; no log
   server is started (``--skip-serve-logs``): task logs are read from ``DIR/airflow/logs``;
5. triggers ``ads_report`` (4 mapped tasks: 2 accounts x dev, prod; and ``notify``, which
   prints a granted connection's password outside a run) and ``billing_report``
   (another pipeline's DAG, refused ads_report's secrets), waits for both (bounded), and
   prints where each task's token came from;
6. stops every process it started, by process group (unless ``--keep-running``).

The test suite reuses :class:`Deployment` (tests/deploy/test_airflow_deployment.py; with
``teams=`` and ``broker=True``, a multi-team deployment in broker mode:
tests/deploy/test_airflow_broker_deployment.py, benchmarks/airflow_broker.py). Values are fake.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "quickstart"))
from ads_api import AdsApi, digest  # the quickstart's stand-in API

ACCOUNTS = ("acct_42", "acct_43")
ENVIRONMENTS = ("dev", "prod")
DAGS = ("ads_report", "billing_report")
COMPONENTS = {"api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}"],
              "scheduler": ["scheduler", "--skip-serve-logs"], "dag-processor": ["dag-processor"]}
CELERY_WORKER = ["celery", "worker", "--concurrency", "4", "--skip-serve-logs"]
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    """The deployment in ``work``: ``start()``, ``trigger()``, ``wait()``, ``stop()``.

    Attributes after ``start()``: ``tokens`` ({(env, account): fake token}), ``passwords``
    (every other fake value seeded), ``apis`` ({env: AdsApi}), ``home`` (AIRFLOW_HOME).
    """

    def __init__(self, work: Path, executor: str = "LocalExecutor", log=print, *,
                 dags_folder: Path = HERE / "dags", dag_ids: tuple[str, ...] = DAGS,
                 manifest_source: Path = HERE / "pipekey.toml",
                 seed: bool | Callable[[Deployment], None] = True,
                 extra_env: dict[str, str] | None = None,
                 teams: dict[str, Path] | None = None, broker: bool = False) -> None:
        self.work = work.resolve()
        self.dags_folder, self.dag_ids = dags_folder, dag_ids
        self.manifest_source, self.seed = manifest_source, seed
        self.extra_env = dict(extra_env or {})
        # multi-team: {team: its DAG folder}, one LocalDagBundle per team
        self.teams = dict(teams or {})
        # broker mode: only the api-server holds the store's key (see env())
        self.broker = broker
        self.home = self.work / "airflow"
        self.consoles = self.work / "console"
        # as in production, not in the components' working directory: task runs must find
        # it from [workers] secrets_backend_kwargs
        self.manifest = self.work / "config" / "pipekey.toml"
        self.executor = executor
        self.log = log
        self.port = free_port()
        self.redis_port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.apis: dict[str, AdsApi] = {}
        self.tokens = {(env, a): f"fake-token-{a}-{env}-{secrets.token_hex(6)}"
                       for env in ENVIRONMENTS for a in ACCOUNTS}
        self.passwords = [f"fake-slack-pw-{secrets.token_hex(6)}"]
        self.master_key = ""
        self.ticket_key = ""

    # -- set-up ---------------------------------------------------------------------------
    def env(self, component: str | None = None) -> dict[str, str]:
        """The environment of ``component`` (a key of COMPONENTS, ``celery-worker``, or None
        for the ``airflow`` CLI).

        Direct mode: every component (and so every task) gets Airflow's settings, the
        ``[workers]`` backend and the store's key; nothing else of pipekey's. Broker mode:
        only the api-server gets ``[secrets] backend`` (``mode: broker``) and the store's
        key; the scheduler, dag-processor, workers and so every task process get the manifest
        (``PIPEKEY_CONFIG``, no values), ``PIPEKEY_AIRFLOW_MODE=broker`` and ``[workers]
        secrets_backend = PipekeyRunBackend`` (hooks answered from the task's open run, no
        store credential), no store credential and no store-reading pipekey backend.
        """
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("AIRFLOW", "PIPEKEY", "AWS_"))}
        url = f"http://127.0.0.1:{self.port}"
        base.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API__BASE_URL": url, "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # everything shares one small machine here: give the Execution API more than its
            # 5 s default before a task's supervisor gives up (seen on a loaded 2-core box)
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false",   # dlt: leave Airflow's secrets alone
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "DLT_DATA_DIR": str(self.work / "dlt"),
            **{f"AIRFLOW_VAR_ADS_API_URL_{e.upper()}": api.url for e, api in self.apis.items()},
        })
        if self.executor == "CeleryExecutor":
            redis = f"redis://127.0.0.1:{self.redis_port}"
            base.update({"AIRFLOW__CELERY__BROKER_URL": f"{redis}/0",
                         "AIRFLOW__CELERY__RESULT_BACKEND": f"{redis}/1"})
        if self.teams:
            base.update({"AIRFLOW__CORE__MULTI_TEAM": "True",
                         "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
                             {"name": f"{team}_dags", "team_name": team,
                              "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                              "kwargs": {"path": str(folder)}}
                             for team, folder in self.teams.items()])})
        if self.broker and component == "celery-worker":
            # Celery workers run tasks with the token the scheduler signed: they need no JWT
            # secret, and a task holding it could sign a token as another team's task
            del base["AIRFLOW__API_AUTH__JWT_SECRET"]
        base.update(self._pipekey_env(component))
        base.update(self.extra_env)
        return base

    def _pipekey_env(self, component: str | None) -> dict[str, str]:
        backend = "pipekey.integrations.airflow.PipekeySecretsBackend"
        if not self.broker:
            return {"AIRFLOW__WORKERS__SECRETS_BACKEND": backend,
                    "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS":
                        json.dumps({"manifest": str(self.manifest)}),
                    "PIPEKEY_MASTER_KEY": self.master_key}
        if component == "api-server":
            return {"AIRFLOW__SECRETS__BACKEND": backend,
                    "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"mode": "broker"}),
                    "PIPEKEY_CONFIG": str(self.manifest), "PIPEKEY_MASTER_KEY": self.master_key,
                    # seals minted logins' close tickets: every API server, nothing else
                    "PIPEKEY_BROKER_TICKET_KEY": self.ticket_key}
        # workers: the task's open run answers its hooks first, then the API server
        return {"PIPEKEY_CONFIG": str(self.manifest), "PIPEKEY_AIRFLOW_MODE": "broker",
                "AIRFLOW__WORKERS__SECRETS_BACKEND":
                    "pipekey.integrations.airflow_worker.PipekeyRunBackend"}

    def setup(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        self.consoles.mkdir(exist_ok=True)
        self.manifest.parent.mkdir(exist_ok=True)
        self.jwt_secret = secrets.token_hex(16)
        shutil.copy(self.manifest_source, self.manifest)
        from pipekey.backends.local import generate_master_key

        self.master_key = generate_master_key()
        self.ticket_key = secrets.token_urlsafe(32)
        if callable(self.seed):
            self.seed(self)
        elif self.seed:
            self._seed()
        for env in ENVIRONMENTS:
            api = AdsApi({a: digest(self.tokens[(env, a)]) for a in ACCOUNTS})
            self.apis[env] = api.__enter__()
        self.log("== airflow db migrate (SQLite metadata DB)")
        self._airflow("db", "migrate", timeout=300)
        for team in self.teams:
            self.log(f"== airflow teams create {team}")
            self._airflow("teams", "create", team)

    def _seed(self) -> None:
        self.log("== pipekey set: fake values, one store per environment")
        for (env, account), token in self.tokens.items():
            self._pipekey_set(env, f"marketing/ads/{account}/api_token", token)
            self._pipekey_set(env, f"connections/warehouse_{account}", json.dumps(
                {"conn_type": "duckdb", "host": str(self.work / f"{account}_{env}.duckdb")}))
        for env in ENVIRONMENTS:
            self._pipekey_set(env, "airflow/connections/slack_default",
                               f"http://:{self.passwords[0]}@hooks.example.com")

    def _pipekey_set(self, env: str, key: str, value: str) -> None:
        subprocess.run([sys.executable, "-m", "pipekey", "-c", str(self.manifest),
                        "--env", env, "set", key], input=value, text=True, check=True,
                       capture_output=True, timeout=60,
                       env={**os.environ, "PIPEKEY_MASTER_KEY": self.master_key})

    def pipekey_set_many(self, env: str, items: dict[str, str]) -> None:
        """Write ``{key: value}`` to the store of ``env`` in one process (values on stdin)."""
        script = ("import json, sys, pipekey\n"
                  "lk = pipekey.load(sys.argv[1], env=sys.argv[2])\n"
                  "for key, value in json.load(sys.stdin).items(): lk.set(key, value)\n")
        done = subprocess.run([sys.executable, "-c", script, str(self.manifest), env],
                              input=json.dumps(items), text=True, check=False,
                              capture_output=True, timeout=120,
                              env={**os.environ, "PIPEKEY_MASTER_KEY": self.master_key})
        if done.returncode != 0:  # pipekey's errors name keys, never values
            raise RuntimeError(f"seeding {env} failed:\n{done.stderr[-2000:]}")

    def _airflow(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env(),
                                capture_output=True, text=True, timeout=timeout, cwd=self.work,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    # -- components -----------------------------------------------------------------------
    def start(self) -> Deployment:
        self.setup()
        components = dict(COMPONENTS)
        if self.executor == "CeleryExecutor":
            self._start_redis()
            components["celery-worker"] = CELERY_WORKER
        for name, args in components.items():
            args = [a.format(port=self.port) for a in args]
            self.log(f"== airflow {' '.join(args)}  (console: {self.consoles / name}.log)")
            self._spawn(name, [sys.executable, "-m", "airflow", *args])
        self._wait_for("the api-server", self._api_up, 180)
        self._wait_for("the DAGs to be parsed", self._all_parsed, 240)
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.consoles / f"{name}.log", "wb") as console:
            self.procs[name] = subprocess.Popen(
                argv, env=self.env(name), cwd=self.work, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True)

    def _start_redis(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.log(f"== redis-server on 127.0.0.1:{self.redis_port} (broker, no persistence)")
        self._spawn("redis", [server, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(self.work)])

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        self._wait_for("redis-server", answers, 30)

    def _api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/monitor/health",
                                        timeout=5):
                return True
        except OSError:
            return False

    def _wait_for(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({proc.returncode}) while waiting "
                                       f"for {what}; see {self.consoles / name}.log")
            if ready():
                return
            time.sleep(2)
        raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")

    def _query(self, sql: str, *args: object) -> list[tuple]:
        db = self.home / "airflow.db"
        if not db.exists():
            return []
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.OperationalError:  # locked or not migrated yet: ask again later
                return []

    def _all_parsed(self) -> bool:
        errors = self._query("SELECT filename FROM import_error")
        if errors:  # fail now, not after the timeout: the DAG file will not change
            raise RuntimeError(f"DAG files failed to import: {sorted(e[0] for e in errors)} "
                               f"(see {self.home / 'logs' / 'dag_processor'})")
        return set(self.dag_ids) <= self._parsed()

    def _parsed(self) -> set[str]:
        return {row[0] for row in self._query("SELECT dag_id FROM dag WHERE is_stale = 0")}

    def trigger(self, dag_ids: tuple[str, ...] | None = None) -> None:
        for dag_id in dag_ids or self.dag_ids:
            self.log(f"== airflow dags trigger {dag_id}")
            self._airflow("dags", "trigger", dag_id, timeout=180)

    def runs(self) -> dict[str, str]:
        """The state of each DAG's latest run."""
        return dict(self._query("SELECT dag_id, state FROM dag_run ORDER BY id"))

    def tasks(self) -> dict[tuple[str, str, int], str]:
        return {(d, t, m): s for d, t, m, s in self._query(
            "SELECT dag_id, task_id, map_index, state FROM task_instance")}

    def wait(self, timeout: float = 420, dag_ids: tuple[str, ...] | None = None
             ) -> dict[str, str]:
        def done() -> bool:
            states = self.runs()
            return all(states.get(d) in ("success", "failed") for d in dag_ids or self.dag_ids)

        self._wait_for("the DAG runs to finish", done, timeout)
        return self.runs()

    # -- results --------------------------------------------------------------------------
    def task_logs(self) -> dict[Path, str]:
        return {p: p.read_text(errors="replace")
                for p in sorted((self.home / "logs").rglob("*.log"))}

    def console_text(self) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace") for p in sorted(self.consoles.iterdir())}

    def provenance(self) -> list[str]:
        """The line each ads_report task printed about where its token came from."""
        lines = []
        for text in self.task_logs().values():
            for line in text.splitlines():
                event = _event(line)
                if "api_token from" in event or event.startswith("REFUSED"):
                    lines.append(event)
        return sorted(lines)

    def values(self) -> list[str]:
        """Every fake value seeded."""
        return [*self.tokens.values(), *self.passwords]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for proc in self.procs.values():  # children left behind in the group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for api in self.apis.values():
            api.__exit__(None, None, None)
        self.apis.clear()


def _event(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return line
    return str(record.get("event", "")) if isinstance(record, dict) else line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executor", choices=sorted(EXECUTORS), default="local",
                        help="LocalExecutor (default) or CeleryExecutor with Redis")
    parser.add_argument("--dir", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the components running (stop them with Ctrl-C)")
    args = parser.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="pipekey-airflow-"))
    deployment = Deployment(work, executor=EXECUTORS[args.executor])
    print(f"== working in {work}")
    try:
        deployment.start()
        deployment.trigger()
        states = deployment.wait()
        print("== DAG runs:", ", ".join(f"{d}: {s}" for d, s in sorted(states.items())))
        for (dag_id, task_id, index), state in sorted(deployment.tasks().items()):
            print(f"   {dag_id}.{task_id}[{index}]: {state}")
        print("== where each task's token came from (task logs; values masked):")
        for line in deployment.provenance():
            print("  ", line)
        leaked = [v for v in deployment.values()
                  for text in [*deployment.task_logs().values(),
                               *deployment.console_text().values()] if v in text]
        print(f"== values found in task logs and component consoles: {len(leaked)}")
        if args.keep_running:
            print(f"== api-server on http://127.0.0.1:{deployment.port}; Ctrl-C stops it all")
            while True:
                time.sleep(3600)
        return 0 if set(states.values()) == {"success"} and not leaked else 1
    except KeyboardInterrupt:
        return 130
    finally:
        deployment.stop()
        print("== stopped every component")


if __name__ == "__main__":
    sys.exit(main())
