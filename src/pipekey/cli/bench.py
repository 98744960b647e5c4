"""``pipekey bench``: print how fast runs become ready and how cheap warm reads are."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from ..errors import UsageError
from ._common import _emit, _lk, _print, _table, cli, json_option, row, say


@cli.command()
@click.option("--repeat", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="Cold runs measured per scenario.")
@click.option("--latency-ms", default=20.0, show_default=True, type=click.FloatRange(0, 5_000),
              help="Simulated round trip of each remote store.")
@click.option("--compare", is_flag=True,
              help="Compare with boto3, Airflow's AWS backends, dlt's provider and "
                   "aws-secretsmanager-caching on moto behind a latency proxy "
                   "(runs benchmarks/compare.py from a source checkout; needs "
                   "pipekey[bench]); prints PASS/FAIL for the targets.")
@click.option("--startup-runs", default=10, show_default=True, type=click.IntRange(0, 1_000),
              help="Fresh interpreters per start-up measurement (import pipekey, "
                   "pipekey run -- true, python -c pass, the manifest's validation); 0 "
                   "skips them.")
@click.option("--pipelines", default=20, show_default=True, type=click.IntRange(1, 200),
              help="With --compare: pipelines seeded and run concurrently.")
@click.option("--out", type=click.Path(file_okay=False), default="benchmarks/results",
              show_default=True, help="With --compare: where results.md/json and plots go.")
@click.option("--credentials", "definition", metavar="NAME",
              help="Only this: --runs runs opening at once, each minting a login from the "
                   "manifest's [credentials.NAME] against the real database; time to ready.")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1, 500),
              help="With --credentials: runs opening at once.")
@click.option("--inventory", is_flag=True,
              help="Only this: the inventory's pages (pipekey ui) for 1,000 keys, 50 "
                   "pipelines and 100,000 audit records; needs pipekey[ui].")
@json_option
@click.pass_context
def bench(ctx: click.Context, repeat: int, latency_ms: float, compare: bool, startup_runs: int,
          pipelines: int, out: str, definition: str | None, runs: int, inventory: bool,
          as_json: bool) -> None:
    """Measure run readiness (40 secrets) and warm read cost; print the numbers.

    Uses fake values in a temporary local store and in-memory stores that stand in for
    remote ones (each call takes --latency-ms). Nothing is asserted: read the numbers.
    With --compare, the comparison against other tools (see benchmarks/README.md).
    """
    if compare:
        _compare(min(repeat, 20), latency_ms, pipelines, out, as_json)
        return
    if definition:
        _credentials(ctx, definition, runs, as_json)
        return
    if inventory:
        from ._bench_inventory import bench_inventory

        bench_inventory(as_json)
        return
    from ..bench import run_benchmarks, startup

    click.echo(f"pipekey bench: {repeat} cold runs per scenario, {latency_ms:g} ms simulated "
               "round trips...", err=True)
    results = run_benchmarks(repeat=repeat, latency=latency_ms / 1000)
    if startup_runs:
        click.echo(f"pipekey bench: start-up, {startup_runs} fresh interpreters each...",
                   err=True)
        results["startup"] = startup(startup_runs)

    def text() -> None:
        table = _table("BENCHMARK", "MEDIAN", "P90", "NOTES")
        local = results["ready_local"]
        row(table, f"ready, {results['secrets']} secrets, local store (cold)",
            _ms(local["median"]), _ms(local["p90"]), f"{local['runs']} runs")
        for lookup in ("sequential", "parallel"):
            remote = results["ready_remote" + ("_parallel" if lookup == "parallel" else "")]
            notes = (f"{remote['round_trips']:.2f} round trips of {latency_ms:g} ms, "
                     f"{remote['calls_per_run']:.0f} store calls per run")
            row(table, f"ready, {results['secrets']} secrets, 2 remote stores, {lookup}",
                _ms(remote["median"]), _ms(remote["p90"]), notes)
        many = results["runs_200"]
        row(table, f"{many['runs']} concurrent runs, no cache",
            f"{many['uncached']['seconds'] * 1000:.0f} ms", "",
            f"{many['uncached']['store_calls']} store calls")
        row(table, f"{many['runs']} concurrent runs, cache + single-flight",
            f"{many['cached']['seconds'] * 1000:.0f} ms", "",
            f"{many['cached']['store_calls']} store calls "
            f"({many['calls_saved']} saved)")
        row(table, "warm run.secret(name)", f"{results['warm_secret_ns']:.0f} ns", "",
            "best of 5")
        row(table, "warm run.get(key)", f"{results['warm_get_ns']:.0f} ns", "", "best of 5")
        envs = results["environments"]
        row(table, f"memory per open environment ({envs['environments']} names)",
            f"{envs['rss_per_environment_bytes'] / 1024:.0f} KiB", "",
            f"RSS +{envs['rss_growth_bytes'] / 2**20:.1f} MiB; "
            f"{envs['environments_open']} chains and {envs['caches_open']} caches "
            f"open (bound {envs['environments_bound']}), "
            f"{envs['environments_after_close']} and {envs['caches_after_close']} "
            "after close")
        _print(table)
        if "startup" in results:
            _print(_startup_table(results["startup"]))

    _emit(as_json, results, text)


def _startup_table(up: dict[str, Any]) -> Any:
    """Start-up against the targets: PASS/FAIL is printed, never asserted."""
    table = _table("START-UP", "CPU", "WALL", "TARGET", "RESULT", "NOTES")
    targets, passed = up["targets_ms"], up["pass"]

    def verdict(name: str) -> str:
        return "PASS" if passed[name] else "FAIL"

    manifests = {"minimal": "minimal manifest",
                 "realistic": "realistic manifest: 30 pipelines, teams, credentials, 4 backends"}
    for command, label, target in (("run", "pipekey run --pipeline P -- true", "run"),
                                   ("get", "pipekey get KEY (local store)", "get")):
        for kind, notes in manifests.items():
            figure = up[f"{command}_{kind}"]
            row(table, f"{label} ({kind}), over python", f"{figure['cpu']:.1f} ms",
                f"{figure['wall']:.1f} ms",
                f"<= {targets[f'{target}_over_python_cpu']:g} ms CPU",
                verdict(f"{command}_{kind}"), notes)
    for name, label in (("help", "pipekey --help"), ("run_help", "pipekey run --help")):
        row(table, f"{label}, over python", f"{up[name]['cpu']:.1f} ms",
            f"{up[name]['wall']:.1f} ms", f"<= {targets['help_over_python_cpu']:g} ms CPU",
            verdict(name), "builds nothing: no manifest, no backend")
    row(table, "import pipekey", "", f"{up['import_ms']:.1f} ms",
        f"<= {targets['import']:g} ms", verdict("import"), "timed inside a fresh interpreter")
    loading = up["manifest"]
    row(table, "realistic manifest: msgspec validation, cold", "",
        f"{loading['validate_ms']:.2f} ms", f"<= {targets['manifest_validate']:g} ms",
        verdict("manifest_validate"), "every table, in a fresh interpreter (in-process)")
    row(table, "realistic manifest: load_manifest(), warm", "",
        f"{loading['load_warm_ms']:.2f} ms", f"<= {targets['manifest_load']:g} ms",
        verdict("manifest_load"),
        f"TOML, validation and pipekey's checks (policy, ownership); cold "
        f"{loading['load_cold_ms']:.1f} ms")
    load = up["load_average"]
    row(table, "python -c pass", f"{up['python_cpu_ms']:.1f} ms", f"{up['python_ms']:.1f} ms",
        "", "", f"{up['runs']} runs each, interleaved; medians; load average {load:.2f} on "
                f"{up['cpus']} CPUs" if load is not None else f"{up['runs']} runs each")
    return table


def _credentials(ctx: click.Context, definition: str, runs: int, as_json: bool) -> None:
    from ..bench import credentials_burst

    say(f"pipekey bench: {runs} runs opening at once, each minting a login from "
        f"credentials.{definition}...", err=True)
    results = credentials_burst(_lk(ctx), definition, runs)

    def text() -> None:
        table = _table("BENCHMARK", "MEDIAN", "P90", "SLOWEST", "NOTES")
        for label, key in (("ready (open, login minted)", "ready"), ("close (login dropped)",
                                                                    "close")):
            stats = results[key]
            row(table, f"{runs} runs at once: {label}", _ms(stats["median"]),
                _ms(stats["p90"]), _ms(stats["max"]),
                f"{results['logins']} distinct logins" if key == "ready" else
                f"all {runs} done in {results['wall']:.2f} s")
        _print(table)

    _emit(as_json, results, text)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _compare(repeats: int, latency_ms: float, pipelines: int, out: str, as_json: bool) -> None:
    compare = _benchmarks_compare()
    # Airflow and others set up logging to stdout when imported: keep stdout for the results
    with contextlib.redirect_stdout(sys.stderr):
        results = compare.run_comparison(rtt=latency_ms / 1000, repeats=repeats,
                                         pipelines=pipelines, out=Path(out),
                                         progress=lambda m: click.echo(m, err=True))
    _emit(as_json, results, lambda: click.echo(compare.markdown(results)))
    if not all(t["pass"] for t in results["targets"]):
        click.echo("some targets FAILED", err=True)


def _benchmarks_compare() -> ModuleType:
    """``benchmarks/compare.py`` from the source checkout this package runs from.

    The comparison is not part of the installed package (it imports Airflow, dlt, matplotlib
    and aws-secretsmanager-caching and sets AWS variables in ``os.environ``), so it is found
    beside ``src/`` or not at all.
    """
    root = Path(__file__).resolve().parents[3]  # src/pipekey/cli/bench.py -> the checkout
    if not (root / "benchmarks" / "compare.py").is_file():
        raise UsageError("pipekey bench --compare runs benchmarks/compare.py from a source "
                         f"checkout, and there is none beside this installation ({root}): "
                         "clone the repository and run it there")
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("benchmarks.compare")
    finally:
        sys.path.remove(str(root))
