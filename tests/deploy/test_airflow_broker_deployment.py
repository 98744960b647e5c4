"""Broker mode (enforced isolation, issue 17) in a real multi-team Airflow 3 deployment.

One deployment per executor (examples/airflow/deploy.py with ``teams=`` and ``broker=True``:
api-server, scheduler, dag-processor; LocalExecutor, and CeleryExecutor with Debian's
redis-server), two team bundles, several checks each:

* team ``marketing`` (pipeline ``ads``, scope ``accounts/{account}``): three mapped
  ``@pipekey_task`` tasks, one per account, each get their own account's token and their
  mapped connection ``warehouse`` through the broker, and the pipeline's granted Variable;
* team ``finance``: a DAG named to match ``ads``'s ``dags`` pattern tries every route to
  ``ads``'s values (``BaseHook.get_connection``, ``Variable.get``, ``task_run()``, a raw run
  request, ``pipekey.load().pipeline(...)`` / ``.get(...)``, the store file) and records
  what it got as GOT/DENIED, never a value; its own granted Variable comes through.

Only the api-server holds the store's key (``PIPEKEY_MASTER_KEY``); every task reports the
sorted NAMES of its environment variables, and the test hunts every fake value (in every
encoding a leak takes) in task logs, component consoles and every file under the work folder.
"""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("airflow")
pytest.importorskip("dlt")  # deploy.py's stand-in APIs come with the quickstart's extras

from pipekey.redact import encodings  # noqa: E402

from .airflow_deploy import celery_missing, deploy_module  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ACCOUNTS = ("acct_41", "acct_42", "acct_43")
TEAMS = ("marketing", "finance")
#: credentials a task process must not hold (names; the values are hunted separately)
STORE_CREDENTIALS = ("PIPEKEY_MASTER_KEY", "AIRFLOW__SECRETS__BACKEND",
                     "AIRFLOW__SECRETS__BACKEND_KWARGS", "AIRFLOW__WORKERS__SECRETS_BACKEND",
                     "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS")

MANIFEST = """
env = "dev"
chain = ["local"]

[backends.local]
type = "local"
path = ".pipekey/{env}.db"

[pipelines.ads]
teams = ["marketing"]
dags = ["ads_*"]
scope = "accounts/{account}"
requires = ["api_token"]
connections = { warehouse = "connections/warehouse_{account}" }
grants = ["airflow/variables/ads_campaign_key"]

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


def report(name, data):
    data["env_names"] = sorted(os.environ)
    # a brokered run builds no store client: the AWS SDK stays out of the task (issue 32)
    data["store_sdks"] = sorted(m for m in ("boto3", "botocore") if m in sys.modules)
    folder = Path(os.environ["LK_TEST_REPORTS"])
    (folder / f"{name}.json").write_text(json.dumps(data, sort_keys=True))


def attempt(fn):
    """GOT:<fingerprint> or DENIED:<exception type>: what a route gave, never a value."""
    try:
        return "GOT:" + sha(fn())
    except BaseException as exc:  # noqa: BLE001 - every way of failing is a denial here
        return "DENIED:" + type(exc).__name__
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
        token = run.secret("api_token")
        warehouse = run.connection("warehouse")
        print(f"token of {account}, masked in every log: {token}")
        report(f"ads_{account}", {
            "account": account, "token": sha(token), "warehouse_password":
            sha(warehouse.password), "warehouse_host": warehouse.host,
            "hook_warehouse": attempt(lambda: BaseHook.get_connection("warehouse").password),
            "granted_variable": attempt(lambda: Variable.get("ads_campaign_key")),
        })

    load.expand(account={accounts!r})


ads_accounts()
'''

TEAM_B_DAG = COMMON + '''

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
            "raw_run_request": lambda: Variable.get(
                broker.request_key("ads", params={"account": "acct_42"})),
            "load_pipeline_ads": open_pipeline,
            "load_get": lambda: pipekey.load().get("accounts/acct_42/api_token"),
            "store_file": store_file,
        }
        results = {name: attempt(fn) for name, fn in routes.items()}
        results["own_variable"] = attempt(lambda: Variable.get("billing_note"))
        for name, outcome in sorted(results.items()):
            print(f"ROUTE {name}: {outcome.split(':')[0]}")
        results["os_level"] = {name: attempt(fn) for name, fn in os_level.items()}
        report("intruder", results)

    intrude()


ads_intruder()
'''

def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


class Values:
    """The fake values seeded: one token and one warehouse password per account."""

    def __init__(self) -> None:
        tag = hashlib.sha256(str(id(self)).encode()).hexdigest()[:8]
        self.tokens = {a: f"fake-token-{a}-{tag}" for a in ACCOUNTS}
        self.passwords = {a: f"fake-wh-pw-{a}-{tag}" for a in ACCOUNTS}
        self.campaign = f"fake-campaign-key-{tag}"
        self.billing = f"fake-billing-note-{tag}"

    def store(self) -> dict[str, str]:
        items = {"airflow/variables/ads_campaign_key": self.campaign,
                 "airflow/variables/billing_note": self.billing}
        for a in ACCOUNTS:
            items[f"accounts/{a}/api_token"] = self.tokens[a]
            items[f"connections/warehouse_{a}"] = json.dumps({
                "conn_type": "postgres", "host": f"wh-{a}.example.invalid",
                "login": "loader", "password": self.passwords[a]})
        return items

    def all(self) -> list[str]:
        return [*self.tokens.values(), *self.passwords.values(), self.campaign, self.billing]


@pytest.fixture(scope="module", params=[
    pytest.param("LocalExecutor", id="local"), pytest.param("CeleryExecutor", id="celery")])
def deployment(request, tmp_path_factory):
    """Two team bundles, broker mode, both DAGs triggered and finished; stopped afterwards."""
    if request.param == "CeleryExecutor" and celery_missing():
        pytest.skip(celery_missing())
    deploy = deploy_module()
    work = tmp_path_factory.mktemp("broker")
    bundles = {team: work / f"bundle_{team}" for team in TEAMS}
    for folder in bundles.values():
        folder.mkdir()
    (bundles["marketing"] / "ads_accounts.py").write_text(
        TEAM_A_DAG.replace("{accounts!r}", repr(list(ACCOUNTS))))
    (bundles["finance"] / "ads_intruder.py").write_text(
        TEAM_B_DAG)
    (work / "broker.toml").write_text(MANIFEST)
    reports, tmp = work / "reports", work / "tmp"
    reports.mkdir()
    tmp.mkdir()
    values = Values()

    running = deploy.Deployment(
        work / "deployment", executor=request.param, log=lambda *a: None,
        dag_ids=("ads_accounts", "ads_intruder"), manifest_source=work / "broker.toml",
        seed=lambda d: d.pipekey_set_many("dev", values.store()), teams=bundles, broker=True,
        extra_env={"LK_TEST_REPORTS": str(reports), "TMPDIR": str(tmp),
                   # a refusal on the API server is an HTTP 500 to the Task SDK, which retries
                   # it (5 times, 1-90 s apart by default) before the task sees "not found"
                   "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MAX": "1"})
    running.values_ = values
    running.reports = reports
    running.scanned = work
    try:
        running.start()
        running.trigger()
        running.wait(timeout=300)
        yield running
    finally:
        running.stop()


def _reports(deployment) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(deployment.reports.iterdir())}


def test_each_mapped_task_gets_its_own_account_through_the_broker(deployment) -> None:
    """Three mapped @pipekey_task tasks of team marketing succeed, each with its own
    account's token and mapped warehouse connection, and the pipeline's granted Variable."""
    assert deployment.runs() == {"ads_accounts": "success", "ads_intruder": "success"}
    reports = _reports(deployment)
    values = deployment.values_
    for account in ACCOUNTS:
        got = reports[f"ads_{account}"]
        assert got["token"] == sha(values.tokens[account]), account
        assert got["warehouse_password"] == sha(values.passwords[account]), account
        assert got["warehouse_host"] == f"wh-{account}.example.invalid"
        assert got["granted_variable"] == "GOT:" + sha(values.campaign)
        # BaseHook outside pipekey's run object: not answered in broker mode (the API server
        # does not know the task's account), and never another account's connection
        assert got["hook_warehouse"] == "DENIED:AirflowNotFoundException", account


def test_the_other_team_gets_nothing_by_any_route(deployment) -> None:
    """Team finance's DAG, named to match ads's dags pattern, is denied every route to ads's
    values; its own team's granted Variable comes through (the broker answers it)."""
    got = _reports(deployment)["intruder"]
    routes = {k: v for k, v in got.items() if k not in ("env_names", "own_variable", "os_level")}
    assert len(routes) == 8
    assert {k: v.split(":")[0] for k, v in routes.items()} == dict.fromkeys(routes, "DENIED")
    assert got["own_variable"] == "GOT:" + sha(deployment.values_.billing)


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
    assert len(reports) == len(ACCOUNTS) + 1
    for name, report in reports.items():
        names = set(report["env_names"])
        assert not names & set(STORE_CREDENTIALS), name
        assert not [n for n in names if n.startswith("AWS_")], name
        assert {"PIPEKEY_CONFIG", "PIPEKEY_AIRFLOW_MODE"} <= names, name
        if name.startswith("ads_"):  # brokered runs: no store SDK imported (issue 32)
            assert report["store_sdks"] == [], name


def _hunt(text: str, needles: dict[str, str]) -> list[str]:
    return sorted({value[:14] for form, value in needles.items() if form in text})


def test_no_value_in_any_log_console_or_file(deployment) -> None:
    """Every fake value (and the master key), in every encoding, is absent from the task
    logs, the component consoles and every file under the work folder (the Airflow home, its
    SQLite DB, the encrypted store, the reports, TMPDIR); printed tokens show as ***."""
    needles = {form: value for value in [*deployment.values_.all(), deployment.master_key]
               for form in encodings(value)}
    logs, consoles = deployment.task_logs(), deployment.console_text()
    assert len(logs) >= len(ACCOUNTS) + 1
    expected = {"api-server.log", "scheduler.log", "dag-processor.log"}
    if deployment.executor == "CeleryExecutor":
        expected |= {"redis.log", "celery-worker.log"}
    assert set(consoles) == expected
    for where, text in [*logs.items(), *consoles.items()]:
        assert not _hunt(text, needles), where
    files = [p for p in deployment.scanned.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" and ".pipekey" in p.parts for p in files)
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert not _hunt(text, needles), path
    printed = [t for t in logs.values() if "masked in every log: ***" in t]
    assert len(printed) == len(ACCOUNTS)
