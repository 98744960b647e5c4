"""Observe, then enforce: what enforcement would decide, recorded per read, refusing nothing.

In observe mode (the Airflow backend's ``mode="observe"``) a lookup is answered as
enforcement would answer it when enforcement allows it, and as it would be answered with no
enforcement (the drop-in rule, :func:`pipekey.policy.airflow_names`: the caller's team's
``<prefix>/<team>--<name>``, then ``<prefix>/<name>``) when enforcement would refuse it. Either
way one ``observe`` audit event records the reader (DAG, task, team, environment, pipeline),
the lookup, the key and ``enforce``: ``allow`` or ``refuse`` (with the refusal in
``detail``). Never a value.

From that history :mod:`pipekey.propose` drafts ``[pipelines]`` for a person to review, and
:mod:`pipekey.replay` (``pipekey check --replay``) lists what a manifest would refuse.
"""

from __future__ import annotations

from typing import Any, Mapping

from .audit import AuditEvent, Auditor
from .errors import UsageError
from .keys import is_segment

__all__ = ["EVENT", "INVALID_ENV", "check_observable", "key_params", "record"]

#: the audit event of an observed read
EVENT = "observe"
#: recorded for an environment that is no key segment (a DAG run's ``pipekey_env`` holding
#: anything): never the text itself, which may be a value given by mistake
INVALID_ENV = "<invalid>"


#: how to add an audit sink to a manifest
MANIFEST_SINK = "add [audit] sinks = [{ type = \"file\" }] to it"


def check_observable(auditor: Auditor, where: object, fix: str = MANIFEST_SINK) -> None:
    """Refuse observe mode when nothing would record what it observes (``fix``: how to add
    a sink to ``where``).

    Raises:
        UsageError: no audit sink.
    """
    if not auditor.enabled:
        raise UsageError(f"mode 'observe' records every read in the audit log, and {where} "
                         f"has no audit sink: {fix}")


def key_params(params: Mapping[str, Any] | None, key: str,
               scope_params: Mapping[str, str] | None = None) -> dict[str, str]:
    """The DAG run params worth recording for a read of ``key``: those whose value is a
    segment of the key (nothing the record does not already show) and the pipeline's scope
    parameters (key segments by construction). Sorted by name."""
    segments = set(key.split("/"))
    found = {str(k): str(v) for k, v in (params or {}).items()
             if isinstance(k, str) and k.isidentifier() and isinstance(v, (str, int))
             and not isinstance(v, bool) and str(v) in segments}
    found.update({k: v for k, v in (scope_params or {}).items() if is_segment(v)})
    return dict(sorted(found.items()))


def record(auditor: Auditor, *, key: str, lookup: str, outcome: str, enforce: str,
           dag: str | None, task: str | None, team: str | None, env: str | None,
           pipeline: str | None, params: Mapping[str, str], run: str | None = None,
           latency_ms: float | None = None, detail: str | None = None) -> None:
    """One ``observe`` event (``detail``: the refusal enforcement would give; it names keys
    and readers, never a value). ``env`` is recorded only if it is a key segment, else as
    :data:`INVALID_ENV`."""
    if not auditor.enabled:
        return
    if env is not None and not is_segment(env):
        env = INVALID_ENV
    auditor.record(AuditEvent(EVENT, key, outcome, pipeline=pipeline, run=run, dag=dag,
                              task=task, team=team, env=env, lookup=lookup,
                              params=dict(params) or None, enforce=enforce, detail=detail,
                              latency_ms=latency_ms))
