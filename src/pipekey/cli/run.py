"""``pipekey run``: start a command with one pipeline run's secrets in its environment."""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING, Any, Callable, Mapping, Sequence, TextIO

import click

from .. import redact
from ..errors import PipekeyError, UsageError
from ._common import WARNINGS, _lk, cli, json_option

# `pipekey run --help` (and `pipekey --help`, which lists this module's command) builds
# nothing: the client, the manifest's schema and the backends are imported when a run starts
if TYPE_CHECKING:
    from ..client import Pipekey
    from ..run import Run

FORWARDED = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2]


class CommandFailed(PipekeyError):
    """The command could not be started: 127 if not found, 126 if not executable or its
    environment is more than the OS takes (as sh)."""

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


def open_run(lk: Pipekey, pipeline: str, params: Sequence[str], env: str | None,
             run_name: str | None = None) -> Run:
    """``lk.pipeline`` for a command: a parameter mistake is said as ``check`` says it (the
    template that uses it, did-you-mean), a missing one with the ``--param NAME=...`` to pass."""
    from ..parameters import problem

    given = parse_params(params)
    found = problem(lk.pipeline_config(pipeline), given, instances_hint=False)
    if found is not None:
        raise UsageError(f"pipeline {pipeline!r}: {found[1]}")
    return lk.pipeline(pipeline, env=env, run_name=run_name, **given)


pipeline_option = click.option("-p", "--pipeline", "pipeline", metavar="NAME",
                               help="A pipeline of the manifest.")
param_option = click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                            help="A scope parameter, e.g. --param account=acct_42 (repeatable).")


def child_environment(lk: Pipekey, secrets: dict[str, str], pristine: bool,
                      preserve: Sequence[str] = (),
                      environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the run's secrets plus the parent's non-secret variables (with
    ``pristine``, only PATH and HOME). Never passed on: any env backend's variables, in every
    environment, and the store credentials of every backend in the manifest (see
    :mod:`pipekey.backends.credentials`), PIPEKEY_MASTER_KEY included; nothing but the
    run's own secrets and the variables named in ``preserve`` is added back."""
    environ = os.environ if environ is None else environ
    if pristine:
        base = {k: environ[k] for k in ("PATH", "HOME") if k in environ}
    else:
        secret = withheld(lk)
        base = {k: v for k, v in environ.items() if not secret(k)}
    base.update({k: environ[k] for k in preserve if k in environ})
    return {**base, **secrets}


def withheld(lk: Pipekey) -> Callable[[str], bool]:
    """Whether a parent variable is one a child never inherits: a store credential (by name),
    or any env backend's variable (its prefix template as a pattern: ``LK_{env}__`` matches
    ``LK_prod__...`` and ``LK_dev__...``). An env backend without a prefix reads any
    variable, so every variable that stands for a key of two or more segments (every key a
    scope walk, ``shared/`` or a mapped connection reads) is withheld."""
    from ..backends.credentials import credential_vars
    from ..backends.env import EnvBackend, EnvConfig, name_to_key, prefix_pattern

    envs: list[tuple[str, str]]  # (prefix template, separator) of each env backend
    if lk.manifest is not None:
        configs: list[Any] = list(lk.manifest.backends.values())
        envs = [(c.prefix, c.separator) for c in configs if isinstance(c, EnvConfig)]
    else:  # built in code: only the backends as they are
        configs = []
        backends = [b.origin() for b in lk.backends.values()]
        envs = [(b.prefix, b.separator) for b in backends if isinstance(b, EnvBackend)]
    names = credential_vars(configs)
    patterns = [p for p in (prefix_pattern(t) for t, _ in envs) if p is not None]
    bare = [sep for t, sep in envs if not t]

    def secret(name: str) -> bool:
        return (name in names or any(p.match(name) for p in patterns)
                or any(sep in name and name_to_key(name, "", sep) is not None for sep in bare))

    return secret


@cli.command(context_settings={"allow_interspersed_args": False})
@pipeline_option
@param_option
@click.option("--run-name", help="This run's unique name (default: generated).")
@click.option("--pristine", is_flag=True,
              help="Start CMD from an empty environment plus PATH and HOME.")
@click.option("--preserve-env", "preserve", multiple=True, metavar="NAME",
              help="Pass the parent's variable NAME to CMD even if it would be withheld "
                   "(a store credential, say); repeatable.")
@click.option("--no-mask", is_flag=True,
              help="Pass CMD's stdout and stderr through untouched (default: every value of the "
                   f"run, and token shapes, are replaced with {redact.MASK}).")
@functools.partial(json_option, help="When CMD ends, print a JSON summary (names, never values) "
                                     "on stderr; stdout stays CMD's. An error before CMD "
                                     "starts is JSON on stdout.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, pipeline: str | None, params: tuple[str, ...], run_name: str | None,
        pristine: bool, preserve: tuple[str, ...], no_mask: bool, as_json: bool,
        command: tuple[str, ...]) -> None:
    """Run COMMAND with one pipeline run's secrets added to its environment.

    Each secret the pipeline requires is set under its `env_vars` name in the manifest, else
    its name in upper snake case (access_token -> ACCESS_TOKEN). The parent's environment is
    unchanged; the child does not get the env backend's variables (of any environment), nor
    the credentials of the manifest's stores (PIPEKEY_MASTER_KEY, AWS_SECRET_ACCESS_KEY,
    VAULT_TOKEN...; see docs/security.md). Signals are forwarded; pipekey exits with
    COMMAND's exit code (128+N if killed by signal N). With --json, a summary (names, never
    values) is printed on stderr at the end.

    pipekey's own options (--json, --env, --config included) go before `--`; everything
    after it is COMMAND. An unknown option before `--` is an error, never run.

    \b
    pipekey run --pipeline facebook_ads --param account=acct_42 -- python load.py
    pipekey run --pipeline facebook_ads --param account=acct_42 --env prod --json -- python load.py
    """
    if not pipeline:
        raise UsageError("pipekey run needs --pipeline NAME")
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("pipekey run needs a command after --")
    lk = _lk(ctx)
    with open_run(lk, pipeline, params, ctx.obj["env"], run_name) as active:
        secrets = active.env()
        for value in secrets.values():
            redact.register(value)
        secret = withheld(lk)
        for name in preserve:  # passed on purpose, still masked in the child's output
            if secret(name) and os.environ.get(name):
                redact.register(os.environ[name])
        env = child_environment(lk, secrets, pristine, preserve)
        summary = {"pipeline": pipeline, "run": active.name, "env": active.environment,
                   "variables": sorted(secrets), "masked": not no_mask}
        describe = _describer(lk, active, secrets)
        check_environment(list(command), env, describe)
        WARNINGS.flush_to_stderr()  # before the child's output, not after it
        code = _spawn(list(command), env, mask=not no_mask, describe=describe)
    if as_json:
        click.echo(json.dumps({**summary, "exit_code": code}), err=True)
    ctx.exit(code)


#: Linux's MAX_ARG_STRLEN: the most bytes one NAME=value string (its NUL included) may hold
MAX_ARG_STRLEN = 131072


def check_environment(command: list[str], env: Mapping[str, str],
                      describe: Callable[[str], str]) -> None:
    """Refuse, before anything starts, an environment the OS cannot hand to a program: a value
    with a NUL byte, a variable over MAX_ARG_STRLEN (Linux), or arguments and environment
    together over ARG_MAX. One line naming the variable and the limit; never the value."""
    total = 0
    for name, value in env.items():
        try:
            size = len(os.fsencode(name)) + len(os.fsencode(value)) + 2
        except UnicodeEncodeError:
            raise CommandFailed(f"{describe(name)} cannot be encoded for the environment",
                                126) from None
        if "\0" in value:
            raise CommandFailed(f"{describe(name)} holds a NUL byte, which no environment "
                                "variable can", 126)
        if sys.platform.startswith("linux") and size > MAX_ARG_STRLEN:
            raise CommandFailed(f"{describe(name)} is {size} bytes as NAME=value; the OS allows "
                                f"at most {MAX_ARG_STRLEN} per environment variable (Linux "
                                "MAX_ARG_STRLEN): give the command this secret another way",
                                126)
        total += size + 8  # the string and its pointer
    total += sum(len(os.fsencode(a)) + 1 + 8 for a in command)
    arg_max = _arg_max()
    if arg_max and total > arg_max:
        raise CommandFailed(_too_big(env, describe, arg_max, total), 126)


def _arg_max() -> int | None:
    try:
        return os.sysconf("SC_ARG_MAX")
    except (AttributeError, ValueError, OSError):
        return None


def _too_big(env: Mapping[str, str], describe: Callable[[str], str], arg_max: int | None,
             total: int | None = None) -> str:
    largest = max(env, key=lambda k: len(env[k]), default=None)
    size = f"are {total} bytes" if total else "are too large"
    limit = f"at most {arg_max} bytes" if arg_max else "less"
    return (f"the command's arguments and environment {size}; the OS allows {limit} (ARG_MAX)"
            + (f"; the largest variable is {describe(largest)}" if largest else ""))


def _describer(lk: Pipekey, active: Run, secrets: Mapping[str, str]) -> Callable[[str], str]:
    """``VAR`` -> ``ACCESS_TOKEN (secret 'access_token', key 'marketing/...')`` for errors:
    which of the run's secrets or connections a variable holds (names and keys only)."""
    from ..childenv import connection_variable, secret_variable

    def describe(variable: str) -> str:
        if variable not in secrets:
            return f"the variable {variable} (inherited from the parent environment)"
        env_vars = active.config.env_vars
        for name in active.names:
            if secret_variable(env_vars, name) == variable:
                secret = active.explain(name).secret
                key = f", key {secret.key!r}" if secret is not None else ""
                return f"the variable {variable} (secret {name!r}{key})"
        for conn, key in active.connection_keys.items():
            if connection_variable(env_vars, conn) == variable:
                return f"the variable {variable} (connection {conn!r}, key {key!r})"
        for conn, definition in active.dynamic.items():
            if connection_variable(env_vars, conn) == variable:
                return (f"the variable {variable} (connection {conn!r}, minted by "
                        f"credentials.{definition})")
        return f"the variable {variable}"
    return describe


def _pump(source: IO[bytes], target: TextIO) -> threading.Thread:
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


def _spawn(command: list[str], env: dict[str, str], mask: bool = True,
           describe: Callable[[str], str] = str) -> int:
    pipe = subprocess.PIPE if mask else None
    try:
        child = subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe)
    except FileNotFoundError:
        raise CommandFailed(f"command not found: {command[0]!r}", 127) from None
    except PermissionError:
        raise CommandFailed(f"command not executable: {command[0]!r}", 126) from None
    except OSError as exc:
        if exc.errno != errno.E2BIG:
            raise CommandFailed(f"cannot start {command[0]!r} ({exc.strerror})", 126) from None
        raise CommandFailed(_too_big(env, describe, _arg_max()), 126) from None
    except ValueError:  # a NUL byte in an argument
        raise CommandFailed(f"cannot start {command[0]!r}: an argument holds a NUL byte",
                            126) from None
    previous = {}
    for sig in FORWARDED:
        previous[sig] = signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    pumps = []
    if mask:
        assert child.stdout is not None and child.stderr is not None  # both are PIPEs
        pumps = [_pump(child.stdout, sys.stdout), _pump(child.stderr, sys.stderr)]
    try:
        code = child.wait()
        for pump in pumps:
            pump.join(timeout=30)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    return 128 - code if code < 0 else code
