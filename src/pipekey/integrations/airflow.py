"""Apache Airflow 3: a secrets backend with per-DAG isolation, log masking, and task runs.

Configure it for workers (and, if wanted, the other components)::

    [workers]
    secrets_backend = pipekey.integrations.airflow.PipekeySecretsBackend
    secrets_backend_kwargs = {"manifest": "/opt/airflow/pipekey.toml", "env": "prod"}

While a task runs, every lookup is scoped to the DAG's pipeline (the manifest's ``dags``
patterns): ``conn_id`` resolves to the pipeline's mapped connection of that name, else to
``<connections_prefix>/<conn_id>`` if the pipeline's policy allows it (its scope, ``shared/``,
its grants). Another pipeline's connection is refused with Airflow's
``AirflowSecretsBackendAccessDenied``, so Airflow does not fall through to another backend; a
key pipekey does not hold at all returns None, so Airflow's own backends still answer for
what pipekey does not manage. In a task of a mapped DAG but outside a run, what does not
depend on the scope's parameters (``shared/``, grants, untemplated mapped connections) is
served and the rest refused with a message to open a run. Outside any task only ``shared/``
keys are served (``outside_pipelines = "allow"`` serves everything, without isolation); the
refusal points operators at ``pipekey get`` / ``pipekey explain``.

Everything returned is registered with Airflow's secrets masker and with pipekey's own
(``pipekey.redact``), which also guards the task's log handlers under ``dag.test()``, where
Airflow's masking is off, and, from the first value served in a process (in a run or not),
the process's ``sys.stdout``/``sys.stderr`` (LocalExecutor copies a task's output into the
scheduler's console).

In a task, :func:`task_run` (or the :func:`pipekey_task` decorator) opens a pipekey run for
the task: pipeline from the DAG, run name from DAG run, task and map index, parameters and
``env`` from the call, else from the DAG run's params (``pipekey_env`` for the environment).
The manifest is the one Airflow's secrets backend is configured with (``[workers]
secrets_backend_kwargs``, then ``[secrets] backend_kwargs``), else ``$PIPEKEY_CONFIG``, else
``./pipekey.toml``. dlt pipelines inside the run then get that run's secrets.

Broker mode (multi-team Airflow, docs/airflow.md "Enforced isolation"): the backend with
``mode="broker"`` on the API server answers per team (:mod:`pipekey.teams`), and task runs
in a worker without store credentials (:func:`airflow_mode`) come from it in one Variable
(:mod:`pipekey.broker`).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from .. import redact
from ..announce import add_values_listener
from ..errors import (
    AccessDenied,
    BackendError,
    MissingDependency,
    PipekeyError,
    SecretNotFound,
    UsageError,
)
from ..policy import NO_PIPELINE, RunPolicy, parameter_free_policy
from ..run import Run, current
from . import _airflow_tasks as tasks  # its process state, looked up at call time
from ._airflow_masking import mask, mask_connection, mask_many, mask_std_streams
from ._airflow_mode import MODE_ENV, airflow_mode
from ._airflow_tasks import (
    ENV_PARAM,
    configured_kwargs,
    env_from,
    params_from,
    pipekey_task,
    pipeline_for_dag,
    task_run,
)
from .airflow_compat import UNSET, CompatReader, compat_reader, native_prefixes

if TYPE_CHECKING:
    from ..backends.base import Secret
    from ..client import Pipekey
    from ..teams import TeamBroker

try:
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
    from airflow.secrets import BaseSecretsBackend
except ImportError:  # pragma: no cover - exercised without the extra
    raise MissingDependency("pipekey.integrations.airflow", "airflow") from None

__all__ = ["ENV_PARAM", "MODE_ENV", "PipekeySecretsBackend", "airflow_mode",
           "configured_kwargs", "pipekey_task", "mask_std_streams", "pipeline_for_dag",
           "task_run"]

log = logging.getLogger("pipekey")


class PipekeySecretsBackend(BaseSecretsBackend):
    """An Airflow secrets backend reading the pipekey chain, scoped per DAG.

    Args:
        manifest: the pipekey.toml (default: ``$PIPEKEY_CONFIG``, then ./pipekey.toml).
        env: the environment (default: ``$PIPEKEY_ENV``, then the manifest's).
        connections_prefix, variables_prefix, config_prefix: where each kind lives; ``None``
            disables a kind (config is disabled unless a prefix is given).
        outside_pipelines: ``"shared_only"`` (default) or ``"allow"``: what is served outside
            a task of a DAG mapped to a pipeline.
        mode: ``"direct"`` (default: per-DAG policy in the process that runs it) or
            ``"broker"`` (on the API server: each lookup answered within the policy of the
            task's Airflow team, and run requests answered, :mod:`pipekey.teams`) or
            ``"observe"`` (nothing it would serve by the drop-in rule is refused; every
            lookup is recorded in the audit log with what enforcement would decide,
            :mod:`pipekey.observe`).
        no_team: broker mode: ``"shared_only"`` (default) or ``"deny"``, what a lookup
            without a team may read.
        compat: ``"ssm"`` or ``"secrets_manager"``: take the ``backend_kwargs`` of Airflow's
            SSM / Secrets Manager backend verbatim (``**airflow_kwargs``) and answer as it does,
            no manifest needed (:mod:`pipekey.integrations.airflow_compat`).
    """

    #: the broker of ``mode="broker"`` (None in direct mode)
    broker: "TeamBroker | None" = None
    #: a broker-mode backend Airflow built in a worker: it answers nothing there
    aside = False
    #: the drop-in for Airflow's AWS backends (``compat``, docs/airflow.md), else None
    compat: CompatReader | None = None
    #: "direct", "broker" or "observe" (set by __init__)
    mode = "direct"

    def __init__(self, manifest: str | None = None, env: str | None = None,
                 connections_prefix: str | None = UNSET, variables_prefix: str | None = UNSET,
                 config_prefix: str | None = UNSET,
                 outside_pipelines: str = "shared_only", mode: str = "direct",
                 no_team: str = "shared_only", compat: str | None = None,
                 **airflow_kwargs: Any) -> None:
        super().__init__()
        if outside_pipelines not in ("shared_only", "allow"):
            raise UsageError("outside_pipelines is 'shared_only' or 'allow'")
        if mode not in ("direct", "broker", "observe"):
            raise UsageError("mode is 'direct', 'broker' or 'observe'")
        self.compat = compat_reader(compat, {  # Airflow's SSM / Secrets Manager backend kwargs
            "manifest": manifest, "env": env, "mode": mode, "connections_prefix":
            connections_prefix, "variables_prefix": variables_prefix, "config_prefix":
            config_prefix}, airflow_kwargs, mask, mask_connection)
        if self.compat is not None:
            self.lk, self.mode = self.compat.lk, mode
            add_values_listener(mask_many)
            redact.install()
            return
        connections_prefix, variables_prefix, config_prefix = native_prefixes(
            connections_prefix, variables_prefix, config_prefix)
        if mode == "broker" and os.environ.get(MODE_ENV) == "broker":
            # a worker: Airflow falls back to [secrets] backend when [workers] secrets_backend
            # is unset; answering here (with no team) would keep lookups from the API server
            self.aside, self.mode = True, mode
            log.warning("pipekey: the broker-mode PipekeySecretsBackend was built in a "
                        "process with %s=broker (a worker: Airflow uses [secrets] backend "
                        "when [workers] secrets_backend is unset); it answers nothing here, so "
                        "lookups go to the API server. Keep [secrets] backend to the API "
                        "server's environment", MODE_ENV)
            return
        self.lk = tasks.pipekey_for(manifest, env)
        self.prefixes = {"connection": connections_prefix, "variable": variables_prefix,
                         "config": config_prefix}
        self.outside_pipelines = outside_pipelines
        self.mode = mode
        if mode == "broker":  # the API server only: direct-mode processes never import it
            from ..teams import TeamBroker

            self.broker = TeamBroker(self.lk, no_team, mask)
        if mode == "observe":
            from ..observe import check_observable

            check_observable(self.lk.audit, self.lk.manifest.path if self.lk.manifest
                             else "the default manifest")
        if mode != "broker" and os.environ.get(MODE_ENV) == "broker":
            log.warning("pipekey: %s=broker, but a PipekeySecretsBackend in direct mode was "
                        "built in this process (remove it from [workers] secrets_backend: a "
                        "worker in broker mode holds no store credentials)", MODE_ENV)
        tasks.process_default["lk"] = self.lk
        add_values_listener(mask_many)
        redact.install()

    # -- Airflow's interface ----------------------------------------------------------------
    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        if self.aside:
            return None
        with _authoritative(f"connection {conn_id!r}"):
            if self.compat is not None:
                return self.compat.get("connection", conn_id, team_name)
            return self._conn_value(conn_id, team_name)

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        if self.aside:
            return None
        with _authoritative(f"variable {key!r}"):
            if self.compat is not None:
                return self.compat.get("variable", key, team_name)
            return self._variable(key, team_name)

    def get_config(self, key: str) -> str | None:
        if self.aside:
            return None
        with _authoritative(f"config {key!r}"):
            if self.compat is not None:
                return self.compat.get("config", key)
            prefix = self.prefixes["config"]
            return None if prefix is None else self._read(self.lk.chain.get, f"{prefix}/{key}")

    def _conn_value(self, conn_id: str, team_name: str | None) -> str | None:
        if self.broker is not None:
            return self._brokered("connection", conn_id, team_name)
        run = current()
        value: str | None
        if run is not None and conn_id in run.connection_keys:
            value = run.get(run.connection_keys[conn_id])
            mask_connection(value)
            return value
        if run is not None and conn_id in run.dynamic:  # the login minted for this run
            value = run.connection(conn_id).to_uri()
            mask_connection(value)
            return value
        value = self._lookup("connection", conn_id, team_name)
        mask_connection(value)
        return value

    def _variable(self, key: str, team_name: str | None) -> str | None:
        from ..broker import is_request  # not at import: a task imports only what its mode uses

        if is_request(key):  # a run request: answered in broker mode only
            # the payload, or a refusal the worker raises on at once: never an exception,
            # which the Execution API would make an HTTP 500 the Task SDK retries
            return None if self.broker is None else self.broker.answer(key, team_name)
        if self.broker is not None:
            return self._brokered("variable", key, team_name)
        run = current()
        if run is not None and run.held(key) is not None:
            return run.held(key)
        return self._lookup("variable", key, team_name)

    # -- scoping --------------------------------------------------------------------------
    def _brokered(self, kind: str, name: str, team: str | None) -> str | None:
        """Broker mode: ``name`` read within the policy of ``team`` (pipekey.teams)."""
        prefix = self.prefixes[kind]
        assert self.broker is not None
        if prefix is None:
            return None
        key: str | None = f"{prefix}/{name}"
        if kind == "connection":  # an AccessDenied becomes Airflow's in _authoritative
            key = self.broker.connection_key(name, team, key)
        value = None if key is None else self.broker.read(key, team, f"{kind} {name!r}")
        if kind == "connection":
            mask_connection(value)
        return value

    def _lookup(self, kind: str, name: str, team: str | None = None) -> str | None:
        if self.mode == "observe":
            from ._airflow_observe import observed_lookup

            context = tasks.task_context()
            return observed_lookup(self, kind, name, team, context, env_from(context, None))
        return self._enforce(kind, name)

    def _enforce(self, kind: str, name: str) -> str | None:
        prefix = self.prefixes[kind]
        if prefix is None:
            return None
        key = f"{prefix}/{name}"
        policy, dag_id = self._policy()
        if policy is None:
            if self.outside_pipelines == "allow" or NO_PIPELINE.allows(key):
                return self._read(self.lk.chain.get, key)
            if dag_id is not None:
                self._deny_if_held(key, f"DAG {dag_id!r} matches no pipekey pipeline, so it "
                                        f"may not read {kind} {name!r} (add it to a "
                                        "pipeline's dags = [...] in the manifest)")
            else:
                self._deny_if_held(key, f"{kind} {name!r} is served only to tasks of a pipekey "
                                        "pipeline's DAGs; on an operator's shell use "
                                        f"`pipekey get {key}` (masked unless --reveal) or "
                                        f"`pipekey explain {key}`")
            return None
        if kind == "connection" and name in policy.dynamic:
            raise AirflowSecretsBackendAccessDenied(
                f"{policy.who}: connection {name!r} is a login minted per run "
                f"(credentials.{policy.dynamic[name]}), which lives as long as the run: "
                "open a run in the task with pipekey.integrations.airflow.task_run(...) "
                "or @pipekey_task")
        if kind == "connection" and name in policy.pending:
            raise AirflowSecretsBackendAccessDenied(
                f"{policy.who}: connection {name!r} depends on the scope's parameters "
                f"{list(policy.missing)}; {policy.open_a_run}")
        if kind == "connection" and name in policy.connection_keys:
            key = policy.connection_keys[name]
        if not policy.policy.allows(key):
            why = f"{policy.who} may not read {kind} {name!r}"
            if policy.missing:
                why += (f" outside a run (the scope needs parameters {list(policy.missing)}); "
                        f"{policy.open_a_run}")
            self._deny_if_held(key, why)
            return None
        return self._read(self.lk.chain_for(policy.environment).get, key, policy)

    def _policy(self) -> tuple["_Policy | None", str | None]:
        """What this task may read: the active run's policy, else the DAG's pipeline's (only
        its parameter-free part if the DAG run's params do not fill the scope); and the
        DAG id (None outside a task)."""
        run = current()
        context = tasks.task_context()
        dag_id = context["dag"].dag_id if context else None
        if run is not None:
            return _Policy.of_run(run, dag_id or run.pipeline), dag_id
        if dag_id is None:
            return None, None
        pipeline = pipeline_for_dag(self.lk, dag_id)
        if pipeline is None:
            return None, dag_id
        config = self.lk.pipeline_config(pipeline)
        params = params_from(context, config, {})
        env = env_from(context, None)
        missing = sorted(config.parameters() - set(params))
        try:
            if missing:
                return _Policy.partial(self.lk, pipeline, dag_id, config, env, missing), dag_id
            return _Policy.of_run(self.lk.pipeline(pipeline, env=env, **params), dag_id), dag_id
        except UsageError as exc:
            raise AirflowSecretsBackendAccessDenied(
                f"DAG {dag_id!r}: {exc}; open a run in the task with "
                "pipekey.integrations.airflow.task_run(...)") from None

    def _read(self, get: Callable[[str], Secret], key: str,
              policy: "_Policy | None" = None) -> str | None:
        try:
            secret = get(key)
        except SecretNotFound:
            return None
        if policy is not None and secret.document and not policy.policy.allows_subtree(key):
            raise AirflowSecretsBackendAccessDenied(
                f"pipekey pipeline {policy.pipeline!r} may not read {key!r}: it is a document "
                "standing for a subtree outside the pipeline's scope, shared/ and grants")
        mask(secret.value)
        return secret.value

    def _deny_if_held(self, key: str, why: str) -> None:
        """Refuse, authoritatively, a key pipekey holds; stay out of the way otherwise."""
        try:
            held = self.lk.chain.resolve([key])[key].status != "absent"  # failed: cannot tell
        except PipekeyError:
            held = True  # cannot tell: refuse rather than let another backend answer
        if held:
            raise AirflowSecretsBackendAccessDenied(why)


@dataclass
class _Policy:
    """A task's reader: its pipeline's :class:`~pipekey.policy.RunPolicy` (a run's, or,
    outside a run, the part that needs no scope parameter; ``missing`` names the others)."""

    pipeline: str
    dag_id: str
    environment: str
    policy: RunPolicy
    missing: tuple[str, ...] = ()
    pending: frozenset[str] = field(default_factory=frozenset)  # connections needing params
    #: connections minted per run (name -> definition): served only inside an open run
    dynamic: Mapping[str, str] = field(default_factory=dict)

    @property
    def connection_keys(self) -> Mapping[str, str]:
        return self.policy.connection_keys

    @property
    def who(self) -> str:
        return f"DAG {self.dag_id!r} (pipekey pipeline {self.pipeline!r})"

    @property
    def open_a_run(self) -> str:
        args = ", ".join(f"{m}=..." for m in self.missing)
        return (f"open a run in the task with pipekey.integrations.airflow.task_run({args}) "
                "or @pipekey_task")

    @classmethod
    def of_run(cls, run: Run, dag_id: str) -> "_Policy":
        return cls(run.pipeline, dag_id, run.environment, run.policy, dynamic=run.dynamic)

    @classmethod
    def partial(cls, lk: Pipekey, pipeline: str, dag_id: str, config: Any, env: str | None,
                missing: list[str]) -> "_Policy":
        environment = lk.environment_for(config, env)
        policy = parameter_free_policy(pipeline, config, environment)
        dynamic = config.minted_connections()
        return cls(pipeline, dag_id, environment, policy, tuple(missing),
                   frozenset(config.connections) - set(policy.connection_keys) - set(dynamic),
                   dynamic=dynamic)


@contextmanager
def _authoritative(what: str) -> Iterator[None]:
    """A lookup pipekey serves ends in a value, None, or a refusal Airflow does not look past:
    a store failure or a denial is ``AirflowSecretsBackendAccessDenied``, never an ordinary
    exception after which Airflow would ask its next backend (the metastore) for the same
    name."""
    try:
        yield
    except AirflowSecretsBackendAccessDenied:
        raise
    except AccessDenied as exc:
        raise AirflowSecretsBackendAccessDenied(str(exc)) from None
    except BackendError as exc:
        log.error("pipekey: %s: store unavailable (%s)", what, type(exc).__name__)
        raise AirflowSecretsBackendAccessDenied(
            f"pipekey: store unavailable for {what}: {exc}; refused rather than answered by "
            "another secrets backend") from None
