"""A task of an Airflow DAG outside a pipekey run: which pipeline's policy it reads under
(:class:`TaskReader`), the rule the Airflow backend's observe mode records and ``pipekey check
--replay`` replays. Part of :mod:`pipekey.policy` (not re-exported: it builds on it), kept
in its own module for size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from . import NO_PIPELINE, RunPolicy, dag_pipeline, parameter_free_policy, run_policy

if TYPE_CHECKING:
    from ..manifest import PipelineConfig

__all__ = ["TaskReader", "task_reader"]


@dataclass(frozen=True)
class TaskReader:
    """A task of an Airflow DAG outside a pipekey run, as the Airflow backend reads for it."""

    pipeline: str | None    #: the first pipeline whose ``dags`` match (None: no pipeline)
    policy: RunPolicy       #: the run's, or the parameter-free part if ``missing``
    missing: tuple[str, ...] = ()  #: scope parameters the DAG run's params do not give
    #: connections it maps that need ``missing``, and those minted per run
    pending: frozenset[str] = frozenset()
    minted: frozenset[str] = frozenset()


def task_reader(pipelines: Mapping[str, PipelineConfig], dag_id: str, env: str,
                params: Mapping[str, str]) -> TaskReader:
    """What a task of DAG ``dag_id`` may read outside a run, in ``env``, the DAG run's
    ``params`` given (the Airflow backend's rule; ``pipekey check --replay`` asks it too).

    Raises:
        UsageError: a parameter is not a key segment.
    """
    name = dag_pipeline(pipelines, dag_id)
    if name is None:
        return TaskReader(None, NO_PIPELINE)
    config = pipelines[name]
    fields = config.parameters()
    given = {k: v for k, v in params.items() if k in fields}
    missing = tuple(sorted(fields - set(given)))
    minted = frozenset(config.minted_connections())
    if not missing:
        return TaskReader(name, run_policy(name, config, env, given), minted=minted)
    policy = parameter_free_policy(name, config, env)
    pending = frozenset(config.stored_connections()) - set(policy.connection_keys)
    return TaskReader(name, policy, missing, pending, minted)
