"""The leak hunt: run everything with known fake values, then search everything captured.

Searched: stdout and stderr of every CLI command (success and failure paths), exception
messages and tracebacks, log records (with every SDK's loggers at DEBUG, and every field a
structured formatter would print), audit files, the repr and str of every public object,
and every file under a temporary HOME, TMPDIR and the project (the encrypted store's file
too: a value must never be there in clear). Each value is searched in every form a leak takes:
as is, URL-encoded, base64 (also inside a longer base64 text, at every byte offset, both
alphabets) and JSON-escaped; and so is each secret inside a value: each line of
a multi-line value (a PEM key), the password in a URL's userinfo, a connection's sensitive
extras. Any hit fails.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

import pipekey
from pipekey import Connection
from pipekey.redact import encodings

from ..conftest import run_cli
from ..extras import need

TOKEN = "fake-leak-Tok3n/with+odd=chars&more"
APP = "fake-leak-app-secret-9f8e7d"
PG_PASSWORD = "fake-leak-pg-p@ss:w/rd"
SLACK = "fake-leak-slack-xoxb-000111"
PEM = ("-----BEGIN PRIVATE KEY-----\n"
       "MIIEfakeLEAKfakeNOTaREALkeyAAAAfakeLEAKfake0123456789abcdefghijklmnop\n"
       "ZmFrZS1sZWFrLXBlbS1saW5lLXR3by1ub3QtYS1rZXktZmFrZS1mYWtlLWZha2U\n"
       "bGVhay1sYXN0LWxpbmUtZmFrZQ==\n"
       "-----END PRIVATE KEY-----\n")
URL_PASSWORD = "fake-leak-url-p@ss"
DB_URL = "postgres://loader:" + quote(URL_PASSWORD, safe="") + "@db.internal:5432/analytics"
EXTRA_TOKEN = "fake-leak-extra-token-77"
API = Connection(conn_type="google_cloud_platform", extra={
    "api_token": EXTRA_TOKEN, "project": "lk-test",
    "keyfile_dict": {"type": "service_account", "private_key": PEM}})
VALUES = [TOKEN, APP, PG_PASSWORD, SLACK, PEM, DB_URL, API.to_uri()]
#: secrets inside the values, each a leak on its own
PARTS = [*(line for line in PEM.splitlines() if len(line) >= 6 and "-----" not in line),
         URL_PASSWORD, EXTRA_TOKEN]

MANIFEST = """
chain = ["env", "local"]
[backends.env]
type = "env"
[backends.local]
type = "local"
path = ".pipekey/store.db"
[audit]
sinks = [{ type = "file", path = ".pipekey/audit.jsonl" }]
[pipelines.ads]
scope = "marketing/ads/{account}"
requires = ["api_token", "app_secret"]
optional = ["slack_token", "signing_key", "db_url"]
connections = { warehouse = "connections/pg", api = "connections/api" }
instances = [{ account = "acct_1" }]
"""


def _needles() -> dict[str, str]:
    found = {}
    for value in [*VALUES, *PARTS]:
        for form in [*encodings(value), *_embedded_base64(value)]:
            found[form] = value
    return found


def _embedded_base64(value: str) -> set[str]:
    """What base64 of a longer text holding ``value`` always shows of it, whatever comes
    before or after: for a value starting 0, 1 or 2 bytes into a 3-byte group, the characters
    whose bits all come from the value, in both alphabets (written here from the encoding,
    not taken from pipekey). The other forms are plain text, so embedded they are found as
    they are."""
    raw = value.encode("utf-8")
    forms = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + raw + b"\0\0\0").decode()
            forms.add(encoded[-(-8 * offset // 6):8 * (offset + len(raw)) // 6])
    return forms


def _hits(text: str) -> list[str]:
    return sorted({value for form, value in _needles().items() if form in text})


#: The loggers of every SDK pipekey's backends use, and of their HTTP stacks.
SDK_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "requests", "hvac", "google",
               "grpc", "azure", "msal")


class _EveryField(logging.Handler):
    """Keeps each record as a structured (JSON) formatter would print it: the message, the
    traceback and every field, extras included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record) + " " + repr(vars(record)))


@pytest.fixture
def sdk_debug():
    """DEBUG logging on for every SDK (propagating, even where an SDK turns that off, as the
    GCP client does) into a root handler that keeps every field of every record."""
    handler = _EveryField()
    loggers = [logging.getLogger(name) for name in ("", *SDK_LOGGERS)]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.propagate = True
    loggers[0].addHandler(handler)
    try:
        yield handler
    finally:
        loggers[0].removeHandler(handler)
        for lg, level, propagate in saved:
            lg.setLevel(level)
            lg.propagate = propagate


@pytest.fixture
def world(isolated: Path, monkeypatch: pytest.MonkeyPatch, master_key: str) -> Path:
    home, tmp = isolated / "home", isolated / "tmp"
    home.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    (isolated / "pipekey.toml").write_text(MANIFEST)
    return isolated


def _cli_transcript(postgres: dict) -> list[subprocess.CompletedProcess]:
    wrong = Connection(conn_type="postgres", host="127.0.0.1", port=postgres["port"],
                       login="loader", password=PG_PASSWORD, schema="analytics")
    runs = [run_cli("init"),
            run_cli("set", "marketing/ads/acct_1/api_token", input=TOKEN),
            run_cli("set", "marketing/ads/app_secret", input=APP + "\n"),
            run_cli("set", "shared/slack_token", input=SLACK),
            run_cli("set", "connections/pg", input=wrong.to_uri()),
            run_cli("set", "marketing/ads/signing_key", input=PEM),
            run_cli("set", "marketing/ads/db_url", input=DB_URL),
            run_cli("set", "connections/api", input=API.to_json())]
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
        # secrets inside values, printed on their own: a PEM line by line, a URL's password,
        # a connection's extras
        run_cli("run", "--pipeline", "ads", "--param", "account=acct_1", "--", sys.executable,
                "-c", _CHILD_PRINTS_PARTS),
        run_cli("rm", "shared/slack_token"),
        run_cli("set", "connections/bad", input="postgres://u:" + PG_PASSWORD + "@h:99999/x"),
        run_cli("get", "x", env={"PIPEKEY_MASTER_KEY": "not-a-valid-key"}),   # store outage
        run_cli("get", "x", env={"PIPEKEY_CONFIG": "missing.toml"}),        # invalid manifest
    ]
    return runs


_CHILD_PRINTS_PARTS = """
import json, os, sys
from urllib.parse import unquote, urlsplit
from pipekey import Connection
print(os.environ["SIGNING_KEY"])
print(unquote(urlsplit(os.environ["DB_URL"]).password))
api = Connection.from_uri(os.environ["AIRFLOW_CONN_API"])
print("token:", api.extra["api_token"])
print(api.extra["keyfile_dict"]["private_key"], file=sys.stderr)
print(json.dumps(api.extra))
"""


@pytest.mark.slow
def test_leak_hunt(world: Path, postgres: dict, caplog, sdk_debug) -> None:
    """No value in any output, exception, log, audit file, repr or file on disk."""
    captured: list[str] = []
    runs = _cli_transcript(postgres)
    assert runs[1].returncode == 0 and any(r.returncode == 1 for r in runs)
    parts_run = next(r for r in runs if "token: " in r.stdout)  # the child printed its parts
    assert parts_run.returncode == 0 and "token: ***" in parts_run.stdout, parts_run.stderr[-500:]
    assert "-----BEGIN PRIVATE KEY-----\n***\n" in parts_run.stdout
    captured += [r.stdout + r.stderr for r in runs]

    # the library, its exceptions and tracebacks, its logs, its objects
    lk = pipekey.load(world / "pipekey.toml")
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
            api = run.connection("api")
            logger.info("extra %s token %s", api.extra, api.extra["api_token"])
            logger.info("key\n%s", api.extra["keyfile_dict"]["private_key"])
            for line in run.secret("signing_key").splitlines():
                logger.info("key line %s", line)
            logger.info("db password %s", unquote(urlsplit(run.secret("db_url")).password))
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
    captured += sdk_debug.texts
    captured += [logging.getLogger().handlers[0].format(r) if logging.getLogger().handlers
                 else r.getMessage() for r in caplog.records]

    hits = {i: _hits(text) for i, text in enumerate(captured) if _hits(text)}
    assert hits == {}, (f"values leaked in captured output #{list(hits)[:3]}: "
                        f"{list(hits.values())[:3]}")

    leaked_files = {}
    for path in world.rglob("*"):
        if path.is_file():
            found = _hits(path.read_bytes().decode("utf-8", "replace"))
            if found:
                leaked_files[str(path.relative_to(world))] = found
    assert leaked_files == {}
    audit = (world / ".pipekey" / "audit.jsonl").read_text()
    assert "marketing/ads/acct_1/api_token" in audit  # the hunt did audit something


_CHILD_PRINTS_EMBEDDED = """
import base64, json, os
from urllib.parse import quote
from pipekey import Connection
pg = Connection.from_uri(os.environ["AIRFLOW_CONN_WAREHOUSE"])
api = Connection.from_uri(os.environ["AIRFLOW_CONN_API"])
for value in (*(os.environ[name] for name in ("API_TOKEN", "APP_SECRET", "SLACK_TOKEN",
                                              "SIGNING_KEY", "DB_URL")),
              pg.password, api.extra["api_token"]):
    for prefix in ("", "b", "bo", "bob:", "airflow:"):
        for suffix in ("", "\\n", ":x"):
            text = (prefix + value + suffix).encode()
            print("Authorization: Basic", base64.b64encode(text).decode())
            print("urlsafe", base64.urlsafe_b64encode(text).decode())
        print(prefix + quote(value, safe=""), prefix + json.dumps(value), prefix + repr(value))
"""


def test_embedded_encodings_leak_nothing(world: Path) -> None:
    """``pipekey run``'s child prints each value (a connection's password and extras too)
    inside longer texts: base64 of
    ``prefix + value + suffix`` for prefixes of 0, 1, 2 bytes modulo 3 (``bob:``,
    ``airflow:``), both alphabets, and the URL-encoded, JSON and repr forms after a prefix.
    None of them reaches pipekey's output."""
    for key, value in (("marketing/ads/acct_1/api_token", TOKEN), ("marketing/ads/app_secret", APP),
                       ("shared/slack_token", SLACK), ("marketing/ads/signing_key", PEM),
                       ("marketing/ads/db_url", DB_URL), ("connections/api", API.to_json()),
                       ("connections/pg", Connection(conn_type="postgres", host="db.internal",
                                                     login="loader",
                                                     password=PG_PASSWORD).to_uri())):
        assert run_cli("set", key, input=value).returncode == 0
    result = run_cli("run", "--pipeline", "ads", "--param", "account=acct_1", "--",
                     sys.executable, "-c", _CHILD_PRINTS_EMBEDDED)
    assert result.returncode == 0, result.stderr[-2000:]
    basic = [line for line in result.stdout.splitlines() if line.startswith("Authorization:")]
    assert len(basic) == 7 * 5 * 3 and all("***" in line for line in basic), result.stderr
    assert _hits(result.stdout + result.stderr) == []


@pytest.mark.slow
def test_quickstart_leaks_nothing(tmp_path: Path) -> None:
    """The quickstart: its output and every file it leaves hold none of its store's values."""
    root = Path(__file__).resolve().parents[2]
    work = tmp_path / "qs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKEY")}
    env.update(QUICKSTART_DIR=str(work), HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path))
    (tmp_path / "home").mkdir()
    result = subprocess.run(["bash", str(root / "examples" / "quickstart" / "run.sh")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    os.environ.pop("PIPEKEY_MASTER_KEY", None)
    store = pipekey.backends.local.LocalBackend("local", work / ".pipekey" / "store.db")
    values = [s.value for s in store.get_many(store.list_keys("")).values()]
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
    from pipekey.backends.vault import AppRoleAuth, VaultBackend, VaultConfig

    from ..fakes.vault import ROLE_ID

    server = request.getfixturevalue("fake_vault")
    request.getfixturevalue("vault_env")
    return server, "v2_read", "v2_write", VaultBackend.build("vault", VaultConfig(
        type="vault", prefix=f"leak/{os.urandom(4).hex()}", max_attempts=2,
        auth=AppRoleAuth(role_id=ROLE_ID)))


def _gcp_store(request):
    from pipekey.backends.gcp_secret_manager import GcpSecretManagerBackend, GcpSecretManagerConfig

    server = request.getfixturevalue("fake_gcp")
    return server, "access", "add_version", GcpSecretManagerBackend("gcp", GcpSecretManagerConfig(
        type="gcp_secret_manager", project="lk-test", endpoint=server.url, max_attempts=2,
        credentials="anonymous", prefix=f"leak{os.urandom(4).hex()}_"))


def _azure_store(request):
    from pipekey.backends.azure_key_vault import AzureKeyVaultBackend

    from ..servers import azure_config

    server = request.getfixturevalue("azure_env")
    return server, "get_secret", "set_secret", AzureKeyVaultBackend("azure", azure_config(
        server, prefix=f"leak{os.urandom(4).hex()}-", max_attempts=2))


@pytest.mark.parametrize("make", [pytest.param(_vault_store, id="vault"),
                                  pytest.param(_gcp_store, id="gcp_secret_manager"),
                                  pytest.param(_azure_store, id="azure_key_vault")])
def test_cloud_stores_leak_nothing_on_any_path(make, request, caplog, sdk_debug) -> None:
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
            with pytest.raises(pipekey.PipekeyError) as info:
                action()
            captured.append(str(info.value))
            captured += traceback.format_exception(info.value)
            server.clear_faults()  # the ones a failed write did not use up
    captured += [caplog.text] + [str(r.args) for r in caplog.records] + sdk_debug.texts
    assert _hits("\n".join(captured)) == []


def _aws_store(kind: str, endpoint: str):
    from pipekey.backends.aws_secrets_manager import SecretsManagerBackend, SecretsManagerConfig
    from pipekey.backends.aws_ssm import SsmBackend, SsmConfig
    from pipekey.backends.dynamodb import DynamoDbBackend, DynamoDbConfig

    uid, region = os.urandom(4).hex(), "eu-central-1"
    if kind == "aws_ssm":
        return SsmBackend("ssm", SsmConfig(type="aws_ssm", prefix=f"/leak/{uid}", region=region,
                                           endpoint_url=endpoint))
    if kind == "aws_secrets_manager":
        return SecretsManagerBackend("sm", SecretsManagerConfig(
            type="aws_secrets_manager", prefix=f"leak-{uid}/", region=region,
            endpoint_url=endpoint))
    import boto3

    key_id = boto3.client("kms", region_name=region, endpoint_url=endpoint).create_key()[
        "KeyMetadata"]["KeyId"]
    backend = DynamoDbBackend("ddb", DynamoDbConfig(
        type="dynamodb", table=f"leak-{uid}", region=region, endpoint_url=endpoint,
        encryption="kms", kms_key_id=key_id))
    backend.ensure_table()
    return backend


@pytest.mark.parametrize("kind", ["aws_ssm", "aws_secrets_manager", "dynamodb"])
def test_aws_stores_leak_nothing_in_sdk_debug_logs(kind, aws_env, sdk_debug) -> None:
    """Writes and reads through SSM, Secrets Manager and DynamoDB (KMS envelope) with botocore
    at DEBUG: its request params and response bodies show no value, neither through
    ``lk.set``/``lk.get`` nor through the backend alone, where nothing registers the value
    and withholding the SDK's bodies is all that keeps it out."""
    suffix = os.urandom(4).hex()  # values no earlier test registered
    values = [f"{TOKEN}-{suffix}", PEM.replace("AAAA", suffix), f"{DB_URL}?x={suffix}"]
    backend = _aws_store(kind, aws_env)
    lk = pipekey.Pipekey([backend])
    lk.set("leak/via_client", values[0])
    assert lk.get("leak/via_client") == values[0]
    for i, value in enumerate(values[1:]):
        backend.put(f"leak/direct{i}", value)
    found = backend.get_many([f"leak/direct{i}" for i in range(len(values) - 1)])
    assert sorted(s.value for s in found.values()) == sorted(values[1:])
    assert any("botocore" in text for text in sdk_debug.texts)  # the SDK did log at DEBUG
    forms = {form for value in values
             for part in [value, *(ln for ln in value.splitlines() if len(ln) >= 6)]
             for form in encodings(part)}
    logged = "\n".join(sdk_debug.texts)
    assert [form for form in forms if form in logged] == []


_CHILD_PRINTS_MINTED = """
import os
from pipekey import Connection
c = Connection.from_uri(os.environ["AIRFLOW_CONN_WAREHOUSE"])
print("login=" + c.login, "pw=" + c.password, "uri=" + os.environ["AIRFLOW_CONN_WAREHOUSE"])
"""


@pytest.mark.slow
def test_minted_credentials_leak_nothing(isolated: Path, master_key: str, caplog,
                                         sdk_debug, request) -> None:
    """postgres_role: neither the admin's password nor any minted one shows in CLI output
    (run, check --connect, sweep, bench, a refused mint), logs, the audit file, exceptions,
    reprs or files."""
    need("postgres")
    from ..stores.test_credentials_postgres import (
        ADMIN_PASSWORD,
        admin_uri,
        make_world,
        run_roles,
        setup_roles,
    )

    pg = setup_roles(request.getfixturevalue("postgres"))
    lk = make_world(isolated, pg)
    minted: list[str] = []
    captured: list[str] = []
    with caplog.at_level(logging.DEBUG):
        with lk.pipeline("loader", run_name="leak-hunt") as run:
            conn = run.connection("warehouse")
            minted.append(conn.password or "")
            captured += [repr(o) + str(o) for o in (run, conn, run.lease("warehouse"),
                                                    lk.minter("warehouse_rw"))]
            logging.getLogger("leak.hunt").info("minted %s uri %s", conn.password, conn.to_uri())
        lk.set("connections/warehouse_admin", admin_uri(pg, password="fake-wrong-admin-pw"))
        try:
            with lk.pipeline("loader"):
                pass
        except Exception as exc:
            captured.append(str(exc) + repr(exc) + "".join(traceback.format_exception(exc)))
            logging.getLogger("leak.hunt").exception("refused")
        lk.set("connections/warehouse_admin", admin_uri(pg))
    lk.close()
    runs = [run_cli("run", "--pipeline", "loader", "--", sys.executable, "-c",
                    _CHILD_PRINTS_MINTED),
            run_cli("check", "--connect", "--json"), run_cli("check", "--connect"),
            run_cli("credentials", "sweep"), run_cli("credentials", "sweep", "--json"),
            run_cli("bench", "--credentials", "warehouse_rw", "--runs", "3", "--json"),
            run_cli("audit", "--json")]
    child = runs[0]
    assert child.returncode == 0 and "pw=***" in child.stdout, child.stderr[-300:]
    captured += [r.stdout + r.stderr for r in runs]
    captured += [caplog.text, *sdk_debug.texts]
    secrets = [ADMIN_PASSWORD, "fake-wrong-admin-pw", *minted]
    forms = {form: value for value in secrets for form in encodings(value)}
    hits = [value for text in captured for form, value in forms.items() if form in text]
    assert hits == []
    for path in isolated.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert not [v for f, v in forms.items() if f in text], path
    assert "dynamic:warehouse_rw" in (isolated / ".pipekey" / "audit.jsonl").read_text()
    assert run_roles(pg) == []
