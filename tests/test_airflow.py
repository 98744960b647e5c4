"""Real Apache Airflow 3: `airflow db migrate` on SQLite, DAGs run with `dag.test()` in a
subprocess, secrets through LatchkeySecretsBackend."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from latchkey import Connection
from latchkey.backends.local import LocalBackend, generate_master_key

from .extras import need
from .servers import airflow_env as _airflow_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "airflow"
pytestmark = pytest.mark.slow
need("airflow")


def _backend_env(manifest: Path, key: str) -> dict[str, str]:
    return {"AIRFLOW__SECRETS__BACKEND": "latchkey.integrations.airflow.LatchkeySecretsBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"manifest": str(manifest)}),
            "LATCHKEY_MASTER_KEY": key}


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
            print("FALLBACK HOST", BaseHook.get_connection("not_in_latchkey").host)
        read()

    d = team_a_load()
    if __name__ == "__main__":
        print("DAG RUN STATE:", d.test().state)
''')


def test_isolation_masking_and_fall_through(airflow_home: Path, tmp_path: Path) -> None:
    """A task reads its own and a granted shared connection, is refused another DAG's by id,
    falls through to Airflow for what latchkey does not hold, and its log shows no password."""
    key = generate_master_key()
    manifest = tmp_path / "latchkey.toml"
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
        "AIRFLOW_CONN_NOT_IN_LATCHKEY": "http://fallback.example.com"}, tmp_path)
    assert "DAG RUN STATE: success" in output
    assert "OWN HOST a-db.internal" in output
    assert "SHARED HOST hooks.example.com" in output
    assert "CROSS READ REFUSED AirflowSecretsBackendAccessDenied" in output
    assert "FALLBACK HOST fallback.example.com" in output
    assert "own password is ***" in output
    assert "own uri is ***" in output  # the stored value itself is registered, so all of it
    for leaked in ("fake-team-a-pw", "fake-team-b-pw", "fake-slack-pw"):
        assert leaked not in output


def _seed_example(store, tmp: Path, tokens: dict[str, str]) -> None:
    for account, token in tokens.items():
        store.put(f"marketing/ads/{account}/api_token", token)
        store.put(f"connections/warehouse_{account}", Connection(
            conn_type="duckdb", host=str(tmp / f"{account}.duckdb")).to_json())


def _api_module():
    spec = importlib.util.spec_from_file_location(
        "airflow_test_ads_api", ROOT / "examples" / "quickstart" / "ads_api.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _check_example(output: str, api, tokens: dict[str, str]) -> None:
    assert "DAG RUN STATE: success" in output, output[-4000:]
    for account in tokens:
        assert "api_token from" in output and f"marketing/ads/{account}/api_token; 5 rows" in output
    refused = sum(n for (_, outcome), n in api.seen.items() if outcome == "refused")
    assert refused == 0 and {a for (a, o) in api.seen if o == "ok"} == set(tokens)
    assert all(token not in output for token in tokens.values())


def test_example_dag_on_the_local_store(airflow_home: Path, tmp_path: Path) -> None:
    """examples/airflow: two mapped tasks, each with its own token, load into duckdb."""
    ads_api = _api_module()
    key = generate_master_key()
    manifest = tmp_path / "latchkey.toml"
    manifest.write_text((EXAMPLE / "latchkey.toml").read_text())
    tokens = {a: f"fake-airflow-{a}-token" for a in ("acct_42", "acct_43")}
    store = LocalBackend("local", tmp_path / ".latchkey" / "store.db", master_key=key)
    _seed_example(store, tmp_path, tokens)
    store.close()
    with ads_api.AdsApi({a: ads_api.digest(t) for a, t in tokens.items()}) as api:
        output = _run_dag(airflow_home, EXAMPLE / "dags" / "ads_report.py", {
            **_backend_env(manifest, key), "AIRFLOW_VAR_ADS_API_URL": api.url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE / "dags")}, tmp_path)
    _check_example(output, api, tokens)


def test_example_dag_on_ssm(airflow_home: Path, tmp_path: Path, aws_env: str) -> None:
    """The same DAG with its secrets in SSM Parameter Store (moto)."""
    from latchkey.backends.aws_ssm import SsmBackend, SsmConfig

    ads_api = _api_module()
    prefix = f"/latchkey-airflow-test/{tmp_path.name}"
    manifest = tmp_path / "latchkey.toml"
    manifest.write_text((EXAMPLE / "latchkey.toml").read_text().replace(
        '[backends.local]\ntype = "local"\npath = ".latchkey/store.db"',
        f'[backends.local]\ntype = "aws_ssm"\nprefix = "{prefix}"\nregion = "eu-central-1"\n'
        f'endpoint_url = "{aws_env}"'))
    tokens = {a: f"fake-ssm-{a}-token" for a in ("acct_42", "acct_43")}
    _seed_example(SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=prefix,
                                              region="eu-central-1", endpoint_url=aws_env)),
                  tmp_path, tokens)
    aws = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION")}
    with ads_api.AdsApi({a: ads_api.digest(t) for a, t in tokens.items()}) as api:
        output = _run_dag(airflow_home, EXAMPLE / "dags" / "ads_report.py", {
            **_backend_env(manifest, generate_master_key()), **aws,
            "AIRFLOW_VAR_ADS_API_URL": api.url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE / "dags")}, tmp_path)
    _check_example(output, api, tokens)
