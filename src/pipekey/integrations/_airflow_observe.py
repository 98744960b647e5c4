"""The Airflow backend in observe mode (:mod:`pipekey.observe`): a lookup enforcement would
refuse is served by the drop-in rule instead, and every lookup is recorded with what
enforcement would decide.

Kept apart from :mod:`pipekey.integrations.airflow`, which calls :func:`observed_lookup`
from its lookup in ``mode="observe"``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from .. import observe
from ..policy import task_reader
from ..run import current

if TYPE_CHECKING:
    from .airflow import PipekeySecretsBackend

__all__ = ["observed_lookup"]


def observed_lookup(backend: PipekeySecretsBackend, kind: str, name: str,
                    team: str | None) -> str | None:
    """``kind`` ``name`` as enforcement answers it, else as the drop-in rule does; recorded.

    Raises:
        AirflowSecretsBackendAccessDenied: a store failed (never for a policy refusal).
    """
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    from .airflow import _env_from, _task_context

    prefix = backend.prefixes[kind]
    if prefix is None:
        return None
    key = f"{prefix}/{name}"
    start = time.perf_counter()
    enforce, why = "allow", None
    try:
        value = backend._enforce(kind, name)
    except AirflowSecretsBackendAccessDenied as exc:
        enforce, why = "refuse", str(exc)
        value = backend._read(backend.lk.chain.get, key)  # the answer without enforcement
    context = _task_context()
    dag = context["dag"].dag_id if context else None
    dag_params: Mapping[str, Any] = (context or {}).get("params") or {}
    pipeline, env, scope_params = _reader(backend, dag, dag_params, _env_from(context, None))
    if enforce == "allow" and kind == "connection" and current() is None and pipeline:
        reader = task_reader(backend.lk.manifest.pipelines if backend.lk.manifest else {},
                             dag or "", env, scope_params)
        key = reader.policy.connection_keys.get(name, key)  # served from its mapping
    observe.record(
        backend.lk.audit, key=key, lookup=f"{kind}:{name}",
        outcome="ok" if value is not None else "absent", enforce=enforce, dag=dag,
        task=context["ti"].task_id if context else None, team=team, env=env,
        pipeline=pipeline, params=observe.key_params(dag_params, key, scope_params),
        latency_ms=round((time.perf_counter() - start) * 1000, 3), detail=why)
    return value


def _reader(backend: PipekeySecretsBackend, dag: str | None, dag_params: Mapping[str, Any],
            env: str | None) -> tuple[str | None, str, dict[str, str]]:
    """The DAG's pipeline (if any), the environment it reads in, and its scope parameters
    from the DAG run's params."""
    from .airflow import _params_from, pipeline_for_dag

    lk = backend.lk
    pipeline = pipeline_for_dag(lk, dag) if dag else None
    if pipeline is None:
        return None, env or lk.env, {}
    config = lk.pipeline_config(pipeline)
    params = _params_from({"params": dag_params}, config, {})
    return pipeline, lk.environment_for(config, env), params
