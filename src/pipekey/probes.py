"""Really connect to a connection's service, with a timeout: ``pipekey check --connect``.

Each probe returns ``(status, detail)`` with status ``ok``, ``failed`` or ``skipped``; a
driver that is not installed is ``skipped`` with the pip line. Drivers are imported here,
never at ``import pipekey``. Every detail, driver text included, has the userinfo of each URL
in it (``https://user:password@host``) shown as ``***@``.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from typing import Callable
from urllib.parse import unquote, urlsplit, urlunsplit

from ._sdk import boto3_module
from .connection import Connection, scrub_urls
from .converters import AWS_TYPES, to_boto3_session_kwargs, to_dlt_credentials
from .errors import MissingDependency
from .redact import MASK

__all__ = ["probe"]

Result = tuple[str, str]


def probe(conn: Connection, timeout: float) -> Result:
    """Connect to ``conn``'s service and run the cheapest real request."""
    check = _PROBES.get(conn.conn_type or "")
    if check is None:
        return "skipped", f"no connect check for type {conn.conn_type!r} " \
                          f"(checked types: {', '.join(sorted(_PROBES))})"
    status, detail = check(conn, timeout)
    return status, scrub_urls(detail)


def _postgres(conn: Connection, timeout: float) -> Result:
    try:
        import psycopg2
    except ImportError:
        return "skipped", "psycopg2 is not installed: pip install 'pipekey[postgres]'"
    try:
        db = psycopg2.connect(host=conn.host, port=conn.port or 5432, user=conn.login,
                              password=conn.password, dbname=conn.schema or "postgres",
                              connect_timeout=max(1, int(timeout)))
    except psycopg2.Error as exc:
        return "failed", f"cannot connect: {str(exc).strip()}"
    try:
        with db.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        return "ok", f"SELECT 1 on {conn.host}:{conn.port or 5432}/{conn.schema or 'postgres'}"
    finally:
        db.close()


def _aws(conn: Connection, timeout: float) -> Result:
    try:
        boto3 = boto3_module("the aws probe")
    except MissingDependency as exc:
        return "skipped", str(exc)
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.Session(**to_boto3_session_kwargs(conn))
    config = Config(connect_timeout=timeout, read_timeout=timeout,
                    retries={"max_attempts": 1, "mode": "standard"})
    endpoint = to_dlt_credentials(conn).get("endpoint_url")
    bucket = _bucket(conn)
    table = conn.extra.get("table_name")
    try:
        if bucket:
            session.client("s3", endpoint_url=endpoint, config=config).head_bucket(Bucket=bucket)
            return "ok", f"head bucket {bucket}"
        if table:
            session.client("dynamodb", endpoint_url=endpoint, config=config) \
                .describe_table(TableName=table)
            return "ok", f"describe table {table}"
        who = session.client("sts", endpoint_url=endpoint, config=config).get_caller_identity()
        return "ok", f"caller {who.get('Arn', '?')}"
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return "failed", f"{error.get('Code', 'error')}: {error.get('Message') or 'refused'}"
    except BotoCoreError as exc:
        return "failed", f"{type(exc).__name__}: {exc}"


def _bucket(conn: Connection) -> str | None:
    bucket = conn.extra.get("bucket") or conn.extra.get("bucket_name")
    url = conn.extra.get("bucket_url")
    if not bucket and isinstance(url, str) and url.startswith("s3://"):
        bucket = url[5:].split("/", 1)[0]
    return bucket


def _http(conn: Connection, timeout: float) -> Result:
    host = conn.host or ""
    base = host if "://" in host else f"{conn.schema or conn.conn_type}://{host}"
    if conn.port:
        base += f":{conn.port}"
    url, userinfo = _without_userinfo(
        base.rstrip("/") + "/" + str(conn.extra.get("check_path", "")).lstrip("/"))
    request = urllib.request.Request(url, method="GET")
    if userinfo:  # sent as Basic auth, as curl does; never part of the URL shown
        token = base64.b64encode(unquote(userinfo).encode("utf-8")).decode("ascii")
        request.add_unredirected_header("Authorization", f"Basic {token}")
    shown = url.replace("://", f"://{MASK}@", 1) if userinfo else url
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return "ok", f"GET {shown} -> {response.status}"
    except urllib.error.HTTPError as exc:
        return "failed", f"GET {shown} -> {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return "failed", f"GET {shown}: {reason}"


def _without_userinfo(url: str) -> tuple[str, str]:
    """``url`` without its ``user:password@``, and that userinfo ("" if none)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, ""
    return urlunsplit(parts._replace(netloc=hostport)), userinfo


def _snowflake(conn: Connection, timeout: float) -> Result:
    try:
        import snowflake.connector
    except ImportError:
        return "skipped", ("snowflake-connector-python is not installed "
                           "(pip install snowflake-connector-python)")
    fields = to_dlt_credentials(conn)
    try:
        db = snowflake.connector.connect(
            account=fields.get("host"), user=fields.get("username"),
            password=fields.get("password"), database=fields.get("database"),
            warehouse=fields.get("warehouse"), role=fields.get("role"),
            login_timeout=timeout, network_timeout=timeout)
    except Exception as exc:  # the connector raises many unrelated classes
        return "failed", f"cannot connect: {type(exc).__name__}"
    try:
        db.cursor().execute("SELECT 1")
        return "ok", f"SELECT 1 on account {fields.get('host')}"
    finally:
        db.close()


def _duckdb(conn: Connection, timeout: float) -> Result:
    try:
        import duckdb
    except ImportError:
        return "skipped", "duckdb is not installed: pip install 'pipekey[dlt]'"
    path = to_dlt_credentials(conn)["database"]
    try:
        db = duckdb.connect(path, read_only=path != ":memory:")
    except duckdb.Error as exc:
        return "failed", f"cannot open {path}: {str(exc).splitlines()[0]}"
    try:
        db.execute("SELECT 1").fetchone()
        return "ok", f"SELECT 1 on {path}"
    finally:
        db.close()


_PROBES: dict[str, Callable[[Connection, float], Result]] = {
    "postgres": _postgres, "redshift": _postgres, "http": _http, "https": _http,
    "snowflake": _snowflake, "duckdb": _duckdb, **{t: _aws for t in AWS_TYPES},
}
