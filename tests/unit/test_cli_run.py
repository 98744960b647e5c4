"""`pipekey run`, `explain --pipeline` and `bench`, as real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipekey.backends import BACKEND_TYPES
from pipekey.backends.credentials import BY_TYPE
from pipekey.backends.env import key_to_name
from pipekey.cli.run import child_environment, withheld
from pipekey.client import Pipekey
from pipekey.manifest import parse_manifest

from ..conftest import FAKE, run_cli

MANIFEST = """
chain = ["env", "local"]
[backends.env]
type = "env"
[backends.local]
type = "local"
[pipelines.ads]
scope = "marketing/ads/{account}"
requires = ["access_token", "app_secret"]
env_vars = { app_secret = "ADS_APP_SECRET" }
"""
PRINT_ENV = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in "
             "['ACCESS_TOKEN', 'ADS_APP_SECRET', 'PIPEKEY_MASTER_KEY', 'PIPEKEY__OTHER', "
             "'KEEP_ME']}))")


@pytest.fixture
def project(isolated: Path) -> Path:
    (isolated / "pipekey.toml").write_text(MANIFEST)
    assert run_cli("init").returncode == 0
    for key, value in [("marketing/ads/acct_1/access_token", FAKE + "-tok"),
                       ("marketing/ads/app_secret", FAKE + "-app")]:
        assert run_cli("set", key, input=value).returncode == 0
    return isolated


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("run", "--pipeline", "ads", "--param", "account=acct_1", *args, env=env)


def test_child_gets_only_this_runs_secrets(project: Path) -> None:
    """The child sees its secrets under their names, not the master key nor env-backend vars."""
    result = _run("--no-mask", "--", sys.executable, "-c", PRINT_ENV,
                  env={"PIPEKEY__OTHER": "fake-other-pipeline", "KEEP_ME": "yes",
                       "PIPEKEY_MASTER_KEY": ""})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"ACCESS_TOKEN": FAKE + "-tok", "ADS_APP_SECRET": FAKE + "-app",
                    "PIPEKEY_MASTER_KEY": None, "PIPEKEY__OTHER": None, "KEEP_ME": "yes"}
    assert FAKE not in result.stderr


def test_child_output_is_masked_by_default(project: Path) -> None:
    """What the child prints of its secrets (and token shapes) reaches us as ***."""
    script = ("import os, sys, base64\n"
              "print('token', os.environ['ACCESS_TOKEN'])\n"
              "print('b64', base64.b64encode(os.environ['ADS_APP_SECRET'].encode()).decode())\n"
              "print('jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmYWtlIn0.c2lnbmF0dXJlZmFrZQ', "
              "file=sys.stderr)\n")
    result = _run("--", sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["token ***", "b64 ***"]
    assert result.stderr.strip() == "jwt ***"


FAKE_CERT = ("-----BEGIN CERTIFICATE-----\n"
             "MIIBfakeCERTfakeNOTaREALcertAAAAfakeCERTfake0123456789abcdefghijklm\n"
             "ZmFrZS1jZXJ0LWxpbmUtdHdvLW5vdC1hLWNlcnQtZmFrZS1mYWtlLWZha2UtZmFr\n"
             "ZmFrZS1jZXJ0LWxhc3Q=\n"
             "-----END CERTIFICATE-----\n")


def test_multi_line_values_are_masked_line_by_line(project: Path) -> None:
    """A multi-line value (a PEM certificate) printed by the child as is, line by line,
    or a line at a time on stderr, shows none of its lines."""
    assert run_cli("set", "marketing/ads/acct_1/access_token", input=FAKE_CERT).returncode == 0
    script = ("import os, sys\n"
              "cert = os.environ['ACCESS_TOKEN']\n"
              "print(cert)\n"
              "for line in cert.splitlines(): print('line', line, file=sys.stderr)\n")
    result = _run("--", sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    body = [line for line in FAKE_CERT.splitlines() if not line.startswith("-----")]
    assert [line for line in body if line in result.stdout + result.stderr] == []
    assert result.stdout.splitlines()[:2] == ["-----BEGIN CERTIFICATE-----", "***"]
    assert "line ***" in result.stderr


def test_pristine_environment(project: Path) -> None:
    """--pristine starts from PATH and HOME only, plus the run's secrets."""
    result = _run("--pristine", "--", sys.executable, "-c",
                  "import os, json; print(json.dumps(sorted(os.environ)))",
                  env={"KEEP_ME": "yes"})
    names = set(json.loads(result.stdout))
    assert {"ACCESS_TOKEN", "ADS_APP_SECRET", "PATH", "HOME"} <= names
    assert "KEEP_ME" not in names and len(names - {"LC_CTYPE"}) == 4


def test_exit_code_and_json_summary(project: Path) -> None:
    """pipekey exits with the child's code; --json summarises on stderr without values."""
    result = _run("--json", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert result.returncode == 7
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["exit_code"] == 7 and summary["variables"] == ["ACCESS_TOKEN", "ADS_APP_SECRET"]
    assert summary["pipeline"] == "ads" and FAKE not in result.stderr


@pytest.mark.parametrize("args, code, message", [
    pytest.param(["--param", "account=acct_2", "--", "true"], 1,
                 "is missing 1 required secret: 'access_token'", id="missing-secret"),
    pytest.param(["--param", "acount=x", "--", "true"], 2, "unknown parameter 'acount'",
                 id="bad-param"),
    pytest.param(["--param", "account", "--", "true"], 2, "is not NAME=VALUE", id="bad-pair"),
    pytest.param(["--param", "account=acct_1", "--", "no-such-command-xyz"], 127,
                 "command not found", id="no-command"),
])
def test_run_errors(project: Path, args, code, message) -> None:
    """Bad runs fail before the command starts, with one line and the right code."""
    result = run_cli("run", "--pipeline", "ads", *args)
    assert result.returncode == code
    assert message in result.stderr and FAKE not in result.stderr


def test_no_pipeline_is_a_usage_error(project: Path) -> None:
    """run needs --pipeline."""
    result = run_cli("run", "--", "true")
    assert result.returncode == 2 and "needs --pipeline" in result.stderr


@pytest.mark.slow
def test_signals_are_forwarded(project: Path) -> None:
    """SIGTERM to pipekey reaches the child, which exits its own way; pipekey passes it on."""
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
             "print('ready', flush=True)\n"
             "time.sleep(30)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekey", "run", "--pipeline", "ads", "--param",
         "account=acct_1", "--", sys.executable, "-c", child],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 42
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_explain_pipeline_prints_the_walk(project: Path) -> None:
    """explain --pipeline shows each level, most specific first, and where it was found."""
    result = run_cli("explain", "--pipeline", "ads", "--param", "account=acct_1", "app_secret",
                     "--json")
    data = json.loads(result.stdout)
    assert [(a["backend"], a["level"], a["outcome"]) for a in data["attempts"]] == [
        ("env", "marketing/ads/acct_1", "absent"), ("local", "marketing/ads/acct_1", "absent"),
        ("env", "marketing/ads", "absent"), ("local", "marketing/ads", "found")]
    text = run_cli("explain", "--pipeline", "ads", "--param", "account=acct_9", "access_token")
    assert text.returncode == 1 and "[shared]" not in text.stdout and "shared" in text.stdout
    assert FAKE not in text.stdout + result.stdout


def test_bench_prints_numbers(isolated: Path) -> None:
    """bench --json reports readiness and warm read cost as positive numbers."""
    result = run_cli("bench", "--json", "--repeat", "3", "--latency-ms", "5",
                     "--startup-runs", "0")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "startup" not in data  # --startup-runs 0 skips the fresh interpreters
    assert data["secrets"] == 40 and data["ready_local"]["median"] > 0
    assert data["ready_remote"]["calls_per_run"] == 1  # lookup = "sequential": first store only
    assert data["ready_remote_parallel"]["calls_per_run"] == 2
    assert data["ready_remote"]["round_trips"] >= 1
    assert 0 < data["warm_secret_ns"] < 1e6
    assert data["runs_200"]["uncached"]["store_calls"] == 200
    assert data["runs_200"]["cached"]["store_calls"] == 1


def test_bench_startup_section(isolated: Path) -> None:
    """bench measures start-up in fresh interpreters (run and get on the minimal and the
    realistic manifest, --help, run --help, import, loading the realistic manifest) and prints
    each figure against its target with PASS or FAIL (printed, not asserted: timings depend
    on the machine)."""
    from pipekey._compat import tomllib
    from pipekey.bench import STARTUP_TARGETS_MS, realistic_manifest, startup
    from pipekey.manifest import parse_manifest

    manifest = parse_manifest(tomllib.loads(realistic_manifest()), isolated / "pipekey.toml")
    assert len(manifest.pipelines) == 31 and len(manifest.backends) == 4
    assert manifest.team_names() == {"marketing", "finance", "ops"} and manifest.credentials

    up = startup(repeat=1)
    assert up["runs"] == 1 and up["targets_ms"] == STARTUP_TARGETS_MS
    assert 0 < up["import_ms"] and up["python_ms"] > 0 and up["python_cpu_ms"] > 0
    for name in ("run_minimal", "run_realistic", "get_minimal", "get_realistic", "help"):
        assert up[name]["cpu"] > 0 and up[name]["wall"] > 0, name
    assert up["pass"]["run_realistic"] is (
        up["run_realistic"]["cpu"] <= STARTUP_TARGETS_MS["run_over_python_cpu"])
    assert up["pass"]["help"] is (up["help"]["cpu"] <= STARTUP_TARGETS_MS["help_over_python_cpu"])
    loading = up["manifest"]
    assert 0 < loading["validate_ms"] < loading["load_cold_ms"]  # one child, cold both
    assert loading["load_warm_ms"] > 0

    result = run_cli("bench", "--repeat", "1", "--latency-ms", "1", "--startup-runs", "1")
    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    for row in ("import pipekey", "pipekey run --pipeline P -- true (realistic), over python",
                "pipekey run --pipeline P -- true (minimal), over python",
                "pipekey get KEY (local store) (realistic), over python",
                "pipekey --help, over python", "pipekey run --help, over python",
                "realistic manifest: msgspec validation, cold",
                "realistic manifest: load_manifest(), warm"):
        assert row in lines and ("PASS" in lines[row]) != ("FAIL" in lines[row]), row
    assert "<= 60 ms" in lines["import pipekey"]
    assert "<= 120 ms CPU" in lines["pipekey run --pipeline P -- true (realistic), over python"]
    assert "<= 100 ms CPU" in lines["pipekey get KEY (local store) (minimal), over python"]
    assert "pydantic" not in result.stdout


ENV_TEMPLATE_MANIFEST = """
chain = ["env", "local"]
[backends.env]
type = "env"
prefix = "LK_{env}__"
[backends.local]
type = "local"
[pipelines.ads]
scope = "marketing/ads/{account}"
requires = ["access_token", "app_secret"]
env = "prod"
"""
PRINT_LK = ("import json, os; print(json.dumps(sorted(k for k in os.environ "
            "if k.startswith('LK_'))))")


def test_env_backend_variables_of_every_environment_are_withheld(project: Path) -> None:
    """With prefix LK_{env}__, a prod run's child sees no LK_*__ variable of any environment,
    not only the default environment's; its own secret arrives under its own name."""
    (project / "pipekey.toml").write_text(ENV_TEMPLATE_MANIFEST)
    parent = {"LK_prod__MARKETING__ADS__ACCT_1__ACCESS_TOKEN": FAKE + "-prod-tok",
              "LK_prod__OTHER__PIPELINE__TOKEN": "fake-token-other-prod",
              "LK_staging__OTHER__PIPELINE__TOKEN": "fake-token-other-staging",
              "LK_dev__OTHER__PIPELINE__TOKEN": "fake-token-other-dev"}
    script = PRINT_LK + "; print(os.environ['ACCESS_TOKEN'])"
    result = _run("--no-mask", "--", sys.executable, "-c", script, env=parent)
    assert result.returncode == 0, result.stderr
    names, token = result.stdout.splitlines()
    assert json.loads(names) == [] and token == FAKE + "-prod-tok"


def test_env_backend_without_a_prefix_withholds_every_key_variable(project: Path) -> None:
    """An env backend with prefix = "" reads any variable: a run's child gets none that
    stands for a key (another account's token included), and keeps PATH and the like."""
    (project / "pipekey.toml").write_text(ENV_TEMPLATE_MANIFEST.replace(
        'prefix = "LK_{env}__"', 'prefix = ""'))
    parent = {"MARKETING__ADS__ACCT_1__ACCESS_TOKEN": FAKE + "-bare-tok",
              "MARKETING__ADS__ACCT_2__ACCESS_TOKEN": "fake-token-acct2-bare",
              "KEEP_ME": "yes"}
    script = ("import json, os; print(json.dumps(sorted(k for k in os.environ if '__' in k "
              "or k == 'KEEP_ME'))); print(os.environ['ACCESS_TOKEN'])")
    result = _run("--no-mask", "--", sys.executable, "-c", script, env=parent)
    assert result.returncode == 0, result.stderr
    names, token = result.stdout.splitlines()
    assert json.loads(names) == ["KEEP_ME"] and token == FAKE + "-bare-tok"
    assert "fake-token-acct2-bare" not in result.stdout + result.stderr


STORES = """
[backends.ssm]
type = "aws_ssm"
region = "eu-central-1"
[backends.vault]
type = "vault"
url = "http://127.0.0.1:9"
auth = { method = "approle", role_id = "fake-role", secret_id_env = "MY_APPROLE_SECRET" }
[backends.vault_token]
type = "vault"
url = "http://127.0.0.1:9"
auth = { method = "token", token_env = "MY_VAULT_TOKEN" }
[backends.gcp]
type = "gcp_secret_manager"
project = "fake-project"
[backends.kv]
type = "azure_key_vault"
url = "https://fake.vault.azure.net"
[backends.kv.auth]
method = "client_secret"
tenant_id = "fake"
client_id = "fake"
client_secret_env = "MY_AZ_SECRET"
"""
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "fake-akid-acct42", "AWS_SECRET_ACCESS_KEY": "fake-sak-acct42",
               "AWS_SESSION_TOKEN": "fake-st-acct42", "AWS_SECURITY_TOKEN": "fake-st-acct42",
               "VAULT_TOKEN": "fake-vault-token", "MY_VAULT_TOKEN": "fake-vault-token-2",
               "MY_APPROLE_SECRET": "fake-approle-secret", "MY_AZ_SECRET": "fake-az-secret",
               "AZURE_CLIENT_SECRET": "fake-az-secret-2",
               "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/fake-sa.json"}


@pytest.mark.parametrize("mode", [pytest.param([], id="default"),
                                  pytest.param(["--pristine"], id="pristine")])
def test_store_credentials_are_withheld(project: Path, mode: list) -> None:
    """The credentials of the manifest's stores (SDK defaults and the auth's configured
    variables) do not reach the child; the parent's other variables do (unless --pristine)."""
    (project / "pipekey.toml").write_text(MANIFEST + STORES)
    script = "import json, os; print(json.dumps(sorted(os.environ)))"
    result = _run(*mode, "--no-mask", "--", sys.executable, "-c", script,
                  env={**CREDENTIALS, "KEEP_ME": "yes"})
    assert result.returncode == 0, result.stderr
    names = set(json.loads(result.stdout))
    assert not names & set(CREDENTIALS), names & set(CREDENTIALS)
    assert {"ACCESS_TOKEN", "ADS_APP_SECRET"} <= names
    assert ("KEEP_ME" in names) is (not mode)


def test_preserve_env_passes_a_named_variable(project: Path) -> None:
    """--preserve-env NAME hands one withheld variable to the child, on purpose."""
    (project / "pipekey.toml").write_text(MANIFEST + STORES)
    script = "import os; print(os.environ.get('VAULT_TOKEN'), os.environ.get('MY_AZ_SECRET'))"
    result = _run("--pristine", "--preserve-env", "VAULT_TOKEN", "--no-mask", "--",
                  sys.executable, "-c", script, env=CREDENTIALS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fake-vault-token", "None"]
    masked = _run("--preserve-env", "VAULT_TOKEN", "--", sys.executable, "-c", script,
                  env=CREDENTIALS)
    assert masked.stdout.split() == ["***", "None"]  # a credential passed on is still masked


def test_value_too_large_for_the_environment(project: Path) -> None:
    """A value over the OS's per-variable limit fails in one line naming the variable, the
    secret and the limit: no traceback, no value, and the command never starts."""
    big = FAKE + "x" * 140_000
    assert run_cli("set", "marketing/ads/acct_1/access_token", input=big).returncode == 0
    marker = project / "started"
    result = _run("--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert result.returncode == 126, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "ACCESS_TOKEN" in lines[0] and "'access_token'" in lines[0] and "131072" in lines[0]
    assert FAKE not in result.stderr + result.stdout and not marker.exists()


def test_environment_too_large_in_all(project: Path) -> None:
    """Variables each under the per-variable limit but over the OS's total (ARG_MAX) once the
    run's secrets are added fail in one line naming the limit, before the command starts."""
    import os

    arg_max = os.sysconf("SC_ARG_MAX")
    if arg_max > 6 * 1024 * 1024:  # Linux caps at 6 MB whatever the stack limit says
        pytest.skip(f"ARG_MAX {arg_max} follows a large stack limit here")
    assert run_cli("set", "marketing/ads/acct_1/access_token",
                   input=FAKE + "x" * 120_000).returncode == 0
    used = sum(len(k) + len(v) + 2 + 8 for k, v in os.environ.items()) + 4096
    room = arg_max - used - 60_000   # pipekey itself still starts; its child would not
    parent = {f"FILLER_{i}": "y" * 100_000 for i in range(room // 100_020)}
    parent["FILLER_LAST"] = "y" * (room % 100_020)
    result = _run("--", sys.executable, "-c", "pass", env=parent)
    assert result.returncode == 126, result.stderr[-500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-500:]
    assert "ARG_MAX" in lines[0] and str(arg_max) in lines[0]
    assert FAKE not in result.stderr + result.stdout


def test_unknown_option_before_the_command_is_refused(project: Path) -> None:
    """An unknown option before `--` is a usage error, not the command to run."""
    marker = project / "started"
    result = _run("--bogus", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert result.returncode == 2 and "--bogus" in result.stderr
    assert not marker.exists()


def _lk_of(manifest: str) -> Pipekey:
    from pipekey._compat import tomllib

    return Pipekey([], manifest=parse_manifest(tomllib.loads(manifest),
                                                Path("/nonexistent/pipekey.toml")))


_segment = st.from_regex(r"[a-z0-9]{1,4}(_[a-z0-9]{1,4}){0,2}", fullmatch=True)  # has a variable
_keys = st.lists(_segment, min_size=1, max_size=4).map("/".join)
_envs = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
                min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))
_TEMPLATED = _lk_of(ENV_TEMPLATE_MANIFEST + STORES)


@settings(max_examples=200, deadline=None)
@given(env=_envs, key=_keys, other=st.from_regex(r"[A-Z][A-Z0-9_]{0,15}", fullmatch=True))
def test_no_environment_of_an_env_backend_reaches_the_child(env: str, key: str,
                                                            other: str) -> None:
    """Whatever the environment and key, the env backend's variable for it is withheld (both
    modes); a variable outside every prefix and credential list is kept (default mode)."""
    variable = key_to_name(key, f"LK_{env}__")
    assume(variable is not None)  # a key with no variable of its own (see test_env.py)
    parent = {variable: "fake-token-acct42", other: "fake-plain"}
    for pristine in (False, True):
        child = child_environment(_TEMPLATED, {"ACCESS_TOKEN": "fake-run"}, pristine,
                                  environ=parent)
        assert variable not in child and child["ACCESS_TOKEN"] == "fake-run"
    if not other.startswith("LK_") and not withheld(_TEMPLATED)(other):
        assert child_environment(_TEMPLATED, {}, False, environ=parent)[other] == "fake-plain"


def test_every_backend_type_says_which_credentials_it_reads() -> None:
    """The credential list covers every backend type (a new type must say what it reads)."""
    assert set(BY_TYPE) == set(BACKEND_TYPES)
