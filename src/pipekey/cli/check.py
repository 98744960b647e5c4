"""``pipekey check``: every pipeline's secrets and connections, resolved and optionally tried."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import _emit, _lk, _print, _table, cli, json_option, plural, row, say, styled
from .run import param_option, parse_params

if TYPE_CHECKING:
    from ..check import Finding

STYLE = {"ok": "green", "skipped": "yellow"}


@cli.command()
@click.option("-p", "--pipeline", "pipelines", multiple=True, metavar="NAME",
              help="Check only this pipeline (repeatable). Default: every pipeline.")
@param_option
@click.option("--connect", is_flag=True,
              help="Also connect: PostgreSQL SELECT 1, S3 head bucket, DynamoDB describe table, "
                   "HTTP GET, Snowflake SELECT 1 (if its driver is installed).")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.5, 120),
              help="Seconds each connect check may take.")
@click.option("--allow-skipped", is_flag=True,
              help="Exit 0 even if a pipeline was skipped (verified nothing) for want of "
                   "parameters.")
@click.option("--replay", is_flag=True,
              help="Instead: replay the reads observed in observe mode (the audit log) "
                   "against the manifest and list, with the fix, each it would refuse.")
@click.option("--since", help="With --replay: only reads after this (90s, 15m, 1h, 7d, ISO).")
@click.option("--file", "audit_file", type=click.Path(dir_okay=False),
              help="With --replay: the audit file (default: the manifest's file sink).")
@json_option
@click.pass_context
def check(ctx: click.Context, pipelines: tuple[str, ...], params: tuple[str, ...],
          connect: bool, timeout: float, allow_skipped: bool, replay: bool,
          since: str | None, audit_file: str | None, as_json: bool) -> None:
    """Resolve everything each pipeline requires and report, per pipeline, what is missing,
    forbidden or invalid. Exits 1 if anything failed.

    A pipeline with a templated scope is checked for each of its `instances` in the
    manifest, or for the --param values given. One that has neither is skipped: it verified
    nothing, so check exits 1 unless --allow-skipped.

    With --replay, nothing is resolved: each read the Airflow backend served in observe
    mode is decided again under this manifest, and what it would refuse is listed, one line
    each with the fix. Exits 1 if any.

    \b
    pipekey check
    pipekey check --pipeline facebook_ads --param account=acct_42 --connect
    pipekey check --replay --since 7d
    pipekey --config proposed.toml check --replay --file audit.jsonl --json
    """
    if replay:
        from ._replay import replay_command

        return replay_command(ctx, audit_file, since, as_json)
    if since or audit_file:
        raise click.UsageError("--since and --file go with --replay", ctx)
    from ..check import check_pipelines

    lk = _lk(ctx)
    done = {"n": 0}

    def progress(finding: Finding, total: int) -> None:
        done["n"] += 1
        if not as_json:
            say(f"  [{done['n']}/{total}] {finding.pipeline} {finding.item}: "
                f"{finding.status}", err=True)

    findings = check_pipelines(lk, pipelines or None, parse_params(params) if params else None,
                               env=ctx.obj["env"], connect=connect,
                               timeout=timeout, progress=progress)
    failed = [f for f in findings if f.failed]
    skipped = [f for f in findings if f.item == "(pipeline)" and f.status == "skipped"]

    def text() -> None:
        table = _table("PIPELINE", "PARAMS", "ITEM", "STATUS", "DETAIL", "FROM")
        for f in findings:
            colour = STYLE.get(f.status, "red")
            row(table, f.pipeline, f.params, f.item, styled(f.status, colour), f.detail,
                f.where)
        _print(table)
        click.echo(f"{plural(len(findings), 'check')}, {len(failed)} failed"
                   + (f", {plural(len(skipped), 'pipeline')} skipped" if skipped else ""),
                   err=True)

    _emit(as_json, {"findings": [f.to_dict() for f in findings], "failed": len(failed),
                    "skipped": len(skipped)}, text)
    if failed:
        ctx.exit(1)
    if (skipped or not findings) and not allow_skipped:
        manifest = lk.manifest
        fix = (f"{plural(len(skipped), 'pipeline')} skipped (verified nothing): give --param "
               "NAME=VALUE or instances = [...] in the manifest" if skipped
               else "nothing to check (no pipelines): add a [pipelines.NAME] table to "
                    f"{manifest.path if manifest and manifest.path else 'pipekey.toml'} "
                    "(see docs/manifest.md)")
        click.echo(f"pipekey: error: {fix}, or pass --allow-skipped", err=True)
        ctx.exit(1)
