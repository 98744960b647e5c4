"""Broker mode (enforced isolation, issue 17) in a real multi-team Airflow 3 deployment.

One deployment per executor (examples/airflow/deploy.py with ``teams=`` and ``broker=True``:
api-server, scheduler, dag-processor; LocalExecutor, and CeleryExecutor with Debian's
redis-server), two team bundles, several checks each:

* team ``marketing`` (pipeline ``ads``, scope ``accounts/{account}``): three mapped
  ``@pipekey_task`` tasks, one per account, each get their own account's token and their
  mapped connection ``warehouse`` through the broker, and the pipeline's granted Variable;
  inside the run a real ``PostgresHook(postgres_conn_id="warehouse")`` reaches the real
  PostgreSQL as the account's own login, and ``Variable.get("api_token")`` is the run's
  token: the workers' ``[workers] secrets_backend`` (pipekey's ``PipekeyRunBackend``)
  answers from the open run first (issue 29);
* team ``marketing`` (pipeline ``minted``, ``db = "dynamic:wh_login"``): a task connects
  with a login the API server minted for its run (through ``PostgresHook`` too), gone once
  the task ends; another is killed with SIGKILL inside its run: its login stops working
  after the ttl and ``pipekey credentials sweep`` on the API server drops it;
* team ``finance``: a DAG named to match ``ads``'s ``dags`` pattern tries every route to
  ``ads``'s values (``BaseHook.get_connection``, ``Variable.get``, ``task_run()``, a raw run
  request, ``pipekey.load().pipeline(...)`` / ``.get(...)``, the store file) and records
  what it got as GOT/DENIED, never a value; its own granted Variable comes through; the
  refused run requests fail at once with pipekey's message naming the team and pipeline.

Only the api-server holds the store's key (``PIPEKEY_MASTER_KEY``) and so the admin
connection of the minted logins; every task reports the sorted NAMES of its environment
variables, and the test hunts every fake value (in every
encoding a leak takes) in task logs, component consoles and every file under the work folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("airflow")
pytest.importorskip("dlt")  # deploy.py's stand-in APIs come with the quickstart's extras
pytest.importorskip("airflow.providers.postgres",
                    reason="pip install -e '.[airflow-celery]' (PostgresHook in the tasks)")
psycopg2 = pytest.importorskip("psycopg2", reason="pip install -e '.[postgres]'")

from pipekey.redact import encodings  # noqa: E402

from .airflow_deploy import celery_missing, deploy_module  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ACCOUNTS = ("acct_41", "acct_42", "acct_43")
TEAMS = ("marketing", "finance")
#: credentials a task process must not hold (names; the values are hunted separately)
STORE_CREDENTIALS = ("PIPEKEY_MASTER_KEY", "PIPEKEY_BROKER_TICKET_KEY", "AIRFLOW__SECRETS__BACKEND",
                     "AIRFLOW__SECRETS__BACKEND_KWARGS",
                     "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS")
#: what the workers' [workers] secrets_backend is: the open run first, no store credential
RUN_BACKEND = "pipekey.integrations.airflow_worker.PipekeyRunBackend"
#: seconds a minted login lives (the test-only PIPEKEY_TESTING_MIN_TTL lets it be short)
TTL = 30
WRITER = "lkt_deploy_writer"
ADMIN = "lkt_deploy_admin"

MANIFEST = """
env = "dev"
chain = ["local"]

[backends.local]
type = "local"
path = ".pipekey/{env}.db"

[credentials.wh_login]
type = "postgres_role"
admin = "connections/pg_admin"
member_of = ["lkt_deploy_writer"]
ttl = 30

[pipelines.ads]
teams = ["marketing"]
dags = ["ads_*"]
scope = "accounts/{account}"
requires = ["api_token"]
connections = { warehouse = "connections/warehouse_{account}" }
grants = ["airflow/variables/ads_campaign_key"]

[pipelines.minted]
teams = ["marketing"]
dags = ["mint_*"]
scope = "minted"
connections = { db = "dynamic:wh_login" }

[pipelines.billing]
teams = ["finance"]
dags = ["billing_*"]
scope = "finance/billing"
grants = ["airflow/variables/billing_note"]
"""

COMMON = '''
import hashlib
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from airflow.sdk import dag, task


def sha(value):
    """A short fingerprint the test compares, never the value."""
    return hashlib.sha256(str(value).encode()).hexdigest()[:12]


def store_sdks():
    return sorted(m for m in ("boto3", "botocore") if m in sys.modules)


def report(name, data):
    data["env_names"] = sorted(os.environ)
    data["workers_backend"] = os.environ.get("AIRFLOW__WORKERS__SECRETS_BACKEND")
    # a brokered run builds no store client: the AWS SDK stays out of the task (issue 32)
    # (measured before a task uses provider hooks, which may import them themselves)
    data.setdefault("store_sdks", store_sdks())
    folder = Path(os.environ["LK_TEST_REPORTS"])
    (folder / f"{name}.json").write_text(json.dumps(data, sort_keys=True))


def attempt(fn):
    """GOT:<fingerprint> or DENIED:<exception type>: what a route gave, never a value."""
    try:
        return "GOT:" + sha(fn())
    except BaseException as exc:  # noqa: BLE001 - every way of failing is a denial here
        return "DENIED:" + type(exc).__name__


def current_user(conn_id):
    """Who a real provider hook connects as (a role name: no value)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id).get_first("SELECT current_user")[0]
'''

TEAM_A_DAG = COMMON + '''

@dag(dag_id="ads_accounts", schedule=None, start_date=datetime(2026, 1, 1))
def ads_accounts():
    from pipekey.integrations.airflow import pipekey_task

    @task
    @pipekey_task
    def load(account: str):
        import pipekey
        from airflow.sdk import Variable
        from airflow.sdk.bases.hook import BaseHook

        run = pipekey.current()
        sdks = store_sdks()  # the run is open: before PostgresHook (its provider may load them)
        token = run.secret("api_token")
        warehouse = run.connection("warehouse")
        print(f"token of {account}, masked in every log: {token}")
        report(f"ads_{account}", {
            "store_sdks": sdks, "account": account, "token": sha(token), "warehouse_password":
            sha(warehouse.password), "warehouse_login": warehouse.login,
            "hook_warehouse": attempt(lambda: BaseHook.get_connection("warehouse").password),
            "hook_user": current_user("warehouse"),
            "variable_token": attempt(lambda: Variable.get("api_token")),
            "granted_variable": attempt(lambda: Variable.get("ads_campaign_key")),
        })

    load.expand(account={accounts!r})


ads_accounts()
'''

TEAM_B_DAG = COMMON + '''
import time


@dag(dag_id="ads_intruder", schedule=None, start_date=datetime(2026, 1, 1))
def ads_intruder():
    @task
    def intrude():
        import pipekey
        from airflow.sdk import Variable
        from airflow.sdk.bases.hook import BaseHook
        from pipekey import broker
        from pipekey.integrations.airflow import task_run

        def open_run():
            with task_run(account="acct_42") as run:  # ads_* : names pipeline ads
                return run.secret("api_token")

        def open_pipeline():
            with pipekey.load().pipeline("ads", account="acct_42") as run:
                return run.secret("api_token")

        def store_file():
            folder = Path(os.environ["PIPEKEY_CONFIG"]).parent / ".pipekey"
            data = b"".join(p.read_bytes() for p in sorted(folder.glob("*.db")))
            # what an intruder holds: the encrypted file; the test hunts values in it
            raise PermissionError(f"{len(data)} bytes of ciphertext")

        def forged_token():
            # what a task holding the scheduler's JWT secret (LocalExecutor) can do: sign a
            # token for a task of the other team (its id from the metadata DB) and ask the
            # Execution API for that team's run
            import sqlite3
            import uuid

            import httpx
            from airflow.api_fastapi.auth.tokens import JWTGenerator, get_signing_args
            from airflow.configuration import conf

            # the task's sql_alchemy_conn is blocked, not the file of a SQLite metadata DB
            db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                ti = c.execute("SELECT id FROM task_instance WHERE dag_id = 'ads_accounts'"
                               " LIMIT 1").fetchone()[0]
            generator = JWTGenerator(
                valid_for=600, issuer=conf.get("api_auth", "jwt_issuer", fallback=None),
                audience=conf.get_mandatory_list_value("execution_api", "jwt_audience")[0],
                **get_signing_args(make_secret_key_if_needed=False))
            token = generator.generate(extras={"sub": str(uuid.UUID(str(ti)))})
            url = conf.get("core", "execution_api_server_url").rstrip("/")
            key = broker.request_key("ads", params={"account": "acct_42"})
            answer = httpx.get(f"{url}/variables/{key}", timeout=60,
                               headers={"Authorization": f"Bearer {token}"})
            answer.raise_for_status()
            return answer.json()["value"]

        os_level = {"forged_execution_token": forged_token}
        routes = {
            "get_connection_warehouse": lambda: BaseHook.get_connection("warehouse").password,
            "variable_granted_to_ads": lambda: Variable.get("ads_campaign_key"),
            "variable_ads_key": lambda: Variable.get("accounts/acct_42/api_token"),
            "task_run_ads": open_run,
            "raw_run_request": lambda: broker.decode_payload(Variable.get(
                broker.request_key("ads", params={"account": "acct_42"}))),
            "load_pipeline_ads": open_pipeline,
            "load_get": lambda: pipekey.load().get("accounts/acct_42/api_token"),
            "store_file": store_file,
        }
        results, seconds = {}, {}
        for name, fn in routes.items():
            start = time.monotonic()
            results[name] = attempt(fn)
            seconds[name] = round(time.monotonic() - start, 2)
        results["own_variable"] = attempt(lambda: Variable.get("billing_note"))
        refusal = "no refusal"
        try:
            open_run()
        except Exception as exc:  # pipekey's messages name keys, never values
            refusal = str(exc)
        for name, outcome in sorted(results.items()):
            print(f"ROUTE {name}: {outcome.split(':')[0]}")
        results["os_level"] = {name: attempt(fn) for name, fn in os_level.items()}
        results["seconds"], results["refusal"] = seconds, refusal
        report("intruder", results)

    intrude()


ads_intruder()
'''

MINT_DAG = COMMON + '''
import time


@dag(dag_id="mint_login", schedule=None, start_date=datetime(2026, 1, 1))
def mint_login():
    from pipekey.integrations.airflow import pipekey_task

    @task
    @pipekey_task
    def use_login():
        import pipekey

        run = pipekey.current()
        conn = run.connection("db")
        report("mint_login", {"login": conn.login, "hook_user": current_user("db"),
                              "remaining": round(run.lease("db").remaining)})

    use_login()


mint_login()


@dag(dag_id="mint_killed", schedule=None, start_date=datetime(2026, 1, 1))
def mint_killed():
    from pipekey.integrations.airflow import pipekey_task

    @task
    @pipekey_task
    def killed():
        import pipekey

        conn = pipekey.current().connection("db")
        report("mint_killed", {"login": conn.login, "hook_user": current_user("db"),
                               "pid": os.getpid()})
        # the login reaches the test through a pipe, never through a file's content
        with open(Path(os.environ["LK_TEST_REPORTS"]) / "killed.fifo", "w") as fifo:
            fifo.write(json.dumps({"login": conn.login, "password": conn.password}) + "\\n")
        time.sleep(600)  # the test kills this process with SIGKILL here, inside the run

    killed()


mint_killed()
'''


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


class Values:
    """The fake values seeded: one token and one warehouse login per account (real roles of
    the test's PostgreSQL), the minted logins' admin connection."""

    def __init__(self, pg: dict) -> None:
        tag = hashlib.sha256(str(id(self)).encode()).hexdigest()[:8]
        self.pg = pg
        self.tokens = {a: f"fake-token-{a}-{tag}" for a in ACCOUNTS}
        self.passwords = {a: f"fake-wh-pw-{a}-{tag}" for a in ACCOUNTS}
        self.campaign = f"fake-campaign-key-{tag}"
        self.billing = f"fake-billing-note-{tag}"
        self.admin = f"fake-pg-admin-{tag}"

    def connection(self, login: str, password: str) -> str:
        return json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": self.pg["port"],
                           "login": login, "password": password, "schema": "analytics"})

    def store(self) -> dict[str, str]:
        items = {"airflow/variables/ads_campaign_key": self.campaign,
                 "airflow/variables/billing_note": self.billing,
                 "connections/pg_admin": self.connection(ADMIN, self.admin)}
        for a in ACCOUNTS:
            items[f"accounts/{a}/api_token"] = self.tokens[a]
            items[f"connections/warehouse_{a}"] = self.connection(f"wh_{a}", self.passwords[a])
        return items

    def all(self) -> list[str]:
        return [*self.tokens.values(), *self.passwords.values(), self.campaign, self.billing,
                self.admin]


def _superuser(pg: dict):
    db = psycopg2.connect(host=pg["socket_dir"], port=pg["port"], user="postgres",
                          dbname="analytics", connect_timeout=10)
    db.autocommit = True
    return db


def _roles(pg: dict, values: Values) -> None:
    """One login per account's warehouse, the admin that mints (CREATEROLE), the group the
    minted logins join; passwords set anew for this deployment's fake values."""
    db = _superuser(pg)
    with db.cursor() as cur:
        wanted = [(f"wh_{a}", "LOGIN", values.passwords[a]) for a in ACCOUNTS]
        wanted += [(ADMIN, "LOGIN CREATEROLE", values.admin), (WRITER, "NOLOGIN", None)]
        for role, attributes, password in wanted:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            if password is None:
                if verb == "CREATE":
                    cur.execute(f"CREATE ROLE {role} {attributes}")
                continue
            cur.execute(f"{verb} ROLE {role} {attributes} PASSWORD %s", (password,))
        cur.execute(f"GRANT pg_signal_backend TO {ADMIN}")
    db.close()


def pg_roles(pg: dict) -> set[str]:
    db = _superuser(pg)
    with db.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles")
        found = {row[0] for row in cur.fetchall()}
    db.close()
    return found


def _connects(pg: dict, login: str, password: str) -> bool:
    try:
        psycopg2.connect(host="127.0.0.1", port=pg["port"], user=login, password=password,
                         dbname="analytics", connect_timeout=10).close()
        return True
    except psycopg2.OperationalError:
        return False


def _kill_in_its_run(running, reader: int, timeout: float = 300) -> dict:
    """Wait (bounded) for the mint_killed task to send its login through the pipe, then
    SIGKILL its process inside its run."""
    deadline, got = time.monotonic() + timeout, b""
    while b"\n" not in got:
        if time.monotonic() > deadline:
            raise TimeoutError("mint_killed sent no login within the timeout")
        try:
            got += os.read(reader, 4096)
        except BlockingIOError:
            pass
        time.sleep(0.5)
    killed = json.loads(got.split(b"\n", 1)[0])
    pid = json.loads((running.reports / "mint_killed.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    killed["killed_at"] = time.monotonic()
    return killed


@pytest.fixture(scope="module", params=[
    pytest.param("LocalExecutor", id="local"), pytest.param("CeleryExecutor", id="celery")])
def deployment(request, tmp_path_factory, postgres):
    """Two team bundles, broker mode, every DAG triggered and finished (mint_killed's task
    killed in its run); stopped afterwards."""
    if request.param == "CeleryExecutor" and celery_missing():
        pytest.skip(celery_missing())
    deploy = deploy_module()
    work = tmp_path_factory.mktemp("broker")
    bundles = {team: work / f"bundle_{team}" for team in TEAMS}
    for folder in bundles.values():
        folder.mkdir()
    (bundles["marketing"] / "ads_accounts.py").write_text(
        TEAM_A_DAG.replace("{accounts!r}", repr(list(ACCOUNTS))))
    (bundles["marketing"] / "mint.py").write_text(MINT_DAG)
    (bundles["finance"] / "ads_intruder.py").write_text(
        TEAM_B_DAG)
    (work / "broker.toml").write_text(MANIFEST)
    reports, tmp = work / "reports", work / "tmp"
    reports.mkdir()
    tmp.mkdir()
    values = Values(postgres)
    _roles(postgres, values)
    os.mkfifo(reports / "killed.fifo")
    reader = os.open(reports / "killed.fifo", os.O_RDONLY | os.O_NONBLOCK)

    running = deploy.Deployment(
        work / "deployment", executor=request.param, log=lambda *a: None,
        dag_ids=("ads_accounts", "ads_intruder", "mint_login", "mint_killed"),
        manifest_source=work / "broker.toml",
        seed=lambda d: d.pipekey_set_many("dev", values.store()), teams=bundles, broker=True,
        extra_env={"LK_TEST_REPORTS": str(reports), "TMPDIR": str(tmp),
                   # a refused lookup on the API server is an HTTP 500 to the Task SDK, which
                   # retries it (5 times, 1-90 s apart by default) before the task sees "not
                   # found" (a refused run request is an answer: no retry)
                   "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MAX": "1",
                   "PIPEKEY_TESTING_MIN_TTL": "5"})
    running.values_ = values
    running.reports = reports
    running.scanned = work
    running.pg = postgres
    patched = pytest.MonkeyPatch()
    try:
        patched.setenv("PIPEKEY_TESTING_MIN_TTL", "5")  # seeding loads the manifest here
        running.start()
        running.trigger()
        running.killed = _kill_in_its_run(running, reader)
        running.wait(timeout=300)
        yield running
    finally:
        patched.undo()
        os.close(reader)
        running.stop()


def _reports(deployment) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(deployment.reports.glob("*.json"))}


def test_each_mapped_task_gets_its_own_account_through_the_broker(deployment) -> None:
    """Three mapped @pipekey_task tasks of team marketing succeed, each with its own
    account's token and mapped warehouse connection, and the pipeline's granted Variable."""
    assert deployment.runs() == {"ads_accounts": "success", "ads_intruder": "success",
                                 "mint_login": "success", "mint_killed": "failed"}
    reports = _reports(deployment)
    values = deployment.values_
    for account in ACCOUNTS:
        got = reports[f"ads_{account}"]
        assert got["token"] == sha(values.tokens[account]), account
        assert got["warehouse_password"] == sha(values.passwords[account]), account
        assert got["warehouse_login"] == f"wh_{account}"
        assert got["granted_variable"] == "GOT:" + sha(values.campaign)


def test_hooks_in_the_run_answer_with_the_runs_parameterised_connection(deployment) -> None:
    """Inside each mapped task's brokered run, Airflow's own lookups answer from the run
    (the workers' PipekeyRunBackend): BaseHook.get_connection("warehouse") is the account's
    connection, which the API server cannot pick (it does not know the account); a real
    PostgresHook connects to the real PostgreSQL as the account's own login; Variable.get of
    a secret name the run holds is the run's value."""
    reports = _reports(deployment)
    values = deployment.values_
    for account in ACCOUNTS:
        got = reports[f"ads_{account}"]
        assert got["hook_warehouse"] == "GOT:" + sha(values.passwords[account]), account
        assert got["hook_user"] == f"wh_{account}", account
        assert got["variable_token"] == "GOT:" + sha(values.tokens[account]), account


def test_a_minted_login_works_in_the_task_and_is_gone_after_it(deployment) -> None:
    """pipeline minted maps db = "dynamic:wh_login": the API server minted a login for the
    task's run (its admin connection never left the API server), the task connected as that
    login through PostgresHook, and the run's close had the API server drop it."""
    got = _reports(deployment)["mint_login"]
    assert got["login"].startswith("lk_minted_")
    assert got["hook_user"] == got["login"]
    assert 0 < got["remaining"] <= TTL
    assert got["login"] not in pg_roles(deployment.pg)


def test_a_killed_tasks_login_stops_after_its_ttl_and_sweep_drops_it(deployment) -> None:
    """mint_killed's task process was SIGKILLed inside its run: no close request, so its
    login outlives it, stops working by itself after the ttl, and `pipekey credentials
    sweep` run where the API server runs (its store key) drops it."""
    killed, pg = deployment.killed, deployment.pg
    assert _reports(deployment)["mint_killed"]["hook_user"] == killed["login"]
    assert killed["login"] in pg_roles(pg)
    deadline = killed["killed_at"] + TTL + 60
    while _connects(pg, killed["login"], killed["password"]):
        assert time.monotonic() < deadline, "the killed task's login still works after its ttl"
        time.sleep(1)
    assert killed["login"] in pg_roles(pg)
    env = {**os.environ, "PIPEKEY_MASTER_KEY": deployment.master_key,
           "PIPEKEY_TESTING_MIN_TTL": "5"}
    swept = subprocess.run([sys.executable, "-m", "pipekey", "-c", str(deployment.manifest),
                            "credentials", "sweep", "--json"], env=env, capture_output=True,
                           text=True, timeout=120, check=False)
    assert swept.returncode == 0, swept.stderr[-2000:]
    assert killed["login"] in {row["login"] for row in json.loads(swept.stdout)["swept"]}
    assert killed["login"] not in pg_roles(pg)


def test_the_other_team_gets_nothing_by_any_route(deployment) -> None:
    """Team finance's DAG, named to match ads's dags pattern, is denied every route to ads's
    values; its own team's granted Variable comes through (the broker answers it)."""
    got = _reports(deployment)["intruder"]
    routes = {k: v for k, v in got.items()
              if k not in ("env_names", "own_variable", "os_level", "seconds", "refusal",
                           "workers_backend", "store_sdks")}
    assert len(routes) == 8
    assert {k: v.split(":")[0] for k, v in routes.items()} == dict.fromkeys(routes, "DENIED")
    assert got["own_variable"] == "GOT:" + sha(deployment.values_.billing)


def test_a_refused_run_request_fails_at_once_naming_team_and_pipeline(deployment) -> None:
    """The broker answers a run request it refuses with a refusal the worker raises on:
    no HTTP 500, no retries, and the task sees pipekey's message naming its team and the
    pipeline, not "not found"."""
    got = _reports(deployment)["intruder"]
    assert "Airflow team 'finance' may not open pipekey pipeline 'ads'" in got["refusal"]
    for route in ("task_run_ads", "raw_run_request"):
        assert got[route] == "DENIED:AccessDenied", route
        assert got["seconds"][route] < 5, got["seconds"]


def test_a_task_holding_the_jwt_secret_can_act_as_another_team(deployment) -> None:
    """The limit of LocalExecutor, pinned so that docs/airflow.md stays true: task processes
    are forked from the scheduler and inherit its JWT secret, so a task can sign a token as a
    task of the other team and be answered as that team. A Celery worker holds no JWT secret
    (deploy.py gives it none): a token signed with airflow.cfg's own secret is refused."""
    forged = _reports(deployment)["intruder"]["os_level"]["forged_execution_token"]
    if deployment.executor == "LocalExecutor":
        assert forged.startswith("GOT:"), forged
    else:
        assert forged == "DENIED:HTTPStatusError", forged


def test_no_task_process_holds_a_store_credential(deployment) -> None:
    """Every task reported its environment's names: no store key, no pipekey backend, no
    AWS credential; the manifest and broker mode are all pipekey gave them."""
    reports = _reports(deployment)
    assert len(reports) == len(ACCOUNTS) + 3
    for name, report in reports.items():
        names = set(report["env_names"])
        assert not names & set(STORE_CREDENTIALS), name
        assert report["workers_backend"] == RUN_BACKEND, name
        assert not [n for n in names if n.startswith("AWS_")], name
        assert {"PIPEKEY_CONFIG", "PIPEKEY_AIRFLOW_MODE"} <= names, name
        if name.startswith("ads_"):  # brokered runs: no store SDK imported (issue 32)
            assert report["store_sdks"] == [], name


def _hunt(text: str, needles: dict[str, str]) -> list[str]:
    return sorted({value[:14] for form, value in needles.items() if form in text})


def test_no_value_in_any_log_console_or_file(deployment) -> None:
    """Every fake value (and the master key, and the killed task's minted password), in
    every encoding, is absent from the task
    logs, the component consoles and every file under the work folder (the Airflow home, its
    SQLite DB, the encrypted store, the reports, TMPDIR); printed tokens show as ***."""
    secrets = [*deployment.values_.all(), deployment.master_key, deployment.killed["password"]]
    needles = {form: value for value in secrets for form in encodings(value)}
    logs, consoles = deployment.task_logs(), deployment.console_text()
    assert len(logs) >= len(ACCOUNTS) + 3
    expected = {"api-server.log", "scheduler.log", "dag-processor.log"}
    if deployment.executor == "CeleryExecutor":
        expected |= {"redis.log", "celery-worker.log"}
    assert set(consoles) == expected
    for where, text in [*logs.items(), *consoles.items()]:
        assert not _hunt(text, needles), where
    files = [p for p in deployment.scanned.rglob("*") if p.is_file()]  # not the pipe
    assert any(p.suffix == ".db" and ".pipekey" in p.parts for p in files)
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert not _hunt(text, needles), path
    printed = [t for t in logs.values() if "masked in every log: ***" in t]
    assert len(printed) == len(ACCOUNTS)
