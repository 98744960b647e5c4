"""A process-wide cache and rate limiter in front of a (remote) backend.

    [backends.ssm]
    type = "aws_ssm"
    prefix = "/data-platform/{env}"
    cache = { ttl = 300, jitter = 0.1, negative_ttl = 30, refresh_ahead = 0.2, max_stale = 3600 }
    rate_limit = { rps = 20, burst = 40 }

* **TTL with jitter**: each entry lives ``ttl`` seconds, +/- ``jitter`` of it, so entries
  fetched together do not all expire together.
* **Absence is cached too** (``negative_ttl``): a cached "absent" is a hit, not a miss.
* **Single-flight**: threads missing the same key wait for one backend call.
* **Refresh ahead**: a hit in the last ``refresh_ahead`` part of an entry's life refreshes it
  in the background; readers never wait for that.
* **Stale on failure**: if the store fails, a value fetched at most ``max_stale`` seconds ago
  is served and marked stale (``Secret.stale_seconds``); older, the failure is raised.
* **Versions**: when the backend offers a cheap version probe, expired entries whose version
  did not change are renewed without re-reading their values.
* **Rate limit**: a token bucket per backend, shared by every thread of the process, keeps a
  burst of runs under the store's quota instead of being throttled.

One cache per backend definition, shared by every ``Latchkey`` of the process that builds the
same backend (``load()`` in each Airflow task, say). Clock and sleep are injectable.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from . import metrics
from .backends.base import Backend, Secret, VersionInfo
from .errors import BackendError, BackendUnavailable

__all__ = ["CacheConfig", "CachedBackend", "RateLimit", "TokenBucket", "shared"]


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl: float = Field(300, gt=0)
    jitter: float = Field(0.1, ge=0, lt=1)
    negative_ttl: float = Field(30, ge=0)
    refresh_ahead: float = Field(0.2, ge=0, lt=1)
    max_stale: float = Field(0, ge=0)


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rps: float = Field(gt=0)
    burst: int = Field(10, ge=1)
    max_wait: float = Field(30, gt=0)


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
    """Wraps a backend with a cache and an optional rate limit; the same contract."""

    def __init__(self, inner: Backend, config: CacheConfig | None = None,
                 rate_limit: RateLimit | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.type = inner.type
        self.config = config or CacheConfig()
        self.bucket = (TokenBucket(rate_limit.rps, rate_limit.burst, rate_limit.max_wait, clock,
                                   sleep) if rate_limit else None)
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, Future] = {}
        self._refresher = ThreadPoolExecutor(2, thread_name_prefix=f"latchkey-refresh-{inner.name}")
        self.stats = {"hits": 0, "misses": 0, "stale": 0, "calls": 0, "refreshes": 0,
                      "renewed": 0}

    # -- capabilities follow the inner backend --------------------------------------------
    writable = property(lambda self: self.inner.is_writable)          # type: ignore[assignment]
    batched = property(lambda self: self.inner.supports_batch)        # type: ignore[assignment]
    versioned = property(lambda self: self.inner.supports_history)    # type: ignore[assignment]
    max_value_bytes = property(lambda self: self.inner.max_value_bytes)  # type: ignore
    size_hint = property(lambda self: self.inner.size_hint)           # type: ignore[assignment]

    def locate(self, key: str) -> str:
        return self.inner.locate(key)

    def store_name(self, key: str) -> str | None:
        return self.inner.store_name(key)

    def unmappable(self, key: str) -> str | None:
        return self.inner.unmappable(key)

    def describe(self) -> str:
        limit = f", {self.bucket.rps:g} req/s" if self.bucket else ""
        return f"{self.inner.describe()} [cached {self.config.ttl:g} s{limit}]"

    def check(self) -> str:
        return self.inner.check()

    def close(self) -> None:
        self.inner.close()

    def invalidate(self, keys: Iterable[str] | None = None) -> None:
        """Forget cached entries (all, or these keys)."""
        with self._lock:
            if keys is None:
                self._entries.clear()
            for key in keys or ():
                self._entries.pop(key, None)

    # -- reads --------------------------------------------------------------------------------
    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        now = self._clock()
        found: dict[str, Secret] = {}
        expired: list[str] = []
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and now < entry.expires:
                    self._hit(key, entry, now, found)
                else:
                    expired.append(key)
        if expired:
            found.update(self._fetch(expired, now))
        return found

    def _hit(self, key: str, entry: _Entry, now: float, found: dict[str, Secret]) -> None:
        self.stats["hits"] += 1
        metrics.incr("cache_hits", backend=self.name)
        if entry.secret is not None:
            found[key] = replace(entry.secret, cached=True)
        if now >= entry.refresh_at and not entry.refreshing:
            entry.refreshing = True
            self._refresher.submit(self._refresh, key)

    def _fetch(self, keys: list[str], now: float) -> dict[str, Secret]:
        """Fetch keys, sharing one call among every thread missing the same keys."""
        mine: dict[str, Future] = {}
        theirs: dict[str, Future] = {}
        with self._lock:
            for key in keys:
                if key in self._inflight:
                    theirs[key] = self._inflight[key]
                else:
                    mine[key] = self._inflight[key] = Future()
        self.stats["misses"] += len(keys)
        metrics.incr("cache_misses", len(keys), backend=self.name)
        if mine:
            self._lead(list(mine), mine, now)
        out: dict[str, Secret] = {}
        for key, future in {**mine, **theirs}.items():
            secret = future.result(timeout=600)
            if secret is not None:
                out[key] = secret
        return out

    def _lead(self, keys: list[str], futures: dict[str, Future], now: float) -> None:
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
            self.stats["calls"] += 1
            fetched.update(self.inner.get_many(to_read))
        now = self._clock()
        with self._lock:
            for key in keys:
                self._entries[key] = self._entry(fetched.get(key), now)
        return fetched

    def _renewable(self, keys: list[str]) -> dict[str, Secret]:
        """Cached secrets whose version the store confirms unchanged (cheap probe)."""
        probe = getattr(self.inner, "versions", None)
        with self._lock:
            known = {k: e.secret for k in keys if (e := self._entries.get(k)) is not None
                     and e.secret is not None and e.secret.version is not None}
        if probe is None or not known:
            return {}
        if self.bucket:
            self.bucket.acquire(self.name)
        self.stats["calls"] += 1
        current = probe(list(known))
        renewed = {k: s for k, s in known.items() if current.get(k) == s.version}
        self.stats["renewed"] += len(renewed)
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
        self.stats["stale"] += 1
        metrics.incr("cache_stale_serves", backend=self.name)
        return replace(entry.secret, cached=True, stale_seconds=round(age, 3))

    def _refresh(self, key: str) -> None:
        try:
            self._load([key])
            self.stats["refreshes"] += 1
        except BackendError:
            with self._lock:  # keep serving until it expires; try again on the next hit
                entry = self._entries.get(key)
                if entry is not None:
                    entry.refreshing = False

    def _list(self, prefix: str):
        return self.inner.list(prefix)

    # -- writes invalidate --------------------------------------------------------------------
    def _put(self, key: str, value: str) -> Secret:
        secret = self.inner.put(key, value)
        self.invalidate([key])
        return secret

    def _delete(self, key: str) -> bool:
        deleted = self.inner.delete(key)
        self.invalidate([key])
        return deleted

    def _history(self, key: str) -> list[VersionInfo]:
        return self.inner.history(key)

    def _get_version(self, key: str, version: str) -> Secret | None:
        return self.inner.get_version(key, version)


_shared: dict[tuple, CachedBackend] = {}
_shared_lock = threading.Lock()


def shared(identity: tuple, build: Callable[[], Backend], cache: dict | None,
           rate_limit: dict | None) -> CachedBackend:
    """The process-wide CachedBackend for one backend definition (built on first use)."""
    with _shared_lock:
        if identity not in _shared:
            _shared[identity] = CachedBackend(
                build(), CacheConfig.model_validate(cache or {}),
                RateLimit.model_validate(rate_limit) if rate_limit else None)
        return _shared[identity]
