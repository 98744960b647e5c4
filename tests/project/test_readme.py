"""The README's commands work as written, and CI runs exactly its test command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..extras import need

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_the_two_setup_commands() -> None:
    """The first block holds two commands: the quickstart, then the test suite."""
    quickstart, tests = _commands(_blocks("bash")[0])
    assert "examples/quickstart/run.sh" in quickstart and "pip install" in quickstart
    assert tests.endswith("python -m pytest")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """.ci/run contains the README's test command, verbatim, as a line of its own."""
    _, tests = _commands(_blocks("bash")[0])
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_ci_gates_on_ruff_mypy_and_the_extras_free_core_suite() -> None:
    """.ci/run also fails on a ruff finding, a strict mypy error, and on the core suite run in
    a fresh venv that holds the test extra alone (no SDK extra)."""
    ci = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    lines = [" ".join(line.split()) for line in ci.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in lines
    assert "python -m ruff check src tests" in lines
    assert "python -m mypy" in lines
    venv = lines.index('python -m venv "$core/venv"')
    install = ('"$core/venv/bin/python" -m pip install --progress-bar off -q '
               "--no-build-isolation -e '.[test]' -c scripts/requirements-lock.txt")
    assert lines.index(install) > venv
    assert lines.index('"$core/venv/bin/python" -m pytest -m "not slow" -p no:cacheprovider') \
        > lines.index(install)


def _env(path_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_tour_and_python_example_run(isolated: Path) -> None:
    """The tour's shell block and the Python block run in an empty folder, as written."""
    if shutil.which("pipekey", path=_env(isolated)["PATH"]) is None:
        pytest.skip("the pipekey command is not installed (pip install -e .)")
    tour = _blocks("bash")[1]
    shell = subprocess.run(["bash", "-euo", "pipefail", "-c", tour], capture_output=True,
                           text=True, cwd=isolated, env=_env(isolated), timeout=120)
    assert shell.returncode == 0, shell.stderr
    assert "shared/slack_token = ***  (local, version 1)" in shell.stdout
    assert re.search(r"env .*found", shell.stdout) and "shadowed" in shell.stdout
    assert shell.stdout.count("fake-slack-token") == 1  # only the --reveal line

    python = subprocess.run([sys.executable, "-c", _blocks("python")[0]], capture_output=True,
                            text=True, cwd=isolated, env=_env(isolated), timeout=60)
    assert python.returncode == 0, python.stderr
    assert "value='***'" in python.stdout and "fake" not in python.stdout


@pytest.mark.slow
def test_quickstart_runs_and_prints_no_value(tmp_path: Path) -> None:
    """examples/quickstart/run.sh finishes and prints provenance, never a value."""
    need("dlt")  # the README installs it first: pip install -e '.[dlt]'
    env = _env(tmp_path)
    env["QUICKSTART_DIR"] = str(tmp_path / "qs")
    result = subprocess.run(["bash", str(ROOT / "examples" / "quickstart" / "run.sh")],
                            capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "== quickstart done" in output
    assert re.search(r"acct_42: run quickstart__acct_42 ready in [\d.]+ ms; api_token from local "
                     r"marketing/ads/acct_42/api_token \(version 1\); loaded 5 campaigns of "
                     r"acct_42 into duckdb warehouse_acct_42.duckdb", output), output
    assert "the ads API accepted 2 requests and refused 0" in output
    assert "fake-token-acct" not in output and "fake-slack-token" not in output


def _explain_sample() -> list[str]:
    """The output lines the README's tour shows under its `pipekey explain` line."""
    lines = _blocks("bash")[1].splitlines()
    start = next(i for i, line in enumerate(lines) if "pipekey explain" in line) + 1
    sample = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        sample.append(line[4:])
    return sample


def test_readme_explain_sample_is_what_explain_prints(isolated: Path) -> None:
    """The tour's `pipekey explain` sample matches the real command's output, line by line
    (whitespace aside; $PWD is the folder it runs in)."""
    from ..conftest import run_cli

    assert run_cli("init").returncode == 0
    assert run_cli("set", "shared/slack_token", input="fake-slack-token").returncode == 0
    (isolated / "pipekey.toml").write_text(
        '[backends.env]\ntype = "env"\n[backends.local]\ntype = "local"\n')
    result = run_cli("explain", "shared/slack_token",
                     env={"PIPEKEY__SHARED__SLACK_TOKEN": "fake-env", "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    expected = [line.replace("$PWD", str(isolated)).split() for line in _explain_sample()]
    assert len(expected) == 4
    assert [line.split() for line in result.stdout.strip().splitlines()] == expected
    assert "fake-env" not in result.stdout and "fake-slack-token" not in result.stdout


def test_readme_states_the_suite_time_measured_on_two_cores() -> None:
    """The README gives the suite's duration as measured on the stated 2-core set-up."""
    assert "about 13 minutes on a 2-core machine" in README
    assert "about three minutes" not in README


def test_cli_docs_list_every_command() -> None:
    """docs/cli.md and the README's command table name every command `pipekey --help`
    lists."""
    help_text = subprocess.run([sys.executable, "-m", "pipekey", "--help"], capture_output=True,
                               text=True, timeout=60, check=True).stdout
    listing = help_text.split("Commands:", 1)[1]
    commands = re.findall(r"^  ([a-z][a-z-]*)\s", listing, flags=re.M)
    assert {"check", "copy", "diff", "audit", "doctor"} <= set(commands)
    cli_md = (ROOT / "docs" / "cli.md").read_text()
    for command in commands:
        assert f"`pipekey {command}" in cli_md, command
        assert f"| `pipekey {command}" in README, command


def test_docs_index_lists_every_page_with_a_summary() -> None:
    """docs/README.md has one row per docs page with a one-line summary, and the
    troubleshooting page answers the questions users bring first."""
    index = (ROOT / "docs" / "README.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md")
    rows = dict(re.findall(r"^\| \[([a-z_]+\.md)\]\(\1\) \| (.+) \|$", index, flags=re.M))
    assert sorted(rows) == pages
    assert all(len(summary) > 20 for summary in rows.values())
    trouble = (ROOT / "docs" / "troubleshooting.md").read_text()
    headings = re.findall(r"^## (.+)$", trouble, flags=re.M)
    for topic in ("why did my run get this value", "not found", "wrong value", "no region",
                  "throttling", "backend is down"):
        assert any(topic in h.lower() for h in headings), topic


@pytest.mark.parametrize("doc", ["README.md", "CONTRIBUTING.md"])
def test_the_docs_name_every_ci_gate(doc: str) -> None:
    """README's Development section and CONTRIBUTING say what CI gates on, in the commands
    .ci/run runs: ruff, strict mypy, and the core suite in a venv with the test extra alone."""
    text = " ".join((ROOT / doc).read_text().split())
    if doc == "README.md":
        text = text[text.index("## Development"):]
    for gate in ("ruff check src tests", "strict", "mypy", 'pytest -m "not slow"', ".[test]"):
        assert gate in text, gate
    if doc == "CONTRIBUTING.md":
        assert all(f"| {row} (a CI gate) |" in text for row in ("lint", "types"))
    else:
        assert "fails CI" in text
