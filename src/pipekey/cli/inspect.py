"""Commands that explain: explain, doctor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import _emit, _lk, _print, _table, cli, json_option, row, say, styled
from ._envs import env_without_store
from .run import open_run, param_option, pipeline_option

if TYPE_CHECKING:
    pass


@cli.command()
@click.argument("key")
@pipeline_option
@param_option
@json_option
@click.pass_context
def explain(ctx: click.Context, key: str, pipeline: str | None, params: tuple[str, ...],
            as_json: bool) -> None:
    """Show where KEY resolves from: backend, path, version, and every place looked.

    Without --pipeline, KEY is a full key; every backend is asked, and a hit behind an earlier
    one is shown as "shadowed". With --pipeline, KEY is a secret name and the scope walk is
    shown, most specific level first, then shared/. Exits 1 when nothing holds KEY, or when
    no backend had it and one failed (then it says which failed, not "not found").

    \b
    pipekey explain shared/slack_token
    pipekey explain --pipeline facebook_ads --param account=acct_42 access_token
    """
    lk = _lk(ctx)
    if pipeline:
        run = open_run(lk, pipeline, params, ctx.obj["env"])
        resolution = run.explain(key)
        heading = f"pipeline {pipeline} scope {run.scope.prefix} (env {run.environment})"
    else:
        resolution, heading = lk.explain(key), None

    def text() -> None:
        if heading:
            say(heading)
        table = _table("#", "BACKEND", "LEVEL", "PATH", "RESULT")
        for i, a in enumerate(resolution.attempts, start=1):
            result = a.outcome + (f": {a.detail}" if a.detail else "")
            row(table, str(i), a.backend, a.level or "-", a.path, result)
        _print(table)
        say(resolution.summary())

    _emit(as_json, resolution.to_dict(), text)
    if not resolution.found:
        ctx.exit(1)


@cli.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Show what is configured and whether each backend answers. Exits 1 if one fails, or if
    a pipeline's parameters are wrong as `check` would refuse them (an instance's unknown
    parameter, a misspelt template parameter).

    A backend that cannot even be set up (no AWS region, say) is a FAIL row with the reason.

    \b
    pipekey doctor
    pipekey doctor --env prod --json
    """
    from ..check import parameter_problems

    lk = _lk(ctx)
    manifest = lk.manifest
    report = lk.doctor()
    problems = [f"pipeline {p.pipeline!r}: {p.detail}" for p in parameter_problems(lk)]
    origin = "--env" if ctx.obj["env"] else "$PIPEKEY_ENV"
    warned, warning = env_without_store(lk, origin) or (None, None)
    data = {"manifest": str(manifest.path) if manifest and manifest.path else None,
            "env": lk.env, "chain": [b.name for b in lk.chain], "backends": report,
            "pipelines": sorted(manifest.pipelines) if manifest else [],
            "problems": problems, "warnings": [warning] if warning else []}

    def text() -> None:
        say(f"manifest: {data['manifest'] or '(none: the local store alone)'}")
        say(f"env:      {lk.env}")
        say(f"chain:    {' -> '.join(b.name for b in lk.chain)}")
        table = _table("", "BACKEND", "WHAT", "STATUS", "MS")
        for r in report:
            mark = (styled("FAIL", "red") if not r["ok"] else
                    styled("warn", "yellow") if r["backend"] == warned else styled("ok", "green"))
            row(table, mark, r["backend"], r["describe"], r["status"], str(r["latency_ms"]))
        _print(table)
        for problem in problems:
            say(f"FAIL {problem}")
        if warning:
            say(f"warn {warning}: check {origin}, or create it with `pipekey set`")

    _emit(as_json, data, text)
    if problems or not all(r["ok"] for r in report):
        ctx.exit(1)
