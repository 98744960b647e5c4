"""Real servers for tests, on 127.0.0.1 only, stopped at the end of the session.

* ``postgres``: a throwaway cluster of Debian's PostgreSQL (initdb runs as the ``postgres``
  user when the tests run as root), scram-sha-256 over TCP, a role ``loader`` with a fake
  password and a database ``analytics``.
* ``moto_server``: moto's server in a thread, real HTTP; boto3 talks to it with fake keys.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

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
    bindir = _pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="latchkey-pg-"))
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
               "dbname": "analytics"}
    finally:
        subprocess.run([*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto over real HTTP on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_server: str) -> str:
    """Fake AWS credentials and region for boto3; returns moto's endpoint."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "eu-central-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server
