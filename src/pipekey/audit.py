"""Audit: who read what, from where, when; never a value.

Events: ``read`` (the first read of each key in each run, so warm reads cost nothing),
``deny``, ``write``, ``delete``, ``failure``, and ``mint``, ``renew``, ``revoke`` and
``sweep`` (per-run credentials: key ``dynamic:NAME``, the login in ``detail``), and
``observe`` (an Airflow lookup served in observe mode, :mod:`pipekey.observe`: its reader,
``dag``, ``task``, ``team``, ``env``, the ``lookup``, the scope ``params`` of the DAG run
and what enforcement would decide, ``enforce``). Each carries the time, pipeline, run name,
key, backend, version, outcome, latency and whether it was served from a cache.

Sinks, from the manifest's ``[audit]`` table::

    [audit]
    required = false                       # true: an access fails when a sink cannot record it
    sinks = [
      { type = "file", path = ".pipekey/audit.jsonl", max_bytes = 10485760, backups = 5 },
      { type = "stderr" },
      { type = "dynamodb", table = "pipekey-audit", region = "eu-central-1" },
      { type = "otel" },                     # OpenTelemetry logs, when installed
    ]

A failing sink is logged (by sink name) and counted; with ``required = true`` the access
fails with :class:`AuditFailed`, as Vault refuses requests no audit device can record.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from . import metrics
from .errors import PipekeyError, UsageError

__all__ = ["AuditEvent", "AuditFailed", "Auditor", "iter_events", "read_events"]

log = logging.getLogger("pipekey")


class AuditFailed(PipekeyError):
    """An audit sink could not record an access, and ``audit.required`` is set."""


@dataclass
class AuditEvent:
    """One audited access. Never holds a value."""

    event: str                       # read | deny | write | delete | failure | mint | ...
    key: str
    outcome: str                     # ok | denied | absent | error
    pipeline: str | None = None
    run: str | None = None
    backend: str | None = None
    version: str | None = None
    latency_ms: float | None = None
    cached: bool = False
    detail: str | None = None
    #: observe events (pipekey.observe): the Airflow reader and what enforcement would do
    dag: str | None = None
    task: str | None = None
    team: str | None = None
    env: str | None = None
    lookup: str | None = None               # "connection:NAME" | "variable:NAME"
    params: dict[str, str] | None = None    # DAG run params equal to a segment of the key
    enforce: str | None = None              # allow | refuse
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sink(Protocol):
    name: str

    def write(self, event: AuditEvent) -> None: ...


class FileSink:
    """JSON lines, rotated by size (stdlib ``RotatingFileHandler``)."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> None:
        import logging.handlers  # only with a file sink (start-up cost: it brings socket)

        self.name = f"file:{path}"
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._logger = logging.getLogger(f"pipekey.audit.{uuid.uuid4().hex}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)

    def write(self, event: AuditEvent) -> None:
        if not self.path.parent.exists():
            raise OSError(f"{self.path.parent} does not exist")
        self._logger.info(json.dumps(event.to_dict(), sort_keys=True))
        self._handler.flush()

    def close(self) -> None:
        self._handler.close()


class StderrSink:
    name = "stderr"

    def write(self, event: AuditEvent) -> None:
        print(json.dumps({"pipekey_audit": event.to_dict()}, sort_keys=True), file=sys.stderr)


class DynamoDbSink:
    """One item per event in a DynamoDB table with partition key ``id``."""

    def __init__(self, table: str, region: str | None = None,
                 endpoint_url: str | None = None) -> None:
        self.name = f"dynamodb:{table}"
        self.table = table
        self._region, self._endpoint = region, endpoint_url
        self._client: Any = None  # a boto3 DynamoDB client, made when first used

    def client(self) -> Any:
        if self._client is None:
            from ._sdk import boto3_module

            self._client = boto3_module().client("dynamodb", region_name=self._region,
                                                 endpoint_url=self._endpoint)
        return self._client

    def write(self, event: AuditEvent) -> None:
        item = {k: ({"BOOL": v} if isinstance(v, bool) else {"N": str(v)}
                    if isinstance(v, (int, float)) else {"S": json.dumps(v, sort_keys=True)}
                    if isinstance(v, dict) else {"S": str(v)})
                for k, v in event.to_dict().items() if v is not None}
        self.client().put_item(TableName=self.table, Item=item)


class OtelSink:
    """OpenTelemetry logs (the API's global logger provider)."""

    name = "otel"

    def __init__(self) -> None:
        from opentelemetry._logs import get_logger

        self._logger = get_logger("pipekey.audit")

    def write(self, event: AuditEvent) -> None:
        from opentelemetry._logs import LogRecord

        attributes = {f"pipekey.{k}": v for k, v in event.to_dict().items() if v is not None}
        self._logger.emit(LogRecord(body=f"pipekey {event.event} {event.key}",
                                    attributes=attributes))


class Auditor:
    """Sends events to every sink; reports failures; refuses access if required."""

    def __init__(self, sinks: Iterable[Sink] = (), required: bool = False) -> None:
        self.sinks = list(sinks)
        self.required = required
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def record(self, *events: AuditEvent) -> None:
        """Write the events to every sink.

        Raises:
            AuditFailed: a sink failed and ``required`` is set.
        """
        for event in events:
            metrics.incr("audit_events", event=event.event)
            for sink in self.sinks:
                try:
                    sink.write(event)
                except Exception as exc:
                    with self._lock:
                        self.failures += 1
                    metrics.incr("audit_sink_failures", sink=sink.name)
                    log.warning("pipekey: audit sink %s failed (%s)", sink.name,
                                type(exc).__name__)
                    if self.required:
                        raise AuditFailed(f"audit sink {sink.name} could not record the "
                                          f"{event.event} of {event.key!r}; access refused "
                                          "because audit.required = true") from None


def build_auditor(config: Any, base_dir: Path) -> Auditor:
    """An Auditor from the manifest's ``[audit]`` table (None: no sinks)."""
    if config is None:
        return Auditor()
    sinks: list[Sink] = []
    for spec in config.sinks:
        kind = spec.type
        if kind == "file":
            path = Path(spec.path or ".pipekey/audit.jsonl")
            sinks.append(FileSink(path if path.is_absolute() else base_dir / path,
                                  spec.max_bytes, spec.backups))
        elif kind == "stderr":
            sinks.append(StderrSink())
        elif kind == "dynamodb":
            sinks.append(DynamoDbSink(spec.table, spec.region, spec.endpoint_url))
        elif kind == "otel":
            sinks.append(OtelSink())
    return Auditor(sinks, config.required)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in a file sink, rotated files included, oldest first."""
    return list(iter_events(path))


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a file sink, rotated files included, oldest first, one line at a time
    (a long history is streamed, never held whole).

    Raises:
        UsageError: a line is not a JSON object (naming the file and line number).
    """
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:])
                   if p.suffix[1:].isdigit() else 0)
    for file in [*files, path]:
        if not file.exists():
            continue
        with file.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    raise UsageError(f"{file}:{number}: not an audit record (a JSON object "
                                     "per line)")
                yield event
