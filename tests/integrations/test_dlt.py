"""The dlt integration with real dlt: duckdb loads in threads, S3 on moto, and the comparison
with dlt's own process-global secrets."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import threading
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

dlt = pytest.importorskip("dlt", reason="the dlt extra is not installed (pip install -e '.[dlt]')")

import pipekey  # noqa: E402
from pipekey.backends.local import LocalBackend, generate_master_key  # noqa: E402
from pipekey.integrations import dlt as pipekey_dlt  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"quickstart_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dlt's decorators look their module up there
    spec.loader.exec_module(module)
    return module


ads_api = _module("ads_api")
ads_source = _module("ads_source")


@pytest.fixture
def provider():
    installed = pipekey_dlt.install()
    yield installed
    pipekey_dlt.uninstall()


def _project(root: Path, accounts: list[str],
             extra_pipeline: str = "") -> tuple[pipekey.Pipekey, dict]:
    """A manifest, a local store with a fake token and a duckdb connection per account."""
    key = generate_master_key()
    os.environ["PIPEKEY_MASTER_KEY"] = key
    (root / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\npath = "store.db"\n'
        '[pipelines.ads_report]\nscope = "marketing/ads/{account}"\nrequires = ["api_token"]\n'
        'connections = { warehouse = "connections/warehouse_{account}" }\n'
        'dlt_destination = "warehouse"\n' + extra_pipeline)
    store = LocalBackend("local", root / "store.db")
    tokens = {}
    for account in accounts:
        tokens[account] = f"fake-token-{account}-{uuid.uuid4().hex[:8]}"
        store.put(f"marketing/ads/{account}/api_token", tokens[account])
        store.put(f"connections/warehouse_{account}", json.dumps(
            {"conn_type": "duckdb", "host": str(root / f"{account}.duckdb")}))
    store.close()
    return pipekey.load(root / "pipekey.toml"), tokens


def test_install_puts_pipekey_first_and_is_idempotent(provider) -> None:
    """After install(), pipekey is first in dlt's lookup order, once."""
    names = [p.name for p in dlt.config.config_providers]
    assert names[0] == "pipekey" and names.count("pipekey") == 1
    pipekey_dlt.install()
    assert [p.name for p in dlt.config.config_providers].count("pipekey") == 1
    pipekey_dlt.uninstall()
    assert not pipekey_dlt.installed()
    pipekey_dlt.install(first=False)
    assert [p.name for p in dlt.config.config_providers][-1] == "pipekey"


def test_run_wins_over_environment_and_falls_through_without_a_run(provider, isolated,
                                                                     monkeypatch) -> None:
    """Inside a run its value beats SOURCES__... variables; outside, dlt's env answers."""
    lk, tokens = _project(isolated, ["acct_1"])
    monkeypatch.setenv("SOURCES__ADS__API_TOKEN", "fake-from-environment")
    monkeypatch.setenv("SOURCES__ADS__OTHER_SETTING", "fake-env-only")
    assert dlt.secrets.get("sources.ads.api_token") == "fake-from-environment"
    with lk.pipeline("ads_report", account="acct_1"):
        assert dlt.secrets.get("sources.ads.api_token") == tokens["acct_1"]
        assert dlt.secrets.get("my_pipeline.sources.ads.api_token") == tokens["acct_1"]
        assert dlt.secrets.get("sources.ads.other_setting") == "fake-env-only"
    assert dlt.secrets.get("sources.ads.api_token") == "fake-from-environment"


def _load(lk, account: str, api_url: str, root: Path, results: dict, barrier=None) -> None:
    try:
        with lk.pipeline("ads_report", account=account, run_name=f"test__{account}"):
            if barrier:
                barrier.wait(timeout=120)
            pipeline = dlt.pipeline(pipeline_name=f"ads_{account}", destination="duckdb",
                                    dataset_name="ads", pipelines_dir=str(root / ".dlt"))
            pipeline.run(ads_source.ads(account=account, base_url=api_url))
            with pipeline.sql_client() as sql:
                results[account] = sql.execute_sql("SELECT DISTINCT account FROM campaigns")
    except Exception as exc:  # the test counts failures per account
        results[account] = exc


@pytest.mark.slow
def test_20_concurrent_dlt_pipelines_each_read_their_own_token(provider, isolated) -> None:
    """20 dlt pipelines in threads, one definition: every load succeeds with its own token."""
    accounts = [f"acct_{i:02d}" for i in range(20)]
    lk, tokens = _project(isolated, accounts)
    results: dict = {}
    barrier = threading.Barrier(len(accounts))
    digests = {a: ads_api.digest(t) for a, t in tokens.items()}
    with ads_api.AdsApi(digests) as api:
        threads = [threading.Thread(target=_load, args=(lk, a, api.url, isolated, results, barrier))
                   for a in accounts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    failures = {a: r for a, r in results.items() if isinstance(r, Exception)}
    assert failures == {}
    assert all(results[a] == [(a,)] for a in accounts)
    assert sum(n for (_, outcome), n in api.seen.items() if outcome == "refused") == 0
    assert {a for (a, outcome) in api.seen if outcome == "ok"} == set(accounts)


@dlt.source(name="ads", section="ads_naive")
def naive_ads(account: str, base_url: str, api_token: str = dlt.secrets.value):
    return ads_source.ads(account=account, base_url=base_url, api_token=api_token).resources[
        "campaigns"]


@pytest.mark.slow
def test_dlt_secrets_injection_crosses_runs(isolated) -> None:
    """The same 20 pipelines with dlt.secrets[...] = token (what teams do today): runs read
    each other's tokens and the API refuses them."""
    accounts = [f"acct_{i:02d}" for i in range(20)]
    tokens = {a: f"fake-naive-{a}-{uuid.uuid4().hex[:8]}" for a in accounts}
    results: dict = {}
    barrier = threading.Barrier(len(accounts))

    def naive(account: str, api_url: str) -> None:
        try:
            dlt.secrets["sources.ads_naive.ads.api_token"] = tokens[account]
            barrier.wait(timeout=120)  # the runs start together, as scheduled tasks do
            pipeline = dlt.pipeline(pipeline_name=f"naive_{account}", destination="duckdb",
                                    dataset_name="ads", pipelines_dir=str(isolated / ".dlt"))
            pipeline.run(naive_ads(account=account, base_url=api_url),
                         credentials=str(isolated / f"naive_{account}.duckdb"))
            results[account] = "ok"
        except Exception as exc:
            results[account] = exc

    digests = {a: ads_api.digest(t) for a, t in tokens.items()}
    with ads_api.AdsApi(digests) as api:
        threads = [threading.Thread(target=naive, args=(a, api.url)) for a in accounts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    refused = sum(n for (_, outcome), n in api.seen.items() if outcome == "refused")
    failed = [a for a, r in results.items() if r != "ok"]
    assert refused >= 1 and len(failed) == refused  # each cross-read is a refused load


def test_asyncio_tasks_see_their_own_run(provider, isolated) -> None:
    """dlt lookups in concurrent asyncio tasks answer from each task's run."""
    lk, tokens = _project(isolated, ["acct_1", "acct_2"])

    async def one(account: str) -> set[str]:
        seen = set()
        async with lk.pipeline("ads_report", account=account):
            for _ in range(20):
                await asyncio.sleep(0)
                seen.add(dlt.secrets.get("sources.ads.api_token"))
        return seen

    async def both():
        return await asyncio.gather(one("acct_1"), one("acct_2"))

    assert asyncio.run(both()) == [{tokens["acct_1"]}, {tokens["acct_2"]}]


def test_explicit_mapping(provider, isolated) -> None:
    """The pipeline's dlt table maps any dlt path to a secret, a key or a connection."""
    lk, tokens = _project(isolated, ["acct_1"], extra_pipeline=(
        'grants = ["shared/github"]\n'
        '[pipelines.ads_report.dlt]\n'
        '"sources.github.access_token" = "key:shared/github/token"\n'
        '"sources.ads.renamed_token" = "secret:api_token"\n'
        '"destination.postgres.credentials" = "connection:warehouse"\n'))
    lk.set("shared/github/token", "fake-github-token")
    with lk.pipeline("ads_report", account="acct_1"):
        assert dlt.secrets.get("sources.github.access_token") == "fake-github-token"
        assert dlt.secrets.get("sources.ads.renamed_token") == tokens["acct_1"]
        creds = dlt.secrets.get("destination.postgres.credentials")
        assert creds == {"database": str(isolated / "acct_1.duckdb")}
        assert dlt.secrets.get("destination.postgres.credentials.database") == creds["database"]
        assert dlt.secrets.get("sources.unmapped.access_token") is None


@pytest.mark.slow
def test_filesystem_on_s3_with_the_runs_assumed_role(provider, isolated, aws_env, moto) -> None:
    """dlt's filesystem destination writes to S3 (moto) with the run's assumed-role keys."""
    import boto3

    bucket = f"lk-lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=aws_env).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    lk, tokens = _project(isolated, ["acct_1"], extra_pipeline=(
        'aws_role = { arn = "arn:aws:iam::123456789012:role/ads-lake", duration = 900 }\n'
        '[pipelines.lake]\nscope = "marketing/ads/{account}"\nrequires = ["api_token"]\n'
        'connections = { lake = "connections/lake" }\ndlt_destination = "lake"\n'
        'aws_role = { arn = "arn:aws:iam::123456789012:role/ads-lake", duration = 900 }\n'))
    lk.set("connections/lake", json.dumps({"conn_type": "aws", "extra": {
        "bucket_url": f"s3://{bucket}/raw", "endpoint_url": aws_env,
        "region_name": "eu-central-1"}}))
    moto.reset()
    digests = {a: ads_api.digest(t) for a, t in tokens.items()}
    with ads_api.AdsApi(digests) as api, lk.pipeline("lake", account="acct_1") as run:
        role_key = run.env()["AWS_ACCESS_KEY_ID"]
        pipeline = dlt.pipeline(pipeline_name="lake_acct_1", destination="filesystem",
                                dataset_name="ads", pipelines_dir=str(isolated / ".dlt"))
        pipeline.run(ads_source.ads(account="acct_1", base_url=api.url), loader_file_format="jsonl")
    objects = boto3.client("s3", endpoint_url=aws_env).list_objects_v2(Bucket=bucket)
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.startswith("raw/ads/campaigns/") for k in keys)
    assert moto.counts["AssumeRole"] == 1 and role_key.startswith("ASIA")


def test_dlt_mapping_lives_in_the_integration(isolated) -> None:
    """dlt_mapping(run) fills key: templates with the run's parameters; Run holds no dlt state."""
    lk, _ = _project(isolated, ["acct_1"], extra_pipeline=(
        '[pipelines.ads_report.dlt]\n'
        '"sources.ads.same_token" = "key:marketing/ads/{account}/api_token"\n'
        '"sources.ads.renamed_token" = "secret:api_token"\n'))
    with lk.pipeline("ads_report", account="acct_1") as run:
        assert pipekey_dlt.dlt_mapping(run) == {
            "sources.ads.same_token": "key:marketing/ads/acct_1/api_token",
            "sources.ads.renamed_token": "secret:api_token"}
        assert pipekey_dlt.dlt_mapping(run) is pipekey_dlt.dlt_mapping(run)
        assert pipekey_dlt.dlt_destination(run) == "warehouse"
        assert not hasattr(run, "dlt_mapping") and not hasattr(run, "dlt_destination")


def test_dlt_mapping_template_error_names_the_pipeline_and_parameter(isolated) -> None:
    """A key: template the run cannot fill is a one-line UsageError at its first dlt lookup."""
    lk, _ = _project(isolated, ["acct_1"], extra_pipeline=(
        '[pipelines.ads_report.dlt]\n"sources.ads.x" = "key:shared/{region}/x"\n'))
    needs = "pipeline 'ads_report' dlt mapping needs parameter 'region'"
    with lk.pipeline("ads_report", account="acct_1") as run, pytest.raises(
            pipekey.UsageError, match=needs):
        pipekey_dlt.dlt_mapping(run)


@dlt.source(name="leaky")
def _leaky_source(api_token: str = dlt.config.value):
    """A source that declares its token as plain config: dlt records config values in its
    trace (trace.pickle), so a secret must never answer it."""

    @dlt.resource(name="rows")
    def rows():
        yield {"token_length": len(api_token)}

    return rows


def test_a_secret_never_answers_a_config_field(provider, isolated) -> None:
    """dlt writes resolved *config* (non-secret) values to the pipeline's trace on disk: the
    provider refuses to answer a config field with a run's secret, naming the field."""
    lk, tokens = _project(isolated, ["acct_1"])
    pipelines_dir = isolated / ".dlt"
    failure: Exception | None = None
    with lk.pipeline("ads_report", account="acct_1"):
        pipeline = dlt.pipeline(pipeline_name="leaky", destination="duckdb",
                                dataset_name="leaky", pipelines_dir=str(pipelines_dir))
        try:
            pipeline.run(_leaky_source())
        except Exception as exc:  # checked below, after the files
            failure = exc
    token = tokens["acct_1"].encode()
    for path in [*pipelines_dir.rglob("*"), *isolated.rglob("*.log")]:
        if path.is_file():
            assert token not in path.read_bytes(), f"the token reached {path}"
    assert failure is not None
    message = str(failure)
    assert "leaky.api_token" in message
    assert "dlt.secrets.value" in message
