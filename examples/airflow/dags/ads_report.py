"""One dlt pipeline for two accounts and two environments, by dynamic task mapping; each
task its own token.

Each mapped task runs inside a pipekey run (``@pipekey_task``): pipeline ``ads_report``
from the manifest (its ``dags`` patterns), scope ``marketing/ads/<account>`` from the task's
``account`` argument, environment from its ``env`` argument (``load_prod``) or the DAG run's
``pipekey_env`` param, run name ``<dag_id>__<run_id>__<task_id>__<map_index>``. dlt's lookups
for ``api_token`` and the duckdb destination are answered from that run alone.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

from airflow.sdk import Variable, dag, task

from pipekey.integrations.airflow import pipekey_task

# the dlt source and the stand-in API are shared with the quickstart
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "quickstart"))
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")

ACCOUNTS = ["acct_42", "acct_43"]


@dag(dag_id="ads_report", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     tags=["pipekey", "dlt"])
def ads_report():
    @task
    @pipekey_task
    def load(account: str, env: str | None = None) -> dict:
        import dlt

        from ads_source import ads
        from pipekey import current
        from pipekey.integrations import dlt as pipekey_dlt

        pipekey_dlt.install()
        run = current()
        # each environment has its own API endpoint: ads_api_url (dev), ads_api_url_prod
        url = Variable.get(f"ads_api_url_{run.environment}", default=None) \
            or Variable.get("ads_api_url")
        pipeline = dlt.pipeline(pipeline_name=f"ads_report_{account}_{run.environment}",
                                destination="duckdb", dataset_name="ads")
        pipeline.run(ads(account=account, base_url=url))
        with pipeline.sql_client() as sql:
            rows = sql.execute_sql("SELECT count(*) FROM campaigns")[0][0]
        token = run.explain("api_token").secret
        print(f"run {run.name} env={run.environment}: api_token from {token.backend} "
              f"{token.path}; {rows} rows; run ready in {run.ready_seconds * 1000:.0f} ms")
        print("the token itself, masked in every log:", run.secret("api_token"))
        return {"account": account, "env": run.environment, "rows": rows, "run": run.name}

    @task
    def notify() -> None:
        # a plain task, no run open: the granted connection is served (it needs no scope
        # parameter), and a print of its password shows *** in the task log and in the
        # scheduler's console (LocalExecutor copies task output there; Airflow masks only logs)
        from airflow.sdk.bases.hook import BaseHook

        print("slack password, read outside a run:", BaseHook.get_connection("slack_default")
              .password)

    load.expand(account=ACCOUNTS)
    load.override(task_id="load_prod").partial(env="prod").expand(account=ACCOUNTS)
    notify()


dag_object = ads_report()

if __name__ == "__main__":
    run = dag_object.test()
    print(f"DAG RUN STATE: {run.state}")
