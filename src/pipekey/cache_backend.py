"""The cache itself: :class:`CachedBackend` (TTL, single flight, failures remembered, refresh
ahead, stale on failure, version renewals, LRU bound) and the rate limit's token bucket.

:mod:`pipekey.cache` declares one subclass per combination of forwarded capabilities and
builds them (``wrap``, ``shared``); the behaviour is described there.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, ClassVar, Iterable, Sequence, TypeVar

from . import metrics
from .backends.base import (
    Backend,
    CacheConfig,
    Initialisable,
    Invalidates,
    RateLimit,
    Secret,
    Versioned,
    VersionProbe,
    Writable,
)
from .errors import BackendError, BackendUnavailable, PipekeyError

__all__ = ["BACKOFF_BASE", "BACKOFF_FACTOR", "BACKOFF_MAX", "LEADER_TIMEOUT", "CachedBackend",
           "TokenBucket", "capabilities"]

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


#: A failed read is remembered and answered again without calling the store, for 1 s after
#: the first failure, then 2, 4, 8... up to 60 s (aws-secretsmanager-caching's rule: base 1 s,
#: growth 2; its cap is an hour, ours a minute). A success, or ``invalidate``, forgets it.
BACKOFF_BASE = 1.0
BACKOFF_FACTOR = 2.0
BACKOFF_MAX = 60.0
#: how long a reader waits for another thread's read of the same key, at most
LEADER_TIMEOUT = 600.0


@dataclass
class _Entry:
    secret: Secret | None          # None: cached absence
    fetched: float
    expires: float
    refresh_at: float
    refreshing: bool = False
    renewals: int = 0              # renewed by the version probe this many times in a row


@dataclass
class _Failure:
    error: BaseException
    count: int                     # consecutive failures
    retry_at: float


class CachedBackend(Backend):
    """Wraps a backend with a cache and an optional rate limit; the same contract.

    This class forwards no optional capability; each subclass below forwards a fixed set
    (``forwards``), method by method. :func:`wrap` builds the one whose set is exactly
    ``inner``'s (``Writable``, ``Versioned``, ``VersionProbe``, ``Initialisable``), so
    ``isinstance`` answers for the cache as it does for the backend behind it. Building a
    class whose set differs from ``inner``'s raises ``TypeError``.
    """

    #: the optional capabilities this class forwards to the backend it wraps
    forwards: ClassVar[frozenset[type]] = frozenset()

    def __init__(self, inner: Backend, config: CacheConfig | None = None,
                 rate_limit: RateLimit | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        super().__init__(inner.name)
        if self.forwards != capabilities(inner):
            raise TypeError(f"{type(self).__name__} cannot wrap backend {inner.name!r} (it "
                            f"has {_names(capabilities(inner))}, the class forwards "
                            f"{_names(self.forwards)}): build the cache with "
                            "pipekey.cache.wrap()")
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
        self._failures: OrderedDict[str, _Failure] = OrderedDict()  # bounded like _entries
        self._refresher: ThreadPoolExecutor | None = None  # made on the first refresh
        self.stats = metrics.Tally("cache_", ("hits", "misses", "stale", "refreshes", "renewed",
                                              "evictions"))

    # -- limits follow the inner backend ----------------------------------------------------
    max_value_bytes = property(lambda self: self.inner.max_value_bytes)
    size_hint = property(lambda self: self.inner.size_hint)
    chunk_bytes = property(lambda self: self.inner.chunk_bytes)

    def origin(self) -> Backend:
        return self.inner.origin()

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
                self._failures.clear()
            for key in keys or ():
                self._entries.pop(key, None)
                self._failures.pop(key, None)
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
        backing_off: dict[str, BaseException] = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                failure = self._failures.get(key)
                if entry is not None and now < entry.expires:
                    self._entries.move_to_end(key)
                    self._hit(key, entry, now, found)
                elif failure is not None and now < failure.retry_at:
                    backing_off[key] = failure.error
                else:
                    expired.append(key)
        for key, error in backing_off.items():  # the store failed a moment ago: not again yet
            found[key] = self._failed(key, error, now)
        if expired:
            found.update(self._fetch(expired, now))
        return found

    def _hit(self, key: str, entry: _Entry, now: float, found: dict[str, Secret]) -> None:
        """Called under the lock."""
        self._count("hits")
        if entry.secret is not None:
            found[key] = replace(entry.secret, cached=True)
        failure = self._failures.get(key)
        if failure is not None and now < failure.retry_at:
            return  # a refresh failed a moment ago: no new one before the backoff ends
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
        self._count("misses", len(keys))
        with self._lock:
            for key in keys:
                if key in self._inflight:
                    theirs[key] = self._inflight[key]
                else:
                    mine[key] = self._inflight[key] = Future()
        if mine:
            self._lead(list(mine), mine, now)
        out: dict[str, Secret] = {}
        for key, future in {**mine, **theirs}.items():
            # the leader settles every future it made before it returns or raises (see _lead);
            # the timeout only bounds a leader stuck inside the store's own call
            secret = future.result(timeout=LEADER_TIMEOUT)
            if secret is not None:
                out[key] = secret
        return out

    def _lead(self, keys: list[str], futures: dict[str, Future[Secret | None]], now: float) -> None:
        """Read keys for every thread waiting on ``futures`` and give each the outcome: the
        values, or the failure (the cached value instead, within ``max_stale``)."""
        try:
            fetched = self._load(keys)
        except Exception as exc:  # the store's outcome: every waiter gets it, and it is kept
            self._remember_failure(keys, exc)
            for key in keys:
                try:
                    futures[key].set_result(self._failed(key, exc, now))
                except Exception as failure:  # noqa: BLE001  (handed to the waiters)
                    futures[key].set_exception(failure)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: not the store's answer
            interrupted = BackendUnavailable(
                self.name, f"the read was interrupted in another thread ({type(exc).__name__})")
            for key in keys:
                futures[key].set_exception(interrupted)
            raise
        else:
            self._forget_failures(keys)
            for key in keys:
                futures[key].set_result(fetched.get(key))
        finally:
            with self._lock:
                for key in keys:
                    self._inflight.pop(key, None)

    def _failed(self, key: str, error: BaseException, now: float) -> Secret:
        """The outcome of a failed read of ``key``: the cached value if the store failed and
        it is at most ``max_stale`` old, else ``error`` raised."""
        if isinstance(error, BackendError):
            stale = self._stale(key, now)
            if stale is not None:
                return stale
        raise error.with_traceback(None)  # shared by threads: no traceback grows on it

    def _remember_failure(self, keys: Iterable[str], error: Exception) -> None:
        """Keep ``error`` for a while (exponential backoff, capped) so that a failing or
        throttled store is not asked again by every reader."""
        now = self._clock()
        with self._lock:
            for key in keys:
                previous = self._failures.get(key)
                count = previous.count + 1 if previous is not None else 1
                delay = min(BACKOFF_BASE * BACKOFF_FACTOR ** (count - 1), BACKOFF_MAX)
                self._failures[key] = _Failure(error, count, now + delay)
                self._failures.move_to_end(key)
            while len(self._failures) > self.config.max_entries:
                self._failures.popitem(last=False)

    def _forget_failures(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _load(self, keys: list[str]) -> dict[str, Secret]:
        """Read keys from the store (renewing unchanged ones by version when it can) and
        cache the outcome."""
        renewable = self._renewable(keys)
        to_read = [k for k in keys if k not in renewable]
        fetched = {k: secret for k, (secret, _) in renewable.items()}
        if to_read:
            if self.bucket:
                self.bucket.acquire(self.name)
            fetched.update(self.inner.get_many(to_read))
        now = self._clock()
        with self._lock:
            for key in keys:
                renewals = renewable[key][1] + 1 if key in renewable else 0
                self._entries[key] = self._entry(fetched.get(key), now, renewals)
                self._entries.move_to_end(key)
            evicted = 0
            while len(self._entries) > self.config.max_entries:
                self._entries.popitem(last=False)
                evicted += 1
        if evicted:
            self._count("evictions", evicted)
        return fetched

    def _renewable(self, keys: list[str]) -> dict[str, tuple[Secret, int]]:
        """Cached secrets the store's cheap probe confirms unchanged (same version, same
        ``created_at``), each with how often it was renewed before. An entry renewed
        ``max_renewals`` times in a row is read in full instead."""
        probe = self.inner.versions if isinstance(self.inner, VersionProbe) else None
        with self._lock:
            known = {k: (e.secret, e.renewals) for k in keys
                     if (e := self._entries.get(k)) is not None and e.secret is not None
                     and e.secret.version is not None
                     and e.renewals < self.config.max_renewals}
        if probe is None or not known:
            return {}
        if self.bucket:
            self.bucket.acquire(self.name)
        current = probe(list(known))
        renewed = {k: known[k] for k, (s, _) in known.items()
                   if (info := current.get(k)) is not None
                   and (info.version, info.created_at) == (s.version, s.created_at)}
        if renewed:
            self._count("renewed", len(renewed))
        return renewed

    def _entry(self, secret: Secret | None, now: float, renewals: int = 0) -> _Entry:
        ttl = self.config.ttl if secret is not None else self.config.negative_ttl
        ttl *= 1 + self._rng.uniform(-self.config.jitter, self.config.jitter)
        return _Entry(secret, now, now + ttl, now + ttl * (1 - self.config.refresh_ahead),
                      renewals=renewals)

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
        """A background refresh: on failure the entry keeps serving until it expires, and the
        failure is remembered (no new refresh before its backoff ends)."""
        try:
            self._load([key])
            self._forget_failures([key])
            self._count("refreshes")
        except Exception as exc:
            self._remember_failure([key], exc)
        finally:  # whatever happened, a later hit may refresh again
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refreshing = False

    def _list(self, prefix: str) -> list[str]:
        return self.inner.list_keys(prefix)


_CAPABILITIES = (Writable, Versioned, VersionProbe, Initialisable)


def capabilities(backend: Backend) -> frozenset[type]:
    """The optional capabilities (of those a cache forwards) ``backend`` has."""
    return frozenset(cap for cap in _CAPABILITIES if isinstance(backend, cap))


def _names(caps: frozenset[type]) -> str:
    return ", ".join(c.__name__ for c in _CAPABILITIES if c in caps) or "none"
