"""Counters and histograms for backends and runs, always readable, exported when possible.

    pipekey.metrics.snapshot()
    {"counters": {"backend_calls{backend=ssm}": 4, ...},
     "histograms": {"backend_latency_seconds{backend=ssm}": {"count": 4, "sum": 0.08, ...}}}

This module is the one place that counts. Recorded, per backend: ``backend_calls``,
``backend_errors`` and ``backend_latency_seconds`` (operations of the backend contract: one
``get_many``, one ``list``; a cache in front of a backend does not count them again);
``store_calls``, ``store_retries``, ``store_throttles``, ``store_errors`` and ``store_seconds``
(requests a remote backend's SDK sent); ``cache_hits``, ``cache_misses``, ``cache_stale``,
``cache_refreshes``, ``cache_renewed``, ``cache_evictions`` and ``rate_limit_wait_seconds``.
Per pipeline ``run_ready_seconds`` and ``runs_opened``; per credential definition
``credential_mint_seconds``, ``credentials_minted``, ``credentials_swept`` and
``credential_revoke_errors``; ``audit_events`` and
``audit_sink_failures``. ``backend.stats`` (a :class:`Tally`) is one object's share of the
same counts, added by the same ``incr`` under the same lock, not a second counter.
``export_prometheus()`` exposes them through prometheus_client and
``export_opentelemetry()`` through the OpenTelemetry metrics API, when those are installed.
Thread-safe; recording is a dict update under a lock.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["BUCKETS", "Tally", "export_opentelemetry", "export_prometheus", "incr", "observe",
           "reset", "snapshot"]

#: histogram bucket upper bounds, seconds
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
# [count, sum, per-bucket counts]: a list, so one observation updates it in place
_histograms: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = {}


def _labels(labels: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


class Tally(Mapping[str, float]):
    """One object's share of counters whose names start with ``prefix``, read as
    ``tally["hits"]`` for ``cache_hits``. Only :func:`incr` adds to it, in the same step and
    under the same lock as the process-wide counter; :func:`reset` does not clear it."""

    def __init__(self, prefix: str, names: Iterable[str]) -> None:
        self.prefix = prefix
        self._counts: dict[str, float] = dict.fromkeys(names, 0)

    def __getitem__(self, name: str) -> float:
        with _lock:
            return self._counts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._counts))

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        with _lock:
            return f"Tally({self._counts!r})"


def incr(name: str, value: float = 1, *, tally: Tally | None = None, **labels: Any) -> None:
    """Add ``value`` to the counter ``name`` with these labels (and to ``tally``, if given)."""
    key = (name, _labels(labels))
    with _lock:
        _counters[key] = _counters.get(key, 0) + value
        if tally is not None:
            short = name.removeprefix(tally.prefix)
            tally._counts[short] = tally._counts.get(short, 0) + value


def observe(name: str, value: float, **labels: Any) -> None:
    """Record one observation (seconds) in the histogram ``name``."""
    key = (name, _labels(labels))
    with _lock:
        entry = _histograms.setdefault(key, [0, 0.0, [0] * (len(BUCKETS) + 1)])
        entry[0] += 1
        entry[1] += value
        entry[2][bisect.bisect_left(BUCKETS, value)] += 1


def _name(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    return f"{name}{{{','.join(f'{k}={v}' for k, v in labels)}}}" if labels else name


def snapshot() -> dict[str, dict[str, Any]]:
    """Every counter and histogram, by ``name{label=value,...}``."""
    with _lock:
        counters = {_name(n, lb): v for (n, lb), v in sorted(_counters.items())}
        histograms = {_name(n, lb): {"count": c, "sum": round(s, 6),
                                     "buckets": dict(zip([*map(str, BUCKETS), "+Inf"], b))}
                      for (n, lb), (c, s, b) in sorted(_histograms.items())}
    return {"counters": counters, "histograms": histograms}


def reset() -> None:
    """Forget everything recorded (for tests and long-lived processes that scrape deltas)."""
    with _lock:
        _counters.clear()
        _histograms.clear()


def export_prometheus(registry: Any = None) -> Any:
    """Register a collector with prometheus_client (default registry); returns it."""
    from prometheus_client.core import REGISTRY, CounterMetricFamily, HistogramMetricFamily

    class Collector:
        def collect(self) -> Iterator[Any]:
            with _lock:
                counters = dict(_counters)
                histograms = {k: (c, s, list(b)) for k, (c, s, b) in _histograms.items()}
            by_name: dict[str, Any] = {}
            for (name, labels), value in counters.items():
                family = by_name.setdefault(name, CounterMetricFamily(
                    f"pipekey_{name}", f"pipekey {name}", labels=[k for k, _ in labels]))
                family.add_metric([v for _, v in labels], value)
            for (name, labels), (_count, total, buckets) in histograms.items():
                family = by_name.setdefault(name, HistogramMetricFamily(
                    f"pipekey_{name}", f"pipekey {name}", labels=[k for k, _ in labels]))
                cumulative: list[tuple[str, float]] = []
                acc: float = 0
                for bound, n in zip([*map(str, BUCKETS), "+Inf"], buckets):
                    acc += n
                    cumulative.append((bound, acc))
                family.add_metric([v for _, v in labels], cumulative, total)
            yield from by_name.values()

    collector = Collector()
    (registry or REGISTRY).register(collector)
    return collector


def export_opentelemetry(meter: Any = None) -> Any:
    """Expose the counters through OpenTelemetry observable counters; returns the meter."""
    from opentelemetry import metrics as otel
    from opentelemetry.metrics import Observation

    meter = meter or otel.get_meter("pipekey")
    names = {n for n, _ in _counters} | {"backend_calls", "backend_errors", "runs_opened"}

    def callback_for(name: str) -> Callable[[Any], list[Observation]]:
        def callback(_options: Any) -> list[Observation]:
            with _lock:
                items = [(dict(lb), v) for (n, lb), v in _counters.items() if n == name]
            return [Observation(v, lb) for lb, v in items]
        return callback

    for name in sorted(names):
        meter.create_observable_counter(f"pipekey.{name}", callbacks=[callback_for(name)])
    return meter
