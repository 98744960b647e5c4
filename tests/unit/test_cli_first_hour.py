"""Issue 20, the first hour: each mistake a new user makes gets a clear, safe answer, through
the real `pipekey` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import run_cli

TOKEN = "fake-token-acct42"


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def no_aws_region(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS region anywhere: not in the environment, not in a config file."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(isolated / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(isolated / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


SSM_WITHOUT_REGION = ('chain = ["local", "ssm"]\n[backends.local]\ntype = "local"\n'
                      '[backends.ssm]\ntype = "aws_ssm"\nprefix = "/data-platform/{env}"\n')


# -- 1. a backend that cannot even be built ----------------------------------------------------
def test_doctor_without_aws_region_is_a_fail_row_not_a_traceback(no_aws_region,
                                                                  isolated: Path) -> None:
    """doctor with an aws_ssm backend and no region: a FAIL row naming the fix, exit 1."""
    (isolated / "pipekey.toml").write_text(SSM_WITHOUT_REGION)
    result = run_cli("doctor")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""
    row = next(line for line in result.stdout.splitlines() if "ssm" in line and "FAIL" in line)
    assert "no AWS region" in row and "set AWS_REGION or region = " in row
    assert "[backends.ssm]" in row  # brackets shown, not eaten as markup
    report = json.loads(run_cli("doctor", "--json").stdout)
    ssm = next(r for r in report["backends"] if r["backend"] == "ssm")
    assert ssm["ok"] is False and "set AWS_REGION" in ssm["status"]


def test_ls_with_one_failing_backend_lists_the_others(no_aws_region, isolated: Path) -> None:
    """ls shows the local keys and one warning line for the backend it could not list."""
    (isolated / "pipekey.toml").write_text(SSM_WITHOUT_REGION)
    assert run_cli("init").returncode == 0
    assert run_cli("set", "shared/slack_token", input=TOKEN).returncode == 0
    result = run_cli("ls")
    assert "shared/slack_token" in result.stdout and "local" in result.stdout
    warning = ('pipekey: warning: ssm not listed: backend \'ssm\': no AWS region for aws_ssm: '
               'set AWS_REGION or region = "..." in [backends.ssm]')
    assert _lines(result.stderr) == [warning]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and TOKEN not in result.stdout + result.stderr


# -- 2. a store whose key file went missing ----------------------------------------------------
def test_lost_key_file_init_refuses_and_writes_nothing(isolated: Path) -> None:
    """get, init and doctor all say: restore the key file or set PIPEKEY_MASTER_KEY; init
    writes no new key; restoring the file brings the store back."""
    assert run_cli("init").returncode == 0
    assert run_cli("set", "shared/slack_token", input=TOKEN).returncode == 0
    key_file = isolated / ".pipekey" / "master.key"
    backup = isolated / "backup.key"
    key_file.rename(backup)
    store = isolated / ".pipekey" / "store.db"
    before = store.read_bytes()

    get = run_cli("get", "shared/slack_token")
    assert get.returncode == 1 and len(_lines(get.stderr)) == 1
    assert "restore the key file" in get.stderr and "PIPEKEY_MASTER_KEY" in get.stderr
    assert "pipekey init" not in get.stderr

    init = run_cli("init")
    assert init.returncode == 1 and len(_lines(init.stderr)) == 1
    assert "restore the key file" in init.stderr and "PIPEKEY_MASTER_KEY" in init.stderr
    assert not key_file.exists()  # no new, different key left behind
    assert store.read_bytes() == before

    doctor = run_cli("doctor")
    assert doctor.returncode == 1 and "restore the key file" in doctor.stdout
    assert "pipekey init" not in doctor.stdout

    backup.rename(key_file)
    assert run_cli("get", "shared/slack_token", "--reveal").stdout == TOKEN + "\n"


def test_doctor_hint_for_a_missing_store_is_one_that_works(isolated: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No store and no key: doctor says init (set would fail); with a key: set creates it."""
    without_key = run_cli("doctor")
    assert "run `pipekey init`" in without_key.stdout and "set a value" not in without_key.stdout
    set_without_key = run_cli("set", "shared/x", input=TOKEN)
    assert set_without_key.returncode == 1 and "pipekey init" in set_without_key.stderr

    from pipekey.backends.local import generate_master_key

    monkeypatch.setenv("PIPEKEY_MASTER_KEY", generate_master_key())
    with_key = run_cli("doctor")
    assert "the first `pipekey set` creates it" in with_key.stdout
    assert run_cli("set", "shared/x", input=TOKEN).returncode == 0


# -- 3. --env and --config in either place; run refuses unknown options ------------------------
FILES_PER_ENV = ('chain = ["files"]\n[backends.files]\ntype = "files"\n'
                 'path = "secrets-{env}.toml"\n'
                 '[pipelines.app]\nscope = "app"\nrequires = ["token"]\n')


@pytest.fixture
def per_env(isolated: Path) -> Path:
    (isolated / "pipekey.toml").write_text(FILES_PER_ENV)
    (isolated / "secrets-dev.toml").write_text('[app]\ntoken = "fake-token-dev"\n')
    (isolated / "secrets-prod.toml").write_text('[app]\ntoken = "fake-token-prod"\n')
    return isolated


@pytest.mark.parametrize("args", [
    pytest.param(["--env", "prod", "get", "app/token", "--json"], id="before"),
    pytest.param(["get", "app/token", "--env", "prod", "--json"], id="after"),
    pytest.param(["get", "-e", "prod", "app/token", "--json"], id="after-short"),
])
def test_env_before_or_after_the_command(per_env: Path, args: list[str]) -> None:
    """`--env` picks the environment wherever it is written."""
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"].startswith(str(per_env / "secrets-prod.toml"))


def test_config_after_the_command(per_env: Path, tmp_path_factory) -> None:
    """`--config` works after the subcommand too."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = run_cli("get", "app/token", "--config", str(per_env / "pipekey.toml"), "--json",
                     cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "files"


def test_run_takes_env_after_the_subcommand(per_env: Path) -> None:
    """docs/runs.md's form: `pipekey run --pipeline P --env prod -- CMD` runs CMD in prod."""
    check = "import os, sys; sys.exit(0 if os.environ['TOKEN'] == 'fake-token-prod' else 3)"
    result = run_cli("run", "--pipeline", "app", "--env", "prod", "--", "python", "-c", check)
    assert result.returncode == 0, result.stderr


def test_run_rejects_an_unknown_option_before_the_command(per_env: Path) -> None:
    """An unknown option before -- is a usage error; nothing is executed."""
    marker = per_env / "ran"
    result = run_cli("run", "--pipeline", "app", "--bogus", "--", "python", "-c",
                     f"open({str(marker)!r}, 'w')")
    assert result.returncode == 2
    lines = _lines(result.stderr)
    assert lines[0] == "pipekey: error: no such option '--bogus'" and len(lines) == 2
    assert not marker.exists()


# -- 4. a check that verified nothing ----------------------------------------------------------
def test_check_of_a_templated_pipeline_without_instances_fails(isolated: Path) -> None:
    """Skipped for want of parameters is not a pass, unless --allow-skipped says so."""
    (isolated / "pipekey.toml").write_text(
        '[backends.env]\ntype = "env"\n'
        '[pipelines.facebook_ads]\nscope = "marketing/facebook/{account}"\n'
        'requires = ["access_token"]\n')
    result = run_cli("check")
    assert result.returncode == 1
    assert "1 pipeline skipped (verified nothing)" in result.stderr
    assert "--allow-skipped" in result.stderr
    assert "1 check, 0 failed" in result.stderr  # and no "1 checks"
    allowed = run_cli("check", "--allow-skipped", "--json")
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["skipped"] == 1
    given = run_cli("check", "--param", "account=acct_42",
                    env={"PIPEKEY__MARKETING__FACEBOOK__ACCT_42__ACCESS_TOKEN": TOKEN})
    assert given.returncode == 0, given.stderr
    assert TOKEN not in given.stdout + given.stderr


# -- 5. errors are one line (usage errors: the error and a hint) -------------------------------
def test_usage_error_is_two_lines_with_a_suggestion(isolated: Path) -> None:
    """A mistyped flag: the error and "did you mean", not click's three lines."""
    result = run_cli("get", "shared/slack_token", "--revael")
    assert result.returncode == 2
    assert _lines(result.stderr) == ["pipekey: error: no such option '--revael'",
                                     "pipekey: hint: did you mean --reveal?"]
    command = run_cli("gett", "shared/slack_token")
    assert command.returncode == 2
    assert _lines(command.stderr) == ["pipekey: error: no such command 'gett'",
                                      "pipekey: hint: did you mean `pipekey get`?"]


@pytest.mark.parametrize("args", [
    pytest.param(["set", "shared/slack_token", TOKEN], id="value-as-argument"),
    pytest.param(["set", "shared/slack_token", f"--{TOKEN}"], id="value-as-option"),
    pytest.param(["set", "shared/slack_token", f"-{TOKEN}"], id="value-as-short-options"),
    pytest.param(["set", "shared/slack_token", TOKEN, "--json"], id="json"),
])
def test_usage_errors_of_set_never_echo_the_arguments(isolated: Path, args) -> None:
    """A value typed on set's command line is refused and never printed back."""
    result = run_cli(*args)
    assert result.returncode == 2
    assert TOKEN not in result.stdout + result.stderr
    assert TOKEN[1:] not in result.stdout + result.stderr
    assert 1 <= len(_lines(result.stderr)) <= 2 and result.stderr.startswith("pipekey: error: ")


def test_missing_secret_is_one_short_line_ending_with_the_fix(isolated: Path) -> None:
    """The default line is short and ends with the set command; --verbose lists the places."""
    assert run_cli("init").returncode == 0
    key = "marketing/facebook/acct_99/access_token"
    result = run_cli("get", key)
    assert result.returncode == 1
    [line] = _lines(result.stderr)
    assert line.endswith(f"pipekey set {key}") and "tried" not in line and len(line) < 200
    verbose = run_cli("get", key, "--verbose")
    assert _lines(verbose.stderr)[0] == line
    assert any(line.startswith("  tried: local ") for line in verbose.stderr.splitlines())
    data = json.loads(run_cli("get", key, "--json").stdout)
    assert data["error"]["attempts"][0]["backend"] == "local"


def test_a_failing_backend_is_one_line(no_aws_region, isolated: Path) -> None:
    """A backend failure: one line (no warning line besides the error line)."""
    (isolated / "pipekey.toml").write_text(SSM_WITHOUT_REGION)
    assert run_cli("init").returncode == 0
    result = run_cli("get", "shared/nope")
    assert result.returncode == 1
    [line] = _lines(result.stderr)
    assert "set AWS_REGION" in line and "Traceback" not in result.stderr


def test_a_run_missing_a_secret_ends_with_the_set_command(per_env: Path) -> None:
    """A run's missing secret: one line ending with the command that sets its key."""
    (per_env / "secrets-dev.toml").write_text("")
    result = run_cli("run", "--pipeline", "app", "--", "python", "-c", "pass")
    assert result.returncode == 1
    [line] = _lines(result.stderr)
    assert line.endswith("pipekey set app/token"), line


# -- 8. smaller ---------------------------------------------------------------------------------
def test_help_command(isolated: Path) -> None:
    """`pipekey help` and `pipekey help CMD` print the help."""
    top = run_cli("help")
    assert top.returncode == 0 and "Commands:" in top.stdout
    sub = run_cli("help", "get")
    assert sub.returncode == 0 and "Usage: pipekey get" in sub.stdout


@pytest.mark.parametrize("command", ["ls", "get", "rm", "history", "init", "diff", "doctor"])
def test_help_has_an_example(isolated: Path, command: str) -> None:
    """Each command's --help shows an example line."""
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert any(line.strip().startswith(f"pipekey {command}")
               for line in result.stdout.splitlines())


def test_run_help_says_where_json_goes(isolated: Path) -> None:
    """run --help: --json (like every pipekey option) goes before --."""
    text = " ".join(run_cli("run", "--help").stdout.split())
    assert "--json" in text and "go before `--`" in text
    assert "(--json, --env, --config included) go before `--`" in text


def test_copy_from_a_missing_file_does_not_suggest_optional(isolated: Path) -> None:
    """An ad-hoc file: store cannot take `optional = true`; the error does not suggest it."""
    result = run_cli("copy", "file:missing.toml", "local", "--dry-run")
    assert result.returncode == 2
    assert "missing.toml does not exist" in result.stderr and "optional" not in result.stderr


@pytest.mark.parametrize("key, message", [
    pytest.param("/shared/slack_token", "keys do not start with '/'", id="leading-slash"),
    pytest.param("shared/sl\u00e4ck", "allowed are ASCII letters", id="non-ascii"),
])
def test_key_errors_say_what_is_wrong(isolated: Path, key: str, message: str) -> None:
    result = run_cli("get", key)
    assert result.returncode == 2 and message in result.stderr
    assert len(_lines(result.stderr)) == 1


def test_plurals(isolated: Path) -> None:
    """One key is "1 key", not "1 keys"."""
    (isolated / "a.toml").write_text('a = "fake-a"\n')
    result = run_cli("diff", f"file:{isolated / 'a.toml'}", "local")
    assert "1 key, 1 differ" in result.stderr
