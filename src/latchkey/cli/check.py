"""``latchkey check``: every pipeline's secrets and connections, resolved and optionally tried."""

from __future__ import annotations

import click

from ._common import _emit, _lk, _print, _table, cli, json_option
from .run import param_option, parse_params

STYLE = {"ok": "green", "skipped": "yellow"}


@cli.command()
@click.option("-p", "--pipeline", "pipelines", multiple=True, metavar="NAME",
              help="Check only this pipeline (repeatable). Default: every pipeline.")
@param_option
@click.option("-e", "--env", "check_env", help="The environment to check (default: as for "
                                               "runs).")
@click.option("--connect", is_flag=True,
              help="Also connect: PostgreSQL SELECT 1, S3 head bucket, DynamoDB describe table, "
                   "HTTP GET, Snowflake SELECT 1 (if its driver is installed).")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.5, 120),
              help="Seconds each connect check may take.")
@json_option
@click.pass_context
def check(ctx: click.Context, pipelines: tuple[str, ...], params: tuple[str, ...],
          check_env: str | None, connect: bool, timeout: float, as_json: bool) -> None:
    """Resolve everything each pipeline requires and report, per pipeline, what is missing,
    forbidden or invalid. Exits 1 if anything failed.

    A pipeline with a templated scope is checked for each of its `instances` in the
    manifest, or for the --param values given.

    \b
    latchkey check
    latchkey check --pipeline facebook_ads --param account=acct_42 --connect
    """
    from ..check import check_pipelines

    lk = _lk(ctx)
    done = {"n": 0}

    def progress(finding, total: int) -> None:
        done["n"] += 1
        if not as_json:
            click.echo(f"  [{done['n']}/{total}] {finding.pipeline} {finding.item}: "
                       f"{finding.status}", err=True)

    findings = check_pipelines(lk, pipelines or None, parse_params(params) if params else None,
                               env=check_env or ctx.obj["env"], connect=connect,
                               timeout=timeout, progress=progress)
    failed = [f for f in findings if f.failed]

    def text() -> None:
        table = _table("PIPELINE", "PARAMS", "ITEM", "STATUS", "DETAIL", "FROM")
        for f in findings:
            colour = STYLE.get(f.status, "red")
            table.add_row(f.pipeline, f.params, f.item, f"[{colour}]{f.status}[/]", f.detail,
                          f.where)
        _print(table)
        click.echo(f"{len(findings)} checks, {len(failed)} failed", err=True)

    _emit(as_json, {"findings": [f.to_dict() for f in findings], "failed": len(failed)}, text)
    if failed:
        ctx.exit(1)
