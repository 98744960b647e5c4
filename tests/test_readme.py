"""The README's commands work as written, and CI runs exactly its test command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


def _env(path_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_tour_and_python_example_run(isolated: Path) -> None:
    """The tour's shell block and the Python block run in an empty folder, as written."""
    if shutil.which("latchkey", path=_env(isolated)["PATH"]) is None:
        pytest.skip("the latchkey command is not installed (pip install -e .)")
    tour = _blocks("bash")[1]
    shell = subprocess.run(["bash", "-euo", "pipefail", "-c", tour], capture_output=True,
                           text=True, cwd=isolated, env=_env(isolated), timeout=120)
    assert shell.returncode == 0, shell.stderr
    assert "shared/slack_token = ********  (local, version 1)" in shell.stdout
    assert re.search(r"env .*found", shell.stdout) and "shadowed" in shell.stdout
    assert shell.stdout.count("fake-slack-token") == 1  # only the --reveal line

    python = subprocess.run([sys.executable, "-c", _blocks("python")[0]], capture_output=True,
                            text=True, cwd=isolated, env=_env(isolated), timeout=60)
    assert python.returncode == 0, python.stderr
    assert "value='********'" in python.stdout and "fake" not in python.stdout


@pytest.mark.slow
def test_quickstart_runs_and_prints_no_value(tmp_path: Path) -> None:
    """examples/quickstart/run.sh finishes and prints provenance, never a value."""
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
