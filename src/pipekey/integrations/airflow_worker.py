"""Broker mode on a worker: hooks and operators answered from the task's open pipekey run.

Configure it on the workers (never on the API server)::

    [workers]
    secrets_backend = pipekey.integrations.airflow_worker.PipekeyRunBackend

Airflow then asks it first for every connection and Variable a task looks up
(``BaseHook.get_connection``, ``PostgresHook(postgres_conn_id=...)``, ``Variable.get``),
before its environment variables and the Execution API (the API server's broker). Inside an
open pipekey run of the task (``task_run`` / ``@pipekey_task``), it answers from the values
the run holds, which the broker already delivered:

* a ``conn_id`` the run's pipeline maps (``connections = { warehouse =
  "connections/wh_{account}" }``, filled with the run's parameters) is that connection; one
  mapped to ``dynamic:NAME`` is the login minted for the run;
* a Variable whose key is a secret name the run holds is that secret.

Anything else, and everything outside a run, is None here, so Airflow goes on to the API
server, which answers within the task's team. It builds no pipekey backend and holds no
store credential: it only reads the run the task opened. A run is the current one in the
thread (or asyncio task) that opened it; a hook called from another thread sees it after
``run.attach()`` there.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from .. import redact
from ..broker import is_request
from ..errors import PipekeyError, UsageError
from ..run import current

try:
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
    from airflow.secrets import BaseSecretsBackend
except ImportError:  # pragma: no cover - exercised without the extra
    from ..errors import MissingDependency

    raise MissingDependency("pipekey.integrations.airflow_worker", "airflow") from None

__all__ = ["PipekeyRunBackend"]


@contextmanager
def _refusing(what: str) -> Iterator[None]:
    """A run that fails to answer (closed under a thread that attached it, a mapped
    connection that does not parse) refuses: Airflow does not ask its next backend."""
    try:
        yield
    except PipekeyError as exc:
        raise AirflowSecretsBackendAccessDenied(
            f"pipekey: the task's run could not answer {what}: "
            f"{redact.redactor().redact(str(exc))}") from None


class PipekeyRunBackend(BaseSecretsBackend):
    """``[workers] secrets_backend``: a task's lookups answered from its open pipekey run
    first (see the module docstring). Takes no arguments."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        if kwargs:
            raise UsageError(f"PipekeyRunBackend takes no secrets_backend_kwargs (got "
                             f"{sorted(kwargs)}): it reads the task's open run only")

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        run = current()
        if run is None:
            return None
        with _refusing(f"connection {conn_id!r}"):
            if conn_id in run.connection_keys:
                return run.get(run.connection_keys[conn_id])
            if conn_id in run.dynamic:  # the login minted for this run
                return run.connection(conn_id).to_json()
        return None

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        run = current()
        if run is None or is_request(key):
            return None
        with _refusing(f"Variable {key!r}"):
            return run.held(key)

    def get_config(self, key: str) -> str | None:
        return None
