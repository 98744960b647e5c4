"""A process-wide cache and rate limiter in front of a (remote) backend.

    [backends.ssm]
    type = "aws_ssm"
    prefix = "/data-platform/{env}"
    cache = { ttl = 300, jitter = 0.1, negative_ttl = 30, refresh_ahead = 0.2, max_stale = 3600,
              max_entries = 1000, max_renewals = 11 }
    rate_limit = { rps = 20, burst = 40 }

Remote backends (AWS, Vault, GCP, Azure) get this cache with its defaults unless the manifest
says ``cache = false``; env, files and the local store are read directly unless ``cache``
asks for one.

* **TTL with jitter**: each entry lives ``ttl`` seconds, +/- ``jitter`` of it, so entries
  fetched together do not all expire together.
* **Absence is cached too** (``negative_ttl``): a cached "absent" is a hit, not a miss.
* **Single-flight**: threads missing the same key wait for one backend call, and each gets
  its outcome at once: the value, the absence or the exception (an interrupted reader's
  waiters get a ``BackendUnavailable``).
* **Failures remembered**: a failed read is answered again without a call for 1 s, then 2,
  4... up to 60 s (``BACKOFF_*``); a success or ``invalidate`` forgets it.
* **Refresh ahead**: a hit in the last ``refresh_ahead`` part of an entry's life refreshes it
  in the background; readers never wait for that.
* **Stale on failure**: if the store fails, a value fetched at most ``max_stale`` seconds ago
  is served and marked stale (``Secret.stale_seconds``); older, the failure is raised.
* **Versions**: when the backend is a ``VersionProbe`` (a cheap version probe), expired
  entries whose version and ``created_at`` did not change are renewed without re-reading
  their values, at most ``max_renewals`` times in a row.
* **Same capabilities**: ``wrap(backend, ...)`` builds the cache; it is ``Writable``,
  ``Versioned``, a ``VersionProbe`` or ``Initialisable`` exactly when the backend it wraps is
  (``isinstance`` says so), by one declared class per combination; it is always
  ``Invalidates``. Limits (``max_value_bytes``, ``chunk_bytes``) are the inner backend's.
* **Bounded**: at most ``max_entries`` entries; past that the least recently used goes.
* **Rate limit**: a token bucket per backend, shared by every thread of the process, keeps a
  burst of runs under the store's quota instead of being throttled.

One cache per backend definition and environment, shared by every open ``Pipekey`` of the
process that builds the same backend (``load()`` in each Airflow task, say). ``close()`` stops
its refresher threads (a later refresh starts them again); when the last ``Pipekey`` holding
it closes, it leaves the registry, which shares at most ``MAX_SHARED`` caches (least recently
used first out). Counts go to :mod:`pipekey.metrics` (``cache_*``), the
wrapped backend counts its own calls: a hit is no backend call, a miss is one. Clock and
sleep are injectable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Sequence

from .backends.base import (
    Backend,
    CacheConfig,
    Initialisable,
    RateLimit,
    Secret,
    Versioned,
    VersionedBackend,
    VersionInfo,
    VersionProbe,
    Writable,
    WritableBackend,
)
from .cache_backend import CachedBackend, TokenBucket, capabilities

__all__ = ["CacheConfig", "CachedBackend", "CachedInitBackend", "CachedProbeBackend",
           "CachedProbeInitBackend", "CachedVersionedBackend", "CachedVersionedInitBackend",
           "CachedVersionedProbeBackend", "CachedVersionedProbeInitBackend",
           "CachedWritableBackend", "CachedWritableInitBackend", "CachedWritableProbeBackend",
           "CachedWritableProbeInitBackend", "CachedWritableVersionedBackend",
           "CachedWritableVersionedInitBackend", "CachedWritableVersionedProbeBackend",
           "CachedWritableVersionedProbeInitBackend", "MAX_SHARED", "RateLimit", "TokenBucket",
           "capabilities", "release", "shared", "shared_count", "wrap"]


# -- the capabilities a cache forwards: one mixin each, one class per combination ----------------
class _ForwardWrites(CachedBackend, WritableBackend):
    """Writes go to the inner backend and invalidate the key."""

    inner: Any

    def _put(self, key: str, value: str) -> Secret:
        secret: Secret = self.inner.put(key, value)
        self.invalidate([key])
        return secret

    def _delete(self, key: str) -> bool:
        deleted: bool = self.inner.delete(key)
        self.invalidate([key])
        return deleted


class _ForwardHistory(CachedBackend, VersionedBackend):
    """History and past versions are read from the inner backend, uncached."""

    inner: Any

    def _history(self, key: str) -> list[VersionInfo]:
        history: list[VersionInfo] = self.inner.history(key)
        return history

    def _get_version(self, key: str, version: str) -> Secret | None:
        secret: Secret | None = self.inner.get_version(key, version)
        return secret


class _ForwardInit(CachedBackend):
    """The inner backend's set-up (``pipekey init``), then a clean cache."""

    inner: Any

    def init(self) -> dict[str, object]:
        done: dict[str, object] = self.inner.init()
        self.invalidate()
        return done


class _ForwardProbe(CachedBackend):
    """The inner backend's version probe, uncached."""

    inner: Any

    def versions(self, keys: Sequence[str]) -> dict[str, VersionInfo]:
        current: dict[str, VersionInfo] = self.inner.versions(keys)
        return current


class CachedWritableBackend(_ForwardWrites):
    forwards = frozenset({Writable})


class CachedVersionedBackend(_ForwardHistory):
    forwards = frozenset({Versioned})


class CachedProbeBackend(_ForwardProbe):
    forwards = frozenset({VersionProbe})


class CachedInitBackend(_ForwardInit):
    forwards = frozenset({Initialisable})


class CachedWritableVersionedBackend(_ForwardWrites, _ForwardHistory):
    forwards = frozenset({Writable, Versioned})


class CachedWritableProbeBackend(_ForwardWrites, _ForwardProbe):
    forwards = frozenset({Writable, VersionProbe})


class CachedWritableInitBackend(_ForwardWrites, _ForwardInit):
    forwards = frozenset({Writable, Initialisable})


class CachedVersionedProbeBackend(_ForwardHistory, _ForwardProbe):
    forwards = frozenset({Versioned, VersionProbe})


class CachedVersionedInitBackend(_ForwardHistory, _ForwardInit):
    forwards = frozenset({Versioned, Initialisable})


class CachedProbeInitBackend(_ForwardProbe, _ForwardInit):
    forwards = frozenset({VersionProbe, Initialisable})


class CachedWritableVersionedProbeBackend(_ForwardWrites, _ForwardHistory, _ForwardProbe):
    forwards = frozenset({Writable, Versioned, VersionProbe})


class CachedWritableVersionedInitBackend(_ForwardWrites, _ForwardHistory, _ForwardInit):
    forwards = frozenset({Writable, Versioned, Initialisable})


class CachedWritableProbeInitBackend(_ForwardWrites, _ForwardProbe, _ForwardInit):
    forwards = frozenset({Writable, VersionProbe, Initialisable})


class CachedVersionedProbeInitBackend(_ForwardHistory, _ForwardProbe, _ForwardInit):
    forwards = frozenset({Versioned, VersionProbe, Initialisable})


class CachedWritableVersionedProbeInitBackend(_ForwardWrites, _ForwardHistory, _ForwardProbe,
                                              _ForwardInit):
    forwards = frozenset({Writable, Versioned, VersionProbe, Initialisable})


_CLASSES: dict[frozenset[type], type[CachedBackend]] = {cls.forwards: cls for cls in (
    CachedBackend, CachedWritableBackend, CachedVersionedBackend, CachedProbeBackend,
    CachedInitBackend, CachedWritableVersionedBackend, CachedWritableProbeBackend,
    CachedWritableInitBackend, CachedVersionedProbeBackend, CachedVersionedInitBackend,
    CachedProbeInitBackend, CachedWritableVersionedProbeBackend,
    CachedWritableVersionedInitBackend, CachedWritableProbeInitBackend,
    CachedVersionedProbeInitBackend, CachedWritableVersionedProbeInitBackend)}


def wrap(inner: Backend, config: CacheConfig | None = None,
         rate_limit: RateLimit | None = None, **options: Any) -> CachedBackend:
    """A cache (and rate limit) in front of ``inner``, with exactly its capabilities.

    Args:
        inner: the backend to wrap.
        config: the cache settings; None for every default.
        rate_limit: a token bucket for the store's calls; None for none.
        **options: ``clock``, ``sleep`` and ``rng``, for tests.
    """
    return _CLASSES[capabilities(inner)](inner, config, rate_limit, **options)


#: at most this many caches are shared in the process (one per backend definition and
#: environment); past that the least recently used one is no longer shared (its holders keep it)
MAX_SHARED = 32
#: identity -> [the cache, how many holders]; least recently used first
_shared: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
_shared_lock = threading.Lock()


def shared(identity: tuple[Any, ...], build: Callable[[], Backend], cache: CacheConfig | None,
           rate_limit: RateLimit | None) -> CachedBackend:
    """The process-wide CachedBackend for one backend definition (built on first use).

    Each call holds the cache until :func:`release`; the last release drops it from the
    registry (and closes it), so caches live only while something uses them.
    """
    with _shared_lock:
        entry = _shared.get(identity)
        if entry is None:
            entry = _shared[identity] = [wrap(build(), cache, rate_limit), 0]
            while len(_shared) > MAX_SHARED:
                _shared.popitem(last=False)
        _shared.move_to_end(identity)
        entry[1] += 1
        held: CachedBackend = entry[0]
        return held


def release(backend: Backend) -> None:
    """Let go of one hold on ``backend`` taken by :func:`shared` (anything else: no-op)."""
    with _shared_lock:
        identity = next((i for i, e in _shared.items() if e[0] is backend), None)
        if identity is None:
            return
        entry = _shared[identity]
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _shared[identity]
    backend.close()


def shared_count() -> int:
    """How many caches the process shares now (for tests and ``pipekey bench``)."""
    with _shared_lock:
        return len(_shared)
