"""``pipekey inventory`` and ``pipekey ui``: what exists, who uses it, what is wrong."""

from __future__ import annotations

import click

from ._common import _emit, _lk, _print, _table, cli, json_option, plural, row, say, styled

_COLOURS = {"missing": "red", "stale": "yellow", "shadowed": "magenta", "orphan": "cyan",
            "ok": "green", "optional": "blue", "template": "white"}


@cli.command()
@click.option("--check", is_flag=True, help="Exit 1 when there is any finding (for CI).")
@json_option
@click.pass_context
def inventory(ctx: click.Context, check: bool, as_json: bool) -> None:
    """List every key the manifest refers to or the stores hold, per environment: where it
    resolves (backend, store name, version, last changed, shadowed copies), which pipelines
    use it, and from the audit file its last read, readers and denials. Then the findings,
    one line each with its fix: missing, orphan, stale (rotate_after), sprawl (read by a
    pipeline that does not declare it), shadowed. No value is fetched: listings and version
    metadata only.

    Without --env, every environment the manifest serves.

    \b
    pipekey inventory
    pipekey inventory --env prod --json
    pipekey inventory --check          (exit 1 on findings)
    """
    from ..inventory import build

    lk = _lk(ctx)
    inv = build(lk, [ctx.obj["env"]] if ctx.obj.get("env") else None)

    def text() -> None:
        for env in inv.envs:
            say(f"environment {env.env} (chain: {' -> '.join(env.chain)})")
            table = _table("STATE", "KEY", "BACKEND", "STORE NAME", "VERSION", "CHANGED",
                           "USED BY", "LAST READ", "READS", "DENIED")
            for e in env.keys.values():
                place = e.places[0] if e.places else None
                reads = e.reads
                row(table, styled(e.state, _COLOURS.get(e.state, "white")), e.key,
                    place.backend if place else "-", place.store_name if place else "-",
                    (place.version or "-") if place else "-",
                    place.changed.isoformat(timespec="seconds")[:19] if place and place.changed
                    else "-", ", ".join(e.pipelines) or "-",
                    (reads.last_read or "-")[:19] if reads else "-",
                    str(reads.reads) if reads else "0", str(reads.denials) if reads else "0")
            _print(table)
            for error in env.errors:
                say(f"warn {error}")
        for finding in inv.findings:
            say(finding.line())
        say(f"{plural(len(inv.findings), 'finding')}; audit: "
            f"{inv.audit_file or 'no file sink'} ({plural(inv.audit_events, 'event')})", err=True)

    _emit(as_json, inv.to_dict(), text)
    if check and inv.findings:
        ctx.exit(1)


@cli.command()
@click.option("--port", default=0, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (default: a free one).")
@click.pass_context
def ui(ctx: click.Context, port: int) -> None:
    """Serve the inventory as web pages on 127.0.0.1 only, read-only, until Ctrl-C.

    The printed URL holds a random token (as Jupyter's does); a request without it is
    refused (403). Needs the ui extra: pip install 'pipekey[ui]'.

    \b
    pipekey ui
    pipekey --env prod ui --port 8765
    """
    from ..errors import MissingDependency

    try:
        from ..ui.server import serve
    except ImportError as exc:
        if exc.name in ("fastapi", "jinja2", "uvicorn", "starlette"):
            raise MissingDependency("pipekey ui", "ui") from None
        raise
    lk = _lk(ctx)
    serve(lk, ctx.obj.get("env"), port, say)
