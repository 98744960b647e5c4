"""Turn a :class:`~pipekey.Connection` into what a tool wants: dlt credentials, a SQLAlchemy
URL, boto3 Session arguments, environment variables.

Field conventions follow Airflow's providers: Snowflake keeps ``account``, ``database``,
``warehouse``, ``role`` and ``private_key_content``/``private_key_file`` in extra, with the
password as the key's passphrase when a key is given; AWS keeps the key id in ``login``, the
secret in ``password`` and ``region_name``, ``aws_session_token``, ``endpoint_url`` in extra;
Google keeps the service-account JSON in extra ``keyfile_dict``. An unknown type raises
:class:`UnsupportedConnectionType` listing the supported ones.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .errors import MissingDependency, UsageError

if TYPE_CHECKING:  # annotations only: connection.py imports this module, not the reverse
    from sqlalchemy.engine import URL

    from .connection import Connection

__all__ = ["UnsupportedConnectionType", "to_boto3_session_kwargs", "to_dlt_credentials",
           "to_env_vars", "to_sqlalchemy_url"]

AWS_TYPES = ("aws", "s3", "dynamodb")
GCP_TYPES = ("google_cloud_platform", "gcp", "bigquery")


class UnsupportedConnectionType(UsageError, ValueError):
    """No converter for this connection type; the message lists the supported ones."""

    def __init__(self, conn: Connection, target: str, supported: list[str]) -> None:
        super().__init__(f"{target}: connection type {conn.conn_type!r} is not supported "
                         f"(supported: {', '.join(sorted(supported))})")


_T = TypeVar("_T")


def _pick(table: dict[str, _T], conn: Connection, target: str) -> _T:
    try:
        return table[conn.conn_type or ""]
    except KeyError:
        raise UnsupportedConnectionType(conn, target, list(table)) from None


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in (None, "")}


def _extra(conn: Connection, *names: str) -> Any:
    """The first extra present among ``names`` (Airflow also accepts prefixed names)."""
    for name in names:
        for candidate in (name, f"extra__{conn.conn_type}__{name}"):
            if conn.extra.get(candidate) not in (None, ""):
                return conn.extra[candidate]
    return None


# -- dlt -----------------------------------------------------------------------------------
def _dlt_postgres(c: Connection) -> dict[str, Any]:
    return _drop_none({"database": c.schema, "username": c.login, "password": c.password,
                       "host": c.host, "port": c.port,
                       "connect_timeout": _extra(c, "connect_timeout")})


def _private_key(c: Connection) -> str | None:
    content: str | None = _extra(c, "private_key_content")
    if not content or "-----BEGIN" in content:
        return content
    try:  # Airflow's Snowflake provider takes the key base64-encoded
        return base64.b64decode(content, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise UsageError("snowflake connection: extra private_key_content is neither a PEM "
                         "key nor base64 of one") from None


def _dlt_snowflake(c: Connection) -> dict[str, Any]:
    key, key_path = _private_key(c), _extra(c, "private_key_file")
    with_key = bool(key or key_path)
    return _drop_none({
        "host": _extra(c, "account") or c.host, "database": _extra(c, "database"),
        "username": c.login, "password": None if with_key else c.password,
        "warehouse": _extra(c, "warehouse"), "role": _extra(c, "role"),
        "authenticator": _extra(c, "authenticator"), "private_key": key,
        "private_key_path": key_path,
        "private_key_passphrase": c.password if with_key else None})


def _dlt_aws(c: Connection) -> dict[str, Any]:
    return _drop_none({
        "aws_access_key_id": c.login, "aws_secret_access_key": c.password,
        "aws_session_token": _extra(c, "aws_session_token"),
        "region_name": _extra(c, "region_name", "region"), "endpoint_url": _endpoint(c),
        "profile_name": _extra(c, "profile_name")})


def _endpoint(c: Connection) -> str | None:
    url: str | None = _extra(c, "endpoint_url")
    service = c.extra.get("service_config")
    if not url and isinstance(service, dict):  # Airflow's per-service form
        url = (service.get("s3") or {}).get("endpoint_url")
    return url


def _dlt_gcp(c: Connection) -> dict[str, Any]:
    keyfile = _extra(c, "keyfile_dict")
    if isinstance(keyfile, str):
        try:
            keyfile = json.loads(keyfile)
        except json.JSONDecodeError:
            raise UsageError("google connection: extra keyfile_dict is not valid JSON") from None
    keyfile = keyfile or {}
    return _drop_none({
        "project_id": _extra(c, "project", "project_id") or keyfile.get("project_id"),
        "private_key": keyfile.get("private_key"), "private_key_id": keyfile.get("private_key_id"),
        "client_email": keyfile.get("client_email")})


def _dlt_duckdb(c: Connection) -> dict[str, Any]:
    return {"database": c.host or c.schema or ":memory:"}


_DLT: dict[str, Callable[[Connection], dict[str, Any]]] = {
    "postgres": _dlt_postgres, "redshift": _dlt_postgres, "snowflake": _dlt_snowflake,
    "duckdb": _dlt_duckdb, **{t: _dlt_aws for t in AWS_TYPES}, **{t: _dlt_gcp for t in GCP_TYPES},
}


def to_dlt_credentials(conn: Connection) -> dict[str, Any]:
    """dlt's credential fields (``PostgresCredentials``, ``SnowflakeCredentials``,
    ``AwsCredentials``, ``GcpServiceAccountCredentials``, ``DuckDbCredentials``) as a dict."""
    return _pick(_DLT, conn, "dlt credentials")(conn)


# -- SQLAlchemy ----------------------------------------------------------------------------
_SQLALCHEMY_DRIVERS = {"postgres": "postgresql", "redshift": "postgresql", "mysql": "mysql",
                       "mssql": "mssql+pymssql", "sqlite": "sqlite", "duckdb": "duckdb",
                       "snowflake": "snowflake"}


def to_sqlalchemy_url(conn: Connection) -> URL:
    """A ``sqlalchemy.engine.URL``; its repr and str mask the password."""
    if conn.conn_type not in _SQLALCHEMY_DRIVERS:
        raise UnsupportedConnectionType(conn, "SQLAlchemy URL", list(_SQLALCHEMY_DRIVERS))
    try:
        from sqlalchemy.engine import URL
    except ImportError:
        raise MissingDependency("to_sqlalchemy_url", "sqlalchemy") from None
    kind = conn.conn_type
    query = {k: v for k, v in conn.extra.items() if isinstance(v, str)}
    if kind in ("sqlite", "duckdb"):
        return URL.create(_SQLALCHEMY_DRIVERS[kind], database=conn.host or conn.schema or None)
    if kind == "snowflake":
        database = "/".join(p for p in (_extra(conn, "database"), conn.schema) if p) or None
        query = _drop_none({"warehouse": _extra(conn, "warehouse"), "role": _extra(conn, "role")})
        return URL.create("snowflake", username=conn.login, password=conn.password,
                          host=_extra(conn, "account") or conn.host, database=database,
                          query=query)
    return URL.create(_SQLALCHEMY_DRIVERS[kind], username=conn.login, password=conn.password,
                      host=conn.host or None, port=conn.port, database=conn.schema or None,
                      query=query)


# -- boto3 ---------------------------------------------------------------------------------
def to_boto3_session_kwargs(conn: Connection) -> dict[str, str]:
    """Arguments for ``boto3.Session(**kwargs)``. ``endpoint_url`` is a client argument and
    is left out; read it with ``to_dlt_credentials(conn)["endpoint_url"]``."""
    creds = _pick({t: _dlt_aws for t in AWS_TYPES}, conn, "boto3 session")(conn)
    creds.pop("endpoint_url", None)
    return creds


# -- environment variables -----------------------------------------------------------------
def _env_postgres(c: Connection) -> dict[str, Any]:
    return {"PGHOST": c.host, "PGPORT": c.port, "PGUSER": c.login, "PGPASSWORD": c.password,
            "PGDATABASE": c.schema}


def _env_aws(c: Connection) -> dict[str, Any]:
    d = _dlt_aws(c)
    return {"AWS_ACCESS_KEY_ID": d.get("aws_access_key_id"),
            "AWS_SECRET_ACCESS_KEY": d.get("aws_secret_access_key"),
            "AWS_SESSION_TOKEN": d.get("aws_session_token"),
            "AWS_DEFAULT_REGION": d.get("region_name"), "AWS_ENDPOINT_URL": d.get("endpoint_url"),
            "AWS_PROFILE": d.get("profile_name")}


def _env_snowflake(c: Connection) -> dict[str, Any]:
    d = _dlt_snowflake(c)
    return {"SNOWFLAKE_ACCOUNT": d.get("host"), "SNOWFLAKE_USER": d.get("username"),
            "SNOWFLAKE_PASSWORD": d.get("password"), "SNOWFLAKE_DATABASE": d.get("database"),
            "SNOWFLAKE_SCHEMA": c.schema, "SNOWFLAKE_WAREHOUSE": d.get("warehouse"),
            "SNOWFLAKE_ROLE": d.get("role"),
            "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": d.get("private_key_passphrase")}


def _env_mysql(c: Connection) -> dict[str, Any]:
    return {"MYSQL_HOST": c.host, "MYSQL_TCP_PORT": c.port, "MYSQL_USER": c.login,
            "MYSQL_PWD": c.password, "MYSQL_DATABASE": c.schema}


_ENV: dict[str, Callable[[Connection], dict[str, Any]]] = {
    "postgres": _env_postgres, "redshift": _env_postgres, "mysql": _env_mysql,
    "snowflake": _env_snowflake, **{t: _env_aws for t in AWS_TYPES},
}


def to_env_vars(conn: Connection) -> dict[str, str]:
    """The variables the type's own clients read: ``PG*`` for psql, ``AWS_*`` for the AWS
    SDKs and CLI, ``MYSQL_*``, ``SNOWFLAKE_*``. Empty fields are left out."""
    return {k: str(v) for k, v in _pick(_ENV, conn, "environment variables")(conn).items()
            if v not in (None, "")}
