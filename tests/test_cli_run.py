"""`latchkey run`, `explain --pipeline` and `bench`, as real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FAKE, run_cli

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
             "['ACCESS_TOKEN', 'ADS_APP_SECRET', 'LATCHKEY_MASTER_KEY', 'LATCHKEY__OTHER', "
             "'KEEP_ME']}))")


@pytest.fixture
def project(isolated: Path) -> Path:
    (isolated / "latchkey.toml").write_text(MANIFEST)
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
                  env={"LATCHKEY__OTHER": "fake-other-pipeline", "KEEP_ME": "yes",
                       "LATCHKEY_MASTER_KEY": ""})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"ACCESS_TOKEN": FAKE + "-tok", "ADS_APP_SECRET": FAKE + "-app",
                    "LATCHKEY_MASTER_KEY": None, "LATCHKEY__OTHER": None, "KEEP_ME": "yes"}
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
    """latchkey exits with the child's code; --json summarises on stderr without values."""
    result = _run("--json", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert result.returncode == 7
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["exit_code"] == 7 and summary["variables"] == ["ACCESS_TOKEN", "ADS_APP_SECRET"]
    assert summary["pipeline"] == "ads" and FAKE not in result.stderr


@pytest.mark.parametrize("args, code, message", [
    pytest.param(["--param", "account=acct_2", "--", "true"], 1,
                 "is missing 1 required secret: 'access_token'", id="missing-secret"),
    pytest.param(["--param", "acount=x", "--", "true"], 2, "no parameter 'acount'", id="bad-param"),
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
    """SIGTERM to latchkey reaches the child, which exits its own way; latchkey passes it on."""
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
             "print('ready', flush=True)\n"
             "time.sleep(30)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "latchkey", "run", "--pipeline", "ads", "--param",
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
    result = run_cli("bench", "--json", "--repeat", "3", "--latency-ms", "5")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["secrets"] == 40 and data["ready_local"]["median"] > 0
    assert data["ready_remote"]["calls_per_run"] == 2
    assert data["ready_remote"]["round_trips"] >= 1
    assert 0 < data["warm_secret_ns"] < 1e6
    assert data["runs_200"]["uncached"]["store_calls"] == 200
    assert data["runs_200"]["cached"]["store_calls"] == 1
