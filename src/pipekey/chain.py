"""The chain: backends asked in the manifest's order, first hit wins — one resolver.

``lk.get``, ``get_many``, ``explain``, a run's scope walk and ``run.get`` all go through
:meth:`Chain.resolve_walks` (a plain key is a one-level walk), so "first hit wins" is
decided in one place, :meth:`Chain._pick`: a backend's answer, failure or denial counts for
a key only if no earlier backend in the chain holds it.

One ``get_many`` per backend per round. ``lookup = "sequential"`` (default) asks each backend
only for the keys still unresolved; ``lookup = "parallel"`` asks every backend at once (one
round trip, but a call to every backend even when the first one holds the key). A backend
that fails is reported (a warning naming only the backend, and an ``error`` attempt in the
provenance) and the chain goes on to the next backend, as Airflow's resolver does; if no
later backend holds the key, the failure is raised — never a ``SecretNotFound``. With
``on_backend_error = "raise"`` the first failure with no earlier hit is raised. An
``AccessDenied`` with no earlier hit is authoritative and raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import redact
from .backends.base import Backend, Secret
from .errors import AccessDenied, Attempt, BackendError, SecretNotFound
from .keys import validate_key

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from .scope import Level

__all__ = ["LOOKUPS", "Chain", "Resolution"]

LOOKUPS = ("sequential", "parallel")

log = logging.getLogger("pipekey")
#: One backend's answer for one key: a hit, an absence (None), or the error it raised.
_Answer = tuple[Backend, "Secret | Exception | None"]
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One small pool per process for asking backends in parallel."""
    global _pool
    with _pool_lock:
        if _pool is None:
            # imported here: a chain of one backend (the usual `pipekey run`) needs no pool
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pipekey-fetch")
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
    """An ordered list of backends, and the one resolver every read goes through.

    Args:
        backends: the backends, in lookup order.
        on_backend_error: ``"fall_through"`` (default) or ``"raise"``.
        lookup: ``"sequential"`` (default) asks a backend only for the keys no earlier
            backend holds: the fewest store calls, one round trip per backend on a miss.
            ``"parallel"`` asks every backend at once: one round trip, one call per backend
            per round even when the first backend holds every key. Either way the first
            backend in chain order that holds a key wins.
    """

    def __init__(self, backends: Sequence[Backend], on_backend_error: str = "fall_through",
                 lookup: str = "sequential"):
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique in a chain, got {names}")
        if on_backend_error not in ("fall_through", "raise"):
            raise ValueError("on_backend_error is 'fall_through' or 'raise'")
        if lookup not in LOOKUPS:
            raise ValueError(f"lookup is 'sequential' or 'parallel', got {lookup!r}")
        self.backends = list(backends)
        self.on_backend_error = on_backend_error
        self.lookup = lookup

    def __iter__(self) -> Iterator[Backend]:
        return iter(self.backends)

    def resolve(self, keys: Iterable[str], exhaustive: bool = False) -> dict[str, Resolution]:
        """Resolve many keys, each as a one-level walk of :meth:`resolve_walks`.

        Args:
            exhaustive: ask every backend for every key (for ``explain``); later hits are
                recorded as ``shadowed``, later failures as ``error``/``denied``, and none
                of them changes the winner.
        """
        walks = {validate_key(k): [(None, k)] for k in keys}
        return self.resolve_walks(walks, exhaustive=exhaustive)

    def get(self, key: str) -> Secret:
        return self.resolve([key])[key].require()

    def resolve_walks(self, walks: Mapping[str, Sequence[tuple[Level | None, str]]],
                      exhaustive: bool = False) -> dict[str, Resolution]:
        """Resolve names by their walks: most specific level first, then chain order.

        The walk goes level by level; each round asks the backends (as ``lookup`` says) for
        the keys of the names still unresolved at that level, one batched ``get_many`` per
        backend. First hit wins: a backend's answer, failure or denial counts for a key only
        if no earlier backend holds it. A failure at a level where no earlier backend had
        the key ends that name's walk with the failure (moving on to a less specific level
        would treat the error as absence); an ``AccessDenied`` there, or any failure under
        ``on_backend_error = "raise"``, is raised.
        """
        results = {name: Resolution(name) for name in walks}
        pending = {name: list(walk) for name, walk in walks.items() if walk}
        depth = 0
        while pending:
            step = {name: walk[depth] for name, walk in pending.items()}
            answers = self._ask(list(dict.fromkeys(key for _, key in step.values())), exhaustive)
            for name, (level, key) in step.items():
                ended = self._pick(results[name], level, key, answers[key], exhaustive)
                if ended or depth + 1 >= len(pending[name]):
                    del pending[name]
            depth += 1
        return results

    def _fatal(self, error: Exception) -> bool:
        """Raised when it is the first answer for a key, rather than fallen through."""
        return isinstance(error, AccessDenied) or self.on_backend_error == "raise"

    def _ask_one(self, backend: Backend, keys: Sequence[str]) -> dict[str, Secret] | Exception:
        try:
            return backend.get_many(keys)
        except (AccessDenied, BackendError) as exc:
            if not self._fatal(exc):
                log.warning("pipekey: backend %r failed (%s)", backend.name, type(exc).__name__)
            return exc

    def _ask(self, keys: Sequence[str], exhaustive: bool) -> dict[str, list[_Answer]]:
        """Each key's answers, one per backend asked, in chain order."""
        answers: dict[str, list[_Answer]] = {k: [] for k in keys}
        if self.lookup == "parallel" and len(self.backends) > 1 and keys:
            futures = [(b, _executor().submit(self._ask_one, b, keys)) for b in self.backends]
            for backend, future in futures:
                outcome = future.result()
                for key in keys:
                    answers[key].append((backend, _answer(outcome, key)))
            return answers
        asking = list(keys)
        for backend in self.backends:
            if not asking:
                break
            outcome = self._ask_one(backend, asking)
            for key in asking:
                answers[key].append((backend, _answer(outcome, key)))
            unresolved = [k for k in asking
                          if not any(isinstance(a, Secret) for _, a in answers[k])]
            if isinstance(outcome, Exception) and self._fatal(outcome) and unresolved:
                break  # _pick raises it: asking later backends would only cost calls
            asking = asking if exhaustive else unresolved
        return answers

    def _pick(self, result: Resolution, level: Level | None, key: str,
              answers: Sequence[_Answer], exhaustive: bool) -> bool:
        """Record one level of one walk, in chain order; True when the walk ends here
        (found or failed). Nothing after the first hit changes the winner."""
        label = level.label if level is not None else None
        for backend, answer in answers:
            where = backend.locate(key)
            if isinstance(answer, Secret):
                if result.found:
                    result.attempts.append(Attempt(backend.name, where, "shadowed", key, label))
                    continue
                result.secret = answer
                redact.register(answer.value)
                result.attempts.append(Attempt(backend.name, where, "found", key, label))
                if not exhaustive:
                    return True
            elif isinstance(answer, Exception):
                if not result.found and self._fatal(answer):
                    raise answer
                if isinstance(answer, BackendError):
                    result.errors.append(answer)
                outcome = "denied" if isinstance(answer, AccessDenied) else "error"
                result.attempts.append(Attempt(backend.name, where, outcome, key, label,
                                               str(answer)))
            else:
                result.attempts.append(Attempt(backend.name, where, "absent", key, label,
                                               _unmapped(backend, key, None)))
        return result.found or bool(result.errors)


def _answer(outcome: dict[str, Secret] | Exception, key: str) -> Secret | Exception | None:
    return outcome if isinstance(outcome, Exception) else outcome.get(key)


def _unmapped(backend: Backend, key: str, secret: Secret | None) -> str | None:
    """For an absence: why the backend cannot hold ``key`` at all, if that is the reason."""
    reason = None if secret is not None else backend.unmappable(key)
    return f"not mappable: {reason}" if reason else None
