"""``latchkey run``: start a command with one pipeline run's secrets in its environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Sequence

import click

from .. import redact
from ..backends.env import EnvBackend
from ..backends.local import MASTER_KEY_ENV
from ..client import Latchkey
from ..errors import LatchkeyError, UsageError
from ._common import WARNINGS, _lk, cli, json_option

FORWARDED = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2]


class CommandFailed(LatchkeyError):
    """The command could not be started: 127 if not found, 126 if not executable (as sh)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """``["account=acct_42"]`` -> ``{"account": "acct_42"}``; a malformed pair is a usage error."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param {pair!r} is not NAME=VALUE")
        params[name] = value
    return params


pipeline_option = click.option("-p", "--pipeline", "pipeline", metavar="NAME",
                               help="A pipeline of the manifest.")
param_option = click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                            help="A scope parameter, e.g. --param account=acct_42 (repeatable).")


def child_environment(lk: Latchkey, secrets: dict[str, str], pristine: bool) -> dict[str, str]:
    """The child's environment: the parent's (or only PATH and HOME) plus the run's secrets,
    without the master key or any other pipeline's variables from the env backend."""
    if pristine:
        base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    else:
        prefixes = [b.prefix for b in lk.chain if isinstance(b, EnvBackend) and b.prefix]
        base = {k: v for k, v in os.environ.items()
                if k != MASTER_KEY_ENV and not any(k.startswith(p) for p in prefixes)}
    return {**base, **secrets}


@cli.command(context_settings={"allow_interspersed_args": False})
@pipeline_option
@param_option
@click.option("--run-name", help="This run's unique name (default: generated).")
@click.option("--pristine", is_flag=True,
              help="Start CMD from an empty environment plus PATH and HOME.")
@click.option("--no-mask", is_flag=True,
              help="Pass CMD's stdout and stderr through untouched (default: every value of the "
                   "run, and token shapes, are replaced with ***).")
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, pipeline: str | None, params: tuple[str, ...], run_name: str | None,
        pristine: bool, no_mask: bool, as_json: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND with one pipeline run's secrets added to its environment.

    Each secret the pipeline requires is set under its `env_vars` name in the manifest, else
    its name in upper snake case (access_token -> ACCESS_TOKEN). The parent's environment is
    unchanged; the child does not get LATCHKEY_MASTER_KEY or the env backend's variables.
    Signals are forwarded; latchkey exits with COMMAND's exit code (128+N if killed by
    signal N). With --json, a summary (names, never values) is printed on stderr at the end.

    latchkey's own options (--json, --env, --config included) go before `--`; everything
    after it is COMMAND. An unknown option before `--` is an error, never run.

    \b
    latchkey run --pipeline facebook_ads --param account=acct_42 -- python load.py
    latchkey run --pipeline facebook_ads --param account=acct_42 --env prod --json -- python load.py
    """
    if not pipeline:
        raise UsageError("latchkey run needs --pipeline NAME")
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("latchkey run needs a command after --")
    lk = _lk(ctx)
    with lk.pipeline(pipeline, env=ctx.obj["env"], run_name=run_name,
                     **parse_params(params)) as active:
        secrets = active.env()
        for value in secrets.values():
            redact.register(value)
        env = child_environment(lk, secrets, pristine)
        summary = {"pipeline": pipeline, "run": active.name, "env": active.environment,
                   "variables": sorted(secrets), "masked": not no_mask}
        WARNINGS.flush_to_stderr()  # before the child's output, not after it
        code = _spawn(list(command), env, mask=not no_mask)
    if as_json:
        click.echo(json.dumps({**summary, "exit_code": code}), err=True)
    ctx.exit(code)


for _param in run.params:  # where --json goes, in run's own words
    if isinstance(_param, click.Option) and _param.name == "as_json":
        _param.help = ("Print a summary (names, never values) as JSON on stderr at the end. "
                       "Before --, like every latchkey option.")


def _pump(source, target) -> threading.Thread:
    """Copy a child's output line by line, masked (lines keep a value from being split)."""
    out = getattr(target, "buffer", None)

    def copy() -> None:
        for line in iter(source.readline, b""):
            masked = redact.redactor().redact_bytes(line)
            if out is not None:
                out.write(masked)
                out.flush()
            else:
                target.write(masked.decode("utf-8", "replace"))
        source.close()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def _spawn(command: list[str], env: dict[str, str], mask: bool = True) -> int:
    pipe = subprocess.PIPE if mask else None
    try:
        child = subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe)
    except FileNotFoundError:
        raise CommandFailed(f"command not found: {command[0]!r}", 127) from None
    except PermissionError:
        raise CommandFailed(f"command not executable: {command[0]!r}", 126) from None
    previous = {}
    for sig in FORWARDED:
        previous[sig] = signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    pumps = [_pump(child.stdout, sys.stdout), _pump(child.stderr, sys.stderr)] if mask else []
    try:
        code = child.wait()
        for pump in pumps:
            pump.join(timeout=30)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    return 128 - code if code < 0 else code
