"""Another team's DAG: mapped to pipeline ``billing``, it may not read ``ads_report``'s secrets.

Each attempt is refused, with a one-line error naming the key, never a value; the task
prints the refusals and succeeds, so the example run shows them.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from pipekey.integrations.airflow import task_run


@dag(dag_id="billing_report", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     tags=["pipekey"])
def billing_report():
    @task
    def read_other_teams_secrets() -> None:
        from airflow.sdk.bases.hook import BaseHook

        with task_run() as run:
            for attempt in (lambda: run.get("marketing/ads/acct_42/api_token"),
                            lambda: BaseHook.get_connection("slack_default")):
                try:
                    attempt()
                    print("NOT REFUSED: billing read an ads_report secret")
                except Exception as exc:
                    print(f"REFUSED {type(exc).__name__}: {exc}")

    read_other_teams_secrets()


billing_report()
