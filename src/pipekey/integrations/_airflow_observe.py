"""The Airflow backend in observe mode (:mod:`pipekey.observe`): a lookup enforcement would
refuse is served by the drop-in rule instead, and every lookup is recorded with what
enforcement would decide.

Kept apart from :mod:`pipekey.integrations.airflow`, which calls :func:`observed_lookup`
from its lookup in ``mode="observe"``; the drop-in (``compat``) records through
:class:`CompatObserver`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .. import observe
from ..errors import InvalidKey, UsageError
from ..keys import validate_key
from ..manifest import Manifest, load_manifest
from ..policy import airflow_names, dag_pipeline
from ..policy.tasks import task_reader
from ..run import current
from ._airflow_mode import airflow_conf

if TYPE_CHECKING:
    from ..manifest import PipelineConfig

__all__ = ["COMPAT_SINK", "CompatObserver", "observed_lookup"]


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
        key, value = _dropin_read(backend, kind, prefix, name, team)  # without enforcement
    dag = context["dag"].dag_id if context else None
    dag_params: Mapping[str, Any] = (context or {}).get("params") or {}
    lk = backend.lk
    pipeline, env, scope_params = _reader(lk.manifest, dag, dag_params, env,
                                          lk.environment_for, lk.env)
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


def _dropin_read(backend: Any, kind: str, prefix: str, name: str,
                 team: str | None) -> tuple[str, str | None]:
    """The drop-in's answer (:func:`pipekey.policy.airflow_names`): the caller's own team's
    ``<prefix>/<team>--<name>`` first, then ``<prefix>/<name>``; nothing for a name holding
    ``--`` in multi-team mode (it could spell another team's). The key that answered (else
    the plain one) and its value (None: absent or refused)."""
    multi_team = airflow_conf().getboolean("core", "multi_team", fallback=False)
    names = airflow_names(prefix, name, team if kind != "config" else None,
                          multi_team=multi_team)
    for key in names:
        try:
            value = backend._read(backend.lk.chain.get, validate_key(key))
        except InvalidKey:  # a team name no key can hold
            continue
        if value is not None:
            return key, value
    return f"{prefix}/{name}", None


def _reader(manifest: Manifest | None, dag: str | None, dag_params: Mapping[str, Any],
            env: str | None, environment_for: Callable[[PipelineConfig, str | None], str],
            default: str) -> tuple[str | None, str, dict[str, str]]:
    """The DAG's pipeline (if any), the environment it reads in (``environment_for``;
    ``default`` with no pipeline), and its scope parameters from the DAG run's params."""
    pipelines = manifest.pipelines if manifest else {}
    pipeline = dag_pipeline(pipelines, dag) if dag else None
    if pipeline is None:
        return None, env or default, {}
    config = pipelines[pipeline]
    params = {k: str(v) for k, v in dag_params.items()
              if k in config.parameters() and v is not None}
    return pipeline, environment_for(config, env), params


#: how to give the drop-in's observe mode an audit sink
COMPAT_SINK = ('add "audit": {"sinks": [{"type": "file", "path": '
               '"/usr/local/airflow/logs/pipekey-audit.jsonl"}]} to them')


class CompatObserver:
    """The drop-in (``"compat": "ssm"`` / ``"secrets_manager"``) in observe mode: every
    lookup is answered as the drop-in answers it, and recorded with what enforcement under
    ``manifest`` would decide (:class:`pipekey.replay.Replayer`, the rule of ``pipekey check
    --replay``; with no manifest, one with no pipelines: every DAG's read is ``refuse``)."""

    def __init__(self, lk: Any, manifest: str | None, env: str | None) -> None:
        from ..replay import Replayer

        observe.check_observable(lk.audit, "these backend_kwargs", COMPAT_SINK)
        self.audit = lk.audit
        self.manifest: Manifest = load_manifest(manifest, env) if manifest else lk.manifest
        self.replayer = Replayer(self.manifest)

    def _environment_for(self, config: PipelineConfig, env: str | None) -> str:
        """Pipekey.environment_for's rule, for a manifest with no Pipekey built on it."""
        explicit = self.manifest.env if self.manifest.env_explicit else None
        return env or explicit or config.env or self.manifest.env

    def record(self, kind: str, name: str, team: str | None, key: str,
               value: str | None, latency_ms: float) -> None:
        """One ``observe`` event for the lookup of ``kind`` ``name`` that read ``key`` (the
        name that answered, else the plain one) and got ``value`` (None: absent)."""
        from ._airflow_tasks import env_from, task_context

        context = task_context()
        dag = context["dag"].dag_id if context else None
        dag_params: Mapping[str, Any] = (context or {}).get("params") or {}
        pipeline, env, scope_params = _reader(self.manifest, dag, dag_params,
                                              env_from(context, None), self._environment_for,
                                              self.manifest.env)
        params = observe.key_params(dag_params, key, scope_params)
        task = context["ti"].task_id if context else None
        enforce, why = "allow", None
        if value is not None:  # a key not held is None either way
            try:
                refusal = self.replayer.decide({
                    "dag": dag, "task": task, "team": team, "env": env, "params": params,
                    "lookup": f"{kind}:{name}", "key": key})
            except UsageError as exc:
                enforce, why = "refuse", str(exc)
            else:
                if refusal is not None:
                    enforce, why = "refuse", f"{refusal.why}; fix: {refusal.fix}"
        observe.record(self.audit, key=key, lookup=f"{kind}:{name}",
                       outcome="ok" if value is not None else "absent", enforce=enforce,
                       dag=dag, task=task, team=team, env=env, pipeline=pipeline,
                       params=params, latency_ms=latency_ms, detail=why)
