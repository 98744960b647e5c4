"""Airflow 3 with its real components (api-server, scheduler, dag-processor; LocalExecutor,
and CeleryExecutor with Debian's redis-server and a Celery worker) on 127.0.0.1, run by
examples/airflow/deploy.py: one deployment per executor, several checks each.

What only a deployment shows: the task process builds no backend before ``task_run()`` (the
manifest comes from ``[workers] secrets_backend_kwargs``; no ``PIPEKEY_CONFIG``, and the
components' working directory has no pipekey.toml), and LocalExecutor copies each task's
stdout into the scheduler's console.

The same deployment also switches ``[secrets] backend`` from Airflow's SSM backend to
PipekeySecretsBackend with the SSM backend's kwargs unchanged (the drop-in, no manifest), SSM
on moto: a ``dropin`` DAG's task reads connections and a variable through Airflow (the
worker's pipekey holds none of them, so the API server's drop-in answers) and compares each
with Airflow's own SSM backend built in the task from the same kwargs.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest

pytest.importorskip("airflow")
pytest.importorskip("dlt")

from .airflow_deploy import celery_missing, deploy_module  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


#: Airflow's SSM backend kwargs, as a deployment has them; the switch changes the class alone
SSM_KWARGS = {"connections_prefix": "/airflow/connections",
              "variables_prefix": "/airflow/variables", "region_name": "eu-central-1"}
DROPIN_DAG = textwrap.dedent('''
    import json, os
    from datetime import datetime
    from airflow.sdk import Variable, dag, task

    @dag(dag_id="dropin", schedule=None, start_date=datetime(2026, 1, 1))
    def dropin():
        @task
        def compare():
            from airflow.providers.amazon.aws.secrets.systems_manager import (
                SystemsManagerParameterStoreBackend)
            from airflow.sdk.bases.hook import BaseHook
            theirs = SystemsManagerParameterStoreBackend(
                **json.loads(os.environ["DROPIN_SSM_KWARGS"]))
            for conn_id in ("dropin_uri", "dropin_json"):
                ours = BaseHook.get_connection(conn_id)
                same = ours.get_uri() == theirs.get_connection(conn_id).get_uri()
                print(f"DROPIN connection {conn_id} same={same}")
            same = Variable.get("dropin_api_token") == theirs.get_variable("dropin_api_token")
            print(f"DROPIN variable dropin_api_token same={same}")
            missing = Variable.get("dropin_missing", default=None)
            also = theirs.get_variable("dropin_missing")
            print(f"DROPIN missing {missing is None and also is None}")
        compare()

    dropin()
''')


def _seed_ssm(moto_url: str) -> list[str]:
    """The drop-in's data in SSM (moto), as Airflow's SSM backend lays it out; its values."""
    import boto3

    values = ["fake-dropin-pw-1", "fake-dropin-pw-2", "fake-dropin-token-3"]
    ssm = boto3.client("ssm", region_name="eu-central-1", endpoint_url=moto_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    for name, value in (
            ("/airflow/connections/dropin_uri", f"postgres://u:{values[0]}@db.example:5432/d"),
            ("/airflow/connections/dropin_json", json.dumps(
                {"conn_type": "http", "host": "api.example", "password": values[1]})),
            ("/airflow/variables/dropin_api_token", values[2])):
        ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)
    return values


@pytest.fixture(scope="module", params=[
    pytest.param("LocalExecutor", id="local"), pytest.param("CeleryExecutor", id="celery")])
def deployment(request, tmp_path_factory, moto):
    """The example deployment with the drop-in as [secrets] backend, the three DAGs
    triggered and finished; stopped afterwards."""
    if request.param == "CeleryExecutor" and celery_missing():
        pytest.skip(celery_missing())
    deploy = deploy_module()
    dags = tmp_path_factory.mktemp("dags")
    for dag_file in (deploy.HERE / "dags").glob("*.py"):  # linked: they find quickstart/
        (dags / dag_file.name).symlink_to(dag_file)
    (dags / "dropin.py").write_text(DROPIN_DAG)
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "eu-central-1", "AWS_ENDPOINT_URL": moto.url,
           "AIRFLOW__SECRETS__BACKEND": "pipekey.integrations.airflow.PipekeySecretsBackend",
           "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(SSM_KWARGS),
           "DROPIN_SSM_KWARGS": json.dumps(SSM_KWARGS)}
    running = deploy.Deployment(tmp_path_factory.mktemp("deployment"), executor=request.param,
                                log=lambda *a: None, dags_folder=dags,
                                dag_ids=(*deploy.DAGS, "dropin"), extra_env=aws)
    running.passwords.extend(_seed_ssm(moto.url))  # hunted in every log and console too
    moto.reset()
    try:
        running.start()
        running.trigger()
        running.wait(timeout=480)
        yield running
    finally:
        running.stop()


def test_every_mapped_task_succeeds_with_its_own_value(deployment) -> None:
    """Four mapped tasks (two accounts x dev, prod) succeed; each API saw only its own
    environment's token for each account, and none refused."""
    assert deployment.runs() == {"ads_report": "success", "billing_report": "success",
                                 "dropin": "success"}
    ads = {k: s for k, s in deployment.tasks().items() if k[0] == "ads_report"}
    assert len(ads) == 5 and set(ads.values()) == {"success"}  # 4 mapped loads and notify
    for env, api in deployment.apis.items():
        assert {a for (a, outcome) in api.seen if outcome == "ok"} == {"acct_42", "acct_43"}
        assert not [k for k in api.seen if k[1] == "refused"], env


def test_second_environment_comes_from_env(deployment) -> None:
    """load_prod (env="prod") read the prod store; load read dev's: one pipeline entry."""
    lines = deployment.provenance()
    for task, env in (("load", "dev"), ("load_prod", "prod")):
        for index, account in enumerate(("acct_42", "acct_43")):
            pattern = (rf"__{task}__{index} env={env}: api_token from local "
                       rf"\S*/\.pipekey/{env}\.db#marketing/ads/{account}/api_token; 5 rows")
            assert any(re.search(pattern, line) for line in lines), (task, index, lines)


def test_a_dag_of_another_pipeline_is_refused(deployment) -> None:
    """billing_report (pipeline billing) is refused ads_report's token and its granted
    connection, each with a one-line error naming the key."""
    refused = [line for line in deployment.provenance() if line.startswith("REFUSED")]
    assert len(refused) == 2, refused
    assert "may not read 'marketing/ads/acct_42/api_token'" in refused[0] + refused[1]
    assert "may not read connection 'slack_default'" in refused[0] + refused[1]
    assert not any("NOT REFUSED" in text for text in deployment.task_logs().values())


def test_no_value_in_any_task_log_or_console(deployment) -> None:
    """Tasks print() their tokens: the task logs and every component's console (the
    scheduler's gets task output under LocalExecutor, the worker's under Celery) show ***."""
    logs, consoles = deployment.task_logs(), deployment.console_text()
    expected = {"api-server.log", "scheduler.log", "dag-processor.log"}
    if deployment.executor == "CeleryExecutor":
        expected |= {"redis.log", "celery-worker.log"}
    assert len(logs) >= 5 and set(consoles) == expected
    for text in [*logs.values(), *consoles.values()]:
        for value in deployment.values():
            assert value not in text
    printed = [t for t in logs.values() if "the token itself, masked in every log: ***" in t]
    assert len(printed) == 4
    outside = "slack password, read outside a run: ***"  # a plain task: no run open
    assert len([t for t in logs.values() if outside in t]) == 1
    if deployment.executor == "LocalExecutor":
        assert "the token itself, masked in every log: ***" in consoles["scheduler.log"]
        assert outside in consoles["scheduler.log"]


def test_dropin_answers_as_airflows_ssm_backend(deployment, moto) -> None:
    """[secrets] backend switched to PipekeySecretsBackend, Airflow's SSM kwargs unchanged:
    the task read two connections (URI, JSON) and a SecureString variable through Airflow,
    each the same as Airflow's SSM backend gives, and None for a missing variable; the API
    server's drop-in asked SSM with GetParameters."""
    event = deploy_module()._event
    events = sorted({event(line) for text in deployment.task_logs().values()
                     for line in text.splitlines() if event(line).startswith("DROPIN ")})
    assert events == ["DROPIN connection dropin_json same=True",
                      "DROPIN connection dropin_uri same=True", "DROPIN missing True",
                      "DROPIN variable dropin_api_token same=True"]
    assert moto.counts["GetParameters"] >= 3  # the drop-in's (GetParameter: Airflow's)
