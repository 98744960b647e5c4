"""``pipekey credentials``: the per-run credentials of ``[credentials.*]``."""

from __future__ import annotations

import click

from ._common import _emit, _lk, _print, _table, cli, json_option, plural, row


@cli.group()
def credentials() -> None:
    """Credentials minted per run ([credentials.NAME], mapped as dynamic:NAME)."""


@credentials.command()
@click.option("-d", "--definition", "names", multiple=True,
              help="Only this [credentials.NAME] (repeatable). Default: every definition.")
@click.option("--dry-run", is_flag=True, help="List what would be dropped; drop nothing.")
@json_option
@click.pass_context
def sweep(ctx: click.Context, names: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Drop the expired logins runs left behind (a killed process). Only logins pipekey made
    (its prefix and its marker) are ever dropped.

    \b
    pipekey credentials sweep --dry-run
    pipekey credentials sweep --json
    """
    lk = _lk(ctx)
    defined = sorted(lk.manifest.credentials if lk.manifest else {})
    rows = []
    for name in names or defined:
        for login in lk.minter(name).sweep(dry_run=dry_run):
            rows.append({"definition": name, "login": login,
                         "action": "would drop" if dry_run else "dropped"})

    def text() -> None:
        table = _table("DEFINITION", "LOGIN", "ACTION")
        for entry in rows:
            row(table, entry["definition"], entry["login"], entry["action"])
        if rows:
            _print(table)
        verb = "would drop" if dry_run else "dropped"
        click.echo(f"{verb} {plural(len(rows), 'expired login')}", err=True)

    _emit(as_json, {"dry_run": dry_run, "swept": rows}, text)
