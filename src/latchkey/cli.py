"""The ``latchkey`` command.

Every command takes ``--json``. Errors print one line on stderr and exit 1 (not found, a
store failed) or 2 (bad usage: a malformed key, an invalid manifest, a bad flag). Values are
read from stdin or a hidden prompt, never from the command line, and never printed unless
``get --reveal`` asks.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

from . import __version__
from .client import Latchkey, load
from .errors import Attempt, LatchkeyError, SecretNotFound, UsageError

MASK = "********"
EPILOG = "Docs: README.md and docs/cli.md. Exit codes: 0 ok, 1 not found or failed, 2 usage."


class _Group(click.Group):
    """Turns latchkey errors into one line on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LatchkeyError as exc:
            _fail(ctx, exc, exc.exit_code)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130)


def _fail(ctx: click.Context, error: object, code: int) -> None:
    message = str(error)
    if ctx.meta.get("latchkey.json"):
        kind = type(error).__name__ if isinstance(error, Exception) else "Interrupted"
        click.echo(json.dumps({"error": {"type": kind, "message": message, "exit_code": code}}))
    click.echo(f"latchkey: error: {message}", err=True)
    ctx.exit(code)


def json_option(fn: Callable) -> Callable:
    """``--json``: print machine-readable output on stdout."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of text.")
    @functools.wraps(fn)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        click.get_current_context().meta["latchkey.json"] = as_json
        return fn(*args, as_json=as_json, **kwargs)

    return wrapper


def _emit(as_json: bool, data: Any, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        text()


def _table(*columns: str):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c)
    return table


def _print(renderable: Any) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped: one line per row, for grep and awk
        console = Console(highlight=False, width=1_000)
    console.print(renderable)


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", type=click.Path(dir_okay=False), envvar="LATCHKEY_CONFIG",
              help="The manifest. Default: $LATCHKEY_CONFIG, else ./latchkey.toml, else the "
                   "local store alone.")
@click.option("-e", "--env", help="The environment (dev, staging, prod...). Default: "
                                  "$LATCHKEY_ENV, else the manifest's env.")
@click.version_option(__version__, prog_name="latchkey")
@click.pass_context
def cli(ctx: click.Context, config: str | None, env: str | None) -> None:
    """latchkey: per-run secrets for data pipelines, from the stores you already use.

    \b
    Start:   latchkey init
             echo -n 'fake-token' | latchkey set shared/slack_token
             latchkey get shared/slack_token        (masked; --reveal to print)
             latchkey explain shared/slack_token    (where it came from)
    """
    ctx.obj = {"config": config, "env": env}


def _lk(ctx: click.Context) -> Latchkey:
    if "lk" not in ctx.obj:
        ctx.obj["lk"] = load(ctx.obj["config"], env=ctx.obj["env"])
        ctx.call_on_close(ctx.obj["lk"].close)
    return ctx.obj["lk"]


@cli.command()
@click.option("--backend", help="The local backend to set up (default: the first in the chain).")
@json_option
@click.pass_context
def init(ctx: click.Context, backend: str | None, as_json: bool) -> None:
    """Create the local store and its 0600 master key file.

    Never overwrites: an existing key or store is kept. With LATCHKEY_MASTER_KEY set, no key
    file is made and the store is encrypted under that key.
    """
    lk = _lk(ctx)
    locals_ = [lk.backend(backend)] if backend else [b for b in lk.chain if b.type == "local"]
    if not locals_ or locals_[0].type != "local":
        raise UsageError("no local backend to initialise (add [backends.local] type = \"local\")")
    result = locals_[0].init()  # type: ignore[attr-defined]
    result["backend"] = locals_[0].name

    def text() -> None:
        key = "created" if result["key_created"] else "kept"
        store = "created" if result["store_created"] else "kept existing"
        click.echo(f"{store} store {result['store']}")
        click.echo(f"master key: {result['key_source']} ({key})")
        if result["key_created"]:
            click.echo("Keep the key file out of git and back it up: without it the store "
                       "cannot be read.")

    _emit(as_json, result, text)


@cli.command("set")
@click.argument("key")
@click.option("--backend", help="Write to this backend (default: the first writable one).")
@click.option("--keep-newline", is_flag=True, help="Keep a trailing newline read from stdin.")
@json_option
@click.pass_context
def set_(ctx: click.Context, key: str, backend: str | None, keep_newline: bool,
         as_json: bool) -> None:
    """Set KEY to a value read from stdin, or from a hidden prompt on a terminal.

    The value is never taken from the command line, where shell history and `ps` would see it.

    \b
    echo -n 'fake-token' | latchkey set shared/slack_token
    latchkey set shared/slack_token          (prompts, hidden, twice)
    """
    lk = _lk(ctx)
    target = lk.writable_backend(backend)
    value = _read_value(key, keep_newline)
    secret = target.put(key, value)
    data = {"key": key, "backend": secret.backend, "path": secret.path, "version": secret.version}
    _emit(as_json, data, lambda: click.echo(
        f"set {key} in {secret.backend} (version {secret.version})"))


def _read_value(key: str, keep_newline: bool) -> str:
    stdin = click.get_text_stream("stdin")
    if stdin.isatty():
        value = click.prompt(f"value for {key}", hide_input=True, confirmation_prompt=True,
                             err=True)
    else:
        value = stdin.read()
        if not keep_newline:
            value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if value == "":
        raise UsageError(f"empty value for {key!r}; nothing written")
    return value


@cli.command()
@click.argument("key")
@click.option("--reveal", is_flag=True, help="Print the value itself (default: masked).")
@json_option
@click.pass_context
def get(ctx: click.Context, key: str, reveal: bool, as_json: bool) -> None:
    """Look KEY up through the chain. The value is masked unless --reveal.

    With --reveal and no --json, only the value is printed, for use in scripts.
    """
    secret = _lk(ctx).get_secret(key)
    data = {"key": key, "backend": secret.backend, "path": secret.path,
            "version": secret.version, "masked": not reveal,
            "value": secret.value if reveal else None}

    def text() -> None:
        if reveal:
            click.echo(secret.value)
        else:
            version = f", version {secret.version}" if secret.version else ""
            click.echo(f"{key} = {MASK}  ({secret.backend}{version})")

    _emit(as_json, data, text)


@cli.command("ls")
@click.argument("prefix", default="")
@click.option("--backend", help="List only this backend.")
@json_option
@click.pass_context
def ls(ctx: click.Context, prefix: str, backend: str | None, as_json: bool) -> None:
    """List keys at or below PREFIX, with the backends holding each (never values)."""
    listing = _lk(ctx).list(prefix, backend)
    data = [{"key": k, "backends": v} for k, v in listing.items()]

    def text() -> None:
        table = _table("KEY", "BACKENDS")
        for k, v in listing.items():
            table.add_row(k, ", ".join(v))
        _print(table)

    _emit(as_json, data, text)


@cli.command()
@click.argument("key")
@click.option("--backend", help="Delete from this backend (default: the first writable one "
                                "holding KEY).")
@json_option
@click.pass_context
def rm(ctx: click.Context, key: str, backend: str | None, as_json: bool) -> None:
    """Delete KEY. Stores with history keep the earlier versions."""
    lk = _lk(ctx)
    removed = lk.delete(key, backend)
    if removed is None:
        looked = [lk.writable_backend(backend)] if backend else [b for b in lk.chain
                                                                 if b.is_writable]
        raise SecretNotFound(key, [Attempt(b.name, b.locate(key), "absent", key) for b in looked])
    _emit(as_json, {"key": key, "backend": removed.name, "deleted": True},
          lambda: click.echo(f"deleted {key} from {removed.name}"))


@cli.command()
@click.argument("key")
@click.option("--backend", help="Read history from this backend.")
@json_option
@click.pass_context
def history(ctx: click.Context, key: str, backend: str | None, as_json: bool) -> None:
    """List the versions of KEY: when, by whom, deleted or not (never values)."""
    b, versions = _lk(ctx).history(key, backend)
    if not versions:
        raise SecretNotFound(key, [Attempt(b.name, b.locate(key), "no history", key)])
    data = {"key": key, "backend": b.name, "versions": [
        {"version": v.version, "created_at": v.created_at.isoformat() if v.created_at else None,
         "created_by": v.created_by, "deleted": v.deleted} for v in versions]}

    def text() -> None:
        table = _table("VERSION", "WHEN", "BY", "STATE")
        for v in versions:
            when = v.created_at.strftime("%Y-%m-%d %H:%M:%S %Z") if v.created_at else "-"
            table.add_row(v.version, when, v.created_by or "-", "deleted" if v.deleted else "set")
        _print(table)

    _emit(as_json, data, text)


@cli.command()
@click.argument("key")
@json_option
@click.pass_context
def explain(ctx: click.Context, key: str, as_json: bool) -> None:
    """Show where KEY resolves from: backend, path, version, and every place looked.

    Exits 1 when no backend holds KEY.
    """
    resolution = _lk(ctx).explain(key)

    def text() -> None:
        table = _table("#", "BACKEND", "PATH", "RESULT")
        for i, a in enumerate(resolution.attempts, start=1):
            result = a.outcome + (f": {a.detail}" if a.detail else "")
            table.add_row(str(i), a.backend, a.path, result)
        _print(table)
        s = resolution.secret
        if s:
            click.echo(f"{key} resolves from {s.backend} ({s.path}, version {s.version or '-'})")
        else:
            click.echo(f"{key} is not found in any backend")

    _emit(as_json, resolution.to_dict(), text)
    if not resolution.found:
        ctx.exit(1)


@cli.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Show what is configured and whether each backend answers. Exits 1 if one fails."""
    lk = _lk(ctx)
    manifest = lk.manifest
    report = lk.doctor()
    data = {"manifest": str(manifest.path) if manifest and manifest.path else None,
            "env": lk.env, "chain": [b.name for b in lk.chain], "backends": report,
            "pipelines": sorted(manifest.pipelines) if manifest else []}

    def text() -> None:
        click.echo(f"manifest: {data['manifest'] or '(none: the local store alone)'}")
        click.echo(f"env:      {lk.env}")
        click.echo(f"chain:    {' -> '.join(data['chain'])}")
        table = _table("", "BACKEND", "WHAT", "STATUS", "MS")
        for r in report:
            mark = "[green]ok[/]" if r["ok"] else "[red]FAIL[/]"
            table.add_row(mark, str(r["backend"]), str(r["describe"]), str(r["status"]),
                          str(r["latency_ms"]))
        _print(table)

    _emit(as_json, data, text)
    if not all(r["ok"] for r in report):
        ctx.exit(1)


def main() -> None:
    """Console entry point."""
    cli(prog_name="latchkey")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
