"""A process-wide cache and rate limiter in front of a (remote) backend.

    [backends.ssm]
    type = "aws_ssm"
    prefix = "/data-platform/{env}"
    cache = { ttl = 300, jitter = 0.1, negative_ttl = 30, refresh_ahead = 0.2, max_stale = 3600,
              max_entries = 1000 }
    rate_limit = { rps = 20, burst = 40 }

Remote backends (AWS, Vault, GCP, Azure) get this cache with its defaults unless the manifest
says ``cache = false``; env, files and the local store are read directly unless ``cache``
asks for one.

* **TTL with jitter**: each entry lives ``ttl`` seconds, +/- ``jitter`` of it, so entries
  fetched together do not all expire together.
* **Absence is cached too** (``negative_ttl``): a cached "absent" is a hit, not a miss.
* **Single-flight**: threads missing the same key wait for one backend call.
* **Refresh ahead**: a hit in the last ``refresh_ahead`` part of an entry's life refreshes it
  in the background; readers never wait for that.
* **Stale on failure**: if the store fails, a value fetched at most ``max_stale`` seconds ago
  is served and marked stale (``Secret.stale_seconds``); older, the failure is raised.
* **Versions**: when the backend is a ``VersionProbe`` (a cheap version probe), expired
  entries whose version did not change are renewed without re-reading their values.
* **Same capabilities**: the cache is ``Writable``, ``Versioned`` or a ``VersionProbe``
  exactly when the backend it wraps is (``isinstance`` says so); it is always ``Invalidates``.
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

import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence, TypeVar

from . import metrics
from .backends.base import (
    Backend,
    CacheConfig,
    Invalidates,
    RateLimit,
    Secret,
    Versioned,
    VersionedBackend,
    VersionInfo,
    VersionProbe,
    Writable,
    WritableBackend,
)
from .errors import BackendError, BackendUnavailable, PipekeyError

__all__ = ["MAX_SHARED", "CacheConfig", "CachedBackend", "RateLimit", "TokenBucket", "release",
           "shared", "shared_count"]


T = TypeVar("T")


class TokenBucket:
    """``rps`` tokens a second, up to ``burst``; ``acquire`` waits (at most ``max_wait``)."""

    def __init__(self, rps: float, burst: int, max_wait: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rps, self.burst, self.max_wait = rps, burst, max_wait
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self, backend: str) -> None:
        deadline = self._clock() + self.max_wait
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rps)
                self._at = now
                if self._tokens >= 1 - 1e-9:  # float sums fall a hair short of a whole token
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                wait = max((1 - self._tokens) / self.rps, 1e-6)
            if now + wait > deadline:
                raise BackendUnavailable(backend, f"rate limit of {self.rps:g}/s: no capacity "
                                                  f"within {self.max_wait:g} s")
            self.waited += wait
            metrics.observe("rate_limit_wait_seconds", wait, backend=backend)
            self._sleep(wait)


@dataclass
class _Entry:
    secret: Secret | None          # None: cached absence
    fetched: float
    expires: float
    refresh_at: float
    refreshing: bool = False


class CachedBackend(Backend):
    """Wraps a backend with a cache and an optional rate limit; the same contract.

    ``CachedBackend(inner)`` builds a subclass with exactly ``inner``'s optional capabilities
    (``Writable``, ``Versioned``, ``VersionProbe``), so ``isinstance`` answers for the cache
    as it does for the backend behind it.
    """

    def __new__(cls, inner: Backend, *args: Any, **kwargs: Any) -> CachedBackend:  # noqa: PYI034
        # builds the variant with inner's capabilities; Python then runs its __init__
        variant = cls if cls is not CachedBackend else _variant(
            isinstance(inner, Writable), isinstance(inner, Versioned),
            isinstance(inner, VersionProbe))
        return super().__new__(variant)

    def __init__(self, inner: Backend, config: CacheConfig | None = None,
                 rate_limit: RateLimit | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]
        self.config = config or CacheConfig()
        self.bucket = (TokenBucket(rate_limit.rps, rate_limit.burst, rate_limit.max_wait, clock,
                                   sleep) if rate_limit else None)
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._inflight: dict[str, Future[Secret | None]] = {}
        self._refresher: ThreadPoolExecutor | None = None  # made on the first refresh
        self.stats = metrics.Tally("cache_", ("hits", "misses", "stale", "refreshes", "renewed",
                                              "evictions"))

    # -- limits follow the inner backend ----------------------------------------------------
    max_value_bytes = property(lambda self: self.inner.max_value_bytes)
    size_hint = property(lambda self: self.inner.size_hint)

    def locate(self, key: str) -> str:
        return self.inner.locate(key)

    def store_name(self, key: str) -> str | None:
        return self.inner.store_name(key)

    def unmappable(self, key: str) -> str | None:
        return self.inner.unmappable(key)

    def describe(self) -> str:
        limit = f", {self.bucket.rps:g} req/s" if self.bucket else ""
        if not self.config.enabled:
            return f"{self.inner.describe()} [uncached{limit}]"
        return (f"{self.inner.describe()} [cached {self.config.ttl:g} s, at most "
                f"{self.config.max_entries} entries{limit}]")

    def check(self) -> str:
        return self.inner.check()

    def close(self) -> None:
        """Stop the refresher threads (waiting for a refresh in flight) and close the inner
        backend. The cache stays usable: a later refresh starts a new pool."""
        with self._lock:
            pool, self._refresher = self._refresher, None
            for entry in self._entries.values():
                entry.refreshing = False  # a cancelled refresh is tried again on a later hit
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self.inner.close()

    def _count(self, stat: str, n: int = 1) -> None:
        metrics.incr(f"cache_{stat}", n, tally=self.stats, backend=self.name)

    def _guard(self, action: str, call: Callable[[], T]) -> T:
        """The inner backend counts its calls and errors; the cache does not count them again."""
        try:
            return call()
        except PipekeyError:
            raise
        except Exception as exc:
            raise BackendUnavailable(self.name, f"{action} failed ({type(exc).__name__})") \
                from exc

    def invalidate(self, keys: Iterable[str] | None = None) -> None:
        """Forget cached entries (all, or these keys), here and in an inner cache."""
        keys = None if keys is None else list(keys)
        with self._lock:
            if keys is None:
                self._entries.clear()
            for key in keys or ():
                self._entries.pop(key, None)
        if isinstance(self.inner, Invalidates):
            self.inner.invalidate(keys)

    # -- reads --------------------------------------------------------------------------------
    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        if not self.config.enabled:  # ``cache = false`` with a rate limit: pacing only
            if self.bucket:
                self.bucket.acquire(self.name)
            return self.inner.get_many(keys)
        now = self._clock()
        found: dict[str, Secret] = {}
        expired: list[str] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and now < entry.expires:
                    self._entries.move_to_end(key)
                    self._hit(key, entry, now, found)
                else:
                    expired.append(key)
        if expired:
            found.update(self._fetch(expired, now))
        return found

    def _hit(self, key: str, entry: _Entry, now: float, found: dict[str, Secret]) -> None:
        """Called under the lock."""
        self._count("hits")
        if entry.secret is not None:
            found[key] = replace(entry.secret, cached=True)
        if now >= entry.refresh_at and not entry.refreshing:
            entry.refreshing = True
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(
                    self.config.refresh_threads,
                    thread_name_prefix=f"pipekey-refresh-{self.name}")
            self._refresher.submit(self._refresh, key)

    def _fetch(self, keys: list[str], now: float) -> dict[str, Secret]:
        """Fetch keys, sharing one call among every thread missing the same keys."""
        mine: dict[str, Future[Secret | None]] = {}
        theirs: dict[str, Future[Secret | None]] = {}
        with self._lock:
            for key in keys:
                if key in self._inflight:
                    theirs[key] = self._inflight[key]
                else:
                    mine[key] = self._inflight[key] = Future()
        self._count("misses", len(keys))
        if mine:
            self._lead(list(mine), mine, now)
        out: dict[str, Secret] = {}
        for key, future in {**mine, **theirs}.items():
            secret = future.result(timeout=600)
            if secret is not None:
                out[key] = secret
        return out

    def _lead(self, keys: list[str], futures: dict[str, Future[Secret | None]], now: float) -> None:
        try:
            fetched = self._load(keys)
        except BackendError as exc:
            for key in keys:
                stale = self._stale(key, now)
                if stale is not None:
                    futures[key].set_result(stale)
                else:
                    futures[key].set_exception(exc)
        else:
            for key in keys:
                futures[key].set_result(fetched.get(key))
        finally:
            with self._lock:
                for key in keys:
                    self._inflight.pop(key, None)

    def _load(self, keys: list[str]) -> dict[str, Secret]:
        """Read keys from the store (renewing unchanged ones by version when it can) and
        cache the outcome."""
        renewable = self._renewable(keys)
        to_read = [k for k in keys if k not in renewable]
        fetched = dict(renewable)
        if to_read:
            if self.bucket:
                self.bucket.acquire(self.name)
            fetched.update(self.inner.get_many(to_read))
        now = self._clock()
        with self._lock:
            for key in keys:
                self._entries[key] = self._entry(fetched.get(key), now)
                self._entries.move_to_end(key)
            evicted = 0
            while len(self._entries) > self.config.max_entries:
                self._entries.popitem(last=False)
                evicted += 1
        if evicted:
            self._count("evictions", evicted)
        return fetched

    def _renewable(self, keys: list[str]) -> dict[str, Secret]:
        """Cached secrets whose version the store confirms unchanged (cheap probe)."""
        probe = self.inner.versions if isinstance(self.inner, VersionProbe) else None
        with self._lock:
            known = {k: e.secret for k in keys if (e := self._entries.get(k)) is not None
                     and e.secret is not None and e.secret.version is not None}
        if probe is None or not known:
            return {}
        if self.bucket:
            self.bucket.acquire(self.name)
        current = probe(list(known))
        renewed = {k: s for k, s in known.items() if current.get(k) == s.version}
        if renewed:
            self._count("renewed", len(renewed))
        return renewed

    def _entry(self, secret: Secret | None, now: float) -> _Entry:
        ttl = self.config.ttl if secret is not None else self.config.negative_ttl
        ttl *= 1 + self._rng.uniform(-self.config.jitter, self.config.jitter)
        return _Entry(secret, now, now + ttl, now + ttl * (1 - self.config.refresh_ahead))

    def _stale(self, key: str, now: float) -> Secret | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry.secret is None:
            return None
        age = now - entry.fetched
        if age > self.config.max_stale:
            return None
        self._count("stale")
        return replace(entry.secret, cached=True, stale_seconds=round(age, 3))

    def _refresh(self, key: str) -> None:
        try:
            self._load([key])
            self._count("refreshes")
        except BackendError:
            with self._lock:  # keep serving until it expires; try again on the next hit
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refreshing = False

    def _list(self, prefix: str) -> list[str]:
        return self.inner.list_keys(prefix)


# -- the capabilities a cache forwards, one mixin each ------------------------------------------
class _CachedWrites(CachedBackend, WritableBackend):
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


class _CachedVersions(CachedBackend, VersionedBackend):
    """History and past versions are read from the inner backend, uncached."""

    inner: Any

    def _history(self, key: str) -> list[VersionInfo]:
        history: list[VersionInfo] = self.inner.history(key)
        return history

    def _get_version(self, key: str, version: str) -> Secret | None:
        secret: Secret | None = self.inner.get_version(key, version)
        return secret


class _CachedProbe(CachedBackend):
    """The inner backend's version probe, uncached."""

    inner: Any

    def versions(self, keys: Sequence[str]) -> dict[str, str]:
        current: dict[str, str] = self.inner.versions(keys)
        return current


_variants: dict[tuple[bool, bool, bool], type[CachedBackend]] = {}


def _variant(writable: bool, versioned: bool, probe: bool) -> type[CachedBackend]:
    """The CachedBackend subclass with exactly these capabilities (made once each)."""
    flags = (writable, versioned, probe)
    if flags not in _variants:
        mixins = [m for m, on in zip((_CachedWrites, _CachedVersions, _CachedProbe), flags) if on]
        name = "Cached" + "".join(m.__name__[len("_Cached"):] for m in mixins) + "Backend"
        _variants[flags] = type(name, (*mixins, CachedBackend), {"__module__": __name__})
    return _variants[flags]


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
            entry = _shared[identity] = [CachedBackend(build(), cache, rate_limit), 0]
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
