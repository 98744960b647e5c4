"""Real Apache Airflow 3: `airflow db migrate` on SQLite, DAGs run with `dag.test()` in a
subprocess, secrets through PipekeySecretsBackend; and in-process checks of task_run() and
the backend with the task's context faked (the deployment test runs the real components)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipekey import Connection
from pipekey.backends.local import LocalBackend, generate_master_key

from ..extras import need
from ..servers import airflow_env as _airflow_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "airflow"
pytestmark = pytest.mark.slow
need("airflow")


def _backend_env(manifest: Path, key: str) -> dict[str, str]:
    return {"AIRFLOW__SECRETS__BACKEND": "pipekey.integrations.airflow.PipekeySecretsBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"manifest": str(manifest)}),
            "PIPEKEY_MASTER_KEY": key}


def _run_dag(home: Path, dag_file: Path, extra: dict[str, str], cwd: Path) -> str:
    result = subprocess.run([sys.executable, str(dag_file)], env=_airflow_env(home, extra),
                            capture_output=True, text=True, timeout=600, cwd=cwd)
    output = result.stdout + result.stderr
    (cwd / "dag-output.txt").write_text(output)  # kept beside the test for diagnosis
    assert result.returncode == 0, output[-4000:]
    return output


ISOLATION_DAG = textwrap.dedent('''
    import logging
    from datetime import datetime
    from airflow.sdk import dag, task
    from airflow.sdk.bases.hook import BaseHook

    @dag(dag_id="team_a_load", schedule=None, start_date=datetime(2026, 1, 1))
    def team_a_load():
        @task
        def read():
            own = BaseHook.get_connection("warehouse")
            logging.getLogger("airflow.task").info("own password is %s", own.password)
            logging.getLogger(__name__).info("own uri is %s", own.get_uri())
            print("OWN HOST", own.host)
            print("SHARED HOST", BaseHook.get_connection("slack_default").host)
            try:
                BaseHook.get_connection("team_b_wh")
                print("CROSS READ ALLOWED")
            except Exception as exc:
                print("CROSS READ REFUSED", type(exc).__name__)
            print("FALLBACK HOST", BaseHook.get_connection("not_in_pipekey").host)
        read()

    d = team_a_load()
    if __name__ == "__main__":
        print("DAG RUN STATE:", d.test().state)
''')


def test_isolation_masking_and_fall_through(airflow_home: Path, tmp_path: Path) -> None:
    """A task reads its own and a granted shared connection, is refused another DAG's by id,
    falls through to Airflow for what pipekey does not hold, and its log shows no password."""
    key = generate_master_key()
    manifest = tmp_path / "pipekey.toml"
    manifest.write_text(textwrap.dedent('''
        [backends.local]
        type = "local"
        path = "store.db"
        [pipelines.team_a]
        dags = ["team_a_*"]
        scope = "team_a"
        connections = { warehouse = "connections/team_a_wh" }
        grants = ["airflow/connections/slack_default"]
        [pipelines.team_b]
        dags = ["team_b_*"]
        scope = "team_b"
        connections = { warehouse = "airflow/connections/team_b_wh" }
    '''))
    store = LocalBackend("local", tmp_path / "store.db", master_key=key)
    secrets = {"connections/team_a_wh": "postgres://a:fake-team-a-pw@a-db.internal/a",
               "airflow/connections/team_b_wh": "postgres://b:fake-team-b-pw@b-db.internal/b",
               "airflow/connections/slack_default": "http://:fake-slack-pw@hooks.example.com"}
    for k, v in secrets.items():
        store.put(k, v)
    store.close()
    dag_file = airflow_home / "dags" / "team_a_load.py"
    dag_file.write_text(ISOLATION_DAG)
    output = _run_dag(airflow_home, dag_file, {
        **_backend_env(manifest, key),
        "AIRFLOW_CONN_NOT_IN_PIPEKEY": "http://fallback.example.com"}, tmp_path)
    assert "DAG RUN STATE: success" in output
    assert "OWN HOST a-db.internal" in output
    assert "SHARED HOST hooks.example.com" in output
    assert "CROSS READ REFUSED AirflowSecretsBackendAccessDenied" in output
    assert "FALLBACK HOST fallback.example.com" in output
    assert "own password is ***" in output
    assert "own uri is ***" in output  # the stored value itself is registered, so all of it
    for leaked in ("fake-team-a-pw", "fake-team-b-pw", "fake-slack-pw"):
        assert leaked not in output


ENVS = ("dev", "prod")


SLACK_PASSWORD = "fake-example-slack-pw"


def _seed_example(store_for, tmp: Path, tokens: dict[tuple[str, str], str]) -> None:
    """Each (env, account)'s token and warehouse, and the granted slack_default connection,
    in that environment's store."""
    for (env, account), token in tokens.items():
        store = store_for(env)
        store.put(f"marketing/ads/{account}/api_token", token)
        store.put(f"connections/warehouse_{account}", Connection(
            conn_type="duckdb", host=str(tmp / f"{account}_{env}.duckdb")).to_json())
        store.put("airflow/connections/slack_default",
                  f"http://:{SLACK_PASSWORD}@hooks.example.com")


def _api_module():
    spec = importlib.util.spec_from_file_location(
        "airflow_test_ads_api", ROOT / "examples" / "quickstart" / "ads_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _tokens(kind: str) -> dict[tuple[str, str], str]:
    return {(e, a): f"fake-{kind}-{a}-{e}-token" for e in ENVS for a in ("acct_42", "acct_43")}


@contextlib.contextmanager
def _apis(tokens: dict[tuple[str, str], str]):
    """One stand-in ads API per environment, each knowing only that environment's tokens."""
    ads_api = _api_module()
    with contextlib.ExitStack() as stack:
        apis = {e: stack.enter_context(ads_api.AdsApi(
            {a: ads_api.digest(t) for (env, a), t in tokens.items() if env == e})) for e in ENVS}
        yield apis, {f"AIRFLOW_VAR_ADS_API_URL_{e.upper()}": api.url for e, api in apis.items()}


def _check_example(output: str, apis, tokens: dict[tuple[str, str], str]) -> None:
    """Every mapped task, dev and prod (env=), loaded with its own environment's token."""
    assert "DAG RUN STATE: success" in output, output[-4000:]
    for env, account in tokens:
        assert re.search(rf"env={env}: api_token from local \S*\b{env}\b\S*"
                         rf"marketing/ads/{account}/api_token; 5 rows", output), (env, account)
    for env, api in apis.items():
        refused = sum(n for (_, outcome), n in api.seen.items() if outcome == "refused")
        assert refused == 0 and {a for (a, o) in api.seen if o == "ok"} == {
            a for (e, a) in tokens if e == env}
    assert "the token itself, masked in every log: ***" in output  # print() inside the run
    assert "slack password, read outside a run: ***" in output  # print() in a plain task
    assert all(token not in output for token in [*tokens.values(), SLACK_PASSWORD])


def test_example_dag_on_the_local_store(airflow_home: Path, tmp_path: Path) -> None:
    """examples/airflow: four mapped tasks (two accounts, dev and prod by env=), each with its
    own token, load into duckdb; the tokens they print come out masked."""
    key = generate_master_key()
    manifest = tmp_path / "pipekey.toml"
    manifest.write_text((EXAMPLE / "pipekey.toml").read_text())
    tokens = _tokens("airflow")
    stores = {e: LocalBackend("local", tmp_path / ".pipekey" / f"{e}.db", master_key=key)
              for e in ENVS}
    _seed_example(stores.__getitem__, tmp_path, tokens)
    for store in stores.values():
        store.close()
    with _apis(tokens) as (apis, urls):
        output = _run_dag(airflow_home, EXAMPLE / "dags" / "ads_report.py", {
            **_backend_env(manifest, key), **urls,
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE / "dags")}, tmp_path)
    _check_example(output, apis, tokens)


def test_example_dag_on_ssm(airflow_home: Path, tmp_path: Path, aws_env: str) -> None:
    """The same DAG with its secrets in SSM Parameter Store (moto), one prefix per env."""
    from pipekey.backends.aws_ssm import SsmBackend, SsmConfig

    prefix = f"/pipekey-airflow-test/{tmp_path.name}"
    manifest = tmp_path / "pipekey.toml"
    local = '[backends.local]\ntype = "local"\npath = ".pipekey/{env}.db"'
    text = (EXAMPLE / "pipekey.toml").read_text()
    assert local in text
    manifest.write_text(text.replace(local, (
        f'[backends.local]\ntype = "aws_ssm"\nprefix = "{prefix}/{{env}}"\n'
        f'region = "eu-central-1"\nendpoint_url = "{aws_env}"')))
    tokens = _tokens("ssm")

    def store_for(env: str) -> SsmBackend:
        return SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=f"{prefix}/{env}",
                                           region="eu-central-1", endpoint_url=aws_env))

    _seed_example(store_for, tmp_path, tokens)
    aws = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION")}
    with _apis(tokens) as (apis, urls):
        output = _run_dag(airflow_home, EXAMPLE / "dags" / "ads_report.py", {
            **_backend_env(manifest, generate_master_key()), **aws, **urls,
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE / "dags")}, tmp_path)
    _check_example(output, apis, tokens)


# -- in-process: the task's context faked, everything else real ------------------------------

UNIT_MANIFEST = textwrap.dedent('''
    env = "dev"
    environments = ["dev", "prod"]
    [backends.local]
    type = "local"
    path = "{env}.db"
    [pipelines.ads]
    dags = ["ads*"]
    scope = "marketing/ads/{account}"
    requires = ["api_token"]
    grants = ["airflow/connections/slack_default"]
    [pipelines.ads.connections]
    warehouse = "connections/warehouse_{account}"
    audit = "connections/audit_{env}"
    [pipelines.other]
    dags = ["other*"]
    scope = "other"
''')
BACKEND = "pipekey.integrations.airflow.PipekeySecretsBackend"


#: the integration's task-run module, which holds its process state and task context
TASKS = "pipekey.integrations._airflow_tasks"


@pytest.fixture
def unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The integration module with a fresh process state, a two-environment manifest in
    tmp_path/conf (fake values seeded), no PIPEKEY_* or [secrets] settings, cwd elsewhere."""
    airflow_mod = pytest.importorskip("pipekey.integrations.airflow")
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "pipekey.toml").write_text(UNIT_MANIFEST)
    key = generate_master_key()
    for env in ("dev", "prod"):
        store = LocalBackend("local", conf_dir / f"{env}.db", master_key=key)
        store.put("marketing/ads/acct_42/api_token", f"fake-token-acct42-{env}")
        store.put("connections/warehouse_acct_42", f"postgres://u:fake-wh-pw-{env}@wh/{env}")
        store.put(f"connections/audit_{env}", f"postgres://u:fake-audit-pw-{env}@audit/a")
        store.put("airflow/connections/slack_default", "http://:fake-slack-pw@hooks.example.com")
        store.put("airflow/connections/other_db", "postgres://o:fake-other-pw@o/o")
        store.close()
    for name in list(os.environ):
        if name.startswith(("PIPEKEY", "AIRFLOW__SECRETS__", "AIRFLOW__WORKERS__")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIPEKEY_MASTER_KEY", key)
    monkeypatch.setattr(f"{TASKS}._instances", {})
    monkeypatch.setattr(f"{TASKS}.process_default", {})
    monkeypatch.chdir(tmp_path)  # no ./pipekey.toml here
    monkeypatch.setattr(airflow_mod, "manifest_path", conf_dir / "pipekey.toml", raising=False)
    return airflow_mod


def _in_task(monkeypatch: pytest.MonkeyPatch, module, dag_id: str | None, **params) -> None:
    from types import SimpleNamespace

    context = None if dag_id is None else {
        "dag": SimpleNamespace(dag_id=dag_id), "run_id": "manual__1", "params": params,
        "ti": SimpleNamespace(task_id="load", map_index=0)}
    monkeypatch.setattr(f"{TASKS}.task_context", lambda: context)


@pytest.mark.parametrize("section", [
    pytest.param(("WORKERS", "SECRETS_BACKEND"), id="workers"),
    pytest.param(("SECRETS", "BACKEND"), id="secrets")])
def test_task_run_finds_the_configured_manifest(unit, monkeypatch, section) -> None:
    """task_run() opens the run from the manifest Airflow's backend kwargs name, though no
    backend was built in the process and neither $PIPEKEY_CONFIG nor ./pipekey.toml exist."""
    prefix = f"AIRFLOW__{section[0]}__{section[1]}"
    monkeypatch.setenv(prefix, BACKEND)
    monkeypatch.setenv(f"{prefix}_KWARGS", json.dumps({"manifest": str(unit.manifest_path)}))
    _in_task(monkeypatch, unit, "ads_report")
    with unit.task_run(account="acct_42") as run:
        assert run.pipeline == "ads"
        assert run.secret("api_token") == "fake-token-acct42-dev"


def test_task_run_honours_env(unit, monkeypatch) -> None:
    """env= (task_run, a @pipekey_task argument) and the DAG run param pipekey_env choose the
    environment; they are never dropped."""
    monkeypatch.setenv("PIPEKEY_CONFIG", str(unit.manifest_path))
    _in_task(monkeypatch, unit, "ads_report")
    with unit.task_run(account="acct_42", env="prod") as run:
        assert (run.environment, run.secret("api_token")) == ("prod", "fake-token-acct42-prod")

    @unit.pipekey_task
    def load(account: str, env: str | None = None) -> str:
        return unit.current().secret("api_token")

    assert load("acct_42", env="prod") == "fake-token-acct42-prod"
    assert load(account="acct_42") == "fake-token-acct42-dev"
    _in_task(monkeypatch, unit, "ads_report", pipekey_env="prod")
    assert load("acct_42") == "fake-token-acct42-prod"
    with pytest.raises(Exception, match="'staging' is not one of"), \
            unit.task_run(account="acct_42", env="staging"):
        pass


def test_pipekey_env_param_names_only_the_manifests_environments(unit, monkeypatch) -> None:
    """The DAG run param pipekey_env outside the manifest's environments is refused by the
    secrets backend and task_run, one line naming it and the list; no chain is built."""
    backend = unit.PipekeySecretsBackend(manifest=str(unit.manifest_path))
    _in_task(monkeypatch, unit, "ads_report", pipekey_env="staging")
    listed = r"environment 'staging' is not one of the environments \['dev', 'prod'\]"
    with pytest.raises(Exception, match=listed) as info:
        backend.get_conn_value("audit")
    assert "\n" not in str(info.value) and "fake-" not in str(info.value)
    with pytest.raises(Exception, match=listed), unit.task_run(account="acct_42"):
        pass
    assert backend.lk.open_environments == ["dev"]


def test_task_run_refuses_an_unknown_parameter(unit, monkeypatch) -> None:
    """A misspelt scope parameter given to task_run() is an error, not silently dropped."""
    monkeypatch.setenv("PIPEKEY_CONFIG", str(unit.manifest_path))
    _in_task(monkeypatch, unit, "ads_report", account="acct_42")
    with pytest.raises(Exception, match="no parameter 'acount'"), \
            unit.task_run(acount="acct_42"):
        pass


def test_outside_a_run_serves_what_needs_no_parameter(unit, monkeypatch) -> None:
    """In a task of a DAG whose scope is templated, with no run open and no params: grants,
    shared/ and parameter-free mapped connections are served; the rest is refused with a
    message that says to open a run."""
    backend = unit.PipekeySecretsBackend(manifest=str(unit.manifest_path))
    _in_task(monkeypatch, unit, "ads_report")
    assert "hooks.example.com" in backend.get_conn_value("slack_default")
    assert "audit/a" in backend.get_conn_value("audit")
    with pytest.raises(unit.AirflowSecretsBackendAccessDenied,
                       match=r"'warehouse' depends on .*task_run\(account=\.\.\.\)"):
        backend.get_conn_value("warehouse")
    with pytest.raises(unit.AirflowSecretsBackendAccessDenied, match="open a run"):
        backend.get_conn_value("other_db")
    assert backend.get_conn_value("not_in_pipekey") is None  # Airflow's own backends answer


def test_operator_shell_refusal_names_the_cli(unit, monkeypatch) -> None:
    """Outside any task, a held connection is refused with the commands operators use."""
    backend = unit.PipekeySecretsBackend(manifest=str(unit.manifest_path))
    _in_task(monkeypatch, unit, None)
    with pytest.raises(unit.AirflowSecretsBackendAccessDenied) as refused:
        backend.get_conn_value("other_db")
    message = str(refused.value)
    assert "`pipekey get airflow/connections/other_db`" in message
    assert "`pipekey explain airflow/connections/other_db`" in message
    assert "\n" not in message and "fake-other-pw" not in message


def test_print_inside_a_run_is_masked(unit, monkeypatch) -> None:
    """print(token) and a write to stderr inside a task run come out masked."""
    import io

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("PIPEKEY_CONFIG", str(unit.manifest_path))
    _in_task(monkeypatch, unit, "ads_report")
    with unit.task_run(account="acct_42") as run:
        token = run.secret("api_token")
        print("the token is", token)
        print("uri", run.connection("warehouse").to_uri())
        sys.stderr.write(f"token again: {token}\n")
    assert "fake-token-acct42" not in out.getvalue() + err.getvalue()
    assert "fake-wh-pw" not in out.getvalue()
    assert "the token is ***" in out.getvalue() and "token again: ***" in err.getvalue()


@settings(max_examples=60, deadline=None)
@given(before=st.text(max_size=20), after=st.text(max_size=20))
def test_masked_stream_never_writes_a_registered_value(before: str, after: str) -> None:
    """Whatever surrounds it, a registered value written to a masked stream comes out ***."""
    import io

    pytest.importorskip("pipekey.integrations.airflow")
    from pipekey import redact
    from pipekey.integrations._airflow_masking import _MaskedStream

    value = "fake-token-acct42-stream"
    redact.register(value)
    sink = io.StringIO()
    stream = _MaskedStream(sink)
    assert stream.write(before + value + after) == len(before + value + after)
    stream.writelines([value, "\n"])
    assert value not in sink.getvalue()
    assert sink.getvalue().count("***") >= 2


_SERVED_THEN_PRINTED = textwrap.dedent('''
    import base64, json, os, sys
    from urllib.parse import quote
    from pipekey.integrations.airflow import PipekeySecretsBackend

    backend = PipekeySecretsBackend(manifest=sys.argv[1], outside_pipelines="allow")
    password = backend.get_connection("other_db").password   # no run, no task: a plain read
    forms = [password, quote(password, safe=""), json.dumps(password),
             base64.b64encode(password.encode()).decode(),
             base64.b64encode(("bob:" + password).encode()).decode()]
    for form in forms:
        print("out", form)
        print("err", form, file=sys.stderr)
    sys.stdout.write("write " + password + "\\n")
    sys.stderr.writelines(["lines ", password, "\\n"])
    print("done", len(password))
''')


def test_a_process_served_a_value_masks_its_own_output(unit, tmp_path: Path) -> None:
    """Once the backend serves a connection in a process (BaseHook.get_connection in a plain
    @task, no run open), that process's stdout and stderr, read raw from its file
    descriptors, show neither the password nor its URL, JSON or base64 forms: LocalExecutor
    copies them to the scheduler's console, which Airflow does not mask."""
    import base64
    from urllib.parse import quote

    script = tmp_path / "served.py"
    script.write_text(_SERVED_THEN_PRINTED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__SECRETS__")}
    result = subprocess.run([sys.executable, str(script), str(unit.manifest_path)],
                            capture_output=True, timeout=300, env=env, cwd=tmp_path)
    raw = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr[-3000:].decode("utf-8", "replace")
    assert b"done 13" in result.stdout  # the password, fake-other-pw, was served and printed
    password = b"fake-other-pw"
    forms = [password, quote(password, safe="").encode(), base64.b64encode(password),
             base64.b64encode(b"bob:" + password)[8:-4]]
    assert [f for f in forms if f in raw] == []
    assert result.stdout.count(b"***") >= 6 and result.stderr.count(b"***") >= 6
