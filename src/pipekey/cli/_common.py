"""The command group and what every command shares.

The ``pipekey`` command.

Every command takes ``--json``. Errors print one line on stderr and exit 1 (not found, a
store failed) or 2 (bad usage: a malformed key, an invalid manifest, a bad flag). Values are
read from stdin or a hidden prompt, never from the command line, and never printed unless
``get --reveal`` asks.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING, Any, Callable

import click

from .. import __version__
from ..errors import BackendError, MissingSecrets, PipekeyError, SecretNotFound

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from ..client import Pipekey

EPILOG = "Docs: README.md and docs/cli.md. Exit codes: 0 ok, 1 not found or failed, 2 usage."


#: Commands whose arguments are never echoed in a usage error: a value typed on the command
#: line by mistake (``pipekey set KEY VALUE``) must not be printed back.
NEVER_ECHO = frozenset({"set"})


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 check``, ``2 checks``."""
    return f"{n} {word if n == 1 else words or word + 's'}"


class _Warnings(logging.Handler):
    """Holds the ``pipekey`` logger's warnings during a command: printed on success (and
    before ``run`` starts its child), dropped on failure, where the error line says it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage().splitlines()[0] if record.getMessage() else ""
        self.lines.append(line.removeprefix("pipekey: "))

    def flush_to_stderr(self) -> None:
        lines, self.lines = self.lines, []
        for line in lines:
            say(f"pipekey: warning: {line}", err=True)


WARNINGS = _Warnings()


def _store_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value not in (None, False):
        ctx.ensure_object(dict)[param.name] = value
    return value


def _resolve_params() -> list[click.Option]:
    """``--config``, ``--env`` and ``--verbose``, accepted after the subcommand too."""
    return [
        click.Option(["-c", "--config"], type=click.Path(dir_okay=False), expose_value=False,
                     callback=_store_option, help="The manifest (as `pipekey --config`)."),
        click.Option(["-e", "--env"], expose_value=False, callback=_store_option,
                     help="The environment (as `pipekey --env`)."),
        click.Option(["--verbose"], is_flag=True, expose_value=False, callback=_store_option,
                     help="On failure, also list every place tried."),
    ]


class _Command(click.Command):
    """A pipekey subcommand: takes --config/--env/--verbose, never echoes extra arguments."""

    def __init__(self, *args: Any, resolve_options: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not resolve_options:
            return
        taken = {o for p in self.params for o in getattr(p, "opts", [])}
        self.params.extend(p for p in _resolve_params() if not taken & set(p.opts))

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        allowed, ctx.allow_extra_args = ctx.allow_extra_args, True
        try:
            rest = super().parse_args(ctx, args)
        finally:
            ctx.allow_extra_args = allowed
        if rest and not allowed and not ctx.resilient_parsing:
            # Never quoted: an extra argument may be a value typed where it does not belong.
            raise click.UsageError(f"{plural(len(rest), 'unexpected extra argument')} "
                                   "(not shown)", ctx)
        return rest


#: command name -> the module of this package defining it, imported when the command is
#: asked for: ``pipekey run`` loads only what ``run`` needs (start-up cost, issue 19).
#: tests/unit/test_cli.py checks it against what the modules register.
COMMANDS = {
    "audit": "audit", "bench": "bench", "check": "check", "copy": "copy",
    "credentials": "credentials", "diff": "copy",
    "doctor": "inspect", "explain": "inspect", "get": "store", "history": "store",
    "init": "store", "inventory": "inventory", "ls": "store", "propose": "propose",
    "rm": "store", "run": "run", "set": "store", "ui": "inventory",
}


class _Group(click.Group):
    """Turns pipekey errors into one line on stderr and the error's exit code, and click's
    usage errors into at most two: the error and a hint. Commands are imported on demand
    (:data:`COMMANDS`)."""

    command_class = _Command

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"{__package__}.{module}")
        elif module is None and cmd_name not in self.commands:
            self.load_all()  # a command not in COMMANDS, or every name for "did you mean"
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_all()
        return sorted(self.commands)

    def load_all(self) -> None:
        """Import every command module of this package, listed in :data:`COMMANDS` or not
        (help, completion, a name not in it, an unknown command's hint)."""
        import pkgutil

        for info in pkgutil.iter_modules([os.path.dirname(__file__)]):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__package__}.{info.name}")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except PipekeyError as exc:
            _fail(ctx, exc, exc.exit_code)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130)
        WARNINGS.flush_to_stderr()
        return result

    def main(self, args: Any = None, prog_name: str | None = None,  # type: ignore[override]
             **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        logger = logging.getLogger("pipekey")
        if WARNINGS not in logger.handlers:
            logger.addHandler(WARNINGS)
        try:
            code = super().main(argv, prog_name, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = exc.exit_code
        except click.UsageError as exc:
            _usage_error(exc, argv)
            code = exc.exit_code
        except click.ClickException as exc:
            say(f"pipekey: error: {_one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except click.exceptions.Abort:
            click.echo("pipekey: error: aborted", err=True)
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def _usage_error(exc: click.UsageError, argv: list[str]) -> None:
    """Print a click usage error as pipekey does: the error, then at most one hint."""
    command = exc.ctx.command if exc.ctx else None
    path = exc.ctx.command_path if exc.ctx else "pipekey"
    silent = getattr(command, "name", None) in NEVER_ECHO
    hint = f"see `{path} --help`"
    if isinstance(exc, click.exceptions.NoSuchOption):
        message = "no such option (not shown)" if silent else \
            f"no such option {exc.option_name!r}"
        if exc.possibilities:
            hint = f"did you mean {exc.possibilities[0]}?"
    elif isinstance(exc, click.exceptions.NoSuchCommand):
        message = f"no such command {exc.command_name!r}"
        if exc.possibilities:
            hint = "did you mean " + " or ".join(f"`pipekey {p}`" for p in exc.possibilities) \
                + "?"
        else:
            hint = "see `pipekey help`"
    else:
        message = _one_line(exc.format_message())
        message = message[:1].lower() + message[1:]
    if silent and "unexpected extra argument" in message:
        hint = ("values are read from stdin or a hidden prompt, never from the command line: "
                "`pipekey set KEY` prompts")
    before_dashes = argv[:argv.index("--")] if "--" in argv else argv
    if "--json" in before_dashes:
        click.echo(json.dumps({"error": {"type": "UsageError", "message": message,
                                         "hint": hint, "exit_code": exc.exit_code}}))
    say(f"pipekey: error: {message}", err=True)
    say(f"pipekey: hint: {hint}", err=True)


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
            safe = _value_safe_message(exc, given, self.get_params(ctx))
        # raised outside the handler: click's own message (it may hold a value) is not chained
        raise click.UsageError(safe, ctx=ctx)


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
    WARNINGS.lines.clear()  # the error line says what failed
    message, details = describe_error(ctx, error)
    if ctx.meta.get("pipekey.json"):
        kind = type(error).__name__ if isinstance(error, Exception) else "Interrupted"
        body: dict[str, Any] = {"type": kind, "message": message, "exit_code": code}
        attempts = getattr(error, "attempts", None)
        if attempts is not None:
            body["attempts"] = [dataclasses.asdict(a) for a in attempts]
        click.echo(json.dumps({"error": body}))
    say(f"pipekey: error: {message}", err=True)
    if ctx.obj and ctx.obj.get("verbose"):
        for line in details:
            say(f"  tried: {line}", err=True)
    ctx.exit(code)


def describe_error(ctx: click.Context, error: object) -> tuple[str, list[str]]:
    """The one-line message for ``error``, and the places tried (shown with --verbose).

    A missing secret ends with the command that fixes it; the full list of places tried is
    in ``--verbose``, ``--json`` and ``pipekey explain``.
    """
    attempts = getattr(error, "attempts", None) or ()
    details = [a.describe() for a in attempts]
    if isinstance(error, MissingSecrets):
        names = list(error.missing)
        first = next((a.key for a in error.missing[names[0]] if a.key), names[0])
        message = (f"pipeline {error.pipeline!r} (run {error.run!r}) is missing "
                   f"{plural(len(names), 'required secret')}: {', '.join(map(repr, names))}"
                   f"{_failures(attempts)}; {_env_hint(ctx)}"
                   f"set {'each, first' if len(names) > 1 else 'it'}: {_fix_command(ctx, first)}")
        return message, details
    if isinstance(error, SecretNotFound):
        where = ", ".join(dict.fromkeys(a.backend for a in attempts)) or "no backend"
        message = f"secret {error.key!r} not found in {where}{_failures(attempts)}"
        command = ctx.invoked_subcommand or ""
        if command == "rm":
            return f"{message}; nothing deleted", details
        if command == "history":
            return f"{message}; no history to show", details
        return f"{message}; {_env_hint(ctx)}set it: {_fix_command(ctx, error.key)}", details
    if isinstance(error, BackendError) and error.key and attempts:
        absent = ", ".join(dict.fromkeys(a.backend for a in attempts if a.outcome == "absent"))
        return (f"could not resolve {error.key!r}{_failures(attempts)}"
                + (f"; not in {absent}" if absent else ""), details)
    return _one_line(str(error)) if isinstance(error, Exception) else str(error), details


def _failures(attempts: Any) -> str:
    failed = [a for a in attempts if a.outcome in ("error", "denied")]
    unique = dict.fromkeys(a.detail or f"backend {a.backend!r} failed" for a in failed)
    return "".join(f" ({d})" for d in unique)


def _env_hint(ctx: click.Context) -> str:
    """Before a `set` hint: "environment 'prdo' (from --env) has no store yet (...): check
    --env, or " when the chosen environment may be a typo (see ``env_without_store``)."""
    from ._envs import env_without_store

    obj = ctx.obj or {}
    origin = "--env" if obj.get("env") else "$PIPEKEY_ENV"
    found = env_without_store(obj["lk"], origin) if "lk" in obj else None
    return f"{found[1]}: check {origin}, or " if found else ""


def _fix_command(ctx: click.Context, key: str) -> str:
    obj = ctx.obj or {}
    flags = "".join(f" --{name} {shlex.quote(str(obj[name]))}" for name in ("config", "env")
                    if obj.get(name))
    return f"pipekey{flags} set {shlex.quote(key)}"


def json_option(fn: Callable[..., Any],
                help: str = "Print JSON on stdout instead of text.") -> Callable[..., Any]:
    """``--json``: print machine-readable output on stdout (``help`` for a command where it
    goes elsewhere)."""

    @click.option("--json", "as_json", is_flag=True, help=help)
    @functools.wraps(fn)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        click.get_current_context().meta["pipekey.json"] = as_json
        return fn(*args, as_json=as_json, **kwargs)

    return wrapper


def _emit(as_json: bool, data: Any, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        text()


def shown(value: object) -> str:
    """``value``, a piece of data (a key, run name, actor, backend name, path, version, error
    message), as one line of text that shows exactly what it holds.

    Characters Python does not call printable (control characters, so ANSI escapes; line
    breaks; tabs; bidi overrides and other format characters; non-breaking spaces) are shown
    as their escapes (``\\x1b``, ``\\u202e``), so data can neither drive the terminal nor hide
    or fake text. Markup is left alone here: tables go through :func:`cell`.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def cell(value: object) -> Text:
    """``value`` as a rich table cell: :func:`shown`, and never read as markup (``[/]``,
    ``[white on white]``, ``[link=...]`` print as they are)."""
    from rich.text import Text

    return Text(shown(value))


def styled(word: str, style: str) -> Text:
    """One of pipekey's own words (``ok``, ``FAIL``, an action) in a style; never data."""
    from rich.text import Text

    return Text(word, style=style)


def say(line: str, err: bool = False) -> None:
    """Print one line of pipekey's own text with data in it (:func:`shown` over the whole
    line: pipekey's own words hold no control characters). Never for a revealed value."""
    click.echo(shown(line), err=err)


def _table(*columns: str) -> Table:
    """A table for :func:`row`; headers are shown by :func:`cell` (a header may name a store
    given on the command line)."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        table.add_column(cell(c), overflow="fold")  # data is wrapped, never cut short
    return table


def row(table: Table, *cells: object) -> None:
    """Add a row to ``table``: every cell is data, shown by :func:`cell`, except a styled word
    (a :func:`styled` ``Text``). The only way commands add rows (tests/project/test_layout.py)."""
    from rich.text import Text

    table.add_row(*(c if isinstance(c, Text) else cell(c) for c in cells))


def _print(renderable: Any) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped: one line per row however long, for grep and awk
        console = Console(highlight=False, width=1_000_000)
    console.print(renderable)


@click.group(cls=_Group, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", type=click.Path(dir_okay=False), envvar="PIPEKEY_CONFIG",
              help="The manifest. Default: $PIPEKEY_CONFIG, else ./pipekey.toml, else the "
                   "local store alone.")
@click.option("-e", "--env", help="The environment (dev, staging, prod...). Default: "
                                  "$PIPEKEY_ENV, else the manifest's env.")
@click.option("--verbose", is_flag=True, help="On failure, also list every place tried.")
@click.version_option(__version__, prog_name="pipekey")
@click.pass_context
def cli(ctx: click.Context, config: str | None, env: str | None, verbose: bool) -> None:
    """pipekey: per-run secrets for data pipelines, from the stores you already use.

    \b
    Start:   pipekey init
             echo -n 'fake-token' | pipekey set shared/slack_token
             pipekey get shared/slack_token        (masked; --reveal to print)
             pipekey explain shared/slack_token    (where it came from)
    """
    ctx.obj = {"config": config, "env": env, "verbose": verbose}


def _lk(ctx: click.Context) -> Pipekey:
    """The command's Pipekey, loaded on first use (``--help`` and usage errors load none)."""
    if "lk" not in ctx.obj:
        from ..client import load

        ctx.obj["lk"] = load(ctx.obj["config"], env=ctx.obj["env"])
        ctx.call_on_close(ctx.obj["lk"].close)
    lk: Pipekey = ctx.obj["lk"]
    return lk


@cli.command("help", resolve_options=False)
@click.argument("command", required=False)
@click.pass_context
def help_(ctx: click.Context, command: str | None) -> None:
    """Show pipekey's help, or COMMAND's.

    \b
    pipekey help
    pipekey help run
    """
    parent = ctx.parent or ctx
    if command is None:
        click.echo(cli.get_help(parent))
        return
    found = cli.get_command(parent, command)
    if found is None:
        raise click.exceptions.NoSuchCommand(command, possibilities=cli.list_commands(parent),
                                             ctx=parent)
    with click.Context(found, info_name=command, parent=parent) as sub:
        click.echo(found.get_help(sub))
