"""The command group and what every command shares.

The ``latchkey`` command.

Every command takes ``--json``. Errors print one line on stderr and exit 1 (not found, a
store failed) or 2 (bad usage: a malformed key, an invalid manifest, a bad flag). Values are
read from stdin or a hidden prompt, never from the command line, and never printed unless
``get --reveal`` asks.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable

import click

from .. import __version__
from ..client import Latchkey, load
from ..errors import LatchkeyError

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


class ValueSafeCommand(click.Command):
    """A command whose arguments may hold a value typed by mistake (``set KEY VALUE``).

    Extra arguments are collected in ``ctx.args`` for the command to refuse without repeating
    them, and click's usage errors never repeat an argument that is not an option name: an
    unknown option (a value beginning with ``-``) is not named, and any other message that
    contains an argument is replaced by one that does not.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {})["allow_extra_args"] = True
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.message = _value_safe_message(exc, given, self.get_params(ctx))
            raise


def _value_safe_message(exc: click.UsageError, given: list[str],
                        params: list[click.Parameter]) -> str:
    names = {name for p in params for name in (*p.opts, *p.secondary_opts)}
    if isinstance(exc, click.NoSuchOption):  # click adds "Did you mean" with declared names
        return "No such option (not repeated here: it may be a value)."
    pieces = {piece for arg in given if arg not in names
              for piece in (arg, *arg.split("=", 1)[1:]) if piece}
    if any(re.search(rf"(?<![\w.-]){re.escape(piece)}(?![\w.-])", exc.message)
           for piece in pieces):
        return "Invalid arguments (not repeated here: one may be a value). Values are read " \
               "from stdin or a hidden prompt, never from the command line."
    return exc.message


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
