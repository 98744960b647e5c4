"""The cache: TTL and jitter, cached absence, single-flight, refresh ahead, stale serving,
version renewal, rate limiting, writes, and rotation inside a run. No sleeps: a fake clock."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipekey
from pipekey import BackendUnavailable
from pipekey.backends.base import Invalidates, Secret, Versioned, VersionInfo, Writable
from pipekey.backends.local import LocalBackend
from pipekey.cache import CacheConfig, CachedBackend, RateLimit, TokenBucket, wrap
from pipekey.manifest import parse_manifest
from pipekey.testing import FailingBackend, MemoryBackend, ReadOnlyMemoryBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def cached(inner, clock: Clock, **config) -> CachedBackend:
    return wrap(inner, CacheConfig(**{"jitter": 0, **config}), clock=clock,
                         sleep=clock.sleep, rng=random.Random(7))


def test_ttl_hits_then_refetches() -> None:
    """Within the TTL reads are hits; after it, one new call."""
    clock, mem = Clock(), MemoryBackend("m", {"k": "fake-1"})
    c = cached(mem, clock, ttl=60, refresh_ahead=0)
    assert c.get("k").value == "fake-1" and len(mem.calls) == 1
    for _ in range(50):
        assert c.get("k").cached
    assert len(mem.calls) == 1
    clock.now += 61
    assert not c.get("k").cached and len(mem.calls) == 2


def test_jitter_spreads_expiry() -> None:
    """Entries fetched together expire at different times within +/- jitter."""
    clock = Clock()
    c = wrap(MemoryBackend("m", {f"k{i}": "fake" for i in range(50)}),
                      CacheConfig(ttl=100, jitter=0.1), clock=clock, rng=random.Random(1))
    c.get_many([f"k{i}" for i in range(50)])
    lives = [e.expires - clock.now for e in c._entries.values()]
    assert min(lives) >= 90 and max(lives) <= 110 and len({round(x, 3) for x in lives}) > 40


def test_cached_absence_is_a_hit() -> None:
    """A missing key is asked once, then answered from the cache until negative_ttl."""
    clock, mem = Clock(), MemoryBackend("m")
    c = cached(mem, clock, negative_ttl=30)
    assert c.get("nope") is None and c.get("nope") is None
    assert len(mem.calls) == 1 and c.stats["hits"] == 1
    clock.now += 31
    c.get("nope")
    assert len(mem.calls) == 2


def test_single_flight() -> None:
    """100 threads missing the same key cause one backend call."""
    mem = MemoryBackend("m", {"k": "fake-sf"}, latency=0.2)
    c = wrap(mem, CacheConfig(jitter=0))
    barrier, results = threading.Barrier(100), []

    def read() -> None:
        barrier.wait(timeout=30)
        results.append(c.get("k").value)

    threads = [threading.Thread(target=read) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == ["fake-sf"] * 100
    assert len(mem.calls) == 1


def test_refresh_ahead_in_the_background() -> None:
    """A hit late in an entry's life returns at once and refreshes in the background."""
    clock, mem = Clock(), MemoryBackend("m", {"k": "fake-old"})
    c = cached(mem, clock, ttl=100, refresh_ahead=0.2)
    c.get("k")
    mem.put("k", "fake-new")
    clock.now += 85  # past 80% of the life
    assert c.get("k").value == "fake-old"  # served from the cache, no wait
    deadline = time.monotonic() + 10
    while c.stats["refreshes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.stats["refreshes"] == 1
    assert c.get("k").value == "fake-new"


def _down_after_one_read(value: str, clock: Clock,
                         **config: float) -> tuple[FailingBackend, CachedBackend]:
    """A cache over store 'ssm' holding k = value, read once, after which the store fails."""
    store = FailingBackend("ssm", {"k": value}, failing=False)
    c = cached(store, clock, ttl=60, refresh_ahead=0, **config)
    c.get("k")
    store.fail()
    return store, c


def test_stale_within_max_stale_then_a_clear_failure() -> None:
    """While the store is down, a value up to max_stale old is served and marked; older, the
    store's error is raised."""
    clock = Clock()
    store, c = _down_after_one_read("fake-last-good", clock, max_stale=600)
    clock.now += 300
    served = c.get("k")
    assert served.value == "fake-last-good" and served.stale_seconds == 300.0
    assert c.stats["stale"] == 1
    clock.now += 301
    with pytest.raises(BackendUnavailable, match="'ssm'") as info:
        c.get("k")
    assert "fake-last-good" not in str(info.value)


def test_version_probe_renews_unchanged_and_refetches_rotated(tmp_path: Path) -> None:
    """Expired entries whose version is unchanged are renewed without reading the value; a
    rotated one is read again."""
    key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    store = LocalBackend("local", tmp_path / "s.db", master_key=key)
    store.put("a", "fake-a1")
    store.put("b", "fake-b1")
    clock = Clock()
    c = cached(store, clock, ttl=60, refresh_ahead=0)
    c.get_many(["a", "b"])
    store.put("b", "fake-b2")  # rotated by another writer
    clock.now += 61
    got = c.get_many(["a", "b"])
    assert (got["a"].value, got["b"].value) == ("fake-a1", "fake-b2")
    assert c.stats["renewed"] == 1


def test_ssm_delete_and_recreate_is_seen_at_expiry(aws_env: str, moto) -> None:
    """A parameter deleted and put again starts at version 1 again (as in AWS): at expiry the
    probe sees its new LastModifiedDate and the new value is read, not the old one renewed."""
    pytest.importorskip("boto3")
    from pipekey.backends.aws_ssm import SsmBackend, SsmConfig

    config = SsmConfig(type="aws_ssm", prefix=f"/lk-recreate/{uuid.uuid4().hex[:8]}",
                       region="eu-central-1", endpoint_url=aws_env)
    writer = SsmBackend("ssm", config)
    writer.put("shared/token", "fake-before-replace")
    clock = Clock()
    c = cached(SsmBackend("ssm", config), clock, ttl=60, refresh_ahead=0)
    assert c.get("shared/token").version == "1"
    writer.delete("shared/token")  # a rotation by delete + put (a Terraform replace)
    writer.put("shared/token", "fake-after-replace")
    assert [v.version for v in writer.history("shared/token")] == ["1"]
    for _ in range(3):  # every expiry, not only the first
        clock.now += 61
        got = c.get("shared/token")
        assert (got.value, got.version) == ("fake-after-replace", "1")
    moto.reset()
    clock.now += 61  # unchanged since: renewed by the probe alone
    assert c.get("shared/token").value == "fake-after-replace"
    assert (moto.counts["DescribeParameters"], moto.counts["GetParameters"]) == (1, 0)


def test_local_store_made_again_is_not_renewed(tmp_path: Path) -> None:
    """A local store removed and made again numbers from 1 again: the probe's created_at
    tells the new value from the cached one."""
    key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    store = LocalBackend("local", tmp_path / "s.db", master_key=key)
    store.put("a", "fake-old-store")
    clock = Clock()
    c = cached(store, clock, ttl=60, refresh_ahead=0)
    assert c.get("a").version == "1"
    store.close()
    for leftover in tmp_path.glob("s.db*"):
        leftover.unlink()
    store.put("a", "fake-new-store")
    clock.now += 61
    assert c.get("a").value == "fake-new-store"


class _FrozenProbe(MemoryBackend):
    """A store whose version probe reports what ``frozen`` says, whatever was written since
    (a probe that misses a change)."""

    frozen: dict[str, VersionInfo] = {}

    def versions(self, keys: Sequence[str]) -> dict[str, VersionInfo]:
        return {k: self.frozen[k] for k in keys if k in self.frozen}


def test_probe_renewals_are_bounded_by_max_renewals() -> None:
    """Even a probe that never sees a change cannot keep a value past max_renewals
    expiries: then the entry is read in full."""
    clock = Clock()
    store = _FrozenProbe("m", {"k": "fake-first"})
    c = cached(store, clock, ttl=60, refresh_ahead=0, max_renewals=2)
    first = c.get("k")
    store.frozen = {"k": VersionInfo(first.version, first.created_at)}
    store.put("k", "fake-second")
    seen = []
    for _ in range(3):
        clock.now += 61
        seen.append(c.get("k").value)
    assert seen == ["fake-first", "fake-first", "fake-second"]
    assert c.stats["renewed"] == 2


class _Gated(MemoryBackend):
    """A store whose reads wait for ``gate``, then end with ``outcome``: a value (the
    memory's), or an exception raised (``AccessDenied``, a ``KeyboardInterrupt``...)."""

    def __init__(self, name: str, data: dict[str, str], outcome: BaseException | None) -> None:
        super().__init__(name, data)
        self.outcome = outcome
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        found = super()._get_many(keys)  # records the call
        self.entered.set()
        self.gate.wait(timeout=30)
        if self.outcome is not None:
            raise self.outcome
        return found


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _leader_and_waiters(c: CachedBackend, store: _Gated, key: str,
                        waiters: int) -> tuple[object, list[object]]:
    """One thread reads ``key`` and is held inside the store while ``waiters`` more threads
    miss the same key; then the store answers. Returns each thread's outcome (the Secret or
    None, or the exception), all within a bounded wait."""
    outcomes: dict[int, object] = {}

    def read(i: int) -> None:
        try:
            outcomes[i] = c.get(key)
        except BaseException as exc:  # noqa: BLE001  (the outcome under test)
            outcomes[i] = exc

    def start(i: int) -> threading.Thread:
        thread = threading.Thread(target=read, args=(i,), daemon=True)
        thread.start()
        return thread

    misses = c.stats["misses"]
    threads = [start(0)]
    assert store.entered.wait(timeout=10)
    threads += [start(i) for i in range(1, waiters + 1)]
    _wait_for(lambda: c.stats["misses"] == misses + waiters + 1, "the waiters")
    store.gate.set()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a waiter is still waiting for the leader"
    return outcomes[0], [outcomes[i] for i in range(1, waiters + 1)]


def test_a_denied_leader_answers_every_waiter_at_once() -> None:
    """The store denies the one read that threads share: every waiter gets the same
    AccessDenied at once (not a BackendUnavailable after the 600 s timeout), one store call."""
    store = _Gated("m", {"k": "fake-denied"}, pipekey.AccessDenied("backend 'm': denied 'k'"))
    c = cached(store, Clock())
    leader, waiters = _leader_and_waiters(c, store, "k", 5)
    assert isinstance(leader, pipekey.AccessDenied)
    assert all(w is leader for w in waiters)
    assert len(store.calls) == 1 and c._inflight == {}


def test_an_interrupted_leader_does_not_strand_its_waiters() -> None:
    """A KeyboardInterrupt in the leader goes to the leader; its waiters get a one-line
    BackendUnavailable at once, and the interruption is not remembered as a failure."""
    store = _Gated("m", {"k": "fake-interrupted"}, KeyboardInterrupt())
    c = cached(store, Clock())
    leader, waiters = _leader_and_waiters(c, store, "k", 3)
    assert isinstance(leader, KeyboardInterrupt)
    for waiter in waiters:
        assert isinstance(waiter, BackendUnavailable)
        assert str(waiter) == ("backend 'm': the read was interrupted in another thread "
                               "(KeyboardInterrupt)")
    store.outcome = None
    assert c.get("k").value == "fake-interrupted" and len(store.calls) == 2


OUTCOMES = {
    "value": None,
    "absent": None,
    "backend error": BackendUnavailable("m", "read failed (fake)"),
    "denied": pipekey.AccessDenied("backend 'm': denied 'k'"),
    "other exception": RuntimeError("fake"),  # the store's own _guard makes it a BackendError
    "interrupt": KeyboardInterrupt(),
}


@settings(max_examples=30, deadline=None)
@given(outcome=st.sampled_from(sorted(OUTCOMES)), waiters=st.integers(1, 6))
def test_single_flight_every_waiter_gets_the_leaders_outcome(outcome: str, waiters: int) -> None:
    """Whatever the leader's read ends with, every concurrent waiter gets that outcome (the
    same value, absence or exception; an interruption as a BackendUnavailable), and neither
    a read in flight nor a refreshing entry is left behind, for a miss or a refresh ahead."""
    data = {} if outcome == "absent" else {"k": "fake-sf-value"}
    store = _Gated("m", data, OUTCOMES[outcome])
    clock = Clock()
    c = cached(store, clock, ttl=100, negative_ttl=100, refresh_ahead=0.5, refresh_threads=1)
    leader, got = _leader_and_waiters(c, store, "k", waiters)
    if outcome == "interrupt":
        assert isinstance(leader, KeyboardInterrupt)
        assert all(isinstance(w, BackendUnavailable) for w in got)
        assert len({str(w) for w in got}) == 1
    elif isinstance(leader, BaseException):
        assert isinstance(leader, (BackendUnavailable, pipekey.AccessDenied))
        assert all(w is leader for w in got)
    else:
        assert leader == (None if outcome == "absent" else c._entries["k"].secret)
        assert all(w == leader for w in got)
    assert len(store.calls) == 1 and c._inflight == {}
    # the same outcome from a background refresh ahead never leaves the entry refreshing
    store.outcome, store.gate = None, threading.Event()
    store.gate.set()
    c.invalidate()
    c.get("k")
    store.outcome = OUTCOMES[outcome]
    clock.now += 60  # past refresh_at, before expiry
    c.get("k")
    _wait_for(lambda: len(store.calls) == 3, "the refresh")
    c._refresher.submit(lambda: None).result(timeout=10)  # one thread: the refresh is done
    assert not c._entries["k"].refreshing
    c.close()


def test_a_failure_is_remembered_with_exponential_backoff() -> None:
    """After a failed read the store is not asked again for 1 s, then 2 s, 4 s...; readers
    meanwhile get the same error (or the value within max_stale). A success resets it, and
    so does invalidate."""
    clock = Clock()
    store = FailingBackend("ssm", {"k": "fake-backoff"}, error=pipekey.AccessDenied(
        "backend 'ssm': denied 'k'"))
    c = cached(store, clock)
    asked = []
    for step in (0, 0.5, 0.6, 1.0, 1.0, 2.0, 2.0, 4.0):
        clock.now += step
        with pytest.raises(pipekey.AccessDenied, match="denied 'k'") as info:
            c.get("k")
        assert "fake-backoff" not in str(info.value)
        asked.append(len(store.calls))
    # asked at 0; held at 0.5; asked at 1.1 (after 1 s); held at 2.1; asked at 3.1 (2 s);
    # held at 5.1; asked at 7.1 (4 s); held at 11.1
    assert asked == [1, 1, 2, 2, 3, 3, 4, 4]
    c.invalidate(["k"])
    with pytest.raises(pipekey.AccessDenied):
        c.get("k")
    assert len(store.calls) == 5
    store.recover()
    clock.now += 1
    assert c.get("k").value == "fake-backoff" and len(store.calls) == 6
    c.invalidate(["k"])
    store.fail()
    with pytest.raises(pipekey.AccessDenied):
        c.get("k")
    clock.now += 1.01  # reset by the success: 1 s again, not 8 s
    with pytest.raises(pipekey.AccessDenied):
        c.get("k")
    assert len(store.calls) == 8


def test_backoff_is_capped_and_serves_stale_within_max_stale() -> None:
    """The backoff never exceeds a minute; while it holds, a BackendError still lets the
    cached value be served within max_stale."""
    clock = Clock()
    store, c = _down_after_one_read("fake-capped", clock, max_stale=10_000)
    clock.now += 61
    for _ in range(12):  # 1, 2, 4 ... past the cap
        assert c.get("k").stale_seconds is not None
        clock.now += 61
    calls = len(store.calls)
    assert c.get("k").value == "fake-capped"  # 61 s after the last failure: asked again
    assert len(store.calls) == calls + 1
    clock.now += 59
    c.get("k")
    assert len(store.calls) == calls + 1


def test_token_bucket_paces_a_burst() -> None:
    """25 calls at 10/s with a burst of 5 wait 2 s in all, whatever the threads."""
    clock = Clock()
    bucket = TokenBucket(10, 5, clock=clock, sleep=clock.sleep)
    for _ in range(25):
        bucket.acquire("ssm")
    assert bucket.waited == pytest.approx(2.0)
    slow = TokenBucket(1, 1, max_wait=0.5, clock=clock, sleep=clock.sleep)
    slow.acquire("ssm")
    with pytest.raises(BackendUnavailable, match="rate limit of 1/s"):
        slow.acquire("ssm")


class SharedClock(Clock):
    """A fake clock threads share: it moves only when one of them sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.sleeps = 0

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds
            self.sleeps += 1


class StampedMemory(MemoryBackend):
    """Stamps each store call with the fake clock's time."""

    def __init__(self, clock: SharedClock, data: dict[str, str]) -> None:
        super().__init__("m", data)
        self.clock = clock
        self.stamps: list[float] = []

    def _record(self, method: str, args: Iterable[str]) -> None:
        self.stamps.append(self.clock())
        super()._record(method, args)


def test_rate_limit_shared_by_threads() -> None:
    """Threads share one bucket (200/s, burst 10): of 40 reads of distinct keys, the n-th
    reaches the store only once the bucket holds it (n <= 10 + 200 * elapsed), so the 30
    beyond the burst wait 0.15 s of the bucket's clock between them. A fake clock that moves
    only by the bucket's sleeps: counts and order, no wall time, the same on a loaded machine."""
    clock = SharedClock()
    mem = StampedMemory(clock, {f"k{i}": "fake" for i in range(40)})
    c = wrap(mem, CacheConfig(), RateLimit(rps=200, burst=10, max_wait=3600), clock=clock,
             sleep=clock.sleep)
    start = clock()
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda i: c.get(f"k{i}").value, range(40), timeout=120))
    assert values == ["fake"] * 40 and len(mem.calls) == 40
    for n, at in enumerate(sorted(mem.stamps), start=1):
        assert n <= 10 + 200 * (at - start) + 1e-6, (n, at - start)
    assert clock() - start >= 30 / 200 - 1e-9 and clock.sleeps >= 1


def test_writes_invalidate() -> None:
    """A write through the cache is read back at once."""
    clock = Clock()
    c = cached(MemoryBackend("m", {"k": "fake-1"}), clock)
    c.get("k")
    c.put("k", "fake-2")
    assert c.get("k").value == "fake-2"


def test_cache_has_exactly_the_capabilities_of_its_backend() -> None:
    """A cache over a read-only store has no put or delete (writing by name is refused with
    the backend's name); over a writable store it writes through. Both keep history."""
    clock = Clock()
    ro = cached(ReadOnlyMemoryBackend("ro", {"k": "fake-1"}), clock)
    rw = cached(MemoryBackend("rw", {"k": "fake-1"}), clock)
    assert not isinstance(ro, Writable) and not hasattr(ro, "put")
    assert isinstance(rw, Writable) and isinstance(rw, Versioned) and isinstance(ro, Versioned)
    with pytest.raises(pipekey.ReadOnlyBackend, match="'ro'"):
        pipekey.Pipekey([ro, rw]).set("k", "fake-2", backend="ro")
    assert rw.put("k", "fake-2").version == "2"
    assert [v.version for v in ro.history("k")] == ["1"]


def test_each_combination_of_capabilities_is_a_declared_class() -> None:
    """wrap picks a class declared in pipekey.cache (none is made at run time) whose
    forwards are exactly the store's; building a class that forwards other capabilities
    than its store has is a TypeError naming the backend."""
    import pipekey.cache as cache_module

    stores = [MemoryBackend("rw", {}), ReadOnlyMemoryBackend("ro", {}),
              LocalBackend("local", Path("s.db"), master_key="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"
                                                             "ODlhYmNkZWY="),
              FailingBackend("f"), _FrozenProbe("p", {})]
    for store in stores:
        c = wrap(store)
        assert getattr(cache_module, type(c).__name__) is type(c)
        assert c.forwards == cache_module.capabilities(store)
    assert type(wrap(stores[0])) is type(wrap(stores[3]))
    with pytest.raises(TypeError, match="cannot wrap backend 'rw'.*pipekey.cache.wrap"):
        CachedBackend(stores[0])
    with pytest.raises(TypeError, match="cannot wrap backend 'ro'"):
        cache_module.CachedWritableBackend(stores[1])


def test_invalidate_reaches_a_cache_behind_the_cache() -> None:
    """invalidate forgets the key in this cache and in a cache it wraps (Invalidates)."""
    clock, mem = Clock(), MemoryBackend("m", {"k": "fake-1"})
    inner = cached(mem, clock)
    outer = cached(inner, clock)
    assert isinstance(outer, Invalidates)
    outer.get("k")
    mem.put("k", "fake-2")  # behind both caches' backs
    assert outer.get("k").value == "fake-1"
    outer.invalidate(["k"])
    assert outer.get("k").value == "fake-2"


def test_rotation_during_a_run_and_refresh(tmp_path: Path) -> None:
    """A run keeps the value it opened with until run.refresh(name) reads past the cache."""
    clock, mem = Clock(), MemoryBackend("m", {"ads/a1/token": "fake-v1"})
    c = cached(mem, clock, ttl=3600)
    manifest = parse_manifest({"pipelines": {"ads": {"scope": "ads/{account}",
                                                     "requires": ["token"]}}}, Path("m.toml"))
    lk = pipekey.Pipekey([c], manifest=manifest)
    with lk.pipeline("ads", account="a1") as run:
        mem.put("ads/a1/token", "fake-v2")  # rotated while the run is open
        assert run.secret("token") == "fake-v1"
        assert run.refresh("token") == "fake-v2"
        assert run.secret("token") == "fake-v2"
    assert lk.get("ads/a1/token") == "fake-v2"


@pytest.mark.slow
def test_retry_on_auth_failure_with_real_postgres(postgres, tmp_path: Path) -> None:
    """The database refuses the cached (rotated-out) password; the run re-reads the connection
    once and connects with the new one."""
    import psycopg2

    from pipekey import Connection

    def uri(password: str) -> str:
        return Connection(conn_type="postgres", host=postgres["host"], port=postgres["port"],
                          login="loader", password=password, schema="analytics").to_uri()

    clock = Clock()
    mem = MemoryBackend("m", {"connections/pg": uri(postgres["password"])})
    manifest = parse_manifest({"pipelines": {"load": {
        "scope": "load", "connections": {"db": "connections/pg"}}}}, Path("m.toml"))
    lk = pipekey.Pipekey([cached(mem, clock, ttl=3600)], manifest=manifest)
    new = "fake-rotated-pw-2"
    admin = psycopg2.connect(host=postgres["host"], port=postgres["port"], user="loader",
                             password=postgres["password"], dbname="analytics")
    admin.autocommit = True
    try:
        with lk.pipeline("load") as run:
            admin.cursor().execute(f"ALTER ROLE loader PASSWORD '{new}'")  # rotation
            mem.put("connections/pg", uri(new))
            attempts = []

            def connect():
                c = run.connection("db")
                attempts.append(c.password)
                db = psycopg2.connect(host=c.host, port=c.port, user=c.login,
                                      password=c.password, dbname=c.schema, connect_timeout=5)
                db.close()
                return "connected"

            assert run.retry_on_auth_failure(connect, "db") == "connected"
            assert attempts == [postgres["password"], new]
    finally:
        admin.cursor().execute(f"ALTER ROLE loader PASSWORD '{postgres['password']}'")
        admin.close()


def _counter(name: str, **labels: str) -> float:
    inner = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return pipekey.metrics.snapshot()["counters"].get(f"{name}{{{inner}}}", 0)


def test_metrics_count_a_cached_read_once() -> None:
    """Through the cache a miss is one backend call and a hit none; one snapshot reads the
    backend's and the cache's counters."""
    clock, mem = Clock(), MemoryBackend("counted-once", {"k": "fake-1"})
    c = cached(mem, clock, ttl=60, refresh_ahead=0)
    pipekey.metrics.reset()
    c.get("k")
    calls = _counter("backend_calls", action="read", backend="counted-once")
    assert (calls, _counter("cache_misses", backend="counted-once")) == (1, 1)
    c.get("k")
    assert _counter("backend_calls", action="read", backend="counted-once") == 1
    assert _counter("cache_hits", backend="counted-once") == 1
    assert (c.stats["hits"], c.stats["misses"]) == (1, 1)  # the same counts, not a second count


def test_counters_are_exact_under_threads() -> None:
    """8 threads reading 500 times each: every hit and miss counted, none lost."""
    clock = Clock()
    c = cached(MemoryBackend("m", {f"k{i}": "fake" for i in range(10)}), clock, ttl=60,
               refresh_ahead=0)

    def read(n: int) -> None:
        for i in range(500):
            c.get(f"k{(i + n) % 10}")

    threads = [threading.Thread(target=read, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert c.stats["hits"] + c.stats["misses"] == 4000


def test_entries_are_bounded_least_recently_used_first() -> None:
    """Past max_entries the least recently used entry goes; a recent hit keeps its entry."""
    clock, mem = Clock(), MemoryBackend("m", {f"k{i}": "fake" for i in range(5)})
    c = cached(mem, clock, ttl=60, refresh_ahead=0, max_entries=3)
    c.get_many(["k0", "k1", "k2"])
    c.get("k0")  # now the most recent
    c.get("k3")  # evicts k1, the least recently used
    assert list(c._entries) == ["k2", "k0", "k3"] and c.stats["evictions"] == 1
    before = len(mem.calls)
    assert c.get("k0").cached and len(mem.calls) == before
    assert not c.get("k1").cached and len(mem.calls) == before + 1


def _refresher_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"pipekey-refresh-{name}")]


def test_close_stops_the_refresher_threads() -> None:
    """close() stops the refresh pool's threads; the cache still works and refreshes after."""
    clock, mem = Clock(), MemoryBackend("closing", {"k": "fake-old"})
    c = cached(mem, clock, ttl=100, refresh_ahead=0.2)
    c.get("k")
    clock.now += 85
    c.get("k")  # starts a background refresh
    deadline = time.monotonic() + 10
    while c.stats["refreshes"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _refresher_threads("closing")
    c.close()
    assert _refresher_threads("closing") == []
    mem.put("k", "fake-new")
    clock.now += 85
    assert c.get("k").value == "fake-old"  # a hit; refreshes again on a new pool
    while c.stats["refreshes"] == 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.get("k").value == "fake-new"
    c.close()


def test_cache_false_with_a_rate_limit_paces_without_caching() -> None:
    """cache = false and a rate limit: every read reaches the store, through the bucket."""
    clock, mem = Clock(), MemoryBackend("m", {"k": "fake"})
    c = wrap(mem, CacheConfig(enabled=False), RateLimit(rps=10, burst=1), clock=clock,
                      sleep=clock.sleep)
    for _ in range(3):
        assert not c.get("k").cached
    assert len(mem.calls) == 3 and c.bucket.waited == pytest.approx(0.2)


REMOTE = """
[backends.ssm]
type = "aws_ssm"
prefix = "/lk-default-cache"
region = "eu-central-1"
endpoint_url = "http://127.0.0.1:9"
{ssm_cache}
[backends.local]
type = "local"
path = "store.db"
{local_cache}
[backends.env]
type = "env"

[backends.files]
type = "files"
path = "secrets.toml"
optional = true
"""


@pytest.mark.parametrize("ssm_cache, local_cache, cached_names", [
    pytest.param("", "", {"ssm"}, id="defaults"),
    pytest.param("cache = false", "", set(), id="remote-off"),
    pytest.param("cache = { ttl = 5 }", "cache = true", {"ssm", "local"}, id="local-asked"),
])
def test_remote_stores_are_cached_by_default(tmp_path: Path, master_key: str, ssm_cache: str,
                                             local_cache: str, cached_names: set[str]) -> None:
    """Remote backends get the cache unless cache = false; env, files and local stay
    uncached unless asked; Pipekey.close closes the caches."""
    pytest.importorskip("boto3")
    path = tmp_path / "pipekey.toml"
    path.write_text(REMOTE.format(ssm_cache=ssm_cache, local_cache=local_cache))
    lk = pipekey.load(path)
    wrapped = {n for n, b in lk.backends.items() if isinstance(b, CachedBackend)}
    assert wrapped == cached_names
    if "ssm" in cached_names:
        ssm = lk.backend("ssm")
        assert ssm.config.ttl == (5 if ssm_cache else 300)
        assert ssm.config.max_entries == 1000
        ssm._refresher = ThreadPoolExecutor(1, thread_name_prefix="pipekey-refresh-ssm-test")
        ssm._refresher.submit(lambda: None).result()
        lk.close()
        assert ssm._refresher is None and _refresher_threads("ssm-test") == []
    lk.close()
