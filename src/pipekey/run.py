"""Run contexts: one pipeline run's secrets, isolated, in memory, for the run only.

    with lk.pipeline("facebook_ads", account="acct_42") as run:
        run.secret("access_token")        # found by the scope walk, prefetched
        run.get("shared/slack_webhook")   # an absolute key, checked against the run's policy

On entry the run resolves everything its pipeline requires in one batched pass per backend
(through the chain's one resolver, as the manifest's ``lookup`` says), and fails at once
listing every missing secret. The active run is
held in a :class:`contextvars.ContextVar`: each thread and each asyncio task sees its own,
and a nested run restores the outer one on exit. Nothing is written to ``os.environ`` or to
disk. On exit the run drops its values and refuses further reads.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import TYPE_CHECKING, Iterator, Mapping

from . import metrics
from .announce import add_value_listener, announce
from .audit import Auditor
from .authfailure import DEFAULT_POLICY, AuthFailurePolicy
from .chain import Chain, Resolution
from .credentials.leases import RunLeases
from .errors import (
    AccessDenied,
    MissingSecrets,
    PipekeyError,
    RunClosed,
    SecretNotFound,
    UsageError,
)
from .keys import validate_key
from .policy import SHARED, RunPolicy, run_policy
from .run_audit import RunAudit
from .run_connections import CONNECTION, RunConnections
from .run_refresh import RunRefresh
from .scope import Level, Scope

if TYPE_CHECKING:
    from .aws import RunSession
    from .backends.base import Secret
    from .connection import Connection
    from .credentials.base import Minter
    from .manifest import PipelineConfig

__all__ = ["CREDENTIAL_INPUT", "Run", "add_value_listener", "current"]

_current: ContextVar["Run | None"] = ContextVar("pipekey_run", default=None)
#: preflight's name for a key a credential definition reads (an admin connection)
CREDENTIAL_INPUT = "credential-input:"


def current() -> "Run | None":
    """The run context active in this thread or task, or None."""
    return _current.get()


class Run(RunConnections, RunRefresh, RunAudit):
    """One pipeline run. Build it with ``Pipekey.pipeline``; use it as a context manager."""

    def __init__(self, pipeline: str, config: "PipelineConfig", chain: Chain, env: str,
                 params: Mapping[str, str], name: str | None = None,
                 auditor: Auditor | None = None,
                 auth_policy: AuthFailurePolicy | None = None,
                 minters: Mapping[str, "Minter"] | None = None, owns_chain: bool = False) -> None:
        self.pipeline = pipeline
        #: close the chain's backends with the run (a brokered run's in-memory source)
        self._owns_chain = owns_chain
        self.name = name or f"{pipeline}-{uuid.uuid4().hex[:12]}"
        self.environment = env
        self.params = MappingProxyType(dict(params))
        what = f"pipeline {pipeline!r}"
        #: what this run may read: the one policy (pipekey.policy), every template filled there
        self.policy: RunPolicy = run_policy(pipeline, config, env, params)
        #: connection name -> the ``[credentials.NAME]`` that mints it for each run
        self.dynamic = config.minted_connections()
        self._audit = auditor or Auditor()
        self._leases = RunLeases(pipeline, self.name, self.dynamic, minters or {}, self._audit,
                                 announce)
        try:
            self.scope = Scope(self.policy.prefix or "", self.policy.names)
        except UsageError as exc:
            raise UsageError(f"{what}: {exc}") from None
        self._config = config
        self._chain = chain
        #: decides which errors :meth:`retry_on_auth_failure` treats as refused credentials
        self.auth_policy = auth_policy or DEFAULT_POLICY
        self._by_name: dict[str, str] = {}   # name -> value: the warm path reads only this
        self._by_key: dict[str, str] = {}    # absolute key -> value
        self._connections: dict[str, "Connection"] = {}
        self._aws: RunSession | None = None
        self._resolutions: dict[str, Resolution] = {}
        self._lock = threading.Lock()
        self._state = "new"
        self._tokens: list[Token[Run | None]] = []
        self.ready_seconds: float | None = None

    def __repr__(self) -> str:
        return (f"<Run {self.pipeline!r} name={self.name!r} scope={self.scope.prefix!r} "
                f"env={self.environment!r} {self._state}, {len(self._by_name)} secrets>")

    @property
    def connection_keys(self) -> Mapping[str, str]:
        """Connection name -> the key it is mapped to (filled by the run's policy)."""
        return self.policy.connection_keys

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> "Run":
        """Resolve every required and optional secret and connection, in one batched pass.

        Raises:
            MissingSecrets: a required secret or connection is absent; lists each, and every
                place looked, with its scope level.
            BackendError: a store failed where a required secret should have been found.
        """
        if self._state != "new":
            raise UsageError(f"run {self.name!r} was already opened")
        start = time.perf_counter()
        resolved = self.preflight()
        missing = {n: resolved[n] for n in self.required if not resolved[n].found}
        latency = time.perf_counter() - start
        self._record("read", resolved, latency, missing)
        self._fail_on_missing(missing)
        inputs = {n: resolved.pop(n) for n in list(resolved) if n.startswith(CREDENTIAL_INPUT)}
        minted = self._leases.mint_all({n[len(CREDENTIAL_INPUT):]: r.require().value
                                        for n, r in inputs.items()})
        # every value at once (one round trip to Airflow's supervisor, not one per value)
        announce(*(r.secret.value for r in resolved.values() if r.secret is not None))
        try:
            with self._lock:
                for name, resolution in resolved.items():
                    self._remember(name, resolution, announced=True)
                for conn, lease in minted.items():
                    self._connections[conn] = lease.connection.replace(conn_id=conn)
                self._state = "open"
        except BaseException:  # the run does not open: its logins must not outlive it
            self.close()
            raise
        self.ready_seconds = time.perf_counter() - start
        metrics.incr("runs_opened", pipeline=self.pipeline)
        metrics.observe("run_ready_seconds", self.ready_seconds, pipeline=self.pipeline)
        return self

    @property
    def required(self) -> list[str]:
        """What must resolve for the run to open: the required names, then
        ``connection:<name>`` for each connection."""
        return [*self._config.requires, *self._config.shared,
                *(CONNECTION + c for c in self.connection_keys),
                *(CREDENTIAL_INPUT + k for k in self._leases.reads)]

    def preflight(self) -> dict[str, Resolution]:
        """Resolve every required and optional name and every connection in one batched pass,
        without opening the run or raising for what is missing (``pipekey check`` uses it).

        Keys: the secret names, and ``connection:<name>`` for connections.
        """
        names = list(dict.fromkeys([*self._config.requires, *self._config.optional]))
        walks: dict[str, list[tuple[Level, str]]] = {n: self.scope.walk(n) for n in names}
        for name in self._config.shared:  # declared shared: straight to shared/, no walk
            walks[name] = [(Level(SHARED, SHARED), f"{SHARED}/{name}")]
        for conn, key in self.connection_keys.items():
            walks[CONNECTION + conn] = [(Level(key, "connection"), key)]
        for key in self._leases.reads:  # read for pipekey, not for the pipeline's code
            walks[CREDENTIAL_INPUT + key] = [(Level(key, "credential"), key)]
        return self._screen(self._chain.resolve_walks(walks))

    @property
    def connection_names(self) -> list[str]:
        """Every connection the run has: mapped to a key, and minted per run (``dynamic``)."""
        return [*self.connection_keys, *self.dynamic]

    def close(self) -> None:
        """Drop every value. Reads after this raise RunClosed."""
        try:
            self._leases.revoke_all()  # first: a failed run's logins end too
        finally:  # an interrupt while revoking still drops every value
            with self._lock:
                self._state = "closed"
                self._by_name.clear()
                self._by_key.clear()
                self._connections.clear()
                self._resolutions.clear()
                if self._aws is not None:
                    self._aws.clear()
                if self._owns_chain:
                    for backend in self._chain:
                        backend.close()

    def __enter__(self) -> "Run":
        self.open()
        self._tokens.append(_current.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())
        self.close()

    async def __aenter__(self) -> "Run":
        import asyncio  # imported here: `pipekey run` and sync code never pay for it

        # store calls block: open in a thread. A cancelled task cannot stop that thread, so
        # whichever side learns last that the run opened but was abandoned closes it (a
        # minted login must not outlive a run nobody holds).
        lock, state = threading.Lock(), {"abandoned": False, "done": False}

        def open_or_undo() -> None:
            try:
                self.open()
            finally:
                with lock:
                    state["done"] = True
                    abandoned = state["abandoned"]
            if abandoned and self._state == "open":
                self.close()

        try:
            await asyncio.to_thread(open_or_undo)
        except asyncio.CancelledError:
            with lock:
                state["abandoned"] = True
                done = state["done"]
            if done and self._state == "open":  # it opened just as we were cancelled
                await asyncio.shield(asyncio.to_thread(self.close))
            raise
        self._tokens.append(_current.set(self))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._leases:  # nothing minted: nothing to drop
            self.__exit__(*exc)
            return
        import asyncio

        _current.reset(self._tokens.pop())
        await asyncio.to_thread(self.close)  # dropping logins calls the database

    @contextmanager
    def attach(self) -> Iterator["Run"]:
        """Make this run the current one in another thread (a pool worker, say)."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    # -- reads ----------------------------------------------------------------------------
    def secret(self, name: str) -> str:
        """The value of ``name``, found by the scope walk (prefetched if the pipeline lists it).

        The walk covers the parent levels only for a name the pipeline declares; any other
        name is looked for at the scope itself and under ``shared/``.

        Raises:
            SecretNotFound: listing every place looked and its scope level.
            RunClosed: the run has ended.
        """
        value = self._by_name.get(name)
        if value is not None:
            return value
        return self._resolve_name(name)

    def get(self, key: str) -> str:
        """The value of an absolute ``key``, if the run's policy allows it.

        Raises:
            AccessDenied: the key is outside the scope, the declared names at parent
                levels, ``shared/``, the grants and the mapped connections.
        """
        value = self._by_key.get(key)
        if value is not None:
            return value
        self._check_open()
        if not self.policy.allows(validate_key(key)):
            self._event("deny", key, "denied")
            raise AccessDenied(f"run {self.name!r} of pipeline {self.pipeline!r} may not read "
                               f"{key!r} (scope {self.scope.prefix!r}, shared/, grants "
                               f"{list(self.policy.grants)})")
        start = time.perf_counter()
        try:
            secret = self._chain.get(key)
        except PipekeyError as exc:
            self._event("failure", key, "absent" if isinstance(exc, SecretNotFound) else "error",
                        detail=str(exc))
            raise
        self._check_document(secret)
        self._event("read", key, "ok", secret=secret, latency=time.perf_counter() - start)
        announce(secret.value)
        with self._lock:
            self._check_open()
            self._by_key[key] = secret.value
        return secret.value

    def explain(self, name: str) -> Resolution:
        """The walk for ``name``: each (backend, path, scope level) looked at and the result.

        Works before the run is opened too, so it can say why opening fails.
        """
        if self._state == "closed":
            self._check_open()
        if name in self._resolutions:
            return self._resolutions[name]
        return self._screen(self._chain.resolve_walks({name: self.scope.walk(name)}))[name]

    def held(self, name: str) -> str | None:
        """The value of ``name`` if the run already holds it, else None; never calls a store
        (the dlt provider asks this for every field dlt looks up)."""
        return self._by_name.get(name)

    def resolved(self) -> dict[str, "Secret"]:
        """Every secret the run holds by name, with its provenance: the secret names, and
        ``connection:<name>`` for connections (what the broker sends a worker)."""
        self._check_open()
        with self._lock:
            return {n: r.secret for n, r in self._resolutions.items() if r.secret is not None}

    @property
    def config(self) -> PipelineConfig:
        """The pipeline's manifest entry (names and templates only, no values)."""
        return self._config

    @property
    def names(self) -> list[str]:
        """The secret names this run holds (no values)."""
        return sorted(self._by_name)

    # -- internals ------------------------------------------------------------------------
    def _resolve_name(self, name: str) -> str:
        self._check_open()
        start = time.perf_counter()
        resolution = self._screen(self._chain.resolve_walks({name: self.scope.walk(name)}))[name]
        self._record("read", {name: resolution}, time.perf_counter() - start,
                     {} if resolution.found else {name: resolution})
        secret = resolution.require()
        with self._lock:
            self._check_open()
            self._remember(name, resolution)
        return secret.value

    def _screen(self, resolved: dict[str, Resolution]) -> dict[str, Resolution]:
        """Refuse a hit that is a document standing for a subtree the run may not read."""
        for resolution in resolved.values():
            if resolution.secret is not None:
                self._check_document(resolution.secret)
        return resolved

    def _check_document(self, secret: "Secret") -> None:
        if secret.document and not self.policy.allows_subtree(secret.key):
            self._event("deny", secret.key, "denied", detail="a document standing for a subtree")
            raise AccessDenied(
                f"run {self.name!r} of pipeline {self.pipeline!r} may not read {secret.key!r}: "
                f"backend {secret.backend!r} holds it as a document standing for the subtree "
                f"{secret.key + '/'!r}, outside the run's scope, shared/ and grants")

    def _remember(self, name: str, resolution: Resolution, announced: bool = False) -> None:
        self._resolutions[name] = resolution
        if resolution.secret is None:
            return
        if not announced:
            announce(resolution.secret.value)
        if name.startswith(CONNECTION):
            self._by_key[resolution.secret.key] = resolution.secret.value
            return
        self._by_name[name] = resolution.secret.value
        self._by_key[resolution.secret.key] = resolution.secret.value

    def _check_open(self) -> None:
        if self._state == "closed":
            raise RunClosed(f"run {self.name!r} of pipeline {self.pipeline!r} has ended; "
                            "its values are gone")
        if self._state == "new":
            raise UsageError(f"run {self.name!r} is not open: use `with lk.pipeline(...) as run`")

    def _fail_on_missing(self, missing: dict[str, Resolution]) -> None:
        if not missing:
            return
        failed = [r for r in missing.values() if r.errors]
        if failed:  # a store failure, not an absence: say so, with the whole walk
            failed[0].require()
        raise MissingSecrets(self.pipeline, self.name, {n: r.attempts for n, r in missing.items()})
