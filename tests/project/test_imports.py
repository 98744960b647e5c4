"""Importing pipekey, and loading a manifest of core backends, loads no cloud SDK."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SDKS = ["boto3", "botocore", "hvac", "google.cloud", "google.api_core", "azure",
        "airflow", "dlt", "duckdb", "rich"]

PROBE = """
import json, sys
import pipekey
{extra}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r}
                        or any(m == s or m.startswith(s + '.') for s in {sdks!r}))))
"""


def _loaded(extra: str = "", cwd: Path | None = None) -> list[str]:
    roots = sorted({s.split(".")[0] for s in SDKS})
    code = PROBE.format(extra=extra, roots=roots, sdks=SDKS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=cwd, timeout=60)
    return json.loads(out.stdout)


def test_import_loads_no_sdk() -> None:
    """`import pipekey` in a fresh interpreter loads no cloud SDK, no Airflow, no dlt, no rich."""
    assert _loaded() == []


def test_loading_core_backends_loads_no_sdk(tmp_path: Path) -> None:
    """load() with env, files and local backends, and a read, still load no SDK."""
    (tmp_path / "pipekey.toml").write_text(
        '[backends.env]\ntype = "env"\n[backends.files]\ntype = "files"\npath = "s.json"\n'
        '[backends.local]\ntype = "local"\n')
    (tmp_path / "s.json").write_text('{"a": "fake"}')
    assert _loaded("pipekey.load().get('a')", cwd=tmp_path) == []


def test_aws_backends_load_boto3_only_when_used(tmp_path: Path) -> None:
    """A manifest naming the AWS backends validates and builds without importing boto3."""
    (tmp_path / "pipekey.toml").write_text(
        '[backends.ssm]\ntype = "aws_ssm"\nprefix = "/x/{env}"\n'
        '[backends.sm]\ntype = "aws_secrets_manager"\n'
        '[backends.ddb]\ntype = "dynamodb"\ntable = "t"\n')
    assert _loaded("pipekey.load()", cwd=tmp_path) == []


@pytest.mark.parametrize("blocked, module, build, extra", [
    pytest.param("botocore", "aws_ssm", "SsmBackend('b', SsmConfig(type='aws_ssm'))", "aws",
                 id="aws"),
    pytest.param("hvac", "vault", "VaultKV2Backend('b', VaultConfig(type='vault', "
                 "url='http://127.0.0.1:1'))", "vault", id="vault"),
    pytest.param("google", "gcp_secret_manager",
                 "GcpSecretManagerBackend('b', GcpSecretManagerConfig("
                 "type='gcp_secret_manager', project='p'))", "gcp", id="gcp"),
    pytest.param("azure.keyvault.secrets", "azure_key_vault",
                 "AzureKeyVaultBackend('b', AzureKeyVaultConfig(type='azure_key_vault', "
                 "url='https://x.vault.azure.net'))", "azure", id="azure"),
])
def test_missing_sdk_names_the_extra(blocked: str, module: str, build: str, extra: str) -> None:
    """Without its SDK a backend's first call raises MissingDependency with the pip line."""
    names = [build.split("(")[0], build.split("(")[1].split(", ")[-1]]
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            f"from pipekey.backends.{module} import {', '.join(names)}\n"
            f"b = {build}\n"
            "try:\n    b.get('k')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert "MissingDependency" in out.stdout, out.stderr[-500:]
    assert f"pip install 'pipekey[{extra}]'" in out.stdout


def test_cloud_backends_build_without_their_sdks(tmp_path: Path) -> None:
    """A manifest naming vault, gcp_secret_manager and azure_key_vault validates and builds
    without importing hvac, Google or Azure libraries."""
    (tmp_path / "pipekey.toml").write_text(
        '[backends.v]\ntype = "vault"\nurl = "http://127.0.0.1:1"\n'
        'auth = { method = "approle", role_id = "r" }\n'
        '[backends.g]\ntype = "gcp_secret_manager"\nproject = "p"\n'
        '[backends.a]\ntype = "azure_key_vault"\nurl = "https://x.vault.azure.net"\n')
    assert _loaded("lk = pipekey.load(); [lk.backend(n) for n in ('v', 'g', 'a')]",
                   cwd=tmp_path) == []


#: what `import pipekey` defers: the manifest's schema (msgspec), the CLI (click, rich), the
#: local store's cipher and database, asyncio and the thread pools (start-up cost, issues 19,
#: 27); pydantic is no dependency of pipekey's at all and never loads
HEAVY = ["pydantic", "pydantic_core", "msgspec", "click", "rich", "cryptography", "asyncio",
         "concurrent.futures", "sqlite3"]

HEAVY_PROBE = """
import json, sys
{code}
print(json.dumps(sorted(s for s in {heavy!r} if s in sys.modules)))
"""


def _heavy(code: str, cwd: Path | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", HEAVY_PROBE.format(code=code, heavy=HEAVY)],
                         capture_output=True, text=True, check=True, cwd=cwd, timeout=60)
    return json.loads(out.stdout)


def test_import_defers_heavy_modules() -> None:
    """`import pipekey` loads no msgspec, pydantic, click, rich, cryptography, asyncio, thread
    pool or sqlite3; nor does using Connection, the errors or validate_key."""
    assert _heavy("import pipekey") == []
    assert _heavy("import pipekey\npipekey.Connection.from_uri('postgres://h/db')\n"
                  "pipekey.validate_key('a/b')\npipekey.SecretNotFound") == []


def test_load_builds_models_but_defers_cli_cipher_and_pools(tmp_path: Path) -> None:
    """load() of a local-store manifest brings msgspec and sqlite3, not pydantic, click, rich,
    asyncio or the thread pool; the cipher comes when the store is first used."""
    (tmp_path / "pipekey.toml").write_text('[backends.local]\ntype = "local"\n')
    assert _heavy("import pipekey\nlk = pipekey.load()", cwd=tmp_path) == ["msgspec", "sqlite3"]
    read = ("import os, pipekey\nfrom pipekey.backends.local import generate_master_key\n"
            "os.environ['PIPEKEY_MASTER_KEY'] = generate_master_key()\n"
            "pipekey.load().set('a', 'fake-value')")
    assert _heavy(read, cwd=tmp_path) == ["cryptography", "msgspec", "sqlite3"]


#: what `pipekey run` does not need: the other commands' modules and what only they use,
#: rich (tables), the audit file sink's handlers, asyncio and the thread pools (issue 19);
#: pydantic (issue 27) and any store's SDK
NOT_ON_RUN_PATH = ["pydantic", "pydantic_core", *SDKS,
                   "pipekey.cli.audit", "pipekey.cli.bench", "pipekey.cli.check",
                   "pipekey.cli.copy", "pipekey.cli.inspect", "pipekey.cli.store",
                   "pipekey.bench", "pipekey.check", "pipekey.copy", "pipekey.probes",
                   "pipekey.testing", "rich", "logging.handlers", "asyncio",
                   "concurrent.futures"]

RUN_PROBE = """
import json, sys
from pipekey.cli import main
sys.argv = ["pipekey", "run", "--pipeline", "p", "--", sys.executable, "-c", "pass"]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted(m for m in {names!r} if m in sys.modules)]))
"""


def test_run_command_loads_only_what_it_needs(tmp_path: Path, master_key: str) -> None:
    """`pipekey run` imports its own command module, not the other commands', rich, the
    audit file sink's handlers, asyncio or a thread pool (start-up cost, issue 19)."""
    from pipekey.backends.local import LocalBackend

    store = LocalBackend("local", tmp_path / "store.db", master_key=master_key)
    store.put("team/p/token", "fake-token-startup")
    store.close()
    (tmp_path / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\npath = "store.db"\n'
        '[pipelines.p]\nscope = "team/p"\nrequires = ["token"]\n')
    out = subprocess.run([sys.executable, "-c", RUN_PROBE.format(names=NOT_ON_RUN_PATH)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert "fake-token-startup" not in out.stdout + out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [0, []], out.stderr[-500:]


HELP_PROBE = """
import json, sys
from pipekey.cli import main
sys.argv = ["pipekey", *{argv!r}]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted(m for m in {names!r} if m in sys.modules)]))
"""

#: what printing help needs none of: no manifest is read, no schema or backend is imported
NOT_FOR_HELP = ["pipekey.client", "pipekey.manifest", "pipekey.backends", "pipekey.run",
                "pipekey.policy", "msgspec", "pydantic", "sqlite3", "cryptography", "rich",
                *SDKS]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["get", "--help"]],
                         ids=["pipekey", "run", "get"])
def test_help_builds_nothing(tmp_path: Path, argv: list[str]) -> None:
    """`pipekey --help` and `pipekey run --help` print help without importing the client,
    the manifest's schema, a backend or rich (issue 27); even a broken manifest beside them
    is not read."""
    (tmp_path / "pipekey.toml").write_text("chian = [\n")
    out = subprocess.run([sys.executable, "-c", HELP_PROBE.format(argv=argv, names=NOT_FOR_HELP)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    code, loaded = json.loads(out.stdout.splitlines()[-1])
    assert code in (0, None) and "Usage:" in out.stdout, out.stderr[-500:]
    assert loaded == []


#: a brokered task's path (issue 32): the manifest, the Variable's payload, the run over it
BROKERED_PROBE = """
import json, sys
from pipekey import broker
from pipekey.manifest import load_manifest

manifest = load_manifest()
secret = {"key": "bench/p00/token", "value": "fake-brokered-token", "backend": "ssm",
          "path": "/x/bench/p00/token", "version": "1", "document": False}
answer = json.dumps({"v": 1, "pipeline": "p", "env": "dev", "params": {}, "run": "t",
                     "names": {"token": secret}, "connections": {}, "keys": {}})
asked = []
with broker.brokered_run(manifest, "p", lambda key: asked.append(key) or answer) as run:
    got = run.secret("token") == "fake-brokered-token"
print(json.dumps({"got": got, "asked": len(asked),
                  "sdks": sorted(m for m in sys.modules if m.split(".")[0] in
                                 ("boto3", "botocore", "s3transfer"))}))
"""


def test_a_brokered_run_over_an_aws_chain_loads_no_aws_sdk(tmp_path: Path) -> None:
    """In broker mode a task opens its run from the one Variable the API server answers:
    with a manifest whose chain is SSM, the run holds the payload's value after one request
    and boto3/botocore never load (no store client is built in the task; issue 32). The
    deployment tests check the same in real Airflow task processes."""
    (tmp_path / "pipekey.toml").write_text(
        'env = "dev"\nchain = ["ssm"]\n[backends.ssm]\ntype = "aws_ssm"\nprefix = "/x"\n'
        'region = "eu-central-1"\n'
        '[pipelines.p]\ndags = ["p_*"]\nscope = "bench/p00"\nrequires = ["token"]\n')
    out = subprocess.run([sys.executable, "-c", BROKERED_PROBE], capture_output=True,
                         text=True, check=False, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fake-brokered-token" not in out.stdout + out.stderr
    assert json.loads(out.stdout) == {"got": True, "asked": 1, "sdks": []}
