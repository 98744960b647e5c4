"""Fault tests on loopback: SSM (moto) behind a proxy that throttles, fails, stalls or goes
away. Each asserts the value served and its age, the error text, and the calls made."""

from __future__ import annotations

import random
import uuid

import pytest
from benchmarks.proxy import LoopbackProxy

from pipekey import BackendUnavailable
from pipekey.backends.aws_ssm import SsmBackend, SsmConfig
from pipekey.cache import CacheConfig, wrap


class Clock:
    now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def proxy(aws_env: str):
    p = LoopbackProxy(aws_env)
    yield p
    p.close()


#: the timeouts of every call that is not about timing out: generous and bounded, so a
#: loaded 2-core machine (moto answering in seconds) makes a test slow, never wrong; the
#: tests assert on counts, order and the words of errors, not on wall time
PATIENT = 30.0


def _ssm(endpoint: str, prefix: str, **extra) -> SsmBackend:
    config = {"type": "aws_ssm", "prefix": prefix, "region": "eu-central-1",
              "endpoint_url": endpoint, "max_attempts": 3, "read_timeout": PATIENT,
              "connect_timeout": PATIENT, **extra}
    return SsmBackend("ssm", SsmConfig(**config))


@pytest.fixture
def seeded(aws_env: str):
    prefix = f"/lk-faults/{uuid.uuid4().hex[:8]}"
    _ssm(aws_env, prefix).put("shared/token", "fake-fault-token")
    return prefix


def test_throttling_burst_is_retried(proxy, seeded) -> None:
    """Two throttled answers, then the value: served, 2 retries and 2 throttles counted."""
    ssm = _ssm(proxy.url, seeded)
    proxy.plan = [("throttle",), ("throttle",)]
    assert ssm.get("shared/token").value == "fake-fault-token"
    assert (ssm.stats["retries"], ssm.stats["throttles"], proxy.requests) == (2, 2, 3)


def test_server_errors_are_retried_then_reported(proxy, seeded) -> None:
    """5xx answers are retried; three in a row fail naming the backend, key and code."""
    ssm = _ssm(proxy.url, seeded)
    proxy.plan = [("status", 500), ("status", 503)]
    assert ssm.get("shared/token").value == "fake-fault-token"
    proxy.plan = [("status", 500)] * 3
    with pytest.raises(BackendUnavailable) as info:
        ssm.get("shared/token")
    assert "backend 'ssm'" in str(info.value) and "'shared/token'" in str(info.value)
    assert proxy.requests == 6


def test_slow_answers_time_out(proxy, seeded) -> None:
    """An answer slower than the read timeout fails with a timeout, after max_attempts. The
    proxy holds each answer back 2 s, well past the 0.3 s timeout however loaded the
    machine: no byte can arrive before the timeout fires."""
    ssm = _ssm(proxy.url, seeded, max_attempts=2, read_timeout=0.3)
    proxy.plan = [("delay", 2.0), ("delay", 2.0)]
    with pytest.raises(BackendUnavailable, match="cannot reach AWS .*ReadTimeout"):
        ssm.get("shared/token")
    assert proxy.requests == 2


def test_outage_served_stale_then_fails_past_max_stale(proxy, seeded) -> None:
    """Connection refused: the cached value is served with its age up to max_stale; after
    that, a clear error. Calls: one good read, then one failed attempt per expiry."""
    clock = Clock()
    cache = wrap(_ssm(proxy.url, seeded, max_attempts=1),
                          CacheConfig(ttl=60, jitter=0, refresh_ahead=0, max_stale=900),
                          clock=clock, rng=random.Random(0))
    assert cache.get("shared/token").value == "fake-fault-token"
    proxy.close()  # the store goes away: connections are refused
    clock.now += 600
    stale = cache.get("shared/token")
    assert (stale.value, stale.stale_seconds) == ("fake-fault-token", 600.0)
    clock.now += 400
    # after expiry the cache first asks for versions (DescribeParameters), then values
    with pytest.raises(BackendUnavailable, match="backend 'ssm': cannot reach AWS for "
                                                 "(describe|get)_parameters for 'shared/token'"):
        cache.get("shared/token")
    assert cache.inner.stats["calls"] == 3 and cache.stats["stale"] == 1


def test_rotated_value_is_not_served_past_its_ttl(aws_env, seeded) -> None:
    """After a rotation the cached value lasts at most its TTL; then the new one is read."""
    clock = Clock()
    writer = _ssm(aws_env, seeded)
    cache = wrap(_ssm(aws_env, seeded), CacheConfig(ttl=60, jitter=0, refresh_ahead=0),
                          clock=clock)
    assert cache.get("shared/token").version == "1"
    writer.put("shared/token", "fake-rotated")
    clock.now += 59
    assert cache.get("shared/token").version == "1"
    clock.now += 2
    fresh = cache.get("shared/token")
    assert (fresh.value, fresh.version, fresh.cached) == ("fake-rotated", "2", False)


def test_ssm_version_probe_renews_without_reading_values(aws_env, seeded, moto) -> None:
    """Expired SSM entries whose version is unchanged are renewed by DescribeParameters; no
    GetParameters (and so no decrypt) is made for them."""
    clock = Clock()
    cache = wrap(_ssm(aws_env, seeded), CacheConfig(ttl=60, jitter=0, refresh_ahead=0),
                          clock=clock)
    cache.get("shared/token")
    clock.now += 61
    moto.reset()
    assert cache.get("shared/token").value == "fake-fault-token"
    assert (moto.counts["DescribeParameters"], moto.counts["GetParameters"]) == (1, 0)
    assert cache.stats["renewed"] == 1
