"""AWS backends against moto over HTTP: batching counted at the server, size limits and
chunking, documents and stages, envelope encryption, conditional writes, roles, faults."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

import pipekey
from pipekey import AccessDenied, BackendUnavailable, InvalidKey, StoreCorrupt, ValueTooLarge
from pipekey.backends.aws_secrets_manager import SecretsManagerBackend, SecretsManagerConfig
from pipekey.backends.aws_ssm import SsmBackend, SsmConfig
from pipekey.backends.dynamodb import DynamoDbBackend, DynamoDbConfig
from pipekey.manifest import parse_manifest

REGION = "eu-central-1"
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def ssm(aws_env: str) -> SsmBackend:
    return SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=f"/lk/{uid()}", region=REGION,
                                       endpoint_url=aws_env))


@pytest.fixture
def sm(aws_env: str) -> SecretsManagerBackend:
    return SecretsManagerBackend("sm", SecretsManagerConfig(
        type="aws_secrets_manager", prefix=f"lk-{uid()}/", region=REGION, endpoint_url=aws_env))


def _dynamo(endpoint: str, **extra) -> DynamoDbBackend:
    backend = DynamoDbBackend("ddb", DynamoDbConfig(type="dynamodb", table=f"lk-{uid()}",
                                                    region=REGION, endpoint_url=endpoint,
                                                    **extra), master_key=KEY)
    backend.ensure_table()
    return backend


# -- SSM ---------------------------------------------------------------------------------
def test_40_secrets_at_scope_level_ready_in_at_most_4_get_parameters(ssm, moto) -> None:
    """A pipeline whose 40 secrets sit at its scope level opens with 4 GetParameters calls,
    counted at the server, and no other read."""
    names = [f"secret_{i:02d}" for i in range(40)]
    for name in names:
        ssm.put(f"marketing/ads/acct_1/{name}", f"fake-{name}")
    manifest = parse_manifest({"pipelines": {"ads": {"scope": "marketing/ads/{account}",
                                                     "requires": names}}}, Path("m.toml"))
    lk = pipekey.Pipekey([ssm], manifest=manifest)
    moto.reset()
    with lk.pipeline("ads", account="acct_1") as run:
        assert run.secret("secret_39") == "fake-secret_39"
    assert moto.counts["GetParameters"] <= 4
    assert sum(moto.counts.values()) == moto.counts["GetParameters"]


def test_standard_tier_limit_checked_before_aws(ssm, moto) -> None:
    """A 5 KB value is refused before any PutParameter reaches the server."""
    moto.reset()
    with pytest.raises(ValueTooLarge, match=r"holds at most 4096 .*tier = \"Advanced\""):
        ssm.put("big", "x" * 5000)
    assert moto.counts["PutParameter"] == 0


def test_advanced_tier_takes_8kb(aws_env) -> None:
    """The Advanced tier stores up to 8 KB."""
    adv = SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=f"/lk/{uid()}", tier="Advanced",
                                      region=REGION, endpoint_url=aws_env))
    adv.put("big", "y" * 8192)
    assert len(adv.get("big").value) == 8192
    with pytest.raises(ValueTooLarge):
        adv.put("big", "y" * 8193)


def test_chunk_parameters_are_no_other_keys(aws_env) -> None:
    """A key naming a split value's chunk is absent and refused: one key, one parameter."""
    prefix = f"/lk/{uid()}"
    split = SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=prefix, split=True,
                                        region=REGION, endpoint_url=aws_env))
    value = "fake-token-acct43-" * 400
    split.put("acct_43/cert", value)
    raw = boto3.client("ssm", endpoint_url=aws_env, region_name=REGION)
    chunks = sorted(p["Name"][len(prefix) + 1:] for p in raw.get_parameters_by_path(
        Path=prefix, Recursive=True)["Parameters"] if "__pipekey_chunks" in p["Name"])
    assert chunks and split.get_many(chunks) == {}
    with pytest.raises(InvalidKey, match="'ssm' cannot hold it: a segment named "
                                         "'__pipekey_chunks'"):
        split.put(chunks[0], "fake-overwrite")
    assert split.get("acct_43/cert").value == value


def test_split_values_round_trip_hidden_and_checked(aws_env) -> None:
    """With split = true a 20 KB value is stored as chunks, read back whole, its chunks
    hidden from listing, replaced cleanly, and a tampered chunk fails the SHA-256 check."""
    prefix = f"/lk/{uid()}"
    split = SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=prefix, split=True,
                                        region=REGION, endpoint_url=aws_env))
    value = ("fake-ü€-" * 2500)[:20_000]
    split.put("certs/bundle", value)
    assert split.get("certs/bundle").value == value
    assert split.list_keys("") == ["certs/bundle"]
    raw = boto3.client("ssm", endpoint_url=aws_env, region_name=REGION)
    chunk_names = [p["Name"] for p in raw.get_parameters_by_path(
        Path=prefix, Recursive=True)["Parameters"] if "__pipekey_chunks" in p["Name"]]
    from pipekey.backends.aws_ssm import _split_utf8

    assert len(chunk_names) == len(_split_utf8(value, 4096)) >= 6
    raw.put_parameter(Name=chunk_names[0], Value="fake-tampered", Type="SecureString",
                      Overwrite=True)
    with pytest.raises(StoreCorrupt, match="SHA-256"):
        split.get("certs/bundle")
    split.put("certs/bundle", "fake-small-now")
    assert split.get("certs/bundle").value == "fake-small-now"
    left = [p for p in raw.get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"]
            if "__pipekey_chunks" in p["Name"]]
    assert left == []


def test_get_tree_pages_through_get_parameters_by_path(ssm, moto) -> None:
    """get_tree reads 25 parameters of a prefix, 10 a page, with their values."""
    for i in range(25):
        ssm.put(f"team/x/k{i:02d}", f"fake-{i}")
    ssm.put("team/y/other", "fake-other")
    moto.reset()
    tree = ssm.get_tree("team/x")
    assert len(tree) == 25 and tree["team/x/k07"].value == "fake-7"
    assert moto.counts["GetParametersByPath"] == 3


def test_history_through_the_cli(aws_env, isolated: Path) -> None:
    """`pipekey history` lists SSM's versions of a parameter."""
    from ..conftest import run_cli

    (isolated / "pipekey.toml").write_text(
        f'[backends.ssm]\ntype = "aws_ssm"\nprefix = "/lk/{uid()}/{{env}}"\n'
        f'region = "{REGION}"\nendpoint_url = "{aws_env}"\n')
    for value in ("fake-1", "fake-2", "fake-3"):
        assert run_cli("set", "shared/token", input=value).returncode == 0
    result = json.loads(run_cli("history", "shared/token", "--json").stdout)
    assert [v["version"] for v in result["versions"]] == ["1", "2", "3"]
    assert "fake" not in json.dumps(result)


# -- Secrets Manager ---------------------------------------------------------------------
@pytest.mark.parametrize("prefix, separator, name", [
    pytest.param("bar/prod", "/", "bar/prod/connections/warehouse", id="path-like"),
    pytest.param("bar/prod/", "/", "bar/prod/connections/warehouse", id="trailing-slash"),
    pytest.param("bar/prod-", "", "bar/prod-connections/warehouse", id="raw-explicit"),
])
def test_secrets_manager_prefix_is_path_like(aws_env, prefix: str, separator: str,
                                             name: str) -> None:
    """A prefix is joined to the key with exactly one '/' (raw only with separator = ""):
    prefix "bar/prod" reads bar/prod/connections/warehouse, never bar/prodconnections/..."""
    base = f"lk-{uid()}/"
    raw = boto3.client("secretsmanager", endpoint_url=aws_env, region_name=REGION)
    raw.create_secret(Name=base + name, SecretString="fake-pw-prefix")
    raw.create_secret(Name=base + "bar/prodconnections/warehouse", SecretString="fake-wrong")
    sm = SecretsManagerBackend("sm", SecretsManagerConfig(
        type="aws_secrets_manager", prefix=base + prefix, separator=separator, region=REGION,
        endpoint_url=aws_env))
    assert sm.get("connections/warehouse").value == "fake-pw-prefix"
    assert sm.locate("connections/warehouse") == f"secretsmanager:{base}{name}"
    assert sm.list_keys("connections") == ["connections/warehouse"]


def test_explain_shows_the_exact_secret_name(aws_env, isolated: Path) -> None:
    """`pipekey explain` names the exact Secrets Manager secret it tried."""
    from ..conftest import run_cli

    base = f"lk-{uid()}"
    (isolated / "pipekey.toml").write_text(
        f'[backends.sm]\ntype = "aws_secrets_manager"\nprefix = "{base}/bar/prod"\n'
        f'region = "{REGION}"\nendpoint_url = "{aws_env}"\n')
    result = run_cli("explain", "connections/warehouse", "--json")
    assert result.returncode == 1, result.stderr
    paths = [a["path"] for a in json.loads(result.stdout)["attempts"]]
    assert paths == [f"secretsmanager:{base}/bar/prod/connections/warehouse"]


def test_documents_and_batching(sm, moto, aws_env) -> None:
    """A JSON document's fields are keys; 45 keys cost 3 BatchGetSecretValue calls."""
    raw = boto3.client("secretsmanager", endpoint_url=aws_env, region_name=REGION)
    doc = {"conn_type": "postgres", "host": "db.internal", "login": "loader",
           "password": "fake-doc-pw", "port": 5432}
    raw.create_secret(Name=f"{sm.prefix}connections/warehouse", SecretString=json.dumps(doc))
    for i in range(44):
        sm.put(f"app/k{i:02d}", f"fake-{i}")
    moto.reset()
    keys = [f"app/k{i:02d}" for i in range(44)] + ["connections/warehouse/password"]
    found = sm.get_many(keys)
    assert found["connections/warehouse/password"].value == "fake-doc-pw"
    assert found["app/k43"].value == "fake-43"
    assert moto.counts["BatchGetSecretValue"] == 3
    whole = sm.get("connections/warehouse").value
    assert pipekey.Connection.from_value(whole).port == 5432
    assert sm.get("connections/warehouse/port").value == "5432"
    assert sm.get("connections/warehouse/nope") is None


def test_a_sibling_document_is_not_readable_at_a_parent_level(sm, aws_env) -> None:
    """Issue 16: with documents on, the secret marketing/facebook/acct_43 is acct_43's whole
    subtree; the run of acct_42 can neither get it nor find it by the walk."""
    raw = boto3.client("secretsmanager", endpoint_url=aws_env, region_name=REGION)
    raw.create_secret(Name=f"{sm.prefix}marketing/facebook/acct_43",
                      SecretString=json.dumps({"access_token": "fake-token-acct43"}))
    raw.create_secret(Name=f"{sm.prefix}marketing/facebook",
                      SecretString=json.dumps({"app_secret": "fake-app-secret",
                                               "acct_43": {"access_token": "fake-nested-43"}}))
    sm.put("marketing/facebook/acct_42/access_token", "fake-token-acct42")
    manifest = parse_manifest({"pipelines": {"ads": {
        "scope": "marketing/facebook/{account}", "requires": ["access_token", "app_secret"]}}},
        Path("pipekey.toml"), None)
    lk = pipekey.Pipekey([sm], manifest=manifest, env=manifest.env)
    with lk.pipeline("ads", account="acct_42") as run:
        assert run.secret("app_secret") == "fake-app-secret"  # a declared name, from a document
        with pytest.raises(AccessDenied, match="marketing/facebook/acct_43"):
            run.get("marketing/facebook/acct_43")
        with pytest.raises(pipekey.SecretNotFound):
            run.secret("acct_43")
        assert "fake-token-acct43" not in repr(run.explain("acct_43"))


def test_a_declared_name_holding_a_document_is_refused_at_a_parent_level(sm, aws_env) -> None:
    """A declared name at a parent level is one key: a JSON object there stands for a subtree,
    so opening is refused naming the key (never the value); a mapped connection's document and
    a granted one are read whole."""
    raw = boto3.client("secretsmanager", endpoint_url=aws_env, region_name=REGION)
    raw.create_secret(Name=f"{sm.prefix}marketing/facebook/acct_7",
                      SecretString=json.dumps({"token": "fake-token-acct7"}))
    raw.create_secret(Name=f"{sm.prefix}connections/wh", SecretString=json.dumps(
        {"conn_type": "postgres", "host": "db.internal", "password": "fake-wh-pw"}))
    raw.create_secret(Name=f"{sm.prefix}marketing/facebook/acct_8",
                      SecretString=json.dumps({"token": "fake-token-acct8"}))
    manifest = parse_manifest({"pipelines": {
        "bad": {"scope": "marketing/facebook/{account}", "requires": ["acct_7"]},
        "ok": {"scope": "marketing/facebook/{account}", "grants": ["marketing/facebook/acct_8"],
               "connections": {"wh": "connections/wh"}}}}, Path("pipekey.toml"), None)
    lk = pipekey.Pipekey([sm], manifest=manifest, env=manifest.env)
    with pytest.raises(AccessDenied, match="'marketing/facebook/acct_7'.*document") as info, \
            lk.pipeline("bad", account="acct_1"):
        pass
    assert "fake-token-acct7" not in str(info.value)
    with lk.pipeline("ok", account="acct_1") as run:
        assert run.connection("wh").password == "fake-wh-pw"
        assert "fake-token-acct8" in run.get("marketing/facebook/acct_8")


def test_version_stages_and_binary(sm, aws_env) -> None:
    """AWSCURRENT by default; AWSPENDING when configured; binary secrets come base64."""
    raw = boto3.client("secretsmanager", endpoint_url=aws_env, region_name=REGION)
    sm.put("rotating", "fake-current")
    raw.put_secret_value(SecretId=f"{sm.prefix}rotating", SecretString="fake-pending",
                         VersionStages=["AWSPENDING"])
    pending = SecretsManagerBackend("pending", SecretsManagerConfig(
        type="aws_secrets_manager", prefix=sm.prefix, version_stage="AWSPENDING",
        region=REGION, endpoint_url=aws_env))
    assert sm.get("rotating").value == "fake-current"
    assert pending.get("rotating").value == "fake-pending"
    raw.create_secret(Name=f"{sm.prefix}keystore", SecretBinary=b"\x00\x01fake")
    assert base64.b64decode(sm.get("keystore").value) == b"\x00\x01fake"


# -- DynamoDB ----------------------------------------------------------------------------
def test_concurrent_writers_lose_no_update(aws_env) -> None:
    """Two threads writing one key 15 times each leave 30 versions, none lost."""
    ddb = _dynamo(aws_env)

    def writer(n: int) -> None:
        for i in range(15):
            ddb.put("shared/counter", f"fake-{n}-{i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [v.version for v in ddb.history("shared/counter")] == [str(i) for i in range(1, 31)]


def test_batch_get_item_and_unprocessed_keys(aws_env, moto) -> None:
    """250 keys cost 3 BatchGetItem calls; keys DynamoDB leaves unprocessed are asked again."""
    ddb = _dynamo(aws_env)
    keys = [f"k/{i:03d}" for i in range(250)]
    for key in keys:
        ddb.put(key, f"fake-{key}")
    moto.reset()
    assert len(ddb.get_many(keys)) == 250
    assert moto.counts["BatchGetItem"] == 3

    first = {"done": False}

    def leave_unprocessed(request, **_):
        if first["done"]:
            return None
        first["done"] = True
        body = json.loads(request.body)
        return _response(200, {"Responses": {ddb.table: []},
                               "UnprocessedKeys": body["RequestItems"]})

    ddb.client.meta.events.register("before-send.dynamodb.BatchGetItem", leave_unprocessed)
    assert len(ddb.get_many(keys[:5])) == 5 and first["done"]


def test_values_encrypted_client_side_and_tamper_detected(aws_env) -> None:
    """The table never holds a value in clear; a ciphertext moved to another key fails."""
    ddb = _dynamo(aws_env)
    ddb.put("a", "fake-plain-value-a")
    ddb.put("b", "fake-plain-value-b")
    raw = boto3.client("dynamodb", endpoint_url=aws_env, region_name=REGION)
    items = raw.scan(TableName=ddb.table)["Items"]
    assert b"fake-plain-value" not in json.dumps(items, default=repr).encode()
    a = next(i for i in items if i["key"]["S"] == "a")
    raw.update_item(TableName=ddb.table, Key={"key": {"S": "b"}},
                    UpdateExpression="SET ct = :c", ExpressionAttributeValues={":c": a["ct"]})
    with pytest.raises(StoreCorrupt, match="'b' version 1"):
        ddb.get("b")


def test_kms_envelope_encryption(aws_env, moto) -> None:
    """With KMS, each write gets a data key; reads decrypt each data key once per process."""
    kms = boto3.client("kms", endpoint_url=aws_env, region_name=REGION)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    ddb = _dynamo(aws_env, encryption="kms", kms_key_id=key_id)
    ddb.put("k1", "fake-kms-1")
    ddb.put("k2", "fake-kms-2")
    fresh = DynamoDbBackend("ddb2", ddb.config)
    moto.reset()
    for _ in range(3):
        assert fresh.get_many(["k1", "k2"])["k2"].value == "fake-kms-2"
    assert moto.counts["Decrypt"] == 2
    wrong = _dynamo(aws_env, encryption="kms", kms_key_id="arn:aws:kms:eu-central-1:"
                                                         "123456789012:key/does-not-exist")
    with pytest.raises(BackendUnavailable, match="key service of AWS refused|NotFound"):
        wrong.put("k", "fake")


# -- faults --------------------------------------------------------------------------------
def _response(status: int, body: dict | bytes,
              content_type: str = "application/x-amz-json-1.1"):
    from botocore.awsrequest import AWSResponse

    class Raw:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def stream(self, **_):
            yield self.data

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return AWSResponse("http://127.0.0.1/", status, {"Content-Type": content_type}, Raw(data))


def _inject(backend, operation: str, status: int, code: str, times: int) -> dict:
    seen = {"n": 0}

    def fail(**_):
        if seen["n"] >= times:
            return None
        seen["n"] += 1
        return _response(status, {"__type": code, "message": "injected by the test"})

    backend.client.meta.events.register(f"before-send.{backend.service}.{operation}", fail)
    return seen


def test_throttling_is_retried_and_counted(aws_env) -> None:
    """Two throttled answers are retried by botocore; retries and throttles are counted."""
    ssm = SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=f"/lk/{uid()}", region=REGION,
                                      endpoint_url=aws_env))
    ssm.put("k", "fake-v")
    _inject(ssm, "GetParameters", 400, "ThrottlingException", times=2)
    assert ssm.get("k").value == "fake-v"
    assert ssm.stats["throttles"] == 2 and ssm.stats["retries"] == 2
    counters = pipekey.metrics.snapshot()["counters"]  # the same counts, in the one snapshot
    assert counters["store_throttles{backend=ssm}"] >= 2


def test_throttling_past_the_retries_is_a_clear_error(aws_env) -> None:
    """Throttling that outlasts max_attempts fails naming the backend and the key."""
    ssm = SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=f"/lk/{uid()}", region=REGION,
                                      endpoint_url=aws_env, max_attempts=3))
    seen = _inject(ssm, "GetParameters", 400, "ThrottlingException", times=100)
    with pytest.raises(BackendUnavailable) as info:
        ssm.get("shared/token")
    assert "throttled by AWS" in str(info.value) and "'shared/token'" in str(info.value)
    assert seen["n"] == 3


def test_access_denied_is_authoritative(aws_env) -> None:
    """AWS AccessDenied becomes pipekey AccessDenied; the chain does not fall through."""
    ssm = SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=f"/lk/{uid()}", region=REGION,
                                      endpoint_url=aws_env))
    _inject(ssm, "GetParameters", 400, "AccessDeniedException", times=100)
    from pipekey.testing import MemoryBackend

    later = MemoryBackend("later", {"k": "fake-later"})
    with pytest.raises(AccessDenied, match="backend 'ssm': AWS denied get_parameters for 'k'"):
        pipekey.Pipekey([ssm, later]).get("k")
    assert later.calls == []


# -- roles ---------------------------------------------------------------------------------
ROLE = "arn:aws:iam::123456789012:role/facebook-ads"


def _role_lk() -> pipekey.Pipekey:
    manifest = parse_manifest({"pipelines": {"ads": {
        "scope": "ads/{account}", "aws_role": {"arn": ROLE, "duration": 900,
                                               "tags": {"team": "marketing"}}}}}, Path("m.toml"))
    return pipekey.Pipekey([], manifest=manifest)


def test_each_run_acts_as_its_own_session(aws_env, moto) -> None:
    """Two runs get two assumed-role sessions named after pipeline and run; env() has them."""
    lk = _role_lk()
    moto.reset()
    with lk.pipeline("ads", account="a1", run_name="manual__2026-11-21T00:00:00+00:00") as r1, \
            lk.pipeline("ads", account="a2", run_name="scheduled__2") as r2:
        s1, s2 = r1.aws_session(), r2.aws_session()
        assert r1.aws_session() is s1
        arn1 = s1.client("sts").get_caller_identity()["Arn"]
        arn2 = s2.client("sts").get_caller_identity()["Arn"]
        env = r1.env()
    assert "assumed-role/facebook-ads/ads.manual__2026-11-21T00-00-00+00-00" in arn1
    assert arn2.endswith("/ads.scheduled__2")
    assert env["AWS_SESSION_TOKEN"] and env["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    assert moto.counts["AssumeRole"] == 2
    with pytest.raises(pipekey.RunClosed):
        r1.aws_session()


def test_run_session_assumes_once_and_clear_drops_it(aws_env, moto) -> None:
    """aws.RunSession holds one run's session: one AssumeRole, named pipeline.run, until clear()."""
    from pipekey.aws import RunSession
    from pipekey.manifest import AwsRole

    holder = RunSession(AwsRole(arn=ROLE, tags={"team": "marketing"}), "ads", "scheduled__7")
    moto.reset()
    session = holder.get()
    assert holder.get() is session and moto.counts["AssumeRole"] == 1
    assert session.client("sts").get_caller_identity()["Arn"].endswith("/ads.scheduled__7")
    holder.clear()
    assert holder.get() is not session and moto.counts["AssumeRole"] == 2


def test_credentials_refresh_before_expiry(aws_env, moto) -> None:
    """When the clock nears expiry, the next use assumes the role again by itself."""
    from pipekey.aws import assumed_role_session

    now = {"t": datetime.now(timezone.utc)}
    session = assumed_role_session(ROLE, "refresh-test", duration=900, clock=lambda: now["t"])
    moto.reset()
    session.get_credentials().get_frozen_credentials()
    assert moto.counts["AssumeRole"] == 0
    now["t"] += timedelta(seconds=900 - 60)  # inside the refresh window
    session.get_credentials().get_frozen_credentials()
    assert moto.counts["AssumeRole"] == 1


#: an STS (query protocol) error answer
STS_ERROR = ('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
             '<Type>Sender</Type><Code>{code}</Code><Message>fake-sts-message</Message></Error>'
             '<RequestId>fake-request</RequestId></ErrorResponse>')


@pytest.mark.parametrize("code, status, error, says", [
    pytest.param("AccessDenied", 403, AccessDenied,
                 "backend 'sts': AWS denied assume role {role} as 'ads.r1' (AccessDenied)",
                 id="denied"),
    pytest.param("Throttling", 400, BackendUnavailable,
                 "backend 'sts': throttled by AWS on assume role {role} as 'ads.r1' after 2 "
                 "attempts (Throttling)", id="throttled-is-not-denied"),
    pytest.param("RegionDisabledException", 403, BackendUnavailable,
                 "backend 'sts': assume role {role} as 'ads.r1' failed "
                 "(RegionDisabledException)", id="failed"),
])
def test_sts_errors_are_worded_by_the_aws_table(aws_env, monkeypatch, code: str, status: int,
                                                error: type, says: str) -> None:
    """AssumeRole's errors go through the AWS error table, most specific row first, like
    every AWS call: a refusal is AccessDenied (authoritative), throttling that outlasted the
    retries is BackendUnavailable (a chain may fall through it), never AccessDenied; the
    words name the role and session, never STS's message."""
    from pipekey.aws import assumed_role_session

    monkeypatch.setenv("AWS_RETRY_MODE", "standard")  # one retry, short backoff
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    base = boto3.Session(region_name=REGION)
    seen = {"n": 0}

    def answer(**_):
        seen["n"] += 1
        return _response(status, STS_ERROR.format(code=code).encode(), "text/xml")

    base.events.register("before-send.sts.AssumeRole", answer)
    with pytest.raises(error) as info:
        assumed_role_session(ROLE, "ads.r1", base_session=base)
    assert type(info.value) is error and str(info.value) == says.format(role=ROLE)
    assert "fake-sts-message" not in str(info.value)
    assert seen["n"] == (2 if code == "Throttling" else 1)


def test_a_backend_can_authenticate_with_a_role(aws_env, moto) -> None:
    """A backend with role_arn assumes it once, then reads."""
    prefix = f"/lk/{uid()}"
    SsmBackend("w", SsmConfig(type="aws_ssm", prefix=prefix, region=REGION,
                              endpoint_url=aws_env)).put("k", "fake")
    moto.reset()
    reader = SsmBackend("r", SsmConfig(type="aws_ssm", prefix=prefix, region=REGION,
                                       endpoint_url=aws_env, role_arn=ROLE))
    assert reader.get("k").value == "fake"
    assert moto.counts["AssumeRole"] == 1


def test_no_aws_role_is_a_usage_error() -> None:
    """aws_session() on a pipeline without aws_role says so."""
    manifest = parse_manifest({"pipelines": {"p": {"scope": "p"}}}, Path("m.toml"))
    with pipekey.Pipekey([], manifest=manifest).pipeline("p") as run:
        with pytest.raises(pipekey.UsageError, match="has no aws_role"):
            run.aws_session()
