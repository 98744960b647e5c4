"""The leak hunt: run everything with known fake values, then search everything captured.

Searched: stdout and stderr of every CLI command (success and failure paths), exception
messages and tracebacks, log records, audit files, the repr and str of every public object,
and every file under a temporary HOME, TMPDIR and the project (the encrypted store's file
too: a value must never be there in clear). Each value is searched in every form a leak takes:
as is, URL-encoded, base64 and JSON-escaped. Any hit fails.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

import latchkey
from latchkey import Connection
from latchkey.redact import encodings

from .conftest import run_cli

TOKEN = "fake-leak-Tok3n/with+odd=chars&more"
APP = "fake-leak-app-secret-9f8e7d"
PG_PASSWORD = "fake-leak-pg-p@ss:w/rd"
SLACK = "fake-leak-slack-xoxb-000111"
VALUES = [TOKEN, APP, PG_PASSWORD, SLACK]

MANIFEST = """
chain = ["env", "local"]
[backends.env]
type = "env"
[backends.local]
type = "local"
path = ".latchkey/store.db"
[audit]
sinks = [{ type = "file", path = ".latchkey/audit.jsonl" }]
[pipelines.ads]
scope = "marketing/ads/{account}"
requires = ["api_token", "app_secret"]
optional = ["slack_token"]
connections = { warehouse = "connections/pg" }
instances = [{ account = "acct_1" }]
"""


def _needles() -> dict[str, str]:
    found = {}
    for value in VALUES:
        for form in encodings(value):
            found[form] = value
    return found


def _hits(text: str) -> list[str]:
    return sorted({value for form, value in _needles().items() if form in text})


@pytest.fixture
def world(isolated: Path, monkeypatch: pytest.MonkeyPatch, master_key: str) -> Path:
    home, tmp = isolated / "home", isolated / "tmp"
    home.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    (isolated / "latchkey.toml").write_text(MANIFEST)
    return isolated


def _cli_transcript(postgres: dict) -> list[subprocess.CompletedProcess]:
    wrong = Connection(conn_type="postgres", host="127.0.0.1", port=postgres["port"],
                       login="loader", password=PG_PASSWORD, schema="analytics")
    runs = [run_cli("init"),
            run_cli("set", "marketing/ads/acct_1/api_token", input=TOKEN),
            run_cli("set", "marketing/ads/app_secret", input=APP + "\n"),
            run_cli("set", "shared/slack_token", input=SLACK),
            run_cli("set", "connections/pg", input=wrong.to_uri())]
    for fmt in ([], ["--json"]):
        runs += [
            run_cli("get", "marketing/ads/app_secret", *fmt),
            run_cli("ls", *fmt), run_cli("history", "shared/slack_token", *fmt),
            run_cli("explain", "marketing/ads/acct_1/api_token", *fmt),
            run_cli("explain", "--pipeline", "ads", "--param", "account=acct_1", "api_token", *fmt),
            run_cli("doctor", *fmt), run_cli("check", *fmt),
            run_cli("check", "--connect", "--timeout", "3", *fmt),   # authentication failure
            run_cli("audit", *fmt),
            run_cli("copy", "local", "local:other.db", "--dry-run", *fmt),
            run_cli("diff", "local", "local:other.db", *fmt),
            run_cli("get", "marketing/ads/nope", *fmt),               # not found
            run_cli("get", "bad//key", *fmt),                         # invalid key
        ]
    runs += [
        run_cli("copy", "local", "local:other.db"),
        run_cli("run", "--pipeline", "ads", "--param", "account=acct_1", "--", sys.executable,
                "-c", "import os; print(os.environ['API_TOKEN'], os.environ['APP_SECRET']); "
                      "raise SystemExit(3)"),
        run_cli("run", "--pipeline", "ads", "--param", "account=acct_2", "--", "true"),
        run_cli("rm", "shared/slack_token"),
        run_cli("set", "connections/bad", input="postgres://u:" + PG_PASSWORD + "@h:99999/x"),
        run_cli("get", "x", env={"LATCHKEY_MASTER_KEY": "not-a-valid-key"}),   # store outage
        run_cli("get", "x", env={"LATCHKEY_CONFIG": "missing.toml"}),        # invalid manifest
    ]
    return runs


@pytest.mark.slow
def test_leak_hunt(world: Path, postgres: dict, caplog) -> None:
    """No value in any output, exception, log, audit file, repr or file on disk."""
    captured: list[str] = []
    runs = _cli_transcript(postgres)
    assert runs[1].returncode == 0 and any(r.returncode == 1 for r in runs)
    captured += [r.stdout + r.stderr for r in runs]

    # the library, its exceptions and tracebacks, its logs, its objects
    lk = latchkey.load(world / "latchkey.toml")
    logger = logging.getLogger("leak.hunt")
    with caplog.at_level(logging.DEBUG):
        with lk.pipeline("ads", account="acct_1", run_name="leak-hunt") as run:
            objects = [lk, run, run.scope, run.explain("api_token"),
                       run.explain("api_token").secret, run.connection("warehouse"),
                       lk.get_secret("marketing/ads/app_secret"),
                       lk.backend("local").history("marketing/ads/app_secret")]
            captured += [repr(o) for o in objects] + [str(o) for o in objects]
            logger.info("token %s app %s", run.secret("api_token"), run.secret("app_secret"))
            logger.warning("uri %s", run.connection("warehouse").to_uri())
            for failing in (lambda: run.get("marketing/ads/acct_2/api_token"),
                            lambda: Connection.from_uri("postgres://u:" + PG_PASSWORD + "@h:x/d"),
                            lambda: lk.pipeline("ads", account="acct_9").open()):
                try:
                    failing()
                except Exception as exc:
                    captured.append(str(exc) + repr(exc) + "".join(
                        traceback.format_exception(exc)))
                    logger.exception("while hunting: %s", exc)
            try:
                raise RuntimeError("wrapped") from ValueError("cause " + TOKEN)
            except RuntimeError:
                logger.exception("chained")
    captured.append(caplog.text)
    captured += [logging.getLogger().handlers[0].format(r) if logging.getLogger().handlers
                 else r.getMessage() for r in caplog.records]

    hits = {i: _hits(text) for i, text in enumerate(captured) if _hits(text)}
    assert hits == {}, f"values leaked in captured output #{list(hits)[:3]}: {list(hits.values())[:3]}"

    leaked_files = {}
    for path in world.rglob("*"):
        if path.is_file():
            found = _hits(path.read_bytes().decode("utf-8", "replace"))
            if found:
                leaked_files[str(path.relative_to(world))] = found
    assert leaked_files == {}
    audit = (world / ".latchkey" / "audit.jsonl").read_text()
    assert "marketing/ads/acct_1/api_token" in audit  # the hunt did audit something


@pytest.mark.slow
def test_quickstart_leaks_nothing(tmp_path: Path) -> None:
    """The quickstart: its output and every file it leaves hold none of its store's values."""
    root = Path(__file__).resolve().parents[1]
    work = tmp_path / "qs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY")}
    env.update(QUICKSTART_DIR=str(work), HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path))
    (tmp_path / "home").mkdir()
    result = subprocess.run(["bash", str(root / "examples" / "quickstart" / "run.sh")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    os.environ.pop("LATCHKEY_MASTER_KEY", None)
    store = latchkey.backends.local.LocalBackend("local", work / ".latchkey" / "store.db")
    values = [s.value for s in store.get_many(store.list("")).values()]
    store.close()
    assert len(values) == 5
    needles = {form for v in values for form in encodings(v) if len(v) >= 8}
    outputs = result.stdout + result.stderr
    assert not [n for n in needles if n in outputs]
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "master.key":
            data = path.read_bytes().decode("utf-8", "replace")
            assert not [n for n in needles if n in data], path


def _vault_store(request):
    from latchkey.backends.vault import AppRoleAuth, VaultBackend, VaultConfig

    from .fakes.vault import ROLE_ID

    server = request.getfixturevalue("fake_vault")
    request.getfixturevalue("vault_env")
    return server, "v2_read", "v2_write", VaultBackend("vault", VaultConfig(
        type="vault", prefix=f"leak/{os.urandom(4).hex()}", max_attempts=2,
        auth=AppRoleAuth(method="approle", role_id=ROLE_ID)))


def _gcp_store(request):
    from latchkey.backends.gcp_secret_manager import (GcpSecretManagerBackend,
                                                      GcpSecretManagerConfig)

    server = request.getfixturevalue("fake_gcp")
    return server, "access", "add_version", GcpSecretManagerBackend("gcp", GcpSecretManagerConfig(
        type="gcp_secret_manager", project="lk-test", endpoint=server.url, max_attempts=2,
        credentials="anonymous", prefix=f"leak{os.urandom(4).hex()}_"))


def _azure_store(request):
    from latchkey.backends.azure_key_vault import AzureKeyVaultBackend

    from .servers import azure_config

    server = request.getfixturevalue("azure_env")
    return server, "get_secret", "set_secret", AzureKeyVaultBackend("azure", azure_config(
        server, prefix=f"leak{os.urandom(4).hex()}-", max_attempts=2))


@pytest.mark.parametrize("make", [pytest.param(_vault_store, id="vault"),
                                  pytest.param(_gcp_store, id="gcp_secret_manager"),
                                  pytest.param(_azure_store, id="azure_key_vault")])
def test_cloud_stores_leak_nothing_on_any_path(make, request, caplog) -> None:
    """Writes, reads and every failure (403, 404, 429 past the retries, 500, 503) of the
    Vault, GCP and Azure backends, with the SDKs' own loggers at DEBUG: no value in any
    message, repr, traceback (causes included) or log record."""
    caplog.set_level(logging.DEBUG)
    server, read_route, write_route, backend = make(request)
    captured: list[str] = []
    for i, value in enumerate(VALUES):
        captured.append(repr(backend.put(f"leak/k{i}", value)))
    found = backend.get_many([f"leak/k{i}" for i in range(len(VALUES))])
    assert {s.value for s in found.values()} == set(VALUES)
    captured += [repr(found), str(found), repr(backend)]
    for status in (403, 429, 500, 503):
        for route, action in ((read_route, lambda: backend.get_many(["leak/k0", "leak/k1"])),
                              (write_route, lambda: backend.put("leak/k0", TOKEN))):
            server.fail(status, times=4, route=route, retry_after=0 if status == 429 else None)
            with pytest.raises(latchkey.LatchkeyError) as info:
                action()
            captured.append(str(info.value))
            captured += traceback.format_exception(info.value)
            server.clear_faults()  # the ones a failed write did not use up
    captured += [caplog.text] + [str(r.args) for r in caplog.records]
    assert _hits("\n".join(captured)) == []
