"""Converters, checked by handing their output to the real dlt, SQLAlchemy and boto3."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipekey import Connection
from pipekey.converters import UnsupportedConnectionType

from ..extras import need

PG = Connection.from_uri("postgres://loader:fake-pg-pw@db.internal:5433/analytics")


def _dlt(cls_path: str, fields: dict):
    need("dlt")
    module, _, name = cls_path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    creds = cls()
    creds.update(fields)
    creds.resolve()
    return creds


def test_postgres_to_dlt() -> None:
    """A postgres connection resolves dlt's PostgresCredentials to the same server."""
    creds = _dlt("dlt.destinations.impl.postgres.configuration.PostgresCredentials",
                 PG.to_dlt_credentials())
    assert creds.to_native_representation().startswith(
        "postgresql://loader:fake-pg-pw@db.internal:5433/analytics")


def _rsa_pem(passphrase: bytes) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(passphrase)).decode()


def test_snowflake_key_pair_to_dlt() -> None:
    """A key-pair Snowflake connection gives dlt the key and its passphrase, and no password."""
    pem = _rsa_pem(b"fake-passphrase")
    conn = Connection(conn_type="snowflake", login="LOADER", password="fake-passphrase",
                      schema="RAW", extra={"account": "xy12345.eu-central-1",
                                           "database": "ANALYTICS", "warehouse": "LOAD_WH",
                                           "role": "LOADER_ROLE",
                                           "private_key_content": base64.b64encode(
                                               pem.encode()).decode()})
    fields = conn.to_dlt_credentials()
    assert "password" not in fields and fields["private_key_passphrase"] == "fake-passphrase"
    creds = _dlt("dlt.destinations.impl.snowflake.configuration.SnowflakeCredentials", fields)
    assert (creds.host, creds.database, creds.warehouse, creds.role) == (
        "xy12345.eu-central-1", "ANALYTICS", "LOAD_WH", "LOADER_ROLE")
    assert creds.private_key == pem
    key = serialization.load_pem_private_key(creds.private_key.encode(),
                                             creds.private_key_passphrase.encode())
    assert key.key_size == 2048


def test_snowflake_password_to_dlt() -> None:
    """Without a key, the password is the password."""
    conn = Connection(conn_type="snowflake", login="u", password="fake-pw",
                      extra={"account": "acct", "database": "DB"})
    assert conn.to_dlt_credentials()["password"] == "fake-pw"


def test_s3_to_dlt_and_boto3() -> None:
    """An aws connection gives dlt AwsCredentials (endpoint, session token) and boto3 a Session."""
    conn = Connection(conn_type="aws", login="AKIAFAKEFAKEFAKE", password="fake-secret",
                      extra={"region_name": "eu-central-1", "aws_session_token": "fake-token",
                             "endpoint_url": "http://127.0.0.1:5000"})
    creds = _dlt("dlt.common.configuration.specs.AwsCredentials", conn.to_dlt_credentials())
    assert creds.endpoint_url == "http://127.0.0.1:5000"
    assert creds.aws_session_token == "fake-token"
    session = boto3.Session(**conn.to_boto3_session_kwargs())
    frozen = session.get_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.token, session.region_name) == (
        "AKIAFAKEFAKEFAKE", "fake-token", "eu-central-1")


def test_airflow_service_config_endpoint() -> None:
    """Airflow's service_config form for the S3 endpoint is understood."""
    conn = Connection(conn_type="aws", extra={"service_config": {"s3": {"endpoint_url": "http://x"}}})
    assert conn.to_dlt_credentials()["endpoint_url"] == "http://x"


def test_bigquery_service_account_to_dlt() -> None:
    """A google connection with keyfile_dict gives dlt GcpServiceAccountCredentials."""
    keyfile = {"type": "service_account", "project_id": "fake-project",
               "private_key_id": "abc", "client_email": "loader@fake-project.iam.example",
               "private_key": _rsa_pem(b"unused").replace("ENCRYPTED ", "")}
    conn = Connection(conn_type="google_cloud_platform",
                      extra={"keyfile_dict": json.dumps(keyfile)})
    creds = _dlt("dlt.common.configuration.specs.GcpServiceAccountCredentials",
                 conn.to_dlt_credentials())
    assert (creds.project_id, creds.client_email) == ("fake-project",
                                                      "loader@fake-project.iam.example")


def test_duckdb_to_dlt(tmp_path) -> None:
    """A duckdb connection's host is the database file."""
    conn = Connection(conn_type="duckdb", host=str(tmp_path / "x.duckdb"))
    creds = _dlt("dlt.destinations.impl.duckdb.configuration.DuckDbCredentials",
                 conn.to_dlt_credentials())
    assert creds.database == str(tmp_path / "x.duckdb")


def test_sqlalchemy_url_masks_password(tmp_path) -> None:
    """The SQLAlchemy URL carries the password but its repr and str mask it."""
    sqlalchemy = need("sqlalchemy")
    url = PG.replace(extra={"sslmode": "require"}).to_sqlalchemy_url()
    assert url.password == "fake-pg-pw" and url.query == {"sslmode": "require"}
    assert "fake-pg-pw" not in repr(url) and "fake-pg-pw" not in str(url)
    assert url.render_as_string(hide_password=False).startswith(
        "postgresql://loader:fake-pg-pw@db.internal:5433/analytics")
    engine = sqlalchemy.create_engine(
        Connection(conn_type="sqlite", host=str(tmp_path / "x.db")).to_sqlalchemy_url())
    with engine.connect() as db:
        assert db.execute(sqlalchemy.text("select 1")).scalar() == 1
    engine.dispose()


def test_env_vars() -> None:
    """Native variables for the type's own tools; empty fields left out."""
    assert PG.to_env_vars() == {"PGHOST": "db.internal", "PGPORT": "5433", "PGUSER": "loader",
                                "PGPASSWORD": "fake-pg-pw", "PGDATABASE": "analytics"}
    aws = Connection(conn_type="aws", login="AK", password="fake", extra={"region_name": "r"})
    assert aws.to_env_vars() == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "fake",
                                 "AWS_DEFAULT_REGION": "r"}


@pytest.mark.parametrize("method, supported", [
    ("to_dlt_credentials", "postgres"), ("to_sqlalchemy_url", "sqlite"),
    ("to_boto3_session_kwargs", "aws"), ("to_env_vars", "mysql"),
])
def test_unknown_type_lists_supported(method: str, supported: str) -> None:
    """An unknown type fails with the list of supported ones, and no value."""
    conn = Connection(conn_type="ftp", password="fake-ftp-pw")
    with pytest.raises(UnsupportedConnectionType) as info:
        getattr(conn, method)()
    assert "'ftp' is not supported (supported: " in str(info.value)
    assert supported in str(info.value) and "fake-ftp-pw" not in str(info.value)
