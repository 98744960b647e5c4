"""Broker mode under load and faults (issue 33): the small version of
``benchmarks/broker_load.py`` against a real Airflow API server.

One harness run (``Plan.ci()``) serves every check: SSM on moto behind the counting,
fault-injecting proxy; a two-team deployment in broker mode whose scheduler and dag-processor
stop once the task instances exist, so the api-server answers alone; a fleet process that signs
task tokens as the scheduler does and sends run requests through the Task SDK's own client
(its retries included). Bursts, then throttling, an outage and 2 s latency through the proxy,
then the api-server killed mid-burst and started again. Every answer is checked by
fingerprint; values are never printed.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("airflow")
pytest.importorskip("moto.server")
pytest.importorskip("boto3")

from benchmarks.broker_load import REFUSAL, Harness, Phase, Plan  # noqa: E402

from pipekey.redact import encodings  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PLAN = Plan.ci()


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    lines: list[str] = []
    with Harness(tmp_path_factory.mktemp("broker_load"), PLAN, log=lines.append) as harness:
        harness.run()
        harness.lines = lines
        yield harness


def _phases(load, prefix: str) -> list[Phase]:
    found = [p for p in load.phases if p.name.startswith(prefix)]
    assert found, f"no phase {prefix!r}: {[p.name for p in load.phases]}"
    return found


def _report(load) -> str:
    return "\n".join(p.line() for p in load.phases)


def test_no_answer_is_another_runs_or_another_teams_or_a_decoy(load) -> None:
    """In every phase (bursts, faults, restart): each value served is the request's own
    pipeline's and item's; a request for the other team's pipeline is never answered; the
    decoys the env-var backend holds for request keys are never served (no fall-through)."""
    assert load.phases
    for phase in load.phases:
        assert (phase.wrong, phase.foreign, phase.decoys) == (0, 0, 0), phase.line()
        assert not [k for k in phase.outcomes if k.startswith("cross-team served")], phase.line()


def test_bursts_serve_every_request(load) -> None:
    """Bursts of concurrent run requests: every own request served, every cross-team one
    refused at once by the broker's refusal payload (no HTTP 500 the Task SDK would retry),
    p99 measured (printed: pytest -rA)."""
    print(_report(load))
    for phase in _phases(load, "burst"):
        assert phase.outcomes.get("served", 0) > 0.9 * phase.requests, phase.line()
        assert set(phase.outcomes) <= {"served", "cross-team refused"}, phase.line()
        assert phase.outcomes.get("cross-team refused", 0) > 0, phase.line()
        assert 0 < phase.p50 <= phase.p99, phase.line()


def test_store_calls_are_bounded_by_distinct_runs_per_ttl(load) -> None:
    """Store calls follow the distinct runs and the cache's TTL, not the requests: at most one
    read per distinct run per (shortest) TTL, plus version probes."""
    for phase in _phases(load, "burst"):
        reads = phase.store_calls.get("GetParameters", 0)
        lives = 1 + math.ceil(phase.seconds / (PLAN.ttl * 0.9 * 0.8))  # jitter, refresh-ahead
        assert 0 < reads <= phase.distinct_runs * lives, phase.line()
        assert reads < phase.requests, phase.line()


@pytest.mark.parametrize("kind", PLAN.faults)
def test_store_fault_serves_cached_runs_refuses_new_ones_and_recovers(load, kind) -> None:
    """During the fault every run cached before it is served (fresh, or stale within
    max_stale once its TTL passed); a run never cached is refused by the API server naming
    the store (or served late, for latency); once the store is back every run is served
    again, the API server not restarted."""
    during = _phases(load, f"{kind}: during")[0]
    assert during.outcomes.get("served", 0) > 0, during.line()
    hot = {k: v for k, v in during.outcomes.items() if not k.startswith(("cold", "cross"))}
    assert set(hot) == {"served"}, during.line()  # every cached run, even past its TTL
    if kind in ("throttle", "outage"):
        # a run never cached is refused at once by the broker's refusal payload (no HTTP 500
        # for the Task SDK to retry), and the API server's log names the store
        assert during.outcomes.get("cold refused", 0) > 0, during.line()
        assert during.logged > 0 and during.refusals == 0, during.line()
    after = _phases(load, f"{kind}: after")[-1]
    assert set(after.outcomes) <= {"served", "cold served"}, _report(load)
    assert after.outcomes.get("cold served", 0) > 0, after.line()
    # never a hang: the slowest request stays within the SDK's retries of bounded answers
    deadline = 5 * PLAN.attempts * (1.0 + PLAN.read_timeout) + 4 * PLAN.retry_wait_max + 30
    assert during.max / 1000 < deadline, during.line()


def test_the_api_server_log_names_the_store_on_refusal(load) -> None:
    text = (load.deployment.consoles / "api-server-killed.log").read_text(errors="replace")
    assert REFUSAL in text
    assert "cannot reach AWS" in text or "Throttl" in text


def test_restart_mid_burst_then_every_request_is_served(load) -> None:
    """The api-server killed (SIGKILL) 1 s into a burst and started again: requests in flight
    fail or are retried by the Task SDK and served after; the next burst is served in full,
    its cache cold again (store calls again)."""
    killed = _phases(load, "restart: burst")[0]
    assert killed.outcomes.get("served", 0) + killed.outcomes.get("cold served", 0) > 0
    failed = {k for k in killed.outcomes if "served" not in k and not k.startswith("cross")}
    assert failed <= {"error ConnectError", "cold error ConnectError", "error RemoteProtocolError",
                      "cold error RemoteProtocolError", "error ReadError",
                      "cold error ReadError"}, killed.line()
    after = _phases(load, "restart: next")[0]
    own = {k for k in after.outcomes if not k.startswith("cross")}
    assert own <= {"served", "cold served"}, after.line()


def test_no_value_in_any_console_or_the_fleets_log(load) -> None:
    needles = {form for value in load.values.values() for form in encodings(value)}
    texts = {**load.deployment.console_text(),
             "fleet.log": (load.work / "fleet.log").read_text(errors="replace")}
    for where, text in texts.items():
        assert not [n for n in needles if n in text], where
    assert "\n".join(load.lines)  # the harness's own lines: fingerprints and counts only
    assert not [n for n in needles if n in "\n".join(load.lines)]


def test_the_checks_catch_a_wrong_a_foreign_and_a_decoy_answer(tmp_path) -> None:
    """The harness's judge, fed answers a broken broker would give (no deployment needed):
    another item's value, the other team's value, a cross-team request answered, a decoy."""
    harness = Harness(tmp_path, PLAN, log=lambda line: None)
    try:
        own, other = harness.fps[("a1", "i000")], harness.fps[("b1", "i000")]
        decoy = sorted(harness.decoy_fps)[0]
        sent = [["alpha", "a1", "i000"], ["alpha", "a1", "i001"], ["alpha", "a1", "i002"],
                ["alpha", "b1", "i000"], ["alpha", "a1", "i003"]]
        results = [["ok", own, "a1/i000", 5.0, [200]],
                   ["ok", own, "a1/i000", 5.0, [200]],        # another item's value
                   ["ok", other, "b1/i000", 5.0, [200]],      # the other team's value
                   ["ok", other, "b1/i000", 5.0, [200]],      # a cross-team request answered
                   ["ok", decoy, "a1/i003", 5.0, [500, 200]]]  # a fall-through's decoy
        got = harness.judge("check", sent, results)
        assert (got.wrong, got.foreign, got.decoys, got.retried, got.refusals) == (1, 2, 1, 1, 1)
    finally:
        harness.rss.close()
