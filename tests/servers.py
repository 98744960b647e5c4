"""Real servers for tests, on 127.0.0.1 only, stopped at the end of the session.

* ``postgres``: a throwaway cluster of Debian's PostgreSQL (initdb runs as the ``postgres``
  user when the tests run as root), scram-sha-256 over TCP, a role ``loader`` with a fake
  password and a database ``analytics``; the superuser ``postgres`` connects through the
  Unix socket in ``socket_dir`` (trust), for tests that set up roles.
* ``moto``: moto's server in a thread, real HTTP, counting requests per API action; boto3
  talks to it with fake keys (``aws_env``).
"""

from __future__ import annotations

import glob
import io
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import parse_qs

import pytest

from .extras import need

if TYPE_CHECKING:  # the fakes import their SDK's helpers; fixtures import them when used
    from .fakes.azure import FakeKeyVault
    from .fakes.gcp import FakeSecretManager
    from .fakes.vault import FakeVault

PG_PASSWORD = "fake-pg-Pa55-word"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail("PostgreSQL is not installed: run scripts/setup-dev.sh (installs postgresql)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict]:
    """A running PostgreSQL on a loopback port; yields host, port, user, password, dbname."""
    need("postgres")  # what connects to it: pipekey check and the tests use psycopg2
    bindir = _pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="pipekey-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_owner, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
        "--auth-host=scram-sha-256", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
    try:
        for sql in (f"CREATE ROLE loader LOGIN PASSWORD '{PG_PASSWORD}'",
                    "CREATE DATABASE analytics OWNER loader"):
            run(str(bindir / "psql"), "-h", str(base), "-p", str(port), "-U", "postgres",
                "-v", "ON_ERROR_STOP=1", "-c", sql)
        yield {"host": "127.0.0.1", "port": port, "user": "loader", "password": PG_PASSWORD,
               "dbname": "analytics", "socket_dir": str(base)}  # socket: superuser, trusted
    finally:
        subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


class MotoServer:
    """moto's WSGI app behind a counting middleware, served over HTTP on 127.0.0.1.

    ``counts`` holds requests per API action as the server saw them (``GetParameters``,
    ``BatchGetSecretValue``, ``AssumeRole``...), so tests can assert what reached AWS;
    ``signed`` holds (action, access key id that signed it, RoleSessionName if any) per
    request, so tests can tell which principal made a call.
    """

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        self.counts: Counter[str] = Counter()
        self.signed: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, self._count, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _count(self, environ, start_response):
        action = (environ.get("HTTP_X_AMZ_TARGET") or "").rpartition(".")[2]
        query: dict[str, list[str]] = {}
        if not action:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            query = parse_qs(body.decode("utf-8", "replace")) or parse_qs(
                environ.get("QUERY_STRING", ""))
            action = (query.get("Action") or [f"{environ['REQUEST_METHOD']} (REST)"])[0]
        signer = re.search(r"Credential=([A-Z0-9]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        with self._lock:
            self.counts[action] += 1
            self.signed.append((action, signer.group(1) if signer else "",
                                (query.get("RoleSessionName") or [None])[0]))
        return self._app(environ, start_response)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.signed.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto server for the session, counting requests per action."""
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server(moto: MotoServer) -> str:
    """moto's endpoint URL."""
    return moto.url


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_server: str) -> str:
    """Fake AWS credentials and region for boto3; returns moto's endpoint."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing",
                        "AWS_DEFAULT_REGION": "eu-central-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # every service, STS included
    return moto_server


def airflow_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment for a subprocess using Airflow with its own home."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "PIPEKEY", "AWS_"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "RUNTIME__DLTHUB_TELEMETRY": "false", "DLT_DATA_DIR": str(home / "dlt-data"),
                "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false"})
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """A real Airflow 3 home, migrated on SQLite (``airflow db migrate``)."""
    need("airflow")
    import sys

    home = tmp_path_factory.mktemp("airflow-home")
    (home / "dags").mkdir()
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                            env=airflow_env(home, {}), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return home


@pytest.fixture(scope="session")
def fake_vault() -> Iterator["FakeVault"]:
    """A protocol-level Vault (KV v2 at ``secret``, KV v1 at ``kv``, AppRole...) on 127.0.0.1."""
    need("vault")  # the tests talk to it through hvac
    from .fakes.vault import FakeVault

    server = FakeVault()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vault_env(monkeypatch: pytest.MonkeyPatch, fake_vault) -> str:
    """VAULT_ADDR at the fake Vault and the AppRole secret id in VAULT_SECRET_ID."""
    from .fakes.vault import SECRET_ID

    monkeypatch.setenv("VAULT_ADDR", fake_vault.url)
    monkeypatch.setenv("VAULT_SECRET_ID", SECRET_ID)
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.delenv("VAULT_NAMESPACE", raising=False)
    return fake_vault.url


@pytest.fixture(scope="session")
def fake_gcp() -> Iterator["FakeSecretManager"]:
    """A protocol-level GCP Secret Manager (REST v1) on 127.0.0.1."""
    need("gcp")  # the tests talk to it through the SDK; the fake uses google_crc32c
    from .fakes.gcp import FakeSecretManager

    server = FakeSecretManager()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_azure(tmp_path_factory) -> Iterator["FakeKeyVault"]:
    """A protocol-level Azure Key Vault (and token endpoint) over TLS on 127.0.0.1; its
    self-signed certificate is ``server.cert``."""
    need("azure")
    from .fakes.azure import FakeKeyVault
    from .fakes.http import make_cert

    cert = make_cert(tmp_path_factory.mktemp("azure-tls"))
    server = FakeKeyVault(cert)
    server.cert = cert[0]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch, fake_azure):
    """The fake Key Vault, with the service principal's secret in AZURE_CLIENT_SECRET."""
    from .fakes.azure import CLIENT_SECRET

    monkeypatch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
    return fake_azure


def azure_config(server, **fields):
    """An ``azure_key_vault`` configuration for the fake: client-secret auth against its
    token endpoint, its certificate trusted, the challenge's resource check off (an IP)."""
    from pipekey.backends.azure_key_vault import AzureKeyVaultConfig, ClientSecretAuth

    from .fakes.azure import CLIENT_ID, TENANT

    fields.setdefault("auth", ClientSecretAuth(
        tenant_id=TENANT, client_id=CLIENT_ID, authority=server.url,
        disable_instance_discovery=True))
    return AzureKeyVaultConfig(type="azure_key_vault", url=server.url, ca_bundle=str(server.cert),
                               verify_challenge_resource=False, **fields)
