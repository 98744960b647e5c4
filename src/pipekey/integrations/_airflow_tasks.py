"""Task runs for the Airflow integration: :func:`task_run` and :func:`pipekey_task` open a
pipekey run for the running task (pipeline from the DAG, parameters and environment from the
call or the DAG run's params), directly or, in broker mode, from the API server
(:mod:`pipekey.broker`). Also the process's shared :class:`~pipekey.client.Pipekey` per
(manifest, env) and the backend's configured kwargs. Re-exported by
:mod:`pipekey.integrations.airflow`.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, ParamSpec, TypeVar

from .. import redact
from ..announce import add_values_listener
from ..errors import UsageError
from ..manifest import Manifest, load_manifest
from ..policy import check_parameters, dag_pipeline
from ..run import Run
from ._airflow_masking import mask_many, mask_std_streams
from ._airflow_mode import airflow_conf, airflow_mode, fetch_variable, warn_worker_backend

if TYPE_CHECKING:
    from ..client import Pipekey
    from ..manifest import PipelineConfig

__all__ = ["BACKEND_CLASS", "ENV_PARAM", "configured_kwargs", "env_from", "params_from",
           "pipekey_for", "pipekey_task", "pipeline_for_dag", "process_default", "task_context",
           "task_run"]

#: the class name Airflow's config must end with for :func:`configured_kwargs` to use its kwargs
BACKEND_CLASS = "PipekeySecretsBackend"

_instances: dict[tuple[Any, Any], Pipekey] = {}
_instances_lock = threading.Lock()
process_default: dict[str, Pipekey] = {}
#: the DAG run param that chooses the environment of a task's run
ENV_PARAM = "pipekey_env"


def pipekey_for(manifest: str | None, env: str | None) -> Pipekey:
    """One Pipekey per (manifest, env) per process, shared by the backend and task runs."""
    with _instances_lock:
        if (manifest, env) not in _instances:
            from ..client import load  # direct mode only: a brokered task builds no chain

            _instances[(manifest, env)] = load(manifest, env=env)
        lk = _instances[(manifest, env)]
        process_default.setdefault("lk", lk)
        return lk


def pipeline_for_dag(lk: Pipekey | Manifest, dag_id: str) -> str | None:
    """The pipeline whose ``dags`` patterns match ``dag_id`` (first in manifest order)."""
    manifest = lk if isinstance(lk, Manifest) else lk.manifest
    return dag_pipeline(manifest.pipelines if manifest else {}, dag_id)


def task_context() -> Mapping[str, Any] | None:
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:  # not inside a running task
        return None


def params_from(context: Mapping[str, Any] | None, config: PipelineConfig,
                 explicit: dict[str, Any]) -> dict[str, str]:
    """Scope parameters: those given, else the DAG run's params of the same names."""
    fields = config.parameters()
    params = {k: str(v) for k, v in explicit.items() if k in fields}
    dag_params = (context or {}).get("params") or {}
    for field_name in fields - set(params):
        if field_name in dag_params and dag_params[field_name] is not None:
            params[field_name] = str(dag_params[field_name])
    return params


def env_from(context: Mapping[str, Any] | None, explicit: Any) -> str | None:
    """The environment: the one given, else the DAG run's ``pipekey_env`` param, else None
    (the process's default)."""
    if explicit is not None:
        return str(explicit)
    chosen = ((context or {}).get("params") or {}).get(ENV_PARAM)
    return None if chosen in (None, "") else str(chosen)


_BACKEND_SETTINGS = (("workers", "secrets_backend", "secrets_backend_kwargs"),
                     ("secrets", "backend", "backend_kwargs"))


def configured_kwargs() -> dict[str, Any] | None:
    """The kwargs Airflow was given for :class:`PipekeySecretsBackend`: ``[workers]
    secrets_backend_kwargs`` if ``[workers] secrets_backend`` names it, else ``[secrets]
    backend_kwargs`` if ``[secrets] backend`` does (with Airflow's per-key
    ``..._KWARG__NAME`` environment overrides); None if neither names it."""
    conf = airflow_conf()
    for section, key, kwargs_key in _BACKEND_SETTINGS:
        path = conf.get(section, key, fallback="") or ""
        if path.strip().rpartition(".")[2] != BACKEND_CLASS:
            continue
        raw = conf.get(section, kwargs_key, fallback="") or ""
        try:
            kwargs = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise UsageError(f"[{section}] {kwargs_key} is not JSON") from None
        if not isinstance(kwargs, dict):
            raise UsageError(f"[{section}] {kwargs_key} is not a JSON object")
        kwarg = kwargs_key.replace("_kwargs", "_kwarg").upper()
        env_prefix = f"AIRFLOW__{section.upper()}__{kwarg}__"
        kwargs.update({k[len(env_prefix):].lower(): v for k, v in os.environ.items()
                       if k.startswith(env_prefix) and len(k) > len(env_prefix)})
        return kwargs
    return None


def _default_pipekey() -> Pipekey:
    """The Pipekey of the configured manifest: the backend's kwargs as Airflow has them,
    else one a backend built in this process, else ``$PIPEKEY_CONFIG`` / ./pipekey.toml."""
    kwargs = configured_kwargs()
    if kwargs is not None:
        return pipekey_for(kwargs.get("manifest"), kwargs.get("env"))
    return process_default.get("lk") or pipekey_for(None, None)


@contextmanager
def task_run(lk: Pipekey | None = None, *, env: str | None = None,
             **params: Any) -> Iterator[Run]:
    """Open a pipekey run for the running Airflow task.

    The pipeline is the one whose ``dags`` match the DAG; the run name is
    ``<dag_id>__<run_id>__<task_id>[__<map_index>]``; scope parameters come from ``params``,
    else from the DAG run's params; the environment from ``env``, else the DAG run's
    ``pipekey_env`` param, else the process's. Values the run resolves are masked in the
    task log and in the process's stdout and stderr.

    Raises:
        UsageError: not in a task, the DAG matches no pipeline, or a parameter is unknown.
    """
    with _task_run(lk, env, params, strict=True) as run:
        yield run


@contextmanager
def _task_run(lk: Pipekey | None, env: Any, params: dict[str, Any],
              strict: bool) -> Iterator[Run]:
    context = task_context()
    if context is None:
        raise UsageError("task_run() works inside a running Airflow task")
    dag_id = context["dag"].dag_id
    brokered = lk is None and airflow_mode() == "broker"

    manifest: Manifest | None
    if brokered:  # the manifest alone: no backend is built in this process
        warn_worker_backend()
        manifest = load_manifest((configured_kwargs() or {}).get("manifest"))
    else:
        lk = lk or _default_pipekey()
        manifest = lk.manifest
    pipeline = pipeline_for_dag(manifest, dag_id) if manifest else None
    if manifest is None or pipeline is None:
        where = manifest.path if manifest and manifest.path else "no manifest found"
        raise UsageError(f"DAG {dag_id!r} matches no pipekey pipeline in {where} (add it to "
                         "a pipeline's dags = [...] in the manifest)")
    config = manifest.pipelines[pipeline]
    if strict:
        check_parameters(pipeline, config.parameters(), params)
    ti = context["ti"]
    name = f"{dag_id}__{context['run_id']}__{ti.task_id}"
    if getattr(ti, "map_index", -1) is not None and getattr(ti, "map_index", -1) >= 0:
        name += f"__{ti.map_index}"
    add_values_listener(mask_many)
    redact.install()
    mask_std_streams()
    chosen, filled = env_from(context, env), params_from(context, config, params)
    if brokered:
        from ..broker import brokered_run  # broker mode only

        opened = brokered_run(manifest, pipeline, fetch_variable, env=chosen,
                              params=filled, run_name=name)
    else:
        assert lk is not None
        opened = lk.pipeline(pipeline, run_name=name, env=chosen, **filled)
    with opened as run:
        yield run


_P = ParamSpec("_P")
_R = TypeVar("_R")


def pipekey_task(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a task function so it runs inside :func:`task_run`, with the scope parameters
    (and ``env``) taken from its own arguments of the same names (``account=...``)::

        @task
        @pipekey_task
        def load(account: str, env: str | None = None): ...
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        arguments = dict(signature.bind_partial(*args, **kwargs).arguments)
        env = arguments.pop("env", None)
        with _task_run(None, env, arguments, strict=False):
            return fn(*args, **kwargs)

    return wrapper
