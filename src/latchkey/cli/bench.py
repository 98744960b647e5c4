"""``latchkey bench``: print how fast runs become ready and how cheap warm reads are."""

from __future__ import annotations

import contextlib
import sys

import click

from ._common import _emit, _print, _table, cli, json_option


@cli.command()
@click.option("--repeat", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="Cold runs measured per scenario.")
@click.option("--latency-ms", default=20.0, show_default=True, type=click.FloatRange(0, 5_000),
              help="Simulated round trip of each remote store.")
@click.option("--compare", is_flag=True,
              help="Compare with boto3, Airflow's AWS backends, dlt's provider and "
                   "aws-secretsmanager-caching on moto behind a latency proxy "
                   "(needs latchkey[bench]); prints PASS/FAIL for the targets.")
@click.option("--pipelines", default=20, show_default=True, type=click.IntRange(1, 200),
              help="With --compare: pipelines seeded and run concurrently.")
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results",
              show_default=True, help="With --compare: where results.md/json and plots go.")
@json_option
def bench(repeat: int, latency_ms: float, compare: bool, pipelines: int, out: str,
          as_json: bool) -> None:
    """Measure run readiness (40 secrets) and warm read cost; print the numbers.

    Uses fake values in a temporary local store and in-memory stores that stand in for
    remote ones (each call takes --latency-ms). Nothing is asserted: read the numbers.
    With --compare, the comparison against other tools (see benchmarks/README.md).
    """
    if compare:
        _compare(min(repeat, 20), latency_ms, pipelines, out, as_json)
        return
    from ..bench import run_benchmarks

    click.echo(f"latchkey bench: {repeat} cold runs per scenario, {latency_ms:g} ms simulated "
               "round trips...", err=True)
    results = run_benchmarks(repeat=repeat, latency=latency_ms / 1000)

    def text() -> None:
        table = _table("BENCHMARK", "MEDIAN", "P90", "NOTES")
        local, remote = results["ready_local"], results["ready_remote"]
        table.add_row(f"ready, {results['secrets']} secrets, local store (cold)",
                      _ms(local["median"]), _ms(local["p90"]), f"{local['runs']} runs")
        notes = (f"{remote['round_trips']:.2f} round trips of {latency_ms:g} ms, "
                 f"{remote['calls_per_run']:.0f} store calls per run")
        table.add_row(f"ready, {results['secrets']} secrets, 2 remote stores",
                      _ms(remote["median"]), _ms(remote["p90"]), notes)
        many = results["runs_200"]
        table.add_row(f"{many['runs']} concurrent runs, no cache",
                      f"{many['uncached']['seconds'] * 1000:.0f} ms", "",
                      f"{many['uncached']['store_calls']} store calls")
        table.add_row(f"{many['runs']} concurrent runs, cache + single-flight",
                      f"{many['cached']['seconds'] * 1000:.0f} ms", "",
                      f"{many['cached']['store_calls']} store calls "
                      f"({many['calls_saved']} saved)")
        table.add_row("warm run.secret(name)", f"{results['warm_secret_ns']:.0f} ns", "",
                      "best of 5")
        table.add_row("warm run.get(key)", f"{results['warm_get_ns']:.0f} ns", "", "best of 5")
        _print(table)

    _emit(as_json, results, text)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _compare(repeats: int, latency_ms: float, pipelines: int, out: str, as_json: bool) -> None:
    from pathlib import Path

    from ..bench_compare import markdown, run_comparison

    # Airflow and others set up logging to stdout when imported: keep stdout for the results
    with contextlib.redirect_stdout(sys.stderr):
        results = run_comparison(rtt=latency_ms / 1000, repeats=repeats, pipelines=pipelines,
                                 out=Path(out), progress=lambda m: click.echo(m, err=True))
    _emit(as_json, results, lambda: click.echo(markdown(results)))
    if not all(t["pass"] for t in results["targets"]):
        click.echo("some targets FAILED", err=True)
