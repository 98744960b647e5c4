"""The chain: backends asked in the manifest's order, first hit wins.

One ``get_many`` per backend per pass, holding every key still unresolved. A backend that
fails is reported (a warning naming only the backend, and an ``error`` attempt in the
provenance) and the chain goes on to the next backend, as Airflow's resolver does; if no
later backend holds the key, the failure is raised — never a ``SecretNotFound``. With
``on_backend_error = "raise"`` the first failure is raised at once. An ``AccessDenied`` is
authoritative and always raised at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from . import redact
from .backends.base import Backend, Secret
from .errors import AccessDenied, Attempt, BackendError, SecretNotFound
from .keys import validate_key

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from .scope import Level

__all__ = ["Chain", "Resolution"]

log = logging.getLogger("latchkey")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One small pool per process for asking backends in parallel."""
    global _pool
    with _pool_lock:
        if _pool is None:
            # imported here: a chain of one backend (the usual `latchkey run`) needs no pool
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="latchkey-fetch")
        return _pool


@dataclass
class Resolution:
    """What the chain found for one key, and every place it looked, in order."""

    key: str
    secret: Secret | None = None
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[BackendError] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.secret is not None

    @property
    def status(self) -> str:
        """``found``; ``failed`` when nothing was found and a backend failed (so whether the
        key exists there is unknown); else ``absent``."""
        return "found" if self.secret is not None else "failed" if self.errors else "absent"

    def summary(self) -> str:
        """One line: where the key resolves from, which backends failed, or that none holds
        it. Names backends and error classes, never a value."""
        s = self.secret
        if s is not None:
            return f"{self.key} resolves from {s.backend} ({s.path}, version {s.version or '-'})"
        if self.errors:
            failed = {e.backend: type(e).__name__ for e in self.errors}
            names = ", ".join(f"{name} ({kind})" for name, kind in failed.items())
            if all(a.outcome == "error" for a in self.attempts):
                return f"{self.key} could not be resolved: every backend failed: {names}"
            plural = "s" if len(failed) > 1 else ""
            return (f"{self.key} could not be resolved: backend{plural} {names} failed, and no "
                    "other backend holds it")
        return f"{self.key} is not found in any backend"

    def require(self) -> Secret:
        """The secret, or the error that says why there is none."""
        if self.secret is not None:
            return self.secret
        if self.errors:
            first = self.errors[0]
            tried = "; ".join(a.describe() for a in self.attempts)
            # Same class as the failure (WrongMasterKey stays WrongMasterKey), whole walk in it.
            error = type(first)(first.backend, f"could not resolve {self.key!r}; tried: {tried}")
            error.key, error.attempts = self.key, tuple(self.attempts)
            raise error from first
        raise SecretNotFound(self.key, self.attempts)

    def to_dict(self) -> dict[str, object]:
        s = self.secret
        return {
            "key": self.key,
            "found": s is not None,
            "status": self.status,
            "failed_backends": list(dict.fromkeys(e.backend for e in self.errors))
            if s is None else [],
            "backend": s.backend if s else None,
            "path": s.path if s else None,
            "version": s.version if s else None,
            "created_at": s.created_at.isoformat() if s and s.created_at else None,
            "attempts": [
                {"backend": a.backend, "path": a.path, "outcome": a.outcome,
                 "level": a.level, "detail": a.detail}
                for a in self.attempts
            ],
        }


class Chain:
    """An ordered list of backends."""

    def __init__(self, backends: Sequence[Backend], on_backend_error: str = "fall_through"):
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique in a chain, got {names}")
        if on_backend_error not in ("fall_through", "raise"):
            raise ValueError("on_backend_error is 'fall_through' or 'raise'")
        self.backends = list(backends)
        self.on_backend_error = on_backend_error

    def __iter__(self):
        return iter(self.backends)

    def resolve(self, keys: Iterable[str], exhaustive: bool = False) -> dict[str, Resolution]:
        """Resolve many keys: one ``get_many`` per backend for the keys still missing.

        Args:
            exhaustive: ask every backend for every key (for ``explain``); later hits are
                recorded as ``shadowed``.
        """
        results = {k: Resolution(validate_key(k)) for k in keys}
        pending = list(results)
        for position, backend in enumerate(self.backends, start=1):
            if exhaustive:
                pending = list(results)
            if not pending:
                break
            try:
                found = backend.get_many(pending)
            except AccessDenied:
                raise
            except BackendError as exc:
                if self.on_backend_error == "raise":
                    raise
                then = "trying the next" if position < len(self.backends) else "no more backends"
                log.warning("latchkey: backend %r failed (%s); %s", backend.name,
                            type(exc).__name__, then)
                for key in pending:
                    results[key].errors.append(exc)
                    results[key].attempts.append(
                        Attempt(backend.name, backend.locate(key), "error", key, detail=str(exc)))
                continue
            still = []
            for key in pending:
                result, secret = results[key], found.get(key)
                outcome = "absent" if secret is None else "shadowed" if result.found else "found"
                result.attempts.append(Attempt(backend.name, backend.locate(key), outcome, key,
                                               detail=_unmapped(backend, key, secret)))
                if secret is None:
                    still.append(key)
                elif not result.found:
                    result.secret = secret
                    redact.register(secret.value)
            pending = still
        return results

    def get(self, key: str) -> Secret:
        return self.resolve([key])[key].require()

    def fetch_all(self, keys: Sequence[str]) -> dict[str, dict[str, Secret] | BackendError]:
        """Ask every backend for every key at once, the backends in parallel.

        Returns each backend's hits, or the BackendError it raised. AccessDenied, and any
        error under ``on_backend_error = "raise"``, is raised.
        """
        def one(backend: Backend) -> dict[str, Secret] | BackendError:
            try:
                return backend.get_many(keys)
            except AccessDenied:
                raise
            except BackendError as exc:
                if self.on_backend_error == "raise":
                    raise
                log.warning("latchkey: backend %r failed (%s)", backend.name, type(exc).__name__)
                return exc

        if not keys:
            return {b.name: {} for b in self.backends}
        if len(self.backends) == 1:
            return {self.backends[0].name: one(self.backends[0])}
        futures = {b.name: _executor().submit(one, b) for b in self.backends}
        return {name: f.result() for name, f in futures.items()}

    def resolve_walks(self, walks: Mapping[str, Sequence[tuple["Level", str]]]
                      ) -> dict[str, Resolution]:
        """Resolve names by their scope walks: most specific level first, then chain order.

        The walk goes level by level. Each round asks every backend once, in parallel, for
        the keys of the names still unresolved at that level: a pipeline whose secrets all
        sit at its own scope level is ready in one round, with one batched request per
        backend. A backend failure at a level where no earlier backend had the key ends that
        name's walk with the failure: moving on to a less specific level would treat the
        error as absence.
        """
        results = {name: Resolution(name) for name in walks}
        pending = {name: list(walk) for name, walk in walks.items() if walk}
        depth = 0
        while pending:
            step = {name: walk[depth] for name, walk in pending.items()}
            fetched = self.fetch_all(list(dict.fromkeys(key for _, key in step.values())))
            for name, (level, key) in step.items():
                if self._pick(results[name], level, key, fetched) or depth + 1 >= len(pending[name]):
                    del pending[name]
            depth += 1
        return results

    def _pick(self, result: Resolution, level: "Level", key: str,
              fetched: Mapping[str, dict[str, Secret] | BackendError]) -> bool:
        """Record one level of one walk; True when the walk ends here (found or failed)."""
        for backend in self.backends:
            outcome = fetched[backend.name]
            where = backend.locate(key)
            if isinstance(outcome, BackendError):
                result.errors.append(outcome)
                result.attempts.append(Attempt(backend.name, where, "error", key, level.label,
                                               str(outcome)))
            elif key in outcome:
                result.secret = outcome[key]
                redact.register(result.secret.value)
                result.attempts.append(Attempt(backend.name, where, "found", key, level.label))
                return True
            else:
                result.attempts.append(Attempt(backend.name, where, "absent", key, level.label,
                                               _unmapped(backend, key, None)))
        return bool(result.errors)


def _unmapped(backend: Backend, key: str, secret: Secret | None) -> str | None:
    """For an absence: why the backend cannot hold ``key`` at all, if that is the reason."""
    reason = None if secret is not None else backend.unmappable(key)
    return f"not mappable: {reason}" if reason else None
