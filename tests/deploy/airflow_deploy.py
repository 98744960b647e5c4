"""What the Airflow deployment tests share: examples/airflow/deploy.py loaded as a module, and
why a Celery deployment cannot run here (None when it can)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def deploy_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pipekey_airflow_deploy", ROOT / "examples" / "airflow" / "deploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def celery_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (scripts/setup-dev.sh installs it)"
    if importlib.util.find_spec("airflow.providers.celery") is None:
        return "the Celery provider is not installed (pip install 'pipekey[airflow-celery]')"
    return None
