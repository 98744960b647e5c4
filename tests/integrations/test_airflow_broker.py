"""Broker mode with real Airflow classes, in one process (issue 17): the API server's
PipekeySecretsBackend(mode="broker") answering per team as the Execution API calls it, and a
task's run in broker mode reaching it through the Task SDK's Variable.get path. The
deployment test (real api-server, scheduler, dag-processor) lives in the deployment suite."""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipekey import broker
from pipekey.backends.local import LocalBackend, generate_master_key
from pipekey.errors import AccessDenied

from ..extras import need

need("airflow")

MANIFEST = textwrap.dedent('''
    env = "prod"
    [backends.local]
    type = "local"
    path = "store.db"
    [pipelines.ads]
    dags = ["ads*"]
    scope = "marketing/ads/{account}"
    requires = ["api_token"]
    connections = { warehouse = "connections/wh_{env}" }
    teams = ["marketing"]
    [pipelines.ledger]
    dags = ["ledger*"]
    scope = "finance/ledger"
    requires = ["api_token"]
    connections = { warehouse = "connections/fin_wh" }
    teams = ["finance"]
''')
STORE = {
    "marketing/ads/acct_42/api_token": "fake-token-acct42",
    "marketing/ads/acct_43/api_token": "fake-token-acct43",
    "connections/wh_prod": "postgres://u:fake-wh-pw@wh:5432/db",
    "connections/fin_wh": "postgres://f:fake-fin-pw@fin:5432/db",
    "finance/ledger/api_token": "fake-ledger-token",
    "airflow/variables/ads_setting": "fake-ads-setting",
    "airflow/connections/shared_db": "postgres://s:fake-shared-pw@s/db",
    "shared/slack": "fake-slack-hook",
}
BACKEND = "pipekey.integrations.airflow.PipekeySecretsBackend"


#: the integration's task-run module, which holds its process state and task context
TASKS = "pipekey.integrations._airflow_tasks"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The integration module with fresh process state, a two-team manifest and its store."""
    module = pytest.importorskip("pipekey.integrations.airflow")
    (tmp_path / "pipekey.toml").write_text(MANIFEST)
    key = generate_master_key()
    store = LocalBackend("local", tmp_path / "store.db", master_key=key)
    for k, v in STORE.items():
        store.put(k, v)
    store.close()
    for name in list(os.environ):
        if name.startswith(("PIPEKEY", "AIRFLOW__SECRETS__", "AIRFLOW__WORKERS__",
                            "AIRFLOW__CORE__MULTI_TEAM")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIPEKEY_MASTER_KEY", key)
    monkeypatch.setattr(f"{TASKS}._instances", {})
    monkeypatch.setattr(f"{TASKS}.process_default", {})
    monkeypatch.setattr(importlib.import_module("pipekey.integrations._airflow_mode"),
                        "_warned", [])
    module.manifest_path = tmp_path / "pipekey.toml"
    return module


def _server(module, **kwargs):
    return module.PipekeySecretsBackend(manifest=str(module.manifest_path), mode="broker",
                                         **kwargs)


def test_api_server_backend_answers_per_team(world) -> None:
    """As the Execution API calls it: each team reads its own, every other team's key is
    refused with Airflow's authoritative AccessDenied naming the team, a run request for
    another team's pipeline too; no team gets shared/ only; Airflow's masker knows each value
    returned."""
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
    from airflow.sdk.log import mask_secret  # noqa: F401 - the masker the backend feeds

    server = _server(world)
    assert server.get_conn_value("warehouse", team_name="marketing") == STORE["connections/wh_prod"]
    assert server.get_conn_value("warehouse", team_name="finance") == STORE["connections/fin_wh"]
    assert server.get_variable("nope", team_name="marketing") is None
    refusals = []
    for call in (lambda: server.get_variable("ads_setting", team_name="finance"),
                 lambda: server.get_conn_value("shared_db", team_name="finance"),
                 lambda: server.get_variable("ads_setting", team_name="unknown_team"),
                 lambda: server.get_variable("ads_setting", team_name=None)):
        with pytest.raises(AirflowSecretsBackendAccessDenied) as info:
            call()
        refusals.append(str(info.value))
    # a run request is answered with a refusal the worker raises on (no HTTP 500, no retry)
    with pytest.raises(AccessDenied) as denied:
        broker.decode_payload(server.get_variable(
            broker.request_key("ads", None, {"account": "acct_42"}), team_name="finance"))
    refusals.append(str(denied.value))
    assert "'finance'" in refusals[0] and "'finance' may not open pipekey pipeline 'ads'" \
        in refusals[4]
    assert "'unknown_team'" in refusals[2]
    for value in STORE.values():
        assert all(value not in r for r in refusals)
    assert server.get_conn_value("slack", team_name=None) is None  # not held: None
    payload = server.get_variable(broker.request_key("ads", None, {"account": "acct_42"}),
                                  team_name="marketing")
    assert payload is not None
    decoded = broker.decode_payload(payload)
    assert decoded.names["api_token"].value == "fake-token-acct42"
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    masked = _secrets_masker().redact(f"x {payload} {STORE['connections/fin_wh']} y")
    assert "fake-" not in str(masked)


def test_direct_mode_ignores_run_requests(world) -> None:
    """A backend in direct mode (a worker's) answers a run request with None, so it falls
    through to the API server."""
    direct = world.PipekeySecretsBackend(manifest=str(world.manifest_path))
    assert direct.get_variable(broker.request_key("ads", None, {"account": "acct_42"})) is None


class _ExecutionAPI:
    """Stands in for task -> supervisor -> Execution API: the API server calls its
    ``[secrets] backend`` with the task's team, as routes/variables.py does."""

    def __init__(self, server, team: str) -> None:
        self.server, self.team, self.keys = server, team, []

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        self.keys.append(key)
        return self.server.get_variable(key, team_name=self.team)

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        return self.server.get_conn_value(conn_id, team_name=self.team)


def _in_task(monkeypatch, module, dag_id: str, api: _ExecutionAPI) -> None:
    context = {"dag": SimpleNamespace(dag_id=dag_id), "run_id": "manual__1", "params": {},
               "ti": SimpleNamespace(task_id="load", map_index=3)}
    monkeypatch.setattr(f"{TASKS}.task_context", lambda: context)
    import airflow.sdk.execution_time.supervisor as supervisor

    monkeypatch.setattr(supervisor, "ensure_secrets_backend_loaded", lambda: [api])


def test_task_run_in_broker_mode_end_to_end(world, monkeypatch, capsys) -> None:
    """PIPEKEY_AIRFLOW_MODE=broker: task_run and @pipekey_task read the manifest, build no
    backend, get the run's values in one Variable.get (the SDK's path) and behave as a direct
    run; refresh asks again; prints of the values are masked."""
    server = _server(world)
    built = dict(importlib.import_module(TASKS)._instances)
    monkeypatch.setenv(world.MODE_ENV, "broker")
    monkeypatch.setenv("PIPEKEY_CONFIG", str(world.manifest_path))
    api = _ExecutionAPI(server, "marketing")
    _in_task(monkeypatch, world, "ads_daily", api)
    with world.task_run(account="acct_42") as run:
        assert run.secret("api_token") == "fake-token-acct42"
        assert run.connection("warehouse").password == "fake-wh-pw"
        assert run.name == "ads_daily__manual__1__load__3"
        assert run.refresh("api_token") == "fake-token-acct42"
        print("token is", run.secret("api_token"))
    assert len(api.keys) == 2 and all(broker.is_request(k) for k in api.keys)
    # the worker built no Pipekey, no backend
    assert importlib.import_module(TASKS)._instances == built

    @world.pipekey_task
    def load(account: str) -> str:
        return world.current().connection("warehouse").host

    assert load(account="acct_42") == "wh"
    out = capsys.readouterr()
    assert "fake-" not in out.out + out.err


def test_task_of_another_team_is_refused(world, monkeypatch) -> None:
    """A finance task opening marketing's pipeline (its DAG named to match) is refused by the
    API server with an answer the task raises on at once, naming the team and the
    pipeline."""
    server = _server(world)
    monkeypatch.setenv(world.MODE_ENV, "broker")
    monkeypatch.setenv("PIPEKEY_CONFIG", str(world.manifest_path))
    _in_task(monkeypatch, world, "ads_posing", _ExecutionAPI(server, "finance"))
    with pytest.raises(AccessDenied, match="the pipekey broker refused the run of pipeline "
                                           "'ads': Airflow team 'finance' may not open "
                                           "pipekey pipeline 'ads'"):
        with world.task_run(account="acct_42"):
            pass


def test_mode_detection_and_worker_backend_warning(world, monkeypatch, caplog) -> None:
    """PIPEKEY_AIRFLOW_MODE decides; unset, multi_team without a worker-side pipekey backend
    means broker; broker mode with [workers] secrets_backend naming pipekey warns once."""
    server = _server(world)  # the API server's, built where PIPEKEY_AIRFLOW_MODE is unset
    assert world.airflow_mode() == "direct"
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    assert world.airflow_mode() == "broker"
    monkeypatch.setenv("AIRFLOW__WORKERS__SECRETS_BACKEND", BACKEND)
    monkeypatch.setenv("AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS",
                       json.dumps({"manifest": str(world.manifest_path)}))
    assert world.airflow_mode() == "direct"
    monkeypatch.setenv(world.MODE_ENV, "broker")
    assert world.airflow_mode() == "broker"
    caplog.set_level(logging.WARNING, logger="pipekey")
    _in_task(monkeypatch, world, "ads_daily", _ExecutionAPI(server, "marketing"))
    for _ in range(2):
        with world.task_run(account="acct_42"):
            pass
    warnings = [r for r in caplog.records if "[workers] secrets_backend" in r.getMessage()]
    assert len(warnings) == 1
    monkeypatch.setenv(world.MODE_ENV, "sideways")
    with pytest.raises(Exception, match="'broker' or 'direct'"):
        world.airflow_mode()


SERVER_SIDE = textwrap.dedent('''
    import json, sys
    from airflow.models.variable import Variable
    from airflow.models.connection import Connection
    from pipekey import broker
    key = broker.request_key("ads", None, {"account": "acct_42"}, "ads__manual__1__load")
    payload = broker.decode_payload(Variable.get(key, team_name="marketing"))
    print("TOKEN OK", payload.names["api_token"].value == "fake-token-acct42")
    conn = Connection.get_connection_from_secrets("warehouse", team_name="finance")
    print("FINANCE HOST", conn.host)
    for call in (lambda: broker.decode_payload(Variable.get(key, team_name="finance")),
                 lambda: Variable.get("ads_setting", team_name="finance")):
        try:
            call()
            print("SERVED")
        except PermissionError as exc:
            print("REFUSED", type(exc).__name__, exc)
''')


def test_airflow_builds_the_broker_from_backend_kwargs(world, tmp_path: Path) -> None:
    """In a fresh process, Airflow's own server-side lookups (what routes/variables.py and
    routes/connections.py call, with the task's team) reach the backend Airflow built from
    [secrets] backend_kwargs with mode="broker", and a refusal is not swallowed."""
    import subprocess
    import sys

    from ..servers import airflow_env

    script = tmp_path / "server_side.py"
    script.write_text(SERVER_SIDE)
    env = airflow_env(tmp_path / "home", {
        "AIRFLOW__CORE__MULTI_TEAM": "True", "AIRFLOW__SECRETS__BACKEND": BACKEND,
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
            {"manifest": str(world.manifest_path), "mode": "broker"}),
        "PIPEKEY_MASTER_KEY": os.environ["PIPEKEY_MASTER_KEY"], "_AIRFLOW_PROCESS_CONTEXT":
            "server"})
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "TOKEN OK True" in output and "FINANCE HOST fin" in output
    assert output.count("REFUSED AirflowSecretsBackendAccessDenied") == 1, output[-3000:]
    assert output.count("REFUSED AccessDenied") == 1, output[-3000:]  # the run request
    assert "SERVED" not in output
    for value in STORE.values():
        assert value not in output


def test_a_run_request_is_never_left_to_another_backend(world) -> None:
    """A request in pipekey's reserved namespace that cannot be served (malformed, or the
    run cannot open) is answered with pipekey's refusal, so no other backend (the
    metastore, where a task may write Variables) answers it; the refusal names keys, never a
    value, and the worker raises on it."""
    server = _server(world)

    def by_hand(body: bytes) -> str:
        return broker.PREFIX + "ads." + base64.urlsafe_b64encode(body).decode().rstrip("=")

    hostile = [{"account": "acct_42", "env": "dev"}, {"account": "acct_42", "run_name": "x"}]
    for key in (*(by_hand(json.dumps({"v": 1, "env": None, "run": None, "params": p}).encode())
                  for p in hostile),  # keywords of Pipekey.pipeline: were a TypeError
                by_hand(b"[" * 1300),  # deeper than the recursion limit: a RecursionError
                broker.PREFIX + "ads.not-base64-json",
                broker.request_key("ads", None, {"account": "acct_99"})):
        answer = server.get_variable(key, team_name="marketing")
        with pytest.raises(AccessDenied) as info:
            broker.decode_payload(answer)
        assert "\n" not in str(info.value)
        assert all(value not in str(info.value) for value in STORE.values())
    assert "marketing/ads/acct_99" in str(info.value)


BROKERED_DAG = textwrap.dedent('''
    import os
    from datetime import datetime
    from airflow.sdk import dag, task
    from pipekey.integrations.airflow import current, pipekey_task

    @dag(dag_id="ads_daily", schedule=None, start_date=datetime(2026, 1, 1))
    def ads_daily():
        @task
        @pipekey_task
        def load(account: str):
            run = current()
            print("TOKEN", run.secret("api_token"))
            print("TOKEN RIGHT", run.secret("api_token") == "fake-token-acct42")
            print("HOST", run.connection("warehouse").host)
        load(account="acct_42")

    d = ads_daily()
    if __name__ == "__main__":
        import airflow.api_fastapi.execution_api.app as app_mod
        from airflow.api_fastapi.execution_api.security import get_team_name_dep
        create = app_mod.create_task_execution_api_app

        def create_with_team(*args, **kwargs):
            api = create(*args, **kwargs)
            # dag.test's in-process Execution API has no task token, hence no team: stand in
            # for Airflow's task -> DAG -> bundle -> team resolution, and nothing else
            api.dependency_overrides[get_team_name_dep] = lambda: os.environ["TEST_TEAM"]
            return api

        app_mod.create_task_execution_api_app = create_with_team
        print("DAG RUN STATE:", d.test().state)
''')


@pytest.mark.slow
@pytest.mark.parametrize("team", ["marketing", "finance"])
def test_dag_test_through_the_execution_api(world, airflow_home: Path, tmp_path: Path,
                                            team: str) -> None:
    """dag.test() with multi_team: the task's @pipekey_task (PIPEKEY_AIRFLOW_MODE=broker)
    asks the Task SDK's Variable.get, the in-process Execution API's real route calls the
    broker Airflow built from [secrets] backend_kwargs with the team, and the task gets its
    run (team marketing) or is refused (team finance, naming the team and the pipeline); no
    value in the output. One process: the task's environment is the API server's here (the
    deployment test shows a task process without credentials)."""
    import shutil
    import subprocess
    import sys

    from ..servers import airflow_env

    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    shutil.copy(airflow_home / "airflow.db", home / "airflow.db")
    dag_file = home / "dags" / "ads_daily.py"
    dag_file.write_text(BROKERED_DAG)
    env = airflow_env(home, {
        "AIRFLOW__CORE__MULTI_TEAM": "True",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([{
            "name": "marketing_dags", "team_name": "marketing",
            "kwargs": {"path": str(home / "dags")},
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle"}]),
        # the workers' own backend: in one process they cannot be kept from [secrets] backend
        # (the broker) otherwise; PIPEKEY_AIRFLOW_MODE unset: broker mode by detection
        "AIRFLOW__WORKERS__SECRETS_BACKEND":
            "airflow.secrets.environment_variables.EnvironmentVariablesBackend",
        "AIRFLOW__SECRETS__BACKEND": BACKEND,
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
            {"manifest": str(world.manifest_path), "mode": "broker"}),
        "PIPEKEY_MASTER_KEY": os.environ["PIPEKEY_MASTER_KEY"],
        "PIPEKEY_CONFIG": str(world.manifest_path),
        "TEST_TEAM": team})
    created = subprocess.run([sys.executable, "-m", "airflow", "teams", "create", "marketing"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr[-2000:]
    result = subprocess.run([sys.executable, str(dag_file)], env=env, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    if team == "marketing":
        assert "DAG RUN STATE: success" in output, output[-3000:]
        assert "TOKEN RIGHT True" in output and "HOST wh" in output
        assert "TOKEN ***" in output
    else:
        assert "DAG RUN STATE: failed" in output, output[-3000:]
        assert "Airflow team 'finance' may not open pipekey pipeline 'ads'" in output
        assert "TOKEN" not in output
    for value in STORE.values():
        assert value not in output


def test_a_broker_built_in_a_worker_steps_aside(world, monkeypatch, caplog) -> None:
    """Workers use [secrets] backend when [workers] secrets_backend is unset: a broker-mode
    backend built in a process with PIPEKEY_AIRFLOW_MODE=broker answers nothing (so the
    lookup goes on to the Execution API instead of being refused for want of a team), builds
    no chain, and says why once."""
    caplog.set_level(logging.WARNING, logger="pipekey")
    monkeypatch.setenv(world.MODE_ENV, "broker")
    aside = _server(world)
    key = broker.request_key("ads", None, {"account": "acct_42"})
    assert aside.get_variable(key) is None
    assert aside.get_conn_value("warehouse") is None and aside.get_variable("x") is None
    assert importlib.import_module(TASKS)._instances == {}
    assert len([r for r in caplog.records if "answers nothing here" in r.getMessage()]) == 1


DEAD_STORE = textwrap.dedent('''
    env = "prod"
    [backends.ssm]
    type = "aws_ssm"
    region = "eu-central-1"
    endpoint_url = "http://127.0.0.1:{port}"
    max_attempts = 1
    connect_timeout = 1
    read_timeout = 1
    [pipelines.ads]
    dags = ["ads*"]
    scope = "marketing/ads/{{account}}"
    requires = ["api_token"]
    connections = {{ warehouse = "connections/wh_{{env}}" }}
    teams = ["marketing"]
''')


@pytest.mark.parametrize("mode", ["direct", "broker"])
def test_a_store_failure_is_a_refusal_never_a_fall_through(world, tmp_path, monkeypatch,
                                                          mode) -> None:
    """A store that cannot be reached (a throttled or down SSM) makes every lookup pipekey
    serves an authoritative refusal naming the store and the key, so Airflow does not ask its
    next backend (the metastore, where a planted Variable would answer): in broker mode for a
    team, in direct mode for a DAG's task and for shared/ (issue 25, hole 2)."""
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    from ..servers import free_port

    manifest = tmp_path / "dead.toml"
    manifest.write_text(DEAD_STORE.format(port=free_port()))  # nothing listens there
    for name, value in (("AWS_ACCESS_KEY_ID", "fake-id"), ("AWS_SECRET_ACCESS_KEY", "fake-key"),
                        ("AWS_DEFAULT_REGION", "eu-central-1")):
        monkeypatch.setenv(name, value)
    backend = world.PipekeySecretsBackend(manifest=str(manifest), mode=mode)
    if mode == "broker":
        calls = [lambda: backend.get_conn_value("warehouse", team_name="marketing")]
        # outside the team's policy, and the store cannot say whether it holds the key
        for call in (lambda: backend.get_variable("x", team_name="marketing"),
                     lambda: backend.get_variable("x", team_name=None)):
            with pytest.raises(AirflowSecretsBackendAccessDenied, match="may not read|not "
                                                                        "served"):
                call()
    else:
        from types import SimpleNamespace

        context = {"dag": SimpleNamespace(dag_id="ads_daily"), "run_id": "manual__1",
                   "params": {}, "ti": SimpleNamespace(task_id="load", map_index=0)}
        monkeypatch.setattr(f"{TASKS}.task_context", lambda: context)
        calls = [lambda: backend.get_conn_value("warehouse"),
                 lambda: backend.get_variable("shared_setting")]
        backend.prefixes["variable"] = "shared"  # shared/ is served outside a pipeline too
    for call in calls:
        with pytest.raises(AirflowSecretsBackendAccessDenied, match="store unavailable") as info:
            call()
        assert "\n" not in str(info.value) and "'ssm'" in str(info.value)
