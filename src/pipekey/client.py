"""The entry point: :func:`load` builds a :class:`Pipekey` from the manifest."""

from __future__ import annotations

import builtins
import os
import sys
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import msgspec

from . import redact
from .audit import AuditEvent, Auditor, build_auditor
from .backends import Backend, BackendConfig, Secret, VersionInfo, backend_class
from .backends.base import CacheConfig, Versioned, Writable, read_only, require_env
from .backends.remote import RemoteBackend
from .chain import Chain, Resolution
from .errors import BackendUnavailable, PipekeyError, SecretNotFound, UsageError
from .keys import environment_problem, validate_key, validate_prefix
from .manifest import Manifest, PipelineConfig, load_manifest
from .policy import check_parameters, pipeline_entry
from .run import Run

if TYPE_CHECKING:
    from .credentials.base import Minter

__all__ = ["MAX_ENVIRONMENTS", "Pipekey", "load"]

#: chains a ``Pipekey`` keeps for environments other than its own; past that the least
#: recently used one is closed and its caches released (a later use builds it again)
MAX_ENVIRONMENTS = 8


def load(path: str | os.PathLike[str] | None = None, *, env: str | None = None) -> "Pipekey":
    """Load ``./pipekey.toml`` (or ``path``, or ``$PIPEKEY_CONFIG``) and build the chain.

    With no manifest anywhere, the chain is the local encrypted store alone.

    Args:
        path: the manifest to read.
        env: the environment (``dev``, ``prod``...); overrides ``$PIPEKEY_ENV`` and the
            manifest's ``env``.

    Raises:
        ManifestError: the manifest is invalid; the message names the file and the field.
    """
    return from_manifest(load_manifest(path, env))


def from_manifest(manifest: Manifest) -> "Pipekey":
    """Build the chain of an already-loaded manifest (:func:`load` without the reading)."""
    redact.install()  # every value resolved from here on is masked in this process's logs
    backends = _build_backends(manifest, manifest.env)
    return Pipekey([backends[n] for n in manifest.chain], env=manifest.env,
                    manifest=manifest, extra_backends=backends.values(),
                    on_backend_error=manifest.on_backend_error, lookup=manifest.lookup,
                    chain_factory=lambda env: _build_chain(manifest, env),
                    auditor=build_auditor(manifest.audit, manifest.base_dir))


def _build_chain(manifest: Manifest, env: str) -> Chain:
    built = _build_backends(manifest, manifest.check_env(env), manifest.chain)
    return Chain([built[n] for n in manifest.chain], manifest.on_backend_error,
                 manifest.lookup)


def _build_backends(manifest: Manifest, env: str,
                    names: Iterable[str] | None = None) -> dict[str, Backend]:
    """The backends ``names`` (default: every one) for ``env``; a cached one is held in the
    process's registry until the ``Pipekey`` releases it (``close``, or its chain's eviction).

    Raises:
        UsageError: a backend cannot map ``env`` reversibly (names both).
    """
    ctx = manifest.context()
    ctx = type(ctx)(base_dir=ctx.base_dir, env=env)
    wanted = list(manifest.backends) if names is None else list(names)
    for name in wanted:
        cfg = manifest.backends[name]
        require_env(backend_class(cfg.type), name, cfg, env)
    built = {}
    for name in wanted:
        cfg = manifest.backends[name]

        def build(name: str = name, cfg: BackendConfig = cfg) -> Backend:
            return backend_class(cfg.type).from_config(name, cfg, ctx)

        cache = _cache_config(cfg)
        if cache is None and cfg.rate_limit is None:
            built[name] = build()
        else:  # one cache per backend definition and environment, for the whole process
            from .cache import shared

            identity = (str(manifest.path), name, env, msgspec.json.encode(cfg))
            built[name] = shared(identity, build, cache or CacheConfig(enabled=False),
                                 cfg.rate_limit)
    return built


def _cache_config(cfg: BackendConfig) -> CacheConfig | None:
    """The cache a backend gets: what the manifest says, else the defaults for a remote store
    (local ones are re-read on change, so they stay uncached)."""
    if cfg.cache is not None:
        return cfg.cache if cfg.cache.enabled else None
    return CacheConfig() if issubclass(backend_class(cfg.type), RemoteBackend) else None


class Pipekey:
    """A chain of secret stores and the operations on it.

    Args:
        backends: the chain, in lookup order.
        env: the environment name.
        manifest: the manifest it came from, if any.
        extra_backends: backends defined but not in the chain (writable by name).
        on_backend_error: ``"fall_through"`` (default) or ``"raise"``.
        lookup: ``"sequential"`` or ``"parallel"`` (see :class:`~pipekey.chain.Chain`);
            default: the manifest's ``lookup``, else ``"sequential"``.
        chain_factory: builds the chain for another environment (``load`` gives one that
            refills ``{env}`` in the manifest's backends); without it every environment
            uses ``backends``.
        auditor: where audit events go (``load`` builds it from ``[audit]``).
    """

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        env: str = "dev",
        manifest: Manifest | None = None,
        extra_backends: Iterable[Backend] = (),
        on_backend_error: str = "fall_through",
        lookup: str | None = None,
        chain_factory: Callable[[str], Chain] | None = None,
        auditor: Auditor | None = None,
    ) -> None:
        self.env = env
        self.manifest = manifest
        if lookup is None:
            lookup = manifest.lookup if manifest else "sequential"
        self.chain = Chain(backends, on_backend_error, lookup)
        self._backends = {b.name: b for b in [*extra_backends, *backends]}
        # one chain per other environment, built on first use; least recently used first
        self._chains: OrderedDict[str, Chain] = OrderedDict()
        self._chain_factory = chain_factory
        #: backends whose process-wide cache this one holds (released by ``close``)
        self._holds: builtins.list[Backend] = list(self._backends.values())
        self.audit = auditor or Auditor()
        self._chains_lock = threading.Lock()
        self._minters: dict[tuple[str, str], Minter] = {}
        self._minters_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Pipekey env={self.env!r} chain={[b.name for b in self.chain]}>"

    def __enter__(self) -> "Pipekey":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backends(self) -> dict[str, Backend]:
        """Every backend defined, by name (the chain is ``self.chain``)."""
        return dict(self._backends)

    def backend(self, name: str) -> Backend:
        """The backend named ``name``.

        Raises:
            UsageError: no backend has that name.
        """
        try:
            return self._backends[name]
        except KeyError:
            raise UsageError(f"no backend named {name!r} (defined: {sorted(self._backends)})") \
                from None

    # -- reads ----------------------------------------------------------------------------
    def get(self, key: str) -> str:
        """The value of ``key`` from the first backend in the chain that holds it.

        Raises:
            InvalidKey: ``key`` is malformed.
            SecretNotFound: no backend holds it; lists every (backend, path) tried.
            BackendError: a backend failed and no later backend held the key.
        """
        return self.get_secret(key).value

    def get_secret(self, key: str) -> Secret:
        """Like :meth:`get`, with provenance: backend, path, version."""
        start = time.perf_counter()
        try:
            secret = self.chain.get(key)
        except PipekeyError as exc:
            self._audit("read", key, "absent" if isinstance(exc, SecretNotFound) else "error",
                        detail=str(exc), start=start)
            raise
        self._audit("read", key, "ok", secret=secret, start=start)
        return secret

    def _audit(self, event: str, key: str, outcome: str, secret: Secret | None = None,
               detail: str | None = None, start: float | None = None,
               backend: str | None = None) -> None:
        if not self.audit.enabled:
            return
        self.audit.record(AuditEvent(
            event, key, outcome, backend=secret.backend if secret else backend,
            version=secret.version if secret else None, detail=detail,
            latency_ms=round((time.perf_counter() - start) * 1000, 3) if start else None))

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """Resolve many keys in one pass per backend. Every key must be found."""
        start = time.perf_counter()
        resolved = self.chain.resolve(keys)
        for key, r in resolved.items():
            self._audit("read", key, "ok" if r.found else "error" if r.errors else "absent",
                        secret=r.secret, start=start)
        return {k: r.require().value for k, r in resolved.items()}

    def explain(self, key: str) -> Resolution:
        """Where ``key`` resolves from, and what every backend in the chain holds for it.

        Asks every backend (a hit in a later one is reported as ``shadowed``) and does not
        raise on a miss or a failed backend: the failure is in the attempts.
        """
        return self.chain.resolve([key], exhaustive=True)[key]

    def list(self, prefix: str = "", backend: str | None = None,
             on_error: Callable[[Backend, PipekeyError], None] | None = None,
             ) -> dict[str, list[str]]:
        """Keys at or below ``prefix``, each with the backends holding it, in chain order.

        Args:
            on_error: called with a backend that failed to list, and its error; the other
                backends are still listed. Without it, the first failure is raised.
        """
        validate_prefix(prefix)
        listing: dict[str, list[str]] = {}
        for b in [self.backend(backend)] if backend else self.chain:
            try:
                keys = b.list_keys(prefix)
            except PipekeyError as exc:
                if on_error is None:
                    raise
                on_error(b, exc)
                continue
            for key in keys:
                listing.setdefault(key, []).append(b.name)
        return dict(sorted(listing.items()))

    # below ``list``, the builtin is spelled ``builtins.list``: the method's name shadows it
    def history(self, key: str, backend: str | None = None,
                ) -> tuple[Backend, builtins.list[VersionInfo]]:
        """The versions of ``key`` in ``backend``, or in the first backend with history of it."""
        validate_key(key)
        if backend:
            b = self.backend(backend)
            if not isinstance(b, Versioned):
                raise BackendUnavailable(b.name, f"a {b.kind} backend keeps no history")
            return b, b.history(key)
        keeping = [b for b in self.chain if isinstance(b, Versioned)]
        for b in keeping:
            assert isinstance(b, Versioned)
            versions = b.history(key)
            if versions:
                return b, versions
        if not keeping:
            raise UsageError("no backend in the chain keeps history")
        return keeping[0], []

    # -- writes ---------------------------------------------------------------------------
    def writable_backend(self, backend: str | None = None) -> Backend:
        """``backend`` if given and writable, else the first writable one in the chain."""
        if backend:
            b = self.backend(backend)
            if not isinstance(b, Writable):
                raise read_only(b, "write")
            return b
        for b in self.chain:
            if isinstance(b, Writable):
                return b
        raise UsageError("no writable backend in the chain; add one or name one with backend=")

    def set(self, key: str, value: str, backend: str | None = None) -> Secret:
        """Write ``value`` to the first writable backend (or ``backend``); returns metadata."""
        validate_key(key)
        target = self.writable_backend(backend)
        redact.register(value)  # before the write: an SDK may log the request body
        assert isinstance(target, Writable)
        start = time.perf_counter()
        try:
            secret = target.put(key, value)
        except PipekeyError as exc:
            self._audit("write", key, "error", detail=str(exc), start=start, backend=target.name)
            raise
        self._audit("write", key, "ok", secret=secret, start=start)
        return secret

    def delete(self, key: str, backend: str | None = None) -> Backend | None:
        """Delete ``key`` from ``backend``, or from the first writable backend holding it.

        Returns the backend it was deleted from, or None if no writable backend held it.
        """
        validate_key(key)
        targets = [self.writable_backend(backend)] if backend else \
            [b for b in self.chain if isinstance(b, Writable)]
        for b in targets:
            assert isinstance(b, Writable)
            if b.delete(key):
                self._audit("delete", key, "ok", backend=b.name)
                return b
        return None

    # -- run contexts ---------------------------------------------------------------------
    def pipeline(self, name: str, *, env: str | None = None, run_name: str | None = None,
                 **params: str) -> Run:
        """A run context for pipeline ``name``; open it with ``with`` (or ``async with``).

        Args:
            name: a ``[pipelines.NAME]`` entry of the manifest.
            env: the environment; default: the one chosen for this process (``--env``,
                ``PIPEKEY_ENV``), else the pipeline's ``env``, else the manifest's.
            run_name: this run's unique name (an Airflow run id, say); default: generated.
            **params: values for the scope's ``{fields}``, e.g. ``account="acct_42"``.

        Raises:
            UsageError: no such pipeline, or a parameter missing, unknown or malformed.
        """
        config = self.pipeline_config(name)
        check_parameters(name, config.parameters(), params)
        chosen = self.environment_for(config, env)
        minters = {d: self.minter(d, chosen) for d in set(config.minted_connections().values())}
        return Run(name, config, self.chain_for(chosen), chosen, params, run_name,
                   auditor=self.audit, minters=minters)

    def minter(self, name: str, env: str | None = None) -> "Minter":
        """The minter of ``[credentials.NAME]`` for ``env`` (default: this one's), built once.

        Raises:
            UsageError: the manifest defines no such credential.
            MissingDependency: its extra (psycopg2, hvac) is not installed.
        """
        from .credentials import build_minter

        definitions = self.manifest.credentials if self.manifest else {}
        if name not in definitions:
            raise UsageError(f"no credential {name!r} under [credentials] (defined: "
                             f"{sorted(definitions)})")
        env = env or self.env
        with self._minters_lock:
            built = self._minters.get((name, env))
            if built is None:
                built = self._minters[(name, env)] = build_minter(name, definitions[name],
                                                                  self, env)
            return built

    def pipeline_config(self, name: str) -> PipelineConfig:
        """The manifest entry of pipeline ``name``."""
        pipelines = self.manifest.pipelines if self.manifest else {}
        return pipeline_entry(pipelines, name, self.manifest.path if self.manifest else None)

    def environment_for(self, config: PipelineConfig, env: str | None = None) -> str:
        """The environment a run of the pipeline ``config`` opens in: ``env``, else the one
        chosen for this process (``--env``, ``PIPEKEY_ENV``), else the pipeline's ``env``,
        else the manifest's."""
        explicit = self.manifest.env_explicit if self.manifest else True
        return env or (self.env if explicit else None) or config.env or self.env

    @property
    def open_environments(self) -> builtins.list[str]:
        """The environments with a chain built: this one's own, then the others kept (at
        most :data:`MAX_ENVIRONMENTS`), least recently used first."""
        with self._chains_lock:
            return [self.env, *self._chains]

    def check_env(self, env: str) -> str:
        """``env`` if this ``Pipekey`` serves it: a key segment, one of the manifest's
        ``environments`` when it lists them.

        Raises:
            UsageError: one line naming the environment (and the environments allowed).
        """
        if self.manifest is not None:
            return self.manifest.check_env(env)
        if (problem := environment_problem(env)) is not None:
            raise UsageError(f"environment {problem}")
        return env

    def chain_for(self, env: str) -> Chain:
        """The chain with ``{env}`` in backend paths and prefixes filled for ``env``.

        At most :data:`MAX_ENVIRONMENTS` chains besides this one's own are kept; the least
        recently used goes (closed, its caches released) and is built again on a later use.

        Raises:
            UsageError: ``env`` is not served (:meth:`check_env`), or a backend cannot map it.
        """
        self.check_env(env)
        if env == self.env or self._chain_factory is None:
            return self.chain
        evicted = None
        with self._chains_lock:
            chain = self._chains.get(env)
            if chain is None:
                chain = self._chains[env] = self._chain_factory(env)
                if len(self._chains) > MAX_ENVIRONMENTS:
                    evicted = self._chains.popitem(last=False)[1]
            self._chains.move_to_end(env)
        if evicted is not None:
            _release(evicted)
        return chain

    # -- diagnostics ----------------------------------------------------------------------
    def doctor(self) -> builtins.list[dict[str, object]]:
        """Probe every backend; one status dict each. Never raises for a backend failure."""
        report = []
        chain_names = [b.name for b in self.chain]
        for name, b in self._backends.items():
            start = time.perf_counter()
            try:
                status, ok = b.check(), True
            except PipekeyError as exc:
                status, ok = str(exc), False
            except Exception as exc:  # noqa: BLE001  (doctor never crashes; a foreign
                # message may hold anything, so only its type is shown)
                status, ok = f"backend {name!r}: check failed ({type(exc).__name__})", False
            report.append({
                "backend": name, "type": b.kind, "describe": b.describe(),
                "in_chain": name in chain_names,
                "position": chain_names.index(name) + 1 if name in chain_names else None,
                "writable": isinstance(b, Writable), "ok": ok, "status": status,
                "latency_ms": round((time.perf_counter() - start) * 1000, 2),
            })
        report.sort(key=lambda r: (r["position"] is None, r["position"] or 0))
        return report

    def close(self) -> None:
        """Close every backend: connections, pools, and the refresher threads of caches (a
        cache shared with another ``Pipekey`` of the process starts them again on use).

        The chains of other environments are dropped and every cache this ``Pipekey``
        holds is released: one no other open ``Pipekey`` holds leaves the process. This
        ``Pipekey`` stays usable (its own backends reopen; other chains are built again).
        """
        with self._chains_lock:
            chains, self._chains = list(self._chains.values()), OrderedDict()
        for chain in chains:
            _release(chain)
        held, self._holds = self._holds, []
        _release(held)
        for b in self._backends.values():
            b.close()
        for minter in self._minters.values():
            minter.close()


def _release(backends: Iterable[Backend]) -> None:
    """Close backends and let go of their caches in the process's registry."""
    # only a manifest with a cache loads the cache module; without it nothing is held
    cache = sys.modules.get(f"{__package__}.cache")
    for b in backends:
        b.close()
        if cache is not None:
            cache.release(b)
