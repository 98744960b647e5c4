"""The core suite runs with ``pip install -e '.[test]'`` alone: with every optional SDK hidden,
the suite collects without an error and an integration's tests skip, naming the extra."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: top-level modules the optional extras (and only they) install
SDKS = ("airflow", "dlt", "duckdb", "hvac", "google", "azure", "psycopg2", "prometheus_client",
        "opentelemetry", "matplotlib", "sqlalchemy", "aws_secretsmanager_caching")

# Runs pytest with the SDKs above unimportable, as in a venv holding only the test extra.
HIDDEN = f"""
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {SDKS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hide())
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _pytest_without_sdks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDDEN, "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_test_extra_pulls_no_sdk_and_brings_ruff() -> None:
    """The test extra holds test tools only (no Airflow, dlt or cloud SDK) and ruff."""
    test_extra = PYPROJECT["project"]["optional-dependencies"]["test"]
    names = {re.split(r"[\[<>=; ]", req, maxsplit=1)[0].lower() for req in test_extra}
    assert "ruff" in names
    sdk_extras = {"aws", "vault", "gcp", "azure", "airflow", "dlt", "postgres", "metrics",
                  "bench", "all"}
    assert not names & sdk_extras and not any(n.startswith("pipekey") for n in names)
    assert not any("airflow" in n or "dlt" in n for n in names)


@pytest.mark.slow
def test_suite_collects_without_the_sdks() -> None:
    """Collection of the whole suite succeeds with every SDK hidden."""
    result = _pytest_without_sdks("--collect-only", "-q")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "error" not in result.stdout.lower().rsplit("\n", 3)[-2]


@pytest.mark.slow
def test_integration_tests_skip_with_the_extra_to_install() -> None:
    """Without their SDKs, the Vault, GCP, Azure, dlt and Airflow tests and the contract
    suite's cloud backends skip, each saying which extra installs what is missing."""
    result = _pytest_without_sdks(
        "-q", "-rA", "tests/stores/test_vault.py", "tests/stores/test_gcp_secret_manager.py",
        "tests/stores/test_azure_key_vault.py", "tests/integrations/test_dlt.py",
        "tests/integrations/test_airflow.py", "tests/stores/test_backend_contract.py",
        "-k", "vault or gcp or azure or dlt or airflow")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "failed" not in output and "error" not in output
    # what runs without an SDK is the contract suite's configuration-level checks (how an
    # environment maps to store names): no store is built, so no SDK is needed
    passed = [line for line in output.splitlines() if line.startswith("PASSED")]
    assert all("environment" in line for line in passed), passed
    for extra in ("vault", "gcp", "azure", "dlt", "airflow"):
        assert f"pip install -e '.[{extra}]'" in output, extra
