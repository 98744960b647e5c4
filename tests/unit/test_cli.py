"""The pipekey command, run as a real subprocess: output, --json, exit codes, no leaks."""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from pipekey.backends.local import generate_master_key

from ..conftest import FAKE, run_cli

COMMANDS = ["init", "set", "get", "ls", "rm", "history", "explain", "doctor"]


@pytest.fixture
def initialised(isolated: Path) -> Path:
    out = run_cli("init")
    assert out.returncode == 0, out.stderr
    return isolated


def test_no_value_in_any_output_except_reveal(initialised: Path) -> None:
    """Every command, text and --json, success and failure: the value is never printed."""
    outputs = []

    def run(*args: str, input: str | None = None, code: int = 0) -> subprocess.CompletedProcess:
        result = run_cli(*args, input=input)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == code, (args, result.stderr)
        return result

    run("set", "shared/slack_token", input=FAKE + "\n")
    run("set", "shared/slack_token", "--json", input=FAKE + "-v2")
    run("set", "marketing/fb/acct_42/token", input=FAKE + "-fb")
    for fmt in ([], ["--json"]):
        run("get", "shared/slack_token", *fmt)
        run("ls", *fmt)
        run("ls", "shared", *fmt)
        run("history", "shared/slack_token", *fmt)
        run("explain", "shared/slack_token", *fmt)
        run("doctor", *fmt)
        run("get", "shared/nope", *fmt, code=1)
        run("get", "bad//key", *fmt, code=2)
    run("rm", "marketing/fb/acct_42/token")
    run("rm", "marketing/fb/acct_42/token", code=1)
    run("set", "bad key", input=FAKE, code=2)
    run("get", "shared/slack_token", "--json")
    everything = "\n".join(outputs)
    assert FAKE not in everything
    assert "shared/slack_token" in everything  # the runs did print something

    revealed = run_cli("get", "shared/slack_token", "--reveal")
    assert revealed.stdout == FAKE + "-v2\n"
    revealed_json = json.loads(run_cli("get", "shared/slack_token", "--reveal", "--json").stdout)
    assert revealed_json["value"] == FAKE + "-v2" and revealed_json["masked"] is False


def test_set_strips_one_newline_and_versions(initialised: Path) -> None:
    """stdin's trailing newline is dropped (unless --keep-newline); each set adds a version."""
    assert run_cli("set", "k", input="fake-1\n").returncode == 0
    assert run_cli("get", "k", "--reveal").stdout == "fake-1\n"
    assert run_cli("set", "k", "--keep-newline", input="fake-2\n").returncode == 0
    assert run_cli("get", "k", "--reveal").stdout == "fake-2\n\n"
    history = json.loads(run_cli("history", "k", "--json").stdout)
    assert [v["version"] for v in history["versions"]] == ["1", "2"]


def test_value_is_never_taken_from_argv(initialised: Path) -> None:
    """`pipekey set KEY VALUE` is a usage error and writes nothing."""
    result = run_cli("set", "k", "fake-on-argv")
    assert result.returncode == 2
    assert run_cli("get", "k").returncode == 1


@pytest.mark.parametrize("args", [
    pytest.param(["set", "k", "fake-token-acct42"], id="value"),
    pytest.param(["set", "k", "fake-token-acct42", "--json"], id="value-json"),
    pytest.param(["set", "k", "fake-token-acct42", "fake-more-acct42"], id="two-values"),
    pytest.param(["set", "k", "--", "--fake-token-acct42"], id="dashed-value"),
    pytest.param(["set", "k", "--fake-token-acct42"], id="value-as-long-option"),
    pytest.param(["set", "k", "-fake-token-acct42"], id="value-as-short-options"),
    pytest.param(["set", "k", "--backend=local", "fake-token-acct42"], id="after-option"),
])
def test_set_never_repeats_its_arguments(initialised: Path, args: list[str]) -> None:
    """A value typed on the command line is refused (exit 2) and never repeated in any message,
    which says that values come from stdin or a prompt."""
    result = run_cli(*args, input="fake-stdin-acct42")
    assert result.returncode == 2, result.stderr
    output = result.stdout + result.stderr
    assert "acct42" not in output and "fake-tok" not in output and "'-f" not in output
    assert "Traceback" not in output
    if "--" in args or "fake-token-acct42" in args:
        assert "values come from stdin or a hidden prompt" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert run_cli("get", "k").returncode == 1


def test_set_refuses_non_utf8_stdin_in_one_line(initialised: Path) -> None:
    """Bytes that are not UTF-8 on stdin: one line naming the key and the position, exit 2,
    no traceback, no byte values; nothing is written."""
    raw = b"fake-\xff\xfe-acct42\n"
    result = subprocess.run([sys.executable, "-m", "pipekey", "set", "k"], input=raw,
                            capture_output=True, timeout=60, check=False)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    assert stderr.strip() == ("pipekey: error: the value for 'k' on stdin is not UTF-8 text "
                              "(an invalid byte at position 5); nothing written")
    assert result.stdout == b"" and b"\xff" not in result.stderr
    assert run_cli("get", "k").returncode == 1


def test_empty_value_is_refused(initialised: Path) -> None:
    """An empty stdin writes nothing and exits 2 with one line."""
    result = run_cli("set", "k", input="")
    assert result.returncode == 2
    assert result.stderr.strip() == "pipekey: error: empty value for 'k'; nothing written"
    assert run_cli("get", "k").returncode == 1


@pytest.mark.parametrize("args, code, message", [
    pytest.param(["get", "missing/key"], 1, "secret 'missing/key' not found in local; set it: "
                                            "pipekey set missing/key",
                 id="not-found"),
    pytest.param(["get", "a/../b"], 2, "invalid key 'a/../b': segment 2 is '..'", id="bad-key"),
    pytest.param(["get", "k", "--bogus"], 2, "no such option '--bogus'", id="bad-flag"),
    pytest.param(["set", "k", "--backend", "nope"], 2, "no backend named 'nope'",
                 id="bad-backend"),
    pytest.param(["history", "never/set"], 1, "'never/set' not found in local; no history",
                 id="no-history"),
    pytest.param(["rm", "never/set"], 1, "'never/set' not found in local; nothing deleted",
                 id="rm-absent"),
])
def test_errors_exit_codes_and_one_line(initialised: Path, args, code, message) -> None:
    """Errors print one line on stderr with the right exit code, and no traceback."""
    result = run_cli(*args, input="fake")
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1


def test_json_error_shape(initialised: Path) -> None:
    """With --json, an error is also a JSON object on stdout."""
    result = run_cli("get", "missing/key", "--json")
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "SecretNotFound" and error["exit_code"] == 1


def test_invalid_manifest_is_a_usage_error(isolated: Path) -> None:
    """A broken manifest exits 2 with the file and field named."""
    (isolated / "pipekey.toml").write_text('[backends.x]\ntype = "nope"\n')
    result = run_cli("doctor")
    assert result.returncode == 2
    assert "pipekey.toml: backends.x.type: unknown backend type 'nope'" in result.stderr


def test_json_output_shapes(initialised: Path) -> None:
    """Each command's --json output parses and carries the documented fields."""
    run_cli("set", "a/b", input="fake")
    assert json.loads(run_cli("set", "a/c", "--json", input="fake").stdout)["version"] == "1"
    assert json.loads(run_cli("ls", "--json").stdout) == [
        {"key": "a/b", "backends": ["local"]}, {"key": "a/c", "backends": ["local"]}]
    got = json.loads(run_cli("get", "a/b", "--json").stdout)
    assert got["value"] is None and got["masked"] and got["backend"] == "local"
    explained = json.loads(run_cli("explain", "a/b", "--json").stdout)
    assert explained["found"] and explained["attempts"][0]["outcome"] == "found"
    doctor = json.loads(run_cli("doctor", "--json").stdout)
    assert doctor["chain"] == ["local"] and doctor["backends"][0]["ok"] is True
    removed = json.loads(run_cli("rm", "a/c", "--json").stdout)
    assert removed == {"key": "a/c", "backend": "local", "deleted": True}
    again = json.loads(run_cli("init", "--json").stdout)
    assert again["key_created"] is False and again["store_created"] is False


def test_doctor_fails_when_a_backend_fails(isolated: Path) -> None:
    """doctor exits 1 and says FAIL when a backend cannot answer."""
    (isolated / "pipekey.toml").write_text(
        '[backends.files]\ntype = "files"\npath = "missing.toml"\n')
    result = run_cli("doctor")
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "missing.toml does not exist" in result.stdout


def test_manifest_env_and_explain_walk(isolated: Path) -> None:
    """--env fills {env}; explain lists the env backend before the local store."""
    (isolated / "pipekey.toml").write_text(
        'chain = ["env", "local"]\n[backends.env]\ntype = "env"\n'
        '[backends.local]\ntype = "local"\npath = "{env}.db"\n')
    assert run_cli("--env", "prod", "init").returncode == 0
    assert (isolated / "prod.db").exists()
    assert run_cli("--env", "prod", "set", "db/pw", input="fake-local").returncode == 0
    result = run_cli("--env", "prod", "explain", "db/pw", "--json",
                     env={"PIPEKEY__DB__PW": "fake-env"})
    data = json.loads(result.stdout)
    assert data["backend"] == "env" and data["path"] == "$PIPEKEY__DB__PW"
    assert "fake-env" not in result.stdout


def test_explain_says_the_backend_failed(initialised: Path) -> None:
    """explain with a store that cannot be opened (another master key) says the backend
    failed and why, in text and JSON, never "not found"; exit 1."""
    assert run_cli("set", "k", input="fake-secret-acct42").returncode == 0
    other = {"PIPEKEY_MASTER_KEY": generate_master_key()}
    text = run_cli("explain", "k", env=other)
    assert text.returncode == 1, text.stderr
    assert "k could not be resolved: every backend failed: local (WrongMasterKey)" in text.stdout
    assert "not found" not in text.stdout + text.stderr
    data = json.loads(run_cli("explain", "k", "--json", env=other).stdout)
    assert (data["status"], data["failed_backends"]) == ("failed", ["local"])
    assert "does not open" in data["attempts"][0]["detail"]
    assert "fake-secret-acct42" not in text.stdout + text.stderr + json.dumps(data)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_each_command(command: str) -> None:
    """Every command has --help with --json documented."""
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "--json" in result.stdout and "Usage: pipekey " + command in result.stdout


def test_hidden_prompt_on_a_terminal(initialised: Path) -> None:
    """On a terminal, set prompts twice with echo off; the typed value is never shown."""
    master, slave = os.openpty()

    def make_controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekey", "set", "tty/key"], stdin=slave, stdout=slave,
        stderr=slave, start_new_session=True, preexec_fn=make_controlling_tty, close_fds=True)
    os.close(slave)
    screen = b""
    try:
        for _ in range(2):
            screen += _read_until(master, b": ")
            os.write(master, FAKE.encode() + b"\n")
        screen += _read_until(master, b"(version 1)")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        os.close(master)
    assert b"value for tty/key" in screen and b"Repeat for confirmation" in screen
    assert FAKE.encode() not in screen
    assert run_cli("get", "tty/key", "--reveal").stdout.strip() == FAKE


def _read_until(fd: int, marker: bytes, timeout: float = 20.0) -> bytes:
    data, end = b"", time.monotonic() + timeout
    while marker not in data and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    assert marker in data, f"never saw {marker!r} in {data!r}"
    return data


def test_set_key_equals_value_is_refused_without_repeating_it(isolated) -> None:
    """`pipekey set KEY=VALUE` (a habit from other tools) is refused in one line that
    repeats neither the key nor the value, with or without stdin."""
    for given in [None, "x"]:
        result = run_cli("set", "shared/tok=fake-set-eq-9876", input=given)
        assert result.returncode == 2
        assert "fake-set-eq-9876" not in result.stdout + result.stderr
        assert "stdin" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_command_registry_names_every_command() -> None:
    """`pipekey run` imports only its own module, so the registry of lazily imported commands
    (name -> module) must name every command the package's modules define, and nothing else."""
    from pipekey.cli import _common

    _common.cli.load_all()  # every module of pipekey.cli, in the registry or not
    defined = {name: cmd.callback.__module__ for name, cmd in _common.cli.commands.items()
               if name != "help" and cmd.callback is not None}
    assert defined == {name: f"pipekey.cli.{module}"
                       for name, module in _common.COMMANDS.items()}


def test_unknown_command_hint_and_help_list_every_command(isolated: Path) -> None:
    """Commands load on demand, yet `pipekey help` lists all of them and a misspelt command
    still gets its "did you mean" hint."""
    listing = run_cli("help")
    assert listing.returncode == 0
    for name in ("audit", "bench", "check", "copy", "diff", "doctor", "run", "set"):
        assert f"\n  {name} " in listing.stdout
    typo = run_cli("chek")
    assert typo.returncode == 2 and "did you mean `pipekey check`?" in typo.stderr


@pytest.mark.parametrize("args, extra, message", [
    pytest.param(["--env", "staging"], {}, "environment 'staging' (from --env) is "
                 "not one of environments ['dev', 'prod']", id="env-not-listed"),
    pytest.param([], {"PIPEKEY_ENV": "staging"}, "environment 'staging' (from $PIPEKEY_ENV) "
                 "is not one of environments ['dev', 'prod']", id="pipekey_env-not-listed"),
    pytest.param(["--env", "../prod"], {}, "env: is not a valid environment name (7 characters, "
                 "with '/'",
                 id="env-not-a-segment"),
])
def test_environment_outside_the_manifest_is_refused(isolated: Path, args, extra,
                                                     message) -> None:
    """--env and $PIPEKEY_ENV name only the manifest's environments: exit 2, one line
    naming the environment and the list."""
    (isolated / "pipekey.toml").write_text(
        'environments = ["dev", "prod"]\n[backends.local]\ntype = "local"\npath = "{env}.db"\n')
    result = run_cli(*args, "ls", env=extra)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(isolated.glob("*.db"))


def test_environment_a_backend_cannot_map_is_refused(isolated: Path) -> None:
    """--env prod__FINANCE with prefix LK_{env}__ would read prod's finance/... keys: exit 2,
    one line naming the environment and the backend, no value printed."""
    (isolated / "pipekey.toml").write_text(
        'chain = ["env"]\n[backends.env]\ntype = "env"\nprefix = "LK_{env}__"\n')
    result = run_cli("--env", "prod__FINANCE", "get", "ledger/api_key", "--reveal",
                     env={"LK_prod__FINANCE__LEDGER__API_KEY": "fake-prod-finance-key"})
    assert result.returncode == 2
    assert "environment 'prod__FINANCE' cannot be used with backend 'env'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "fake-" not in result.stdout + result.stderr
