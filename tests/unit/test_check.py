"""`pipekey check`: resolution findings, and --connect against real PostgreSQL, moto S3
and DynamoDB, and a loopback HTTP server."""

from __future__ import annotations

import http.server
import importlib.util
import json
import socket
import threading
import uuid
from pathlib import Path

import boto3
import pytest

import pipekey
from pipekey import AccessDenied, Connection
from pipekey.check import check_pipelines
from pipekey.manifest import parse_manifest
from pipekey.testing import FailingBackend, MemoryBackend

from ..conftest import run_cli

PIPELINES = {
    "ads": {"scope": "ads/{account}", "requires": ["token"], "optional": ["region"],
            "connections": {"warehouse": "connections/wh"},
            "instances": [{"account": "a1"}, {"account": "a2"}]},
    "templated": {"scope": "t/{account}", "requires": ["token"]},
}


def _lk(*backends) -> pipekey.Pipekey:
    manifest = parse_manifest({"pipelines": PIPELINES}, Path("pipekey.toml"))
    return pipekey.Pipekey(list(backends), manifest=manifest)


def _by_item(findings, params="account=a1"):
    return {(f.item): f for f in findings if f.params == params}


def test_findings_ok_missing_invalid_and_skipped() -> None:
    """Each instance is checked; missing, invalid and unparameterised pipelines are reported."""
    mem = MemoryBackend("mem", {"ads/a1/token": "fake-t1", "connections/wh": "not a uri::x::y://z://q"})
    findings = check_pipelines(_lk(mem))
    a1, a2 = _by_item(findings), _by_item(findings, "account=a2")
    assert a1["token"].status == "ok" and a1["token"].where == "mem memory:ads/a1/token"
    assert a1["region"].status == "ok" and a1["region"].detail == "optional, not set"
    assert a2["token"].status == "missing"
    assert a2["token"].detail == "not found at ads/a2 > ads > shared"
    assert a1["connection:warehouse"].status == "invalid"
    skipped = [f for f in findings if f.pipeline == "templated"]
    assert skipped[0].status == "skipped"
    assert skipped[0].detail == ("scope 't/{account}' needs parameter 'account' (pass "
                                 "--param account=... or add instances = [...] to the "
                                 "pipeline)")
    assert "fake-t1" not in json.dumps([f.to_dict() for f in findings])


def test_forbidden_and_store_errors() -> None:
    """A store's refusal is 'forbidden'; a store failure is 'error', never 'missing'."""
    denied = FailingBackend("vault", error=AccessDenied("vault: permission denied on ads/a1"))
    findings = check_pipelines(_lk(denied), ["ads"], {"account": "a1"})
    assert {f.status for f in findings} == {"forbidden"}
    findings = check_pipelines(_lk(FailingBackend("ssm")), ["ads"], {"account": "a1"})
    assert {f.item: f.status for f in findings}["token"] == "error"


def _conn_lk(conn: Connection) -> pipekey.Pipekey:
    return _lk(MemoryBackend("mem", {"ads/a1/token": "fake-t", "connections/wh": conn.to_uri()}))


def _connect(conn: Connection, timeout: float = 5.0):
    findings = check_pipelines(_conn_lk(conn), ["ads"], {"account": "a1"}, connect=True,
                               timeout=timeout)
    return _by_item(findings)["connection:warehouse (connect)"]


def test_postgres_good_password_connects(postgres) -> None:
    """--connect runs SELECT 1 on the real server with the stored credentials."""
    conn = Connection(conn_type="postgres", host=postgres["host"], port=postgres["port"],
                      login="loader", password=postgres["password"], schema="analytics")
    result = _connect(conn)
    assert result.status == "ok" and result.detail.startswith("SELECT 1 on 127.0.0.1:")


def test_postgres_wrong_password_fails_without_showing_it(postgres) -> None:
    """A wrong password fails with the server's reason; the password is not in the report."""
    wrong = "fake-wrong-pw-123"
    conn = Connection(conn_type="postgres", host=postgres["host"], port=postgres["port"],
                      login="loader", password=wrong, schema="analytics")
    result = _connect(conn)
    assert result.status == "failed"
    assert "password authentication failed" in result.detail
    assert wrong not in result.detail and postgres["password"] not in result.detail


def test_s3_and_dynamodb_on_moto(aws_env: str) -> None:
    """S3 head bucket and DynamoDB describe table run against moto over HTTP."""
    bucket, table = f"lk-{uuid.uuid4().hex[:12]}", f"lk-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=aws_env).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    boto3.client("dynamodb", endpoint_url=aws_env).create_table(
        TableName=table, KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST")
    base = dict(conn_type="aws", login="testing", password="fake-aws-secret")
    extra = {"endpoint_url": aws_env, "region_name": "eu-central-1"}
    assert _connect(Connection(**base, extra={**extra, "bucket_url": f"s3://{bucket}/x"})) \
        .detail == f"head bucket {bucket}"
    missing = _connect(Connection(**base, extra={**extra, "bucket": bucket + "-nope"}))
    assert missing.status == "failed" and missing.detail.startswith("404")
    assert _connect(Connection(**base, extra={**extra, "table_name": table})).status == "ok"
    gone = _connect(Connection(**base, extra={**extra, "table_name": table + "-nope"}))
    assert gone.status == "failed" and "ResourceNotFoundException" in gone.detail


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path == "/health" else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_http_status(http_server: int) -> None:
    """HTTP connections pass on a 2xx and fail on a 5xx."""
    ok = Connection(conn_type="http", host="127.0.0.1", port=http_server,
                    extra={"check_path": "/health"})
    assert _connect(ok).detail.endswith("/health -> 200")
    assert _connect(ok.replace(extra={"check_path": "/boom"})).status == "failed"


def test_silent_server_times_out() -> None:
    """A server that accepts and never answers fails within the timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        conn = Connection(conn_type="http", host="127.0.0.1", port=listener.getsockname()[1])
        result = _connect(conn, timeout=1)
    assert result.status == "failed" and "timed out" in result.detail


def test_snowflake_without_driver_is_skipped_with_reason() -> None:
    """Snowflake is skipped, saying what to install, when its driver is missing."""
    if importlib.util.find_spec("snowflake") is not None:
        pytest.skip("snowflake-connector-python is installed here")
    result = _connect(Connection(conn_type="snowflake", login="u", password="fake",
                                 extra={"account": "acct"}))
    assert result.status == "skipped" and "pip install snowflake-connector-python" in result.detail


def test_cli_check_table_json_and_exit_code(isolated: Path, postgres) -> None:
    """The CLI reports per pipeline, exits 1 on a failure, and prints no value."""
    (isolated / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\n'
        '[pipelines.loader]\nscope = "loader"\nrequires = ["token"]\n'
        'connections = { db = "connections/pg" }\n')
    good = Connection(conn_type="postgres", host="127.0.0.1", port=postgres["port"],
                      login="loader", password=postgres["password"], schema="analytics")
    assert run_cli("init").returncode == 0
    assert run_cli("set", "loader/token", input="fake-loader-token").returncode == 0
    assert run_cli("set", "connections/pg", input=good.to_uri()).returncode == 0
    ok = run_cli("check", "--connect", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["failed"] == 0
    bad = good.replace(password="fake-bad-pw-456")
    assert run_cli("set", "connections/pg", input=bad.to_uri()).returncode == 0
    result = run_cli("check", "--connect")
    assert result.returncode == 1
    assert "password authentication failed" in result.stdout and "1 failed" in result.stderr
    for secret in ("fake-bad-pw-456", "fake-loader-token", postgres["password"]):
        assert secret not in result.stdout + result.stderr + ok.stdout + ok.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_connect_hides_userinfo_in_host(isolated: Path, master_key: str) -> None:
    """`check --connect` on an HTTP host that carries user:password@ shows the URL with
    ``***@`` in the report, the progress line and the JSON, never the credentials."""
    (isolated / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\n'
        '[pipelines.api]\nscope = "api"\nconnections = { site = "connections/site" }\n')
    port = _closed_port()
    conn = json.dumps({"conn_type": "http", "port": port,
                       "host": "http://fake-user-acct42:fake-pw-acct42@127.0.0.1"})
    assert run_cli("set", "connections/site", input=conn).returncode == 0
    text, as_json = run_cli("check", "--connect"), run_cli("check", "--connect", "--json")
    assert text.returncode == as_json.returncode == 1
    detail = {f["item"]: f["detail"] for f in json.loads(as_json.stdout)["findings"]}
    assert detail["connection:site (connect)"].startswith(f"GET http://***@127.0.0.1:{port}/:")
    for out in (text.stdout + text.stderr, as_json.stdout + as_json.stderr):
        assert "fake-pw-acct42" not in out and "fake-user-acct42" not in out


def test_http_probe_sends_userinfo_as_basic_auth_and_scrubs_urls() -> None:
    """A probe's URL and any URL in a driver's text lose their userinfo."""
    from pipekey.probes import _without_userinfo

    assert _without_userinfo("http://u:fake-pw%40x@h:1/p") == ("http://h:1/p", "u:fake-pw%40x")
    result = _connect(Connection(conn_type="http", host="fake-user:fake-pw-acct42@127.0.0.1",
                                 port=_closed_port()), timeout=1)
    assert result.status == "failed" and "http://***@127.0.0.1" in result.detail
    assert "fake-pw-acct42" not in result.detail
