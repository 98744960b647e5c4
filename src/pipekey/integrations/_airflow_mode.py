"""Broker mode on the worker side: which mode a task process is in, and its one request.

Kept apart from :mod:`pipekey.integrations.airflow` (which re-exports :func:`airflow_mode`
and :data:`MODE_ENV`) so that module stays about the backend and task runs.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import UsageError

__all__ = ["MODE_ENV", "airflow_conf", "airflow_mode", "fetch_variable", "warn_worker_backend",
           "worker_backend"]

#: the environment variable choosing how task runs get their values: "broker" or "direct"
MODE_ENV = "PIPEKEY_AIRFLOW_MODE"
_BACKEND_NAME = "PipekeySecretsBackend"
log = logging.getLogger("pipekey")


def airflow_mode() -> str:
    """How task runs get their values in this process: ``"broker"`` (from the API server,
    no backend built here) or ``"direct"`` (from the stores).

    ``$PIPEKEY_AIRFLOW_MODE`` decides if set; else ``"broker"`` when ``[core] multi_team``
    is on and no ``[workers] secrets_backend`` names PipekeySecretsBackend; else
    ``"direct"``.
    """
    chosen = os.environ.get(MODE_ENV, "").strip().lower()
    if chosen in ("broker", "direct"):
        return chosen
    if chosen:
        raise UsageError(f"{MODE_ENV} is 'broker' or 'direct', got {chosen!r}")
    multi_team = airflow_conf().getboolean("core", "multi_team", fallback=False)
    return "broker" if multi_team and not worker_backend() else "direct"


def airflow_conf() -> Any:
    try:
        from airflow.configuration import conf
    except ImportError:  # pragma: no cover - a worker with the task SDK alone
        from airflow.sdk.configuration import conf  # type: ignore[no-redef]
    return conf


def worker_backend() -> bool:
    """True if ``[workers] secrets_backend`` names PipekeySecretsBackend."""
    path = airflow_conf().get("workers", "secrets_backend", fallback="") or ""
    return bool(path.strip().rpartition(".")[2] == _BACKEND_NAME)


_warned: list[bool] = []


def fetch_variable(key: str) -> str | None:
    """One Variable through the Task SDK (task -> supervisor -> Execution API), kept out of
    the SDK's secrets cache (the payload is held by the run alone, and a refresh is fresh)."""
    from airflow.sdk import Variable
    from airflow.sdk.execution_time.cache import SecretCache

    SecretCache.invalidate_variable(key)
    try:
        value = Variable.get(key, default=None)
    finally:
        SecretCache.invalidate_variable(key)
    return None if value is None else str(value)


def warn_worker_backend() -> None:
    """One warning per process: broker mode with a worker-side pipekey backend."""
    if worker_backend() and not _warned:
        _warned.append(True)
        log.warning("pipekey: %s=broker, but [workers] secrets_backend names "
                    "PipekeySecretsBackend: a worker in broker mode should hold no store "
                    "credentials (remove the setting)", MODE_ENV)
