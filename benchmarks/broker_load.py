"""Broker mode under load and faults: a real Airflow API server answering run requests.

    python benchmarks/broker_load.py [--full | --ci] [--dir DIR] [--json OUT]

The harness (issue 33), shared by ``tests/deploy/test_broker_load.py`` (the small version,
``Plan.ci()``) and this script (``Plan.full()``):

* SSM on moto (its own process, 127.0.0.1) behind the counting, fault-injecting
  ``benchmarks/proxy.py``; each API server replica gets a proxy of its own (``AWS_ENDPOINT_URL``),
  so its store calls are counted apart;
* a multi-team deployment in broker mode (``examples/airflow/deploy.py``): two teams (alpha,
  beta) of three pipelines each, scope ``<team>/<pipeline>/{item}``, one secret per run.
  The scheduler and dag-processor run only until each team's DAG (a few mapped no-op tasks)
  has finished: then the task instances exist in the metadata DB, which is all the Execution
  API's Variable route checks (a valid JWT whose ``sub`` is a task instance id; the team is
  the TI's DAG's bundle's team). After that the api-server runs alone;
* a fleet (``drive()``, a process of its own with the deployment's Airflow settings) that
  signs task tokens as the scheduler does (``JWTGenerator``, the deployment's JWT secret, sub =
  a TI id) and sends run requests through the Task SDK's own ``Client`` (its httpx transport
  and tenacity retries: 5xx and connection errors retried ``execution_api_retries`` times,
  ``wait_random_exponential``), one client per request, as one supervisor per task.

Every answer is checked by fingerprint (sha256, 12 hex digits; values are never printed): a
payload must be its own pipeline's and item's value; a request of one team for the other's
pipeline must be refused; a decoy for a request key in the env-var backend and the metastore
would show a fall-through. Phases (each a ``Phase`` in the report): bursts (``concurrency``
requests in flight), store faults through the proxy (throttling, outage, latency) with
bursts during and after, the API server killed mid-burst and restarted, and two replicas behind
a round-robin TCP proxy. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TEAMS = {"alpha": ("a1", "a2", "a3"), "beta": ("b1", "b2", "b3")}
TASKS = 3  # mapped task instances per team: the fleet's task identities
PREFIX = "/pipekey-load"
REGION = "eu-central-1"
AIRFLOW_WAIT_MAX = 90.0  # [workers] execution_api_retry_wait_max's default
#: what the API server's log shows for each run request refused because the store failed
#: (the broker's warning, with pipekey's message: backend, key, cause; never a value)
REFUSAL = ": backend 'ssm': could not resolve"

MANIFEST = """
env = "dev"
chain = ["ssm"]

[backends.ssm]
type = "aws_ssm"
prefix = "{prefix}"
region = "{region}"
retry_mode = "standard"
max_attempts = {attempts}
connect_timeout = 1.0
read_timeout = {read_timeout}
cache = {{ ttl = {ttl}, jitter = 0.1, max_stale = {max_stale} }}
"""

PIPELINE = """
[pipelines.{name}]
teams = ["{team}"]
dags = ["{team}_{name}_*"]
scope = "{team}/{name}/{{item}}"
requires = ["token"]
"""

DAG = '''
from datetime import datetime
from airflow.sdk import dag, task


@dag(dag_id="{team}_load", schedule=None, start_date=datetime(2026, 1, 1))
def {team}_load():
    @task
    def noop(i: int):
        return None

    noop.expand(i=list(range({tasks})))


{team}_load()
'''


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@dataclass
class Plan:
    """What one harness run does. ``ci()`` fits in about a minute of load; ``full()`` is the
    benchmark of docs/airflow.md."""

    items: int = 12               # parameter values per pipeline (distinct runs: 6 x items)
    cold_items: int = 4           # per pipeline, first asked for during a fault
    bursts: tuple[tuple[int, int], ...] = ((300, 100),)  # (requests, in flight)
    cross_share: float = 0.02     # requests for the other team's pipeline
    ttl: float = 8.0
    max_stale: float = 120.0
    attempts: int = 3             # botocore max_attempts
    read_timeout: float = 3.0
    faults: tuple[str, ...] = ("throttle", "outage", "latency")
    fault_seconds: float = 10.0
    fault_burst: tuple[int, int] = (60, 30)
    recover_within: float = 90.0
    restart: bool = True
    replicas: bool = False
    #: the fleet's [workers] execution_api_retry_wait_max except in the restart phase, which
    #: keeps Airflow's default (90): an HTTP 500 or a lost connection is retried 5 times
    retry_wait_max: float = 2.0

    @classmethod
    def ci(cls) -> Plan:
        return cls()

    @classmethod
    def full(cls) -> Plan:
        return cls(items=40, bursts=((1000, 100), (1000, 500)), ttl=30.0, fault_seconds=40.0,
                   fault_burst=(200, 100), replicas=True)


@dataclass
class Phase:
    """One phase's outcome: counts per outcome, latency percentiles (ms), store calls."""

    name: str
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    # latency of the own requests (ms); a cross-team one is refused (the broker's refusal
    # payload, at once): its time is cross_max, not in the percentiles
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    cross_max: float = 0.0
    seconds: float = 0.0
    store_calls: dict[str, int] = field(default_factory=dict)
    distinct_runs: int = 0
    wrong: int = 0                # a value not the request's own (another item or pipeline)
    foreign: int = 0              # another team's value, or a cross-team request answered
    decoys: int = 0               # a decoy served: a fall-through to another backend
    retried: int = 0              # requests the Task SDK sent more than once
    refusals: int = 0             # HTTP 500 answers (the SDK retries each; refusals are
                                  # payloads since the broker answers them, issue 29)
    logged: int = 0               # lines naming the store in the API server's log (Airflow
                                  # logs a traceback per refusal: about 2 lines each)
    note: str = ""

    def line(self) -> str:
        calls = ", ".join(f"{k} {v}" for k, v in sorted(self.store_calls.items())) or "none"
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (f"{self.name}: {self.requests} requests in {self.seconds:.1f} s; {outcomes}; "
                f"p50/p95/p99/max {self.p50:.0f}/{self.p95:.0f}/{self.p99:.0f}/{self.max:.0f} "
                f"ms (cross-team refusals: up to {self.cross_max:.0f} ms); SDK retried "
                f"{self.retried}; store calls: {calls} ({self.distinct_runs} "
                f"distinct runs); HTTP 500 answers {self.refusals}, log lines naming the "
                f"store {self.logged}; wrong {self.wrong}, "
                f"foreign {self.foreign}, decoys "
                f"{self.decoys}{'; ' + self.note if self.note else ''}")


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


# -- the fleet: task supervisors, in a process of their own ---------------------------------
def drive() -> int:
    """The fleet process: reads a set-up line then one burst per line on stdin, answers one
    ``RESULT {json}`` line per burst on stdout. Never prints a value."""
    from concurrent.futures import ThreadPoolExecutor

    from airflow.api_fastapi.auth.tokens import JWTGenerator, get_signing_args
    from airflow.configuration import conf
    from airflow.sdk.api.client import Client
    from airflow.sdk.api.datamodels._generated import VariableResponse

    from pipekey import broker

    setup = json.loads(sys.stdin.readline())
    generator = JWTGenerator(
        valid_for=3600, issuer=conf.get("api_auth", "jwt_issuer", fallback=None),
        audience=conf.get_mandatory_list_value("execution_api", "jwt_audience")[0],
        **get_signing_args(make_secret_key_if_needed=False))
    tokens = {team: [generator.generate(extras={"sub": ti}) for ti in tis]
              for team, tis in setup["tis"].items()}

    def one(request: list[str]) -> list[Any]:
        team, pipeline, item = request
        statuses: list[int] = []  # one per attempt the SDK made: HTTP status, 0 if none
        client = Client(base_url=setup["url"], token=random.choice(tokens[team]))
        client.event_hooks["request"].insert(0, lambda r: statuses.append(0))
        client.event_hooks["response"].insert(
            0, lambda r: statuses.__setitem__(-1, r.status_code))
        start = time.perf_counter()
        try:
            got = client.variables.get(broker.request_key(pipeline, params={"item": item}))
            if isinstance(got, VariableResponse):
                body = json.loads(got.value or "{}")
                if "refused" in body:  # the broker's refusal payload (broker.refusal_payload)
                    return ["refused", "", "", (time.perf_counter() - start) * 1000, statuses]
                fps = {n: sha(s["value"]) for n, s in body.get("names", {}).items()}
                where = f"{body.get('pipeline')}/{body.get('params', {}).get('item')}"
                outcome = ["ok", fps.get("token", ""), where]
            elif got.error.value == "VARIABLE_NOT_FOUND":
                outcome = ["notfound", "", ""]
            else:
                outcome = ["denied", "", ""]
        except Exception as exc:  # noqa: BLE001 - the outcome is recorded, never a value
            status = getattr(getattr(exc, "response", None), "status_code", None)
            outcome = [f"error {type(exc).__name__}{' ' + str(status) if status else ''}",
                       "", ""]
        finally:
            client.close()
        return [*outcome, (time.perf_counter() - start) * 1000, statuses]

    for line in sys.stdin:
        order = json.loads(line)
        with ThreadPoolExecutor(max_workers=order["concurrency"]) as pool:
            results = list(pool.map(one, order["requests"]))
        print("RESULT " + json.dumps(results), flush=True)
    return 0


class Fleet:
    """The fleet process, started with the deployment's Airflow settings (the JWT secret)."""

    def __init__(self, env: dict[str, str], url: str, tis: dict[str, list[str]],
                 log_path: Path) -> None:
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--drive"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            start_new_session=True)
        self._send({"url": url, "tis": tis})

    def _send(self, data: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(data) + "\n")
        self.proc.stdin.flush()

    def burst(self, requests: list[list[str]], concurrency: int, timeout: float = 900,
              during: Callable[[], None] | None = None) -> list[list[Any]]:
        self._send({"requests": requests, "concurrency": concurrency})
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(self._read()), daemon=True)
        reader.start()
        if during is not None:
            during()
        reader.join(timeout)
        if not got:
            raise TimeoutError(f"the fleet gave no answer within {timeout:.0f} s")
        return json.loads(got[0])

    def _read(self) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return line[len("RESULT "):]
        raise RuntimeError("the fleet exited (see its log)")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()


# -- loopback helpers -------------------------------------------------------------------------
class RoundRobin:
    """A TCP proxy on 127.0.0.1: each new connection goes to the next port of ``ports``."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self._next = ports, 0
        self.connections: Counter[int] = Counter()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.5)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            port = self.ports[self._next % len(self.ports)]
            self._next += 1
            self.connections[port] += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()


class RssSampler:
    """Peak resident memory of each watched process tree (sampled every 0.2 s)."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.first: dict[str, int] = {}  # the first sample: at rest, before any request
        self.watched: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            for name, pid in list(self.watched.items()):
                try:
                    root = psutil.Process(pid)
                    rss = sum(p.memory_info().rss for p in [root, *root.children(True)])
                except psutil.Error:
                    continue
                self.first.setdefault(name, rss)
                self.peaks[name] = max(self.peaks.get(name, 0), rss)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.2)


# -- the harness ------------------------------------------------------------------------------
class Harness:
    """Moto, the proxies, the deployment and the fleet; ``run()`` does the plan's phases.

    Use as a context manager: everything it starts is stopped on exit, by process id."""

    def __init__(self, work: Path, plan: Plan, log: Callable[[str], None] = print) -> None:
        self.work, self.plan, self.log = work.resolve(), plan, log
        self.tag = os.urandom(4).hex()
        self.rng = random.Random(33)
        self.phases: list[Phase] = []
        self.rss = RssSampler()
        self.hot = [f"i{n:03d}" for n in range(plan.items)]
        self.cold = {kind: [f"c{k}{n:02d}" for n in range(plan.cold_items)]
                     for k, kind in enumerate([*plan.faults, "restart"])}
        self.values = {(p, item): f"fake-load-{team}-{p}-{item}-{self.tag}"
                       for team, ps in TEAMS.items() for p in ps
                       for item in [*self.hot, *(i for c in self.cold.values() for i in c)]}
        self.team_of = {p: team for team, ps in TEAMS.items() for p in ps}
        self.fps = {k: sha(v) for k, v in self.values.items()}
        # a decoy per fault in Airflow's env-var backend, for a request asked for only during
        # that fault: served, it would show a fall-through past pipekey's refusal
        from pipekey import broker

        self.decoys: dict[str, str] = {}
        for kind, items in self.cold.items():
            key = broker.request_key("a1", params={"item": items[0]})
            self.decoys[f"AIRFLOW_VAR_{key.upper()}"] = f"fake-decoy-{kind}-{self.tag}"
        self.decoy_fps = {sha(v) for v in self.decoys.values()}
        self._stack = ExitStack()

    # -- start and stop -----------------------------------------------------------------------
    def __enter__(self) -> Harness:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.rss.close()

    def _start(self) -> None:
        from benchmarks.proxy import LoopbackProxy

        self.work.mkdir(parents=True, exist_ok=True)
        moto, self.moto_url = start_moto()
        self._stack.callback(lambda: (moto.terminate(), moto.wait(timeout=30)))
        self.proxies = {"api-server": LoopbackProxy(self.moto_url)}
        self._stack.callback(lambda: [p.close() for p in self.proxies.values()])
        self._seed()
        self.deployment = self._deployment()
        self._stack.callback(self.deployment.stop)
        self.log("== starting the deployment (api-server, scheduler, dag-processor)")
        self.deployment.start()
        self.deployment.trigger()
        states = self.deployment.wait(timeout=300)
        if set(states.values()) != {"success"}:
            raise RuntimeError(f"the DAGs that create the task instances failed: {states}")
        for name in ("scheduler", "dag-processor"):  # from here on the api-server runs alone
            self._stop_component(name)
        tis: dict[str, list[str]] = {team: [] for team in TEAMS}
        for ti, dag_id in self.deployment._query("SELECT id, dag_id FROM task_instance"):
            tis[dag_id.removesuffix("_load")].append(str(_uuid(ti)))
        self.tis = tis
        self.rss.watched["api-server"] = self.deployment.procs["api-server"].pid
        self.fleet = self._fleet(self.deployment.port)

    def _fleet(self, port: int, wait_max: float | None = None) -> Fleet:
        wait = self.plan.retry_wait_max if wait_max is None else wait_max
        env = {**self.deployment.env(None), "PYTHONPATH": _pythonpath(),
               "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MAX": str(wait)}
        fleet = Fleet(env, f"http://127.0.0.1:{port}/execution/", self.tis,
                      self.work / "fleet.log")
        self._stack.callback(fleet.close)
        return fleet

    def _seed(self) -> None:
        import boto3

        ssm = boto3.client("ssm", region_name=REGION, endpoint_url=self.moto_url,
                           aws_access_key_id="load", aws_secret_access_key="load")
        for (p, item), value in self.values.items():
            ssm.put_parameter(Name=f"{PREFIX}/{self.team_of[p]}/{p}/{item}/token", Value=value,
                              Type="SecureString")

    def _deployment(self) -> Any:
        sys.path.insert(0, str(ROOT / "tests" / "deploy"))
        from airflow_deploy import deploy_module

        deploy = deploy_module()
        plan = self.plan
        manifest = self.work / "load.toml"
        manifest.write_text(MANIFEST.format(
            prefix=PREFIX, region=REGION, attempts=plan.attempts, read_timeout=plan.read_timeout,
            ttl=plan.ttl, max_stale=plan.max_stale) + "".join(
            PIPELINE.format(name=p, team=team) for team, ps in TEAMS.items() for p in ps))
        bundles = {}
        for team in TEAMS:
            bundles[team] = self.work / f"bundle_{team}"
            bundles[team].mkdir(exist_ok=True)
            (bundles[team] / f"{team}_load.py").write_text(DAG.format(team=team, tasks=TASKS))
        decoys = self.decoys
        proxies = self.proxies

        class LoadDeployment(deploy.Deployment):  # type: ignore[misc,name-defined]
            def env(self, component: str | None = None) -> dict[str, str]:
                if component is None or not component.startswith("api-server"):
                    return {**super().env(component), "PYTHONPATH": _pythonpath()}
                return {**super().env("api-server"), "PYTHONPATH": _pythonpath(),
                        "AWS_ACCESS_KEY_ID": "load", "AWS_SECRET_ACCESS_KEY": "load",
                        "AWS_DEFAULT_REGION": REGION,
                        "AWS_ENDPOINT_URL": proxies[component].url, **decoys}

        return LoadDeployment(self.work / "deployment", log=self.log,
                              dag_ids=tuple(f"{t}_load" for t in TEAMS),
                              manifest_source=manifest, seed=lambda d: None, teams=bundles,
                              broker=True)

    def _stop_component(self, name: str) -> None:
        proc = self.deployment.procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _start_api(self, name: str, port: int) -> None:
        self.deployment._spawn(name, [sys.executable, "-m", "airflow", "api-server", "--host",
                                      "127.0.0.1", "--port", str(port)])
        self.rss.watched[name] = self.deployment.procs[name].pid

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health",
                                            timeout=5):
                    return True
            except OSError:
                return False

        self.deployment._wait_for(f"{name} on port {port}", up, 240)

    # -- requests and their checks -------------------------------------------------------------
    def requests(self, n: int, items: list[str], cross: float | None = None) -> list[list[str]]:
        share = self.plan.cross_share if cross is None else cross
        out = []
        for _ in range(n):
            team = self.rng.choice(sorted(TEAMS))
            other = next(t for t in TEAMS if t != team)
            pipeline = self.rng.choice(TEAMS[other if self.rng.random() < share else team])
            out.append([team, pipeline, self.rng.choice(items)])
        return out

    def every(self, items: list[str]) -> list[list[str]]:
        """Each own run of ``items`` once, shuffled."""
        out = [[self.team_of[p], p, item] for p in self.team_of for item in items]
        self.rng.shuffle(out)
        return out

    def calls(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for proxy in self.proxies.values():
            total.update(proxy.counts)
        return total

    def phase(self, name: str, bursts: list[tuple[list[list[str]], int]],
              during: Callable[[], None] | None = None, note: str = "") -> Phase:
        before, start = self.calls(), time.monotonic()
        results: list[list[Any]] = []
        sent: list[list[str]] = []
        for k, (requests, concurrency) in enumerate(bursts):
            results += self.fleet.burst(requests, concurrency,
                                        during=during if k == 0 else None)
            sent += requests
        got = self.judge(name, sent, results)
        got.seconds = time.monotonic() - start
        got.store_calls = dict(self.calls() - before)
        got.note = note
        self.phases.append(got)
        self.log("   " + got.line())
        return got

    def judge(self, name: str, sent: list[list[str]], results: list[list[Any]]) -> Phase:
        phase = Phase(name, requests=len(sent))
        outcomes: Counter[str] = Counter()
        latencies = []
        foreign_fps = {team: {fp for (p, _), fp in self.fps.items() if self.team_of[p] != team}
                       for team in TEAMS}
        crossing = []
        for (team, pipeline, item), (status, fp, where, ms, statuses) in zip(sent, results):
            cross = self.team_of[pipeline] != team
            (crossing if cross else latencies).append(ms)
            phase.retried += len(statuses) > 1
            phase.refusals += statuses.count(500)
            if status == "ok":
                if cross or fp in foreign_fps[team]:
                    phase.foreign += 1
                elif fp in self.decoy_fps:
                    phase.decoys += 1
                elif fp != self.fps[(pipeline, item)] or where != f"{pipeline}/{item}":
                    phase.wrong += 1
            kind = "served" if status == "ok" else status
            if cross:
                kind = f"cross-team {kind}"
            elif not item.startswith("i"):
                kind = f"cold {kind}"  # first asked for during a fault or a restart
            outcomes[kind] += 1
        phase.outcomes = dict(outcomes)
        phase.distinct_runs = len({(p, i) for t, p, i in sent if self.team_of[p] == t})
        ordered = sorted(latencies)
        phase.p50, phase.p95, phase.p99 = (_pct(ordered, q) for q in (0.5, 0.95, 0.99))
        phase.max = ordered[-1] if ordered else 0.0
        phase.cross_max = max(crossing, default=0.0)
        return phase

    def console_lines(self, name: str, needle: str) -> int:
        path = self.deployment.consoles / f"{name}.log"
        return path.read_text(errors="replace").count(needle) if path.exists() else 0

    # -- the phases ----------------------------------------------------------------------------
    def run(self) -> list[Phase]:
        plan = self.plan
        for n, concurrency in plan.bursts:
            self.phase(f"burst {n} x {concurrency} in flight",
                       [(self.requests(n, self.hot), concurrency)])
        for kind in plan.faults:
            self.fault(kind)
        if plan.restart:
            self.restart()
        if plan.replicas:
            self.replicas()
        return self.phases

    def fault(self, kind: str) -> None:
        plan, proxy = self.plan, self.proxies["api-server"]
        n, concurrency = plan.fault_burst
        cold = self.cold[kind]
        # every hot run once: each is cached when the fault starts, so each must be served
        self.phase(f"{kind}: warm-up", [(self.every(self.hot), concurrency)])
        refusals = self.console_lines("api-server", REFUSAL)
        proxy.fault = {"throttle": ("throttle",), "outage": ("drop",),
                       "latency": ("delay", 2.0)}[kind]
        until = time.monotonic() + plan.fault_seconds
        bursts = 0
        before, start = self.calls(), time.monotonic()
        results: list[list[Any]] = []
        sent: list[list[str]] = []
        try:
            while time.monotonic() < until and bursts < 50:
                requests = self.requests(n, self.hot, 0)
                some = self.rng.sample(self.every(cold), min(n // 5, len(cold) * 6))
                requests[: len(some)] = some
                results += self.fleet.burst(requests, concurrency)
                sent += requests
                bursts += 1
        finally:
            proxy.fault = None
        got = self.judge(f"{kind}: during", sent, results)
        got.seconds, got.store_calls = time.monotonic() - start, dict(self.calls() - before)
        got.logged = self.console_lines("api-server", REFUSAL) - refusals
        got.note = f"fault {plan.fault_seconds:.0f} s, {bursts} bursts"
        self.phases.append(got)
        self.log("   " + got.line())
        self.recover(kind, [*self.hot, *cold])

    def recover(self, kind: str, items: list[str]) -> Phase | None:
        """Bursts until every request is served (bounded): the store is back, no restart."""
        n, concurrency = self.plan.fault_burst
        start = time.monotonic()
        while time.monotonic() - start < self.plan.recover_within:
            got = self.phase(f"{kind}: after", [(self.requests(n, items, 0), concurrency)])
            if set(got.outcomes) <= {"served", "cold served"}:
                got.note = f"all served {time.monotonic() - start:.1f} s after the fault ended"
                self.log(f"   recovered: {got.note}")
                return got
            time.sleep(1)
        return None

    def restart(self) -> None:
        n, concurrency = self.plan.bursts[0]
        items = [*self.hot, *self.cold["restart"]]
        timeline: dict[str, float] = {}

        def kill_and_start() -> None:
            time.sleep(1.0)
            timeline["killed"] = time.monotonic()
            proc = self.deployment.procs.pop("api-server")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            consoles = self.deployment.consoles  # keep the first life's console
            (consoles / "api-server.log").rename(consoles / "api-server-killed.log")
            self._start_api("api-server", self.deployment.port)
            timeline["up"] = time.monotonic()

        # Airflow's own retry settings here (5 attempts, 1..90 s apart, exponential with
        # jitter): what a task's supervisor does when the API server goes away
        old, self.fleet = self.fleet, self._fleet(self.deployment.port, AIRFLOW_WAIT_MAX)
        try:
            got = self.phase("restart: burst, api-server killed after 1 s",
                             [(self.requests(n, items), concurrency)], during=kill_and_start)
            down = timeline.get("up", 0) - timeline.get("killed", 0)
            got.note = f"down {down:.1f} s (SIGKILL to health answering)"
            self.log(f"   {got.note}")
            self.phase("restart: next burst", [(self.requests(n, items), concurrency)])
        finally:
            self.fleet = old

    def replicas(self) -> None:
        from benchmarks.proxy import LoopbackProxy

        self.proxies["api-server-2"] = LoopbackProxy(self.moto_url)
        port2 = _free_port()
        self._start_api("api-server-2", port2)
        rr = RoundRobin([self.deployment.port, port2])
        self._stack.callback(rr.close)
        old, self.fleet = self.fleet, self._fleet(rr.port)
        try:
            for proxy in self.proxies.values():
                proxy.reset()
            n, concurrency = self.plan.bursts[0]
            got = self.phase("2 replicas behind round-robin", [(self.requests(n, self.hot),
                                                                concurrency)])
            per = {name: sum(p.counts.values()) for name, p in self.proxies.items()}
            got.note = (f"store calls per replica {per}; connections per port "
                        f"{dict(rr.connections)}")
            self.log(f"   {got.note}")
        finally:
            self.fleet = old


def _uuid(value: Any) -> str:
    import uuid

    return str(uuid.UUID(str(value)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--full", action="store_true", help="the benchmark (default)")
    which.add_argument("--ci", action="store_true", help="the small version the CI test runs")
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="write the phases as JSON here")
    args = parser.parse_args(argv)
    if args.drive:
        return drive()
    plan = Plan.ci() if args.ci else Plan.full()
    work = args.dir or Path(tempfile.mkdtemp(prefix="pipekey-broker-load-"))
    print(f"== working in {work}; plan: {plan}")
    with Harness(work, plan) as harness:
        phases = harness.run()
        peaks = {k: round(v / 2**20) for k, v in harness.rss.peaks.items()}
        rest = {k: round(v / 2**20) for k, v in harness.rss.first.items()}
    print(f"== API server RSS (MiB, process tree): at rest {rest}, peak {peaks}")
    bad = sum(p.wrong + p.foreign + p.decoys for p in phases)
    print(f"== wrong, foreign or decoy values served: {bad}")
    if args.json:
        args.json.write_text(json.dumps({"plan": asdict(plan), "rss_mib": peaks,
                                         "rss_at_rest_mib": rest,
                                         "phases": [asdict(p) for p in phases]}, indent=1))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
