"""Commands that read and write keys: init, set, get, ls, rm, history."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

import click

from ..errors import Attempt, PipekeyError, SecretNotFound, UsageError
from ..redact import MASK
from ._common import ValueSafeCommand, _emit, _lk, _print, _table, cli, json_option, row, say

if TYPE_CHECKING:
    from ..backends import Backend


@cli.command()
@click.option("--backend", help="The backend to set up (default: the first local one in the "
                                "chain). A dynamodb backend gets its table created.")
@json_option
@click.pass_context
def init(ctx: click.Context, backend: str | None, as_json: bool) -> None:
    """Create the local store and its 0600 master key file (or a DynamoDB backend's table).

    Never overwrites: an existing key, store or table is kept. With PIPEKEY_MASTER_KEY set,
    no key file is made and the store is encrypted under that key. A store whose key file is
    missing is refused (restore the file, or set PIPEKEY_MASTER_KEY): a new key would never
    open it.

    \b
    pipekey init
    pipekey init --backend dynamodb
    """
    from ..backends.base import Initialisable

    lk = _lk(ctx)
    targets = [lk.backend(backend)] if backend else [b for b in lk.chain if b.kind == "local"]
    target = targets[0] if targets else None
    if not isinstance(target, Initialisable):
        raise UsageError("nothing to initialise: name a local or dynamodb backend with "
                         "--backend, or add [backends.local] type = \"local\"")
    result = {"backend": target.name, **target.init()}

    def text() -> None:
        if "table" in result:
            state = "created" if result["table_created"] else "kept existing"
            say(f"{state} table {result['table']} ({result['encryption']} encryption)")
            return
        key = "created" if result["key_created"] else "kept"
        store = "created" if result["store_created"] else "kept existing"
        say(f"{store} store {result['store']}")
        say(f"master key: {result['key_source']} ({key})")
        if result["key_created"]:
            click.echo("Keep the key file out of git and back it up: without it the store "
                       "cannot be read.")

    _emit(as_json, result, text)


@cli.command("set", cls=ValueSafeCommand)
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
    echo -n 'fake-token' | pipekey set shared/slack_token
    pipekey set shared/slack_token          (prompts, hidden, twice)
    """
    if ctx.args:  # a value typed after KEY: refused, and never repeated
        raise UsageError(f"set takes one argument, KEY; values come from stdin or a hidden "
                         f"prompt, never from the command line ({len(ctx.args)} extra "
                         f"argument{'s' if len(ctx.args) > 1 else ''}, not repeated here)")
    if "=" in key:  # `set KEY=VALUE` (a habit from other tools): the key would carry the value
        raise UsageError("set takes KEY alone; KEY=VALUE is refused and not repeated here: "
                         "values come from stdin or a hidden prompt, never from the command line")
    lk = _lk(ctx)
    target = lk.writable_backend(backend)
    value = _read_value(key, keep_newline)
    secret = lk.set(key, value, backend=target.name)
    data = {"key": key, "backend": secret.backend, "path": secret.path, "version": secret.version}
    _emit(as_json, data, lambda: say(
        f"set {key} in {secret.backend} (version {secret.version})"))


def _read_value(key: str, keep_newline: bool) -> str:
    stdin = sys.stdin
    if stdin.isatty():
        value: str = click.prompt(f"value for {key}", hide_input=True, confirmation_prompt=True,
                             err=True)
    else:
        value = _read_utf8(stdin, key)
        if not keep_newline:
            value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if value == "":
        raise UsageError(f"empty value for {key!r}; nothing written")
    return value


def _read_utf8(stream: TextIO, key: str) -> str:
    """All of ``stream``'s bytes as UTF-8 (whatever the locale's encoding); bytes that are not
    UTF-8 are refused by position, never shown."""
    try:
        return stream.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        position = exc.start
    # raised outside the handler, so the decode error (it holds the bytes) is not chained
    raise UsageError(f"the value for {key!r} on stdin is not UTF-8 text (an invalid byte "
                     f"at position {position}); nothing written")


@cli.command()
@click.argument("key")
@click.option("--reveal", is_flag=True, help="Print the value itself (default: masked).")
@json_option
@click.pass_context
def get(ctx: click.Context, key: str, reveal: bool, as_json: bool) -> None:
    """Look KEY up through the chain. The value is masked unless --reveal.

    With --reveal and no --json, only the value is printed, for use in scripts.

    \b
    pipekey get shared/slack_token
    pipekey get shared/slack_token --reveal
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
            say(f"{key} = {MASK}  ({secret.backend}{version})")

    _emit(as_json, data, text)


@cli.command("ls")
@click.argument("prefix", default="")
@click.option("--backend", help="List only this backend.")
@json_option
@click.pass_context
def ls(ctx: click.Context, prefix: str, backend: str | None, as_json: bool) -> None:
    """List keys at or below PREFIX, with the backends holding each (never values).

    A backend that cannot be listed gets a warning line; the others are still listed, and
    the exit code is 1.

    \b
    pipekey ls
    pipekey ls marketing/facebook --json
    """
    failed: list[str] = []

    def warn(b: Backend, exc: PipekeyError) -> None:
        failed.append(b.name)
        say(f"pipekey: warning: {b.name} not listed: {exc}", err=True)

    listing = _lk(ctx).list(prefix, backend, on_error=None if backend else warn)
    data = [{"key": k, "backends": v} for k, v in listing.items()]

    def text() -> None:
        table = _table("KEY", "BACKENDS")
        for k, v in listing.items():
            row(table, k, ", ".join(v))
        _print(table)

    _emit(as_json, data, text)
    if failed:
        ctx.exit(1)


@cli.command()
@click.argument("key")
@click.option("--backend", help="Delete from this backend (default: the first writable one "
                                "holding KEY).")
@json_option
@click.pass_context
def rm(ctx: click.Context, key: str, backend: str | None, as_json: bool) -> None:
    """Delete KEY. Stores with history keep the earlier versions.

    \b
    pipekey rm shared/slack_token
    pipekey rm shared/slack_token --backend local
    """
    from ..backends.base import Writable

    lk = _lk(ctx)
    removed = lk.delete(key, backend)
    if removed is None:
        looked = [lk.writable_backend(backend)] if backend else [b for b in lk.chain
                                                                 if isinstance(b, Writable)]
        raise SecretNotFound(key, [Attempt(b.name, b.locate(key), "absent", key) for b in looked])
    _emit(as_json, {"key": key, "backend": removed.name, "deleted": True},
          lambda: say(f"deleted {key} from {removed.name}"))


@cli.command()
@click.argument("key")
@click.option("--backend", help="Read history from this backend.")
@json_option
@click.pass_context
def history(ctx: click.Context, key: str, backend: str | None, as_json: bool) -> None:
    """List the versions of KEY: when, by whom, deleted or not (never values).

    \b
    pipekey history shared/slack_token
    """
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
            row(table, str(v.version), when, v.created_by or "-",
                "deleted" if v.deleted else "set")
        _print(table)

    _emit(as_json, data, text)
