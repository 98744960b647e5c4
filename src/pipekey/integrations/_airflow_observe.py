"""The Airflow backend in observe mode (:mod:`pipekey.observe`): a lookup enforcement would
refuse is served by the drop-in rule instead, and every lookup is recorded with what
enforcement would decide.

Kept apart from :mod:`pipekey.integrations.airflow`, which calls :func:`observed_lookup`
from its lookup in ``mode="observe"``.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from .. import observe
from ..policy import dag_pipeline
from ..run import current
from ..task_policy import task_reader

__all__ = ["observed_lookup"]


def observed_lookup(backend: Any, kind: str, name: str, team: str | None,
                    context: Mapping[str, Any] | None, env: str | None) -> str | None:
    """``kind`` ``name`` as enforcement answers it, else as the drop-in rule does; recorded.
    ``backend``: the PipekeySecretsBackend; ``context``: the task's (None outside a task);
    ``env``: the environment the DAG run chose, if any.

    Raises:
        AirflowSecretsBackendAccessDenied: a store failed (never for a policy refusal).
    """
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    prefix = backend.prefixes[kind]
    if prefix is None:
        return None
    key = f"{prefix}/{name}"
    start = time.perf_counter()
    enforce, why = "allow", None
    value: str | None
    try:
        value = backend._enforce(kind, name)
    except AirflowSecretsBackendAccessDenied as exc:
        enforce, why = "refuse", str(exc)
        value = backend._read(backend.lk.chain.get, key)  # the answer without enforcement
    dag = context["dag"].dag_id if context else None
    dag_params: Mapping[str, Any] = (context or {}).get("params") or {}
    pipeline, env, scope_params = _reader(backend, dag, dag_params, env)
    run = current()
    if enforce == "allow" and kind == "connection" and run is None and pipeline:
        reader = task_reader(backend.lk.manifest.pipelines if backend.lk.manifest else {},
                             dag or "", env, scope_params)
        key = reader.policy.connection_keys.get(name, key)  # served from its mapping
    observe.record(
        backend.lk.audit, key=key, lookup=f"{kind}:{name}",
        outcome="ok" if value is not None else "absent", enforce=enforce, dag=dag,
        task=context["ti"].task_id if context else None, team=team, env=env,
        pipeline=pipeline, params=observe.key_params(dag_params, key, scope_params),
        run=run.name if run is not None else None,
        latency_ms=round((time.perf_counter() - start) * 1000, 3), detail=why)
    return value


def _reader(backend: Any, dag: str | None, dag_params: Mapping[str, Any],
            env: str | None) -> tuple[str | None, str, dict[str, str]]:
    """The DAG's pipeline (if any), the environment it reads in, and its scope parameters
    from the DAG run's params."""
    lk = backend.lk
    pipelines = lk.manifest.pipelines if lk.manifest else {}
    pipeline = dag_pipeline(pipelines, dag) if dag else None
    if pipeline is None:
        return None, env or lk.env, {}
    config = pipelines[pipeline]
    params = {k: str(v) for k, v in dag_params.items()
              if k in config.parameters() and v is not None}
    return pipeline, lk.environment_for(config, env), params
