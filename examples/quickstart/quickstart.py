"""The quickstart: one pipeline definition, two accounts, two dlt pipelines at once.

Each thread opens its own pipekey run; dlt's lookup of ``api_token`` and of the duckdb
destination's credentials is answered from that run alone. The stand-in ads API checks each
account's token, so a run that got another run's token fails loudly. Prints names and
provenance, never a value.

Run it with ``bash examples/quickstart/run.sh`` (which sets up the store first).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no network calls from dlt
# dlt's Airflow secrets provider (on whenever Airflow is installed) redirects stdout and stderr
# process-wide on every lookup, which is not thread-safe: with pipelines in threads the
# process can end up writing into a StringIO. pipekey answers dlt's lookups instead.
os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")

import dlt  # noqa: E402

import pipekey  # noqa: E402
from pipekey.integrations import dlt as pipekey_dlt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ads_api import AdsApi, digest  # noqa: E402
from ads_source import ads  # noqa: E402

ACCOUNTS = ["acct_42", "acct_43"]


def load_account(lk: pipekey.Pipekey, account: str, api_url: str, report: dict) -> None:
    """One pipeline run: a pipekey run around a dlt pipeline, in this thread."""
    with lk.pipeline("ads_report", account=account, run_name=f"quickstart__{account}") as run:
        pipeline = dlt.pipeline(pipeline_name=f"ads_report_{account}", destination="duckdb",
                                dataset_name="ads", pipelines_dir=str(Path.cwd() / ".dlt"))
        pipeline.run(ads(account=account, base_url=api_url))
        with pipeline.sql_client() as sql:
            rows = sql.execute_sql("SELECT count(*), min(account), max(account) FROM campaigns")
        token = run.explain("api_token").secret
        warehouse = run.connection("warehouse")
        report[account] = {
            "run": run.name,
            "api_token": f"{token.backend} {token.key} (version {token.version})",
            "warehouse": f"{warehouse.conn_type} {Path(warehouse.host).name}",
            "rows": rows[0][0],
            "accounts_in_table": sorted({rows[0][1], rows[0][2]}),
            "ready_ms": round(run.ready_seconds * 1000, 1),
        }


def main() -> int:
    lk = pipekey.load()
    pipekey_dlt.install()
    # The stand-in API learns each account's token digest (an admin read; a real API would
    # have issued the token).
    digests = {a: digest(lk.get(f"marketing/ads/{a}/api_token")) for a in ACCOUNTS}
    report: dict[str, dict] = {}
    with AdsApi(digests) as api:
        threads = [threading.Thread(target=load_account, args=(lk, a, api.url, report))
                   for a in ACCOUNTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    print(f"pipekey {pipekey.__version__}, env {lk.env}, chain {[b.name for b in lk.chain]}")
    for account in ACCOUNTS:
        r = report.get(account)
        if r is None:
            print(f"  {account}: FAILED (see the error above)")
            continue
        print(f"  {account}: run {r['run']} ready in {r['ready_ms']} ms; api_token from "
              f"{r['api_token']}; loaded {r['rows']} campaigns of {', '.join(r['accounts_in_table'])} "
              f"into {r['warehouse']}")
    refused = sum(n for (_, outcome), n in api.seen.items() if outcome == "refused")
    print(f"  the ads API accepted {sum(api.seen.values()) - refused} requests and refused "
          f"{refused}: each run used its own token")
    ok = len(report) == len(ACCOUNTS) and refused == 0 and all(
        r["accounts_in_table"] == [a] for a, r in report.items())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
