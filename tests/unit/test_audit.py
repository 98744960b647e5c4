"""Audit events and sinks, `pipekey audit`, and metrics."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import boto3
import pytest

import pipekey
from pipekey import AccessDenied, metrics
from pipekey.audit import AuditFailed, Auditor, DynamoDbSink, FileSink, read_events

from ..conftest import run_cli
from ..extras import need

MANIFEST = """
[backends.local]
type = "local"
path = "store.db"

[audit]
required = {required}
sinks = [{{ type = "file", path = "{path}", max_bytes = {max_bytes}, backups = 2 }}]

[pipelines.ads]
scope = "ads/{{account}}"
requires = ["token", "app_secret"]
"""


def _project(root: Path, required: bool = False, path: str = "audit/audit.jsonl",
             max_bytes: int = 1_000_000) -> pipekey.Pipekey:
    (root / "pipekey.toml").write_text(MANIFEST.format(required=str(required).lower(),
                                                        path=path, max_bytes=max_bytes))
    lk = pipekey.load(root / "pipekey.toml")
    lk.set("ads/a1/token", "fake-audit-token")
    lk.set("ads/app_secret", "fake-audit-app")
    return lk


def test_first_reads_denials_and_writes_are_recorded_once(isolated: Path, master_key) -> None:
    """A run records one read per key however often it reads; denials and writes too; the
    file holds no value."""
    lk = _project(isolated)
    with lk.pipeline("ads", account="a1", run_name="scheduled__1") as run:
        for _ in range(1000):
            run.secret("token")
            run.get("ads/a1/token")
        with pytest.raises(AccessDenied):
            run.get("ads/a2/token")
    events = read_events(isolated / "audit" / "audit.jsonl")
    kinds = [(e["event"], e["key"], e["outcome"]) for e in events]
    assert kinds == [("write", "ads/a1/token", "ok"), ("write", "ads/app_secret", "ok"),
                     ("read", "ads/a1/token", "ok"), ("read", "ads/app_secret", "ok"),
                     ("deny", "ads/a2/token", "denied")]
    read = events[2]
    assert (read["pipeline"], read["run"], read["backend"], read["version"]) == (
        "ads", "scheduled__1", "local", "1")
    assert read["latency_ms"] >= 0 and read["cached"] is False
    text = (isolated / "audit" / "audit.jsonl").read_text()
    assert "fake-audit" not in text


def test_missing_requirement_is_a_failure_event(isolated: Path, master_key) -> None:
    """A run that cannot open records a failure for what is missing."""
    lk = _project(isolated)
    with pytest.raises(pipekey.MissingSecrets):
        lk.pipeline("ads", account="a9").open()
    failures = [e for e in read_events(isolated / "audit" / "audit.jsonl")
                if e["event"] == "failure"]
    assert [(e["key"], e["outcome"]) for e in failures] == [("token", "absent")]


def test_cli_audit_filters(isolated: Path, master_key) -> None:
    """`pipekey audit` filters by pipeline, key and time, as JSON or a table."""
    lk = _project(isolated)
    with lk.pipeline("ads", account="a1"):
        pass
    all_events = json.loads(run_cli("audit", "--json").stdout)
    assert len(all_events) == 4
    reads = json.loads(run_cli("audit", "--pipeline", "ads", "--json").stdout)
    assert {e["key"] for e in reads} == {"ads/a1/token", "ads/app_secret"}
    token = json.loads(run_cli("audit", "--key", "ads/a1", "--json").stdout)
    assert [e["event"] for e in token] == ["write", "read"]
    assert json.loads(run_cli("audit", "--since", "1h", "--json").stdout) == all_events
    assert json.loads(run_cli("audit", "--since", "2999-01-01", "--json").stdout) == []
    bad = run_cli("audit", "--since", "yesterday")
    assert bad.returncode == 2 and "is not a duration" in bad.stderr
    table = run_cli("audit")
    assert "ads/app_secret" in table.stdout and "fake-audit" not in table.stdout


def test_file_sink_rotates(isolated: Path, master_key) -> None:
    """The JSON-lines file rotates by size; reading follows the rotated files."""
    sink = FileSink(isolated / "a" / "audit.jsonl", max_bytes=2048, backups=3)
    auditor = Auditor([sink])
    from pipekey.audit import AuditEvent

    for i in range(40):
        auditor.record(AuditEvent("read", f"k/{i:02d}", "ok", pipeline="p"))
    rotated = sorted(p.name for p in (isolated / "a").iterdir())
    assert "audit.jsonl.1" in rotated and len(rotated) <= 4
    events = read_events(isolated / "a" / "audit.jsonl")
    assert [e["key"] for e in events] == sorted(e["key"] for e in events)  # oldest first
    assert events[-1]["key"] == "k/39"
    sink.close()


def test_failing_sink_is_reported_or_refuses_access(isolated: Path, master_key, caplog) -> None:
    """A sink that cannot write is logged and counted; with required = true the run fails."""
    import shutil

    lk = _project(isolated)
    shutil.rmtree(isolated / "audit")
    with caplog.at_level(logging.WARNING, logger="pipekey"):
        with lk.pipeline("ads", account="a1") as run:
            assert run.secret("token") == "fake-audit-token"
    assert "audit sink file:" in caplog.text and lk.audit.failures >= 2
    (isolated / "strict").mkdir()
    strict = _project(isolated / "strict", required=True)
    shutil.rmtree(isolated / "strict" / "audit")
    with pytest.raises(AuditFailed, match="audit.required = true"):
        strict.pipeline("ads", account="a1").open()


def test_dynamodb_sink(aws_env: str) -> None:
    """Events land as items in a DynamoDB table (moto)."""
    table = f"lk-audit-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb", endpoint_url=aws_env)
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    from pipekey.audit import AuditEvent

    auditor = Auditor([DynamoDbSink(table, endpoint_url=aws_env)])
    auditor.record(AuditEvent("read", "ads/a1/token", "ok", pipeline="ads", run="r1",
                              backend="ssm", version="3", latency_ms=1.5))
    items = client.scan(TableName=table)["Items"]
    assert len(items) == 1 and items[0]["key"]["S"] == "ads/a1/token"
    assert items[0]["latency_ms"]["N"] == "1.5" and items[0]["cached"]["BOOL"] is False


def test_otel_sink() -> None:
    """Events are emitted as OpenTelemetry log records when the SDK is configured."""
    export = need("metrics", "opentelemetry.sdk._logs.export")
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider

    exporter = export.InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(export.SimpleLogRecordProcessor(exporter))
    set_logger_provider(provider)
    from pipekey.audit import AuditEvent, OtelSink

    Auditor([OtelSink()]).record(AuditEvent("deny", "ads/a2/token", "denied", pipeline="ads"))
    records = exporter.get_finished_logs()
    assert len(records) == 1
    attributes = records[0].log_record.attributes
    assert attributes["pipekey.event"] == "deny" and attributes["pipekey.key"] == "ads/a2/token"


def test_metrics_snapshot_and_exports(isolated: Path, master_key) -> None:
    """Backend calls, errors and latency and run readiness are counted, and exported through
    prometheus_client and OpenTelemetry."""
    metrics.reset()
    lk = _project(isolated)
    with lk.pipeline("ads", account="a1"):
        pass
    snap = metrics.snapshot()
    assert snap["counters"]["backend_calls{action=read,backend=local}"] >= 1
    assert snap["counters"]["runs_opened{pipeline=ads}"] == 1
    assert snap["histograms"]["run_ready_seconds{pipeline=ads}"]["count"] == 1
    assert snap["counters"]["audit_events{event=read}"] == 2

    need("metrics")
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    metrics.export_prometheus(registry)
    text = generate_latest(registry).decode()
    assert 'pipekey_runs_opened_total{pipeline="ads"} 1.0' in text
    assert "pipekey_backend_latency_seconds_bucket" in text

    need("metrics", "opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.export_opentelemetry(MeterProvider(metric_readers=[reader]).get_meter("t"))
    data = reader.get_metrics_data()
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "pipekey.runs_opened" in names and "pipekey.backend_calls" in names
