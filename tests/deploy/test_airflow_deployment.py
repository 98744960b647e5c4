"""Airflow 3 with its real components (api-server, scheduler, dag-processor; LocalExecutor,
and CeleryExecutor with Debian's redis-server and a Celery worker) on 127.0.0.1, run by
examples/airflow/deploy.py: one deployment per executor, several checks each.

What only a deployment shows: the task process builds no backend before ``task_run()`` (the
manifest comes from ``[workers] secrets_backend_kwargs``; no ``PIPEKEY_CONFIG``, and the
components' working directory has no pipekey.toml), and LocalExecutor copies each task's
stdout into the scheduler's console.
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("airflow")
pytest.importorskip("dlt")

from .airflow_deploy import celery_missing, deploy_module  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module", params=[
    pytest.param("LocalExecutor", id="local"), pytest.param("CeleryExecutor", id="celery")])
def deployment(request, tmp_path_factory):
    """The example deployment, both DAGs triggered and finished; stopped afterwards."""
    if request.param == "CeleryExecutor" and celery_missing():
        pytest.skip(celery_missing())
    deploy = deploy_module()
    running = deploy.Deployment(tmp_path_factory.mktemp("deployment"), executor=request.param,
                                log=lambda *a: None)
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
    assert deployment.runs() == {"ads_report": "success", "billing_report": "success"}
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
