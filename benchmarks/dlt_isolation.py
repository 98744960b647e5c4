"""20 dlt pipelines at once: pipekey runs versus dlt's own process-global secrets.

    python benchmarks/dlt_isolation.py [--pipelines 20] [--rounds 3] [--json]

Each pipeline loads one account's campaigns from a stand-in API on 127.0.0.1 that accepts
only that account's token, into its own duckdb file. With pipekey each thread opens a run
and dlt's ``api_token`` lookup is answered from it; with ``dlt.secrets[...] = token`` (what
teams do today) every thread writes the one process-wide value before its run starts. A
refused request is a run that read another run's token. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")

import dlt  # noqa: E402

import pipekey  # noqa: E402
from pipekey.backends.local import LocalBackend, generate_master_key  # noqa: E402
from pipekey.integrations import dlt as pipekey_dlt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "quickstart"))
from ads_api import AdsApi, digest  # noqa: E402
from ads_source import ads  # noqa: E402


@dlt.source(name="ads", section="ads_global")
def ads_global(account: str, base_url: str, api_token: str = dlt.secrets.value):
    return ads(account=account, base_url=base_url, api_token=api_token).resources["campaigns"]


def _project(root: Path, tokens: dict[str, str]) -> pipekey.Pipekey:
    (root / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\npath = "store.db"\n'
        '[pipelines.ads]\nscope = "marketing/ads/{account}"\nrequires = ["api_token"]\n')
    store = LocalBackend("local", root / "store.db")
    for account, token in tokens.items():
        store.put(f"marketing/ads/{account}/api_token", token)
    store.close()
    return pipekey.load(root / "pipekey.toml")


def _round(mode: str, n: int, root: Path) -> dict:
    accounts = [f"acct_{i:02d}" for i in range(n)]
    tokens = {a: f"fake-{mode}-{a}-{uuid.uuid4().hex[:8]}" for a in accounts}
    lk = _project(root, tokens) if mode == "pipekey" else None
    barrier = threading.Barrier(n)
    failed: list[str] = []

    slug = mode.replace(".", "_")

    def one(account: str, url: str) -> None:
        target = str(root / f"{slug}_{account}.duckdb")
        try:
            pipeline = dlt.pipeline(pipeline_name=f"{slug}_{account}", destination="duckdb",
                                    dataset_name="ads", pipelines_dir=str(root / ".dlt"))
            if mode == "pipekey":
                with lk.pipeline("ads", account=account):
                    barrier.wait(timeout=120)
                    pipeline.run(ads(account=account, base_url=url), credentials=target)
            else:
                dlt.secrets["sources.ads_global.ads.api_token"] = tokens[account]
                barrier.wait(timeout=120)
                pipeline.run(ads_global(account=account, base_url=url), credentials=target)
        except Exception:
            failed.append(account)

    start = time.perf_counter()
    with AdsApi({a: digest(t) for a, t in tokens.items()}) as api:
        threads = [threading.Thread(target=one, args=(a, api.url)) for a in accounts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    refused = sum(c for (_, outcome), c in api.seen.items() if outcome == "refused")
    return {"seconds": time.perf_counter() - start, "refused": refused, "failed": len(failed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("PIPEKEY_MASTER_KEY", generate_master_key())
    pipekey_dlt.install()
    results: dict[str, list[dict]] = {"pipekey": [], "dlt.secrets": []}
    for _ in range(args.rounds):
        for mode in results:
            with tempfile.TemporaryDirectory() as tmp:
                results[mode].append(_round(mode, args.pipelines, Path(tmp)))
    summary = {mode: {"runs": args.pipelines * len(rounds),
                      "cross_reads": sum(r["refused"] for r in rounds),
                      "failed_loads": sum(r["failed"] for r in rounds),
                      "median_seconds": round(statistics.median(r["seconds"] for r in rounds), 2)}
               for mode, rounds in results.items()}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{args.pipelines} concurrent dlt pipelines x {args.rounds} rounds")
    print(f"{'approach':<14}{'runs':>6}{'cross-run reads':>17}{'failed loads':>14}{'median s':>10}")
    for mode, row in summary.items():
        print(f"{mode:<14}{row['runs']:>6}{row['cross_reads']:>17}{row['failed_loads']:>14}"
              f"{row['median_seconds']:>10}")


if __name__ == "__main__":
    main()
