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

import functools
import inspect
import json
import logging
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, ParamSpec, TypeVar

from .. import broker, redact
from ..client import Pipekey, load
from ..errors import (
    AccessDenied,
    BackendError,
    MissingDependency,
    PipekeyError,
    SecretNotFound,
    UsageError,
)
from ..manifest import Manifest, load_manifest
from ..policy import (
    NO_PIPELINE,
    RunPolicy,
    check_parameters,
    dag_pipeline,
    parameter_free_policy,
)
from ..run import Run, add_value_listener, current
from ._airflow_mode import (
    MODE_ENV,
    airflow_conf,
    airflow_mode,
    fetch_variable,
    warn_worker_backend,
)

if TYPE_CHECKING:
    from ..backends.base import Secret
    from ..manifest import PipelineConfig
    from ..teams import TeamBroker

try:
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
    from airflow.secrets import BaseSecretsBackend
except ImportError:  # pragma: no cover - exercised without the extra
    raise MissingDependency("pipekey.integrations.airflow", "airflow") from None

__all__ = ["ENV_PARAM", "MODE_ENV", "PipekeySecretsBackend", "airflow_mode",
           "configured_kwargs", "pipekey_task", "mask_std_streams", "pipeline_for_dag",
           "task_run"]

_instances: dict[tuple[Any, Any], Pipekey] = {}
_instances_lock = threading.Lock()
_default: dict[str, Pipekey] = {}
#: the DAG run param that chooses the environment of a task's run
ENV_PARAM = "pipekey_env"
log = logging.getLogger("pipekey")


def _pipekey(manifest: str | None, env: str | None) -> Pipekey:
    """One Pipekey per (manifest, env) per process, shared by the backend and task runs."""
    with _instances_lock:
        if (manifest, env) not in _instances:
            _instances[(manifest, env)] = load(manifest, env=env)
        lk = _instances[(manifest, env)]
        _default.setdefault("lk", lk)
        return lk


def _mask(value: str | None) -> None:
    """Mask ``value`` wherever this process writes it: pipekey's masker (logs), Airflow's, and
    the process's stdout/stderr (:func:`mask_std_streams`), since a value served outside a run
    may be printed too and LocalExecutor copies task output to the scheduler's console."""
    if not value:
        return
    redact.register(value)
    mask_std_streams()
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # masking must never break a lookup
        pass


def pipeline_for_dag(lk: Pipekey | Manifest, dag_id: str) -> str | None:
    """The pipeline whose ``dags`` patterns match ``dag_id`` (first in manifest order)."""
    manifest = lk if isinstance(lk, Manifest) else lk.manifest
    return dag_pipeline(manifest.pipelines if manifest else {}, dag_id)


def _task_context() -> Mapping[str, Any] | None:
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:  # not inside a running task
        return None


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
            ``"observe"`` (direct, but what it would refuse is served by the drop-in rule and
            every lookup is recorded in the audit log with the decision, :mod:`pipekey.observe`).
        no_team: broker mode: ``"shared_only"`` (default) or ``"deny"``, what a lookup
            without a team may read.
    """

    #: the broker of ``mode="broker"`` (None in direct mode)
    broker: "TeamBroker | None" = None
    #: a broker-mode backend Airflow built in a worker: it answers nothing there
    aside = False
    #: "direct", "broker" or "observe" (set by __init__)
    mode = "direct"

    def __init__(self, manifest: str | None = None, env: str | None = None,
                 connections_prefix: str | None = "airflow/connections",
                 variables_prefix: str | None = "airflow/variables",
                 config_prefix: str | None = None,
                 outside_pipelines: str = "shared_only", mode: str = "direct",
                 no_team: str = "shared_only") -> None:
        super().__init__()
        if outside_pipelines not in ("shared_only", "allow"):
            raise UsageError("outside_pipelines is 'shared_only' or 'allow'")
        if mode not in ("direct", "broker", "observe"):
            raise UsageError("mode is 'direct', 'broker' or 'observe'")
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
        self.lk = _pipekey(manifest, env)
        self.prefixes = {"connection": connections_prefix, "variable": variables_prefix,
                         "config": config_prefix}
        self.outside_pipelines = outside_pipelines
        self.mode = mode
        if mode == "broker":  # the API server only: direct-mode processes never import it
            from ..teams import TeamBroker

            self.broker = TeamBroker(self.lk, no_team, _mask)
        if mode == "observe":
            from ..observe import check_observable

            check_observable(self.lk.audit, self.lk.manifest.path if self.lk.manifest
                             else "the default manifest")
        if mode != "broker" and os.environ.get(MODE_ENV) == "broker":
            log.warning("pipekey: %s=broker, but a PipekeySecretsBackend in direct mode was "
                        "built in this process (remove it from [workers] secrets_backend: a "
                        "worker in broker mode holds no store credentials)", MODE_ENV)
        _default["lk"] = self.lk
        add_value_listener(_mask)
        redact.install()

    # -- Airflow's interface ----------------------------------------------------------------
    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        if self.aside:
            return None
        with _authoritative(f"connection {conn_id!r}"):
            return self._conn_value(conn_id, team_name)

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        if self.aside:
            return None
        with _authoritative(f"variable {key!r}"):
            return self._variable(key, team_name)

    def get_config(self, key: str) -> str | None:
        if self.aside:
            return None
        prefix = self.prefixes["config"]
        with _authoritative(f"config {key!r}"):
            return None if prefix is None else self._read(self.lk.chain.get, f"{prefix}/{key}")

    def _conn_value(self, conn_id: str, team_name: str | None) -> str | None:
        if self.broker is not None:
            return self._brokered("connection", conn_id, team_name)
        run = current()
        value: str | None
        if run is not None and conn_id in run.connection_keys:
            value = run.get(run.connection_keys[conn_id])
            _mask_connection(value)
            return value
        if run is not None and conn_id in run.dynamic:  # the login minted for this run
            value = run.connection(conn_id).to_uri()
            _mask_connection(value)
            return value
        value = self._lookup("connection", conn_id, team_name)
        _mask_connection(value)
        return value

    def _variable(self, key: str, team_name: str | None) -> str | None:
        if broker.is_request(key):  # a run request: answered in broker mode only
            if self.broker is None:
                return None
            try:
                return self.broker.run(key, team_name)
            except PipekeyError as exc:  # the namespace is pipekey's: no other backend
                raise AirflowSecretsBackendAccessDenied(str(exc)) from None  # may answer it
            except Exception as exc:  # noqa: BLE001 - Airflow would ask the next backend
                log.error("pipekey: a run request of Airflow team %r failed: %s", team_name,
                          type(exc).__name__)
                raise AirflowSecretsBackendAccessDenied(
                    f"pipekey could not answer a run request of Airflow team {team_name!r} "
                    f"({type(exc).__name__}; see the API server's log)") from None
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
            _mask_connection(value)
        return value

    def _lookup(self, kind: str, name: str, team: str | None = None) -> str | None:
        if self.mode == "observe":
            from ._airflow_observe import observed_lookup

            context = _task_context()
            return observed_lookup(self, kind, name, team, context, _env_from(context, None))
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
        context = _task_context()
        dag_id = context["dag"].dag_id if context else None
        if run is not None:
            return _Policy.of_run(run, dag_id or run.pipeline), dag_id
        if dag_id is None:
            return None, None
        pipeline = pipeline_for_dag(self.lk, dag_id)
        if pipeline is None:
            return None, dag_id
        config = self.lk.pipeline_config(pipeline)
        params = _params_from(context, config, {})
        env = _env_from(context, None)
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
        _mask(secret.value)
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


def _mask_connection(value: str | None) -> None:
    if not value:
        return
    for part in redact.secret_parts(value):
        _mask(part)
    try:
        from ..connection import Connection

        for secret in Connection.from_value(value).secret_values():
            _mask(secret)
    except PipekeyError:
        pass


def _params_from(context: Mapping[str, Any] | None, config: PipelineConfig,
                 explicit: dict[str, Any]) -> dict[str, str]:
    """Scope parameters: those given, else the DAG run's params of the same names."""
    fields = config.parameters()
    params = {k: str(v) for k, v in explicit.items() if k in fields}
    dag_params = (context or {}).get("params") or {}
    for field_name in fields - set(params):
        if field_name in dag_params and dag_params[field_name] is not None:
            params[field_name] = str(dag_params[field_name])
    return params


def _env_from(context: Mapping[str, Any] | None, explicit: Any) -> str | None:
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
        if path.strip().rpartition(".")[2] != PipekeySecretsBackend.__name__:
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
        return _pipekey(kwargs.get("manifest"), kwargs.get("env"))
    return _default.get("lk") or _pipekey(None, None)


class _MaskedStream:
    """A text stream whose writes pass through pipekey's masker first."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if isinstance(text, str):
            self._stream.write(redact.redactor().redact(text))
            return len(text)
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_streams_lock = threading.Lock()


def mask_std_streams() -> None:
    """Mask registered values in everything written to ``sys.stdout``/``sys.stderr`` from
    now on (idempotent; stays for the process, as the registered values do). Called for
    every value the backend or a task run serves, so a stream replaced since is wrapped too."""
    with _streams_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _MaskedStream):
                setattr(sys, name, _MaskedStream(stream))


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
    context = _task_context()
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
    add_value_listener(_mask)
    redact.install()
    mask_std_streams()
    chosen, filled = _env_from(context, env), _params_from(context, config, params)
    if brokered:
        opened = broker.brokered_run(manifest, pipeline, fetch_variable, env=chosen,
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
