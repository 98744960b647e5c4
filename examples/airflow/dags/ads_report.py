"""One dlt pipeline for two accounts, by dynamic task mapping; each task its own token.

Each mapped task runs inside a latchkey run (``@latchkey_task``): pipeline ``ads_report``
from the manifest (its ``dags`` patterns), scope ``marketing/ads/<account>`` from the task's
``account`` argument, run name ``<dag_id>__<run_id>__<task_id>__<map_index>``. dlt's lookups
for ``api_token`` and the duckdb destination are answered from that run alone.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

from airflow.sdk import Variable, dag, task

from latchkey.integrations.airflow import latchkey_task

# the dlt source and the stand-in API are shared with the quickstart
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "quickstart"))
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")

ACCOUNTS = ["acct_42", "acct_43"]


@dag(dag_id="ads_report", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     tags=["latchkey", "dlt"])
def ads_report():
    @task
    @latchkey_task
    def load(account: str) -> dict:
        import dlt

        from ads_source import ads
        from latchkey import current
        from latchkey.integrations import dlt as latchkey_dlt

        latchkey_dlt.install()
        run = current()
        pipeline = dlt.pipeline(pipeline_name=f"ads_report_{account}", destination="duckdb",
                                dataset_name="ads")
        pipeline.run(ads(account=account, base_url=Variable.get("ads_api_url")))
        with pipeline.sql_client() as sql:
            rows = sql.execute_sql("SELECT count(*) FROM campaigns")[0][0]
        token = run.explain("api_token").secret
        print(f"run {run.name}: api_token from {token.backend} {token.key}; {rows} rows")
        return {"account": account, "rows": rows, "run": run.name}

    load.expand(account=ACCOUNTS)


dag_object = ads_report()

if __name__ == "__main__":
    run = dag_object.test()
    print(f"DAG RUN STATE: {run.state}")
