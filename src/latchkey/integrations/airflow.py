"""Apache Airflow 3: a secrets backend with per-DAG isolation, log masking, and task runs.

Configure it for workers (and, if wanted, the other components)::

    [workers]
    secrets_backend = latchkey.integrations.airflow.LatchkeySecretsBackend
    secrets_backend_kwargs = {"manifest": "/opt/airflow/latchkey.toml", "env": "prod"}

While a task runs, every lookup is scoped to the DAG's pipeline (the manifest's ``dags``
patterns): ``conn_id`` resolves to the pipeline's mapped connection of that name, else to
``<connections_prefix>/<conn_id>`` if the pipeline's policy allows it (its scope, ``shared/``,
its grants). Another pipeline's connection is refused with Airflow's
``AirflowSecretsBackendAccessDenied``, so Airflow does not fall through to another backend; a
key latchkey does not hold at all returns None, so Airflow's own backends still answer for
what latchkey does not manage. Outside a task of a mapped DAG only ``shared/`` keys are served
(``outside_pipelines = "allow"`` serves everything, without isolation).

Everything returned is registered with Airflow's secrets masker and with latchkey's own
(``latchkey.redact``), which also guards the task's log handlers under ``dag.test()``, where
Airflow's masking is off.

In a task, :func:`task_run` (or the :func:`latchkey_task` decorator) opens a latchkey run for
the task: pipeline from the DAG, run name from DAG run, task and map index, parameters from
the call. dlt pipelines inside it then get that run's secrets.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .. import redact
from ..client import Latchkey, load
from ..errors import AccessDenied, LatchkeyError, MissingDependency, SecretNotFound, UsageError
from ..keys import is_under
from ..run import Run, add_value_listener, current

try:
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
    from airflow.secrets import BaseSecretsBackend
except ImportError:  # pragma: no cover - exercised without the extra
    raise MissingDependency("latchkey.integrations.airflow", "airflow") from None

__all__ = ["LatchkeySecretsBackend", "latchkey_task", "pipeline_for_dag", "task_run"]

_instances: dict[tuple[Any, Any], Latchkey] = {}
_instances_lock = threading.Lock()
_default: dict[str, Latchkey] = {}


def _latchkey(manifest: str | None, env: str | None) -> Latchkey:
    """One Latchkey per (manifest, env) per process, shared by the backend and task runs."""
    with _instances_lock:
        if (manifest, env) not in _instances:
            _instances[(manifest, env)] = load(manifest, env=env)
        lk = _instances[(manifest, env)]
        _default.setdefault("lk", lk)
        return lk


def _mask(value: str | None) -> None:
    if not value:
        return
    redact.register(value)
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # masking must never break a lookup
        pass


def pipeline_for_dag(lk: Latchkey, dag_id: str) -> str | None:
    """The pipeline whose ``dags`` patterns match ``dag_id`` (first in manifest order)."""
    for name, config in (lk.manifest.pipelines if lk.manifest else {}).items():
        if any(fnmatch.fnmatchcase(dag_id, pattern) for pattern in config.dags):
            return name
    return None


def _task_context() -> dict | None:
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:  # not inside a running task
        return None


class LatchkeySecretsBackend(BaseSecretsBackend):
    """An Airflow secrets backend reading the latchkey chain, scoped per DAG.

    Args:
        manifest: the latchkey.toml (default: ``$LATCHKEY_CONFIG``, then ./latchkey.toml).
        env: the environment (default: ``$LATCHKEY_ENV``, then the manifest's).
        connections_prefix, variables_prefix, config_prefix: where each kind lives; ``None``
            disables a kind (config is disabled unless a prefix is given).
        outside_pipelines: ``"shared_only"`` (default) or ``"allow"``: what is served outside
            a task of a DAG mapped to a pipeline.
    """

    def __init__(self, manifest: str | None = None, env: str | None = None,
                 connections_prefix: str | None = "airflow/connections",
                 variables_prefix: str | None = "airflow/variables",
                 config_prefix: str | None = None,
                 outside_pipelines: str = "shared_only") -> None:
        super().__init__()
        if outside_pipelines not in ("shared_only", "allow"):
            raise UsageError("outside_pipelines is 'shared_only' or 'allow'")
        self.lk = _latchkey(manifest, env)
        self.prefixes = {"connection": connections_prefix, "variable": variables_prefix,
                         "config": config_prefix}
        self.outside_pipelines = outside_pipelines
        _default["lk"] = self.lk
        add_value_listener(_mask)
        redact.install()

    # -- Airflow's interface ----------------------------------------------------------------
    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        run = current()
        if run is not None and conn_id in run.connection_keys:
            value = run.get(run.connection_keys[conn_id])
            _mask_connection(value)
            return value
        value = self._lookup("connection", conn_id)
        _mask_connection(value)
        return value

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        run = current()
        if run is not None and run.held(key) is not None:
            return run.held(key)
        return self._lookup("variable", key)

    def get_config(self, key: str) -> str | None:
        prefix = self.prefixes["config"]
        return None if prefix is None else self._read(self.lk.chain.get, f"{prefix}/{key}")

    # -- scoping --------------------------------------------------------------------------
    def _lookup(self, kind: str, name: str) -> str | None:
        prefix = self.prefixes[kind]
        if prefix is None:
            return None
        key = f"{prefix}/{name}"
        scope = self._scope()
        if scope is None:  # no pipeline: shared/ only, unless told otherwise
            if self.outside_pipelines == "allow" or is_under(key, "shared"):
                return self._read(self.lk.chain.get, key)
            return self._deny_if_held(key, f"{kind} {name!r} outside a latchkey pipeline")
        run, dag_id = scope
        if kind == "connection" and name in run.connection_keys:
            key = run.connection_keys[name]
        if not run.scope.allows(key):
            return self._deny_if_held(key, f"DAG {dag_id!r} (latchkey pipeline "
                                           f"{run.pipeline!r}) may not read {kind} {name!r}")
        return self._read(self.lk.chain_for(run.environment).get, key, run)

    def _scope(self) -> tuple[Run, str] | None:
        """The policy for this task: the active run, else the DAG's pipeline."""
        run = current()
        context = _task_context()
        dag_id = context["dag"].dag_id if context else None
        if run is not None:
            return run, dag_id or run.pipeline
        if dag_id is None:
            return None
        pipeline = pipeline_for_dag(self.lk, dag_id)
        if pipeline is None:
            return None
        params = _params_from(context, self.lk.pipeline_config(pipeline), {})
        try:
            return self.lk.pipeline(pipeline, **params), dag_id
        except UsageError as exc:
            raise AirflowSecretsBackendAccessDenied(
                f"DAG {dag_id!r}: {exc}; open a run in the task with "
                "latchkey.integrations.airflow.task_run(...)") from None

    def _read(self, get: Callable, key: str, run: Run | None = None) -> str | None:
        try:
            secret = get(key)
        except SecretNotFound:
            return None
        except AccessDenied as exc:
            raise AirflowSecretsBackendAccessDenied(str(exc)) from None
        if run is not None and secret.document and not run.scope.allows_subtree(key):
            raise AirflowSecretsBackendAccessDenied(
                f"latchkey pipeline {run.pipeline!r} may not read {key!r}: it is a document "
                "standing for a subtree outside the pipeline's scope, shared/ and grants")
        _mask(secret.value)
        return secret.value

    def _deny_if_held(self, key: str, why: str) -> None:
        """Refuse, authoritatively, a key latchkey holds; stay out of the way otherwise."""
        try:
            held = self.lk.chain.resolve([key])[key].found
        except LatchkeyError:
            held = True  # cannot tell: refuse rather than let another backend answer
        if held:
            raise AirflowSecretsBackendAccessDenied(why)
        return None


def _mask_connection(value: str | None) -> None:
    if not value:
        return
    for part in redact.secret_parts(value):
        _mask(part)
    try:
        from ..connection import Connection

        for secret in Connection.from_value(value).secret_values():
            _mask(secret)
    except LatchkeyError:
        pass


def _params_from(context: dict | None, config, explicit: dict[str, Any]) -> dict[str, str]:
    """Scope parameters: those given, else the DAG run's params of the same names."""
    fields = config.parameters()
    params = {k: str(v) for k, v in explicit.items() if k in fields}
    dag_params = (context or {}).get("params") or {}
    for field in fields - set(params):
        if field in dag_params and dag_params[field] is not None:
            params[field] = str(dag_params[field])
    return params


def _default_latchkey() -> Latchkey:
    return _default.get("lk") or _latchkey(None, None)


@contextmanager
def task_run(lk: Latchkey | None = None, **params: Any) -> Iterator[Run]:
    """Open a latchkey run for the running Airflow task.

    The pipeline is the one whose ``dags`` match the DAG; the run name is
    ``<dag_id>__<run_id>__<task_id>[__<map_index>]``; scope parameters come from ``params``,
    else from the DAG run's params. Values the run resolves are masked in the task log.
    """
    lk = lk or _default_latchkey()
    context = _task_context()
    if context is None:
        raise UsageError("task_run() works inside a running Airflow task")
    dag_id = context["dag"].dag_id
    pipeline = pipeline_for_dag(lk, dag_id)
    if pipeline is None:
        raise UsageError(f"DAG {dag_id!r} matches no latchkey pipeline (add it to a "
                         "pipeline's dags = [...] in the manifest)")
    ti = context["ti"]
    name = f"{dag_id}__{context['run_id']}__{ti.task_id}"
    if getattr(ti, "map_index", -1) is not None and getattr(ti, "map_index", -1) >= 0:
        name += f"__{ti.map_index}"
    add_value_listener(_mask)
    redact.install()
    with lk.pipeline(pipeline, run_name=name,
                     **_params_from(context, lk.pipeline_config(pipeline), params)) as run:
        yield run


def latchkey_task(fn: Callable) -> Callable:
    """Decorate a task function so it runs inside :func:`task_run`, with the scope parameters
    taken from its own arguments of the same names (``account=...``)::

        @task
        @latchkey_task
        def load(account: str): ...
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind_partial(*args, **kwargs)
        with task_run(**dict(bound.arguments)):
            return fn(*args, **kwargs)

    return wrapper
