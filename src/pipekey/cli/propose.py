"""``pipekey propose``: a draft ``[pipelines]`` manifest from reads observed in observe mode."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import _lk, cli, json_option, plural, say
from .audit import _file_sink, parse_since


@cli.command()
@click.option("--file", "path", type=click.Path(dir_okay=False),
              help="The audit file (default: the manifest's file sink).")
@click.option("--since", help="Only reads after this: 90s, 15m, 1h, 7d, or an ISO time.")
@json_option
@click.pass_context
def propose(ctx: click.Context, path: str | None, since: str | None, as_json: bool) -> None:
    """Draft [pipelines] for the DAGs observed in observe mode (the Airflow backend with
    "mode": "observe"), from the audit log, for a person to review: dags patterns, a scope
    with parameters found from the keys and the DAG run params, grants, teams. DAGs a
    pipeline of the manifest already claims get no new pipeline; what enforcement would
    refuse them is listed as comments. Streams the audit file; the same history gives the
    same output.

    \b
    pipekey propose > proposed.toml
    pipekey propose --since 7d --file /var/log/pipekey/audit.jsonl
    pipekey propose --json | jq '.pipelines | keys'
    # review, paste into pipekey.toml, then:
    pipekey check --replay --since 7d
    """
    from ..audit import iter_events
    from ..propose import propose as draft

    lk = _lk(ctx)
    file = Path(path) if path else _file_sink(lk)
    existing = lk.manifest.pipelines if lk.manifest else {}
    after = parse_since(since).isoformat() if since else None
    proposal = draft(iter_events(file), existing, since=after)
    if as_json:
        import json

        click.echo(json.dumps(proposal.to_dict(), indent=2, sort_keys=True))
        return
    click.echo(proposal.to_toml(), nl=False)
    say(f"{plural(len(proposal.pipelines), 'pipeline')} proposed from "
        f"{plural(proposal.used, 'observed read')} in {file}", err=True)
    if not proposal.pipelines:
        say("pipekey: nothing to propose: no read served to a DAG outside the manifest's "
            "pipelines (is the backend in \"mode\": \"observe\", with an [audit] file sink?)",
            err=True)
