"""The optional extras the tests need. A test of an integration or cloud SDK skips, naming what
to install, when its SDK is missing, so the core suite runs with ``pip install -e '.[test]'``
alone; CI installs every extra and runs everything."""

from __future__ import annotations

from types import ModuleType

import pytest

#: extra -> (the module whose absence means it is missing, how to install it)
EXTRAS = {
    "airflow": ("airflow", "pip install -e '.[airflow]'"),
    "azure": ("azure.keyvault.secrets", "pip install -e '.[azure]'"),
    "bench": ("matplotlib", "pip install -e '.[bench]'"),
    "dlt": ("dlt", "pip install -e '.[dlt]'"),
    "gcp": ("google.cloud.secretmanager", "pip install -e '.[gcp]'"),
    "metrics": ("prometheus_client", "pip install -e '.[metrics]'"),
    "postgres": ("psycopg2", "pip install -e '.[postgres]'"),
    "selenium": ("selenium", "pip install -e '.[test]' (and scripts/setup-dev.sh for chromium)"),
    "sqlalchemy": ("sqlalchemy", "pip install sqlalchemy (the airflow and dlt extras pull it)"),
    "ui": ("fastapi", "pip install -e '.[ui]'"),
    "vault": ("hvac", "pip install -e '.[vault]'"),
}


def need(extra: str, module: str | None = None) -> ModuleType:
    """Import the extra's module (or ``module``, which the extra installs), or skip the test
    saying what is missing and the line that installs it."""
    default, install = EXTRAS[extra]
    name = module or default
    return pytest.importorskip(name, reason=f"{name} is not installed: {install}")
