"""``pipekey bench --inventory``: print how fast the inventory's pages render."""

from __future__ import annotations

import click

from ..errors import MissingDependency
from ._common import _emit, _print, _table, row


def bench_inventory(as_json: bool) -> None:
    try:
        from ..inventory_bench import run
    except ImportError:  # pragma: no cover - the ui extra is missing
        raise MissingDependency("pipekey bench --inventory", "ui") from None
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingDependency("pipekey bench --inventory", "ui") from None
    click.echo("pipekey bench: inventory pages, 1,000 keys, 50 pipelines, 100,000 audit "
               "records (seeding the store takes a while)...", err=True)
    results = run()

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    def text() -> None:
        table = _table("PAGE", "TIME", "TARGET", "NOTES")
        verdict = "PASS" if results["cold_matrix_seconds"] < results["target_seconds"] \
            else "FAIL"
        row(table, "matrix, first request (whole audit read)",
            ms(results["cold_matrix_seconds"]), "< 1000 ms", f"{verdict}; "
            f"{results['matrix_bytes'] // 1024} KiB of HTML")
        for page, seconds in results["warm_seconds"].items():
            target = "< 1000 ms" if page == "matrix" else ""
            notes = (("PASS" if seconds < results["target_seconds"] else "FAIL") + "; "
                     if target else "") + f"median of {results['repeat']}, 200 new audit " \
                "records before each"
            row(table, f"{page}, warm", ms(seconds), target, notes)
        _print(table)
        click.echo(f"{results['keys']} keys, {results['pipelines']} pipelines, "
                   f"{results['audit_events_indexed']} audit records indexed, "
                   f"{results['findings']} findings; max RSS grew "
                   f"{results['maxrss_growth_kib']} KiB while serving")

    _emit(as_json, results, text)
