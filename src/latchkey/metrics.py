"""Counters and histograms for backends and runs, always readable, exported when possible.

    latchkey.metrics.snapshot()
    {"counters": {"backend_calls{backend=ssm}": 4, ...},
     "histograms": {"backend_latency_seconds{backend=ssm}": {"count": 4, "sum": 0.08, ...}}}

Recorded: per backend ``backend_calls``, ``backend_errors``, ``backend_retries``,
``backend_throttles`` and ``backend_latency_seconds``; per pipeline ``run_ready_seconds`` and
``runs_opened``; ``audit_events`` and ``audit_sink_failures``. ``export_prometheus()`` exposes
them through prometheus_client and ``export_opentelemetry()`` through the OpenTelemetry
metrics API, when those are installed. Thread-safe; recording is a dict update under a lock.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

__all__ = ["BUCKETS", "export_opentelemetry", "export_prometheus", "incr", "observe", "reset",
           "snapshot"]

#: histogram bucket upper bounds, seconds
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_lock = threading.Lock()
_counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_histograms: dict[tuple[str, tuple[tuple[str, str], ...]], list] = {}


def _labels(labels: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def incr(name: str, value: float = 1, **labels: Any) -> None:
    """Add ``value`` to the counter ``name`` with these labels."""
    key = (name, _labels(labels))
    with _lock:
        _counters[key] = _counters.get(key, 0) + value


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


def snapshot() -> dict[str, dict]:
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
        def collect(self):
            with _lock:
                counters = dict(_counters)
                histograms = {k: (c, s, list(b)) for k, (c, s, b) in _histograms.items()}
            by_name: dict[str, Any] = {}
            for (name, labels), value in counters.items():
                family = by_name.setdefault(name, CounterMetricFamily(
                    f"latchkey_{name}", f"latchkey {name}", labels=[k for k, _ in labels]))
                family.add_metric([v for _, v in labels], value)
            for (name, labels), (_count, total, buckets) in histograms.items():
                family = by_name.setdefault(name, HistogramMetricFamily(
                    f"latchkey_{name}", f"latchkey {name}", labels=[k for k, _ in labels]))
                cumulative, acc = [], 0
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

    meter = meter or otel.get_meter("latchkey")
    names = {n for n, _ in _counters} | {"backend_calls", "backend_errors", "runs_opened"}

    def callback_for(name: str):
        def callback(_options):
            with _lock:
                items = [(dict(lb), v) for (n, lb), v in _counters.items() if n == name]
            return [Observation(v, lb) for lb, v in items]
        return callback

    for name in sorted(names):
        meter.create_observable_counter(f"latchkey.{name}", callbacks=[callback_for(name)])
    return meter
