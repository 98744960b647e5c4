"""``pipekey copy`` and ``pipekey diff``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from ._common import _emit, _lk, _print, _table, cli, json_option, plural, row, say, styled

if TYPE_CHECKING:
    from ..copy import CopyPlan

STYLE = {"add": "green", "change": "yellow", "same": "dim", "too_large": "red", "split": "cyan"}


@cli.command()
@click.argument("source", metavar="SRC")
@click.argument("dest", metavar="DST")
@click.option("--prefix", default="", help="Copy only keys at or below this prefix.")
@click.option("--dest-prefix", default="", help="Put the keys under this prefix in DST "
                                                "(the --prefix part is replaced).")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option("--overwrite", "mode", flag_value="overwrite",
              help="Write keys whose value differs in DST.")
@click.option("--skip-existing", "mode", flag_value="skip",
              help="Leave keys that already exist in DST as they are.")
@json_option
@click.pass_context
def copy(ctx: click.Context, source: str, dest: str, prefix: str, dest_prefix: str,
         dry_run: bool, mode: str | None, as_json: bool) -> None:
    """Copy secrets from SRC to DST, one key per secret (never one big document).

    SRC and DST are backends of the manifest or ad-hoc stores: file:PATH (TOML, JSON, YAML,
    dotenv, a folder), env:PREFIX, airflow-connections:FILE (from `airflow connections
    export`), local[:PATH], ssm:/prefix, secretsmanager:prefix/, dynamodb:table,
    vault:MOUNT/PREFIX ($VAULT_ADDR, $VAULT_TOKEN), gcp:PROJECT/PREFIX, azure:VAULT/PREFIX.

    Keys already identical in DST are skipped, so a copy can be run again after a failure.
    A key whose value differs needs --overwrite or --skip-existing. A value too large for DST
    is reported, never truncated. Values are never printed.

    \b
    pipekey copy file:.dlt/secrets.toml ssm:/data-platform/dev --dry-run
    pipekey copy airflow-connections:connections.json local
    """
    from ..backends.base import Writable
    from ..copy import apply_plan, open_store, plan_copy

    lk = _lk(ctx)
    src, dst = open_store(source, lk), open_store(dest, lk)
    if not isinstance(dst, Writable):
        raise UsageError(f"{dest!r} is read-only; choose a writable destination")
    plan, values = plan_copy(src, dst, prefix, dest_prefix)
    changed = plan.count("change")
    if not dry_run and changed and mode is None:
        raise UsageError(f"{plural(changed, 'key differs', 'keys differ')} in {dest}; pass "
                         "--overwrite or --skip-existing (nothing was written)")
    if dry_run:
        _emit(as_json, {"dry_run": True, **plan.to_dict()}, lambda: _show_plan(plan))
        return

    def progress(key: str, n: int, total: int) -> None:
        if not as_json:
            say(f"  [{n}/{total}] {key}", err=True)

    result = apply_plan(plan, values, overwrite=mode == "overwrite", progress=progress)

    def text() -> None:
        say(f"copied {len(result.copied)}, skipped {len(result.skipped)} "
            f"({plan.count('same')} already identical, {plan.count('too_large')} too "
            f"large), failed {len(result.failed)}")
        for key, error in result.failed.items():
            say(f"failed {key}: {error}")
            say(f"not attempted: {plural(len(result.not_attempted), 'key')} "
                f"({', '.join(result.not_attempted[:5])}"
                f"{', ...' if len(result.not_attempted) > 5 else ''})")
        for item in plan.items:
            if item.action == "too_large":
                say(f"too large for {dest}: {item.key} ({item.detail})")

    _emit(as_json, {"dry_run": False, **plan.to_dict(), "result": result.to_dict()}, text)
    if result.failed or plan.count("too_large"):
        ctx.exit(1)


def _show_plan(plan: CopyPlan) -> None:
    table = _table("KEY", "ACTION", "BYTES", "DETAIL")
    for item in plan.items:
        row(table, item.key, styled(item.action, STYLE[item.action]), str(item.size),
            item.detail)
    _print(table)
    summary = ", ".join(f"{a} {plan.count(a)}" for a in ("add", "change", "same", "split",
                                                          "too_large") if plan.count(a))
    say(f"plan {plan.source.name} -> {plan.dest.name}: {summary or 'nothing to copy'}",
        err=True)


@cli.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--prefix", default="", help="Compare only keys at or below this prefix.")
@json_option
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, prefix: str, as_json: bool) -> None:
    """Show drift between two stores by key: only in A, only in B, differs, same (with
    versions). Values are compared, never printed. Exits 1 if anything differs.

    \b
    pipekey diff file:.dlt/secrets.toml local
    pipekey diff ssm local --prefix marketing --json
    """
    from ..copy import diff as compare
    from ..copy import open_store

    lk = _lk(ctx)
    rows = compare(open_store(a, lk), open_store(b, lk), prefix)
    drift = [r for r in rows if r["state"] != "same"]

    def text() -> None:
        table = _table("KEY", "STATE", f"VERSION IN {a}", f"VERSION IN {b}")
        for r in rows:
            row(table, r["key"], r["state"], r["version_a"] or "-", r["version_b"] or "-")
        _print(table)
        say(f"{plural(len(rows), 'key')}, {len(drift)} differ", err=True)

    _emit(as_json, {"keys": rows, "differ": len(drift)}, text)
    if drift:
        ctx.exit(1)
