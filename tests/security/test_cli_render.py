"""Data printed by the CLI is shown as it is: never read as rich markup, never a terminal escape.

Keys are validated, but run names, actors, audit records, paths, versions and error messages
are data: a task can choose its run name, a directory can be called anything. Every command
that prints data gets hostile text through a real manifest, store, audit file and directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipekey.cli import cli

HOSTILE = ["[/]", "x[/]", "[bold]", "[/bold]", "[white on white]", "[link=https://example.invalid]",
           "[link=https://example.invalid]click[/link]", "\\[b]", ":smile:", "[", "]",
           "\x1b[31m", "\x1b[8m", "\x1b]8;;https://example.invalid\x1b\\", "\x1b[2J", "\r",
           "\x07", "\x08", "\t", "\n", "\x00", "\u202e", "\u200b", "\u00a0", "  ", "\x85",
           "\u2028", "\ud800"]

#: Pieces of hostile text; what a file name or an environment variable cannot hold is dropped
#: where it has to be (NUL, "/", a lone surrogate), never silently elsewhere.
hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(max_size=6)), min_size=1, max_size=5,
).map("".join)


def escaped(text: str) -> str:
    """How the CLI must show ``text``: printable characters as they are, every other one as
    its Python escape (written out here, not taken from pipekey)."""
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif c in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[c])
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return "".join(out)


def _runner_output(result: Result) -> str:
    return result.stdout + result.stderr


def _assert_shown(result: Result, text: str, code: int, command: str) -> None:
    output = _runner_output(result)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        command, repr(result.exception))
    assert result.exit_code == code, (command, output)
    assert escaped(text) in output, (command, escaped(text), output)
    # nothing that drives a terminal or breaks a line inside a row reaches the output
    assert not any(not c.isprintable() and c != "\n" for c in output), (command, output)


MANIFEST = """\
chain = ["files", "local"]

[backends.files]
type = "files"
path = "secrets.toml"

[backends.local]
type = "local"
path = ".pipekey/store.db"

[pipelines.p]
scope = "teams/p"
requires = ["token"]
"""


def _project(base: Path, name: str) -> Path:
    folder = base / name
    folder.mkdir()
    (folder / "pipekey.toml").write_text(MANIFEST)
    (folder / "secrets.toml").write_text('[teams.p]\ntoken = "fake-render-token"\n')
    return folder / "pipekey.toml"


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pipekey-render-"))
    yield path
    shutil.rmtree(path)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=hostile_text)
def test_every_command_shows_hostile_data_literally(text: str, base: Path, master_key: str) -> None:
    """audit, history, doctor, explain, check, get, ls, diff and copy print a hostile run name,
    actor, audit record, path and error message literally, and exit as they would for any."""
    runner = CliRunner()
    in_a_name = "d" + text.replace("/", "").replace("\x00", "").encode(
        "utf-8", "ignore").decode("utf-8")[:60]
    in_env = text.replace("\x00", "").encode("utf-8", "ignore").decode("utf-8") or "x"
    folder = Path(tempfile.mkdtemp(dir=base))
    config = _project(folder, in_a_name)

    def pipekey(*args: str, **kwargs: object) -> Result:
        return runner.invoke(cli, ["--config", str(config), *args], **kwargs)  # type: ignore[arg-type]

    assert pipekey("set", "shared/x", input="fake-render-value",
                   env={"PIPEKEY_ACTOR": in_env}).exit_code == 0
    _assert_shown(pipekey("history", "shared/x"), in_env, 0, "history")

    audit = folder / "audit.jsonl"
    hostile = {"time": "2026-01-01T00:00:00+00:00", "event": text, "pipeline": text,
               "run": text, "key": text, "backend": text, "version": text, "outcome": text}
    other = {**hostile, "event": "read", "pipeline": "finance", "run": "r1",
             "key": "finance/ledger/token", "backend": "ssm", "version": "3", "outcome": "ok"}
    audit.write_text(json.dumps(hostile) + "\n" + json.dumps(other) + "\n")
    result = pipekey("audit", "--file", str(audit))
    _assert_shown(result, text, 0, "audit")
    assert "finance/ledger/token" in result.stdout  # the other team's record is shown too

    for args in (["doctor"], ["explain", "teams/p/token"], ["explain", "--pipeline", "p", "token"],
                 ["check"], ["copy", f"file:{config.parent / 'secrets.toml'}", "local",
                             "--dry-run"]):
        _assert_shown(pipekey(*args), in_a_name, 0, args[0])
    _assert_shown(pipekey("diff", f"file:{config.parent / 'secrets.toml'}", "local"),
                  in_a_name, 1, "diff")

    (config.parent / "secrets.toml").write_text("not [valid toml")  # errors name the path
    for args in (["get", "teams/p/token"], ["ls"], ["explain", "teams/p/token"], ["check"]):
        _assert_shown(pipekey(*args), in_a_name, 1, args[0])


def test_commands_add_rows_only_through_the_rendering_helper() -> None:
    """No command calls rich's add_row or prints markup itself: every row goes through
    ``_common.row``, which shows each data cell literally."""
    cli_dir = Path(__file__).resolve().parents[2] / "src" / "pipekey" / "cli"
    offenders = [f"{path.name}:{n}" for path in sorted(cli_dir.glob("*.py"))
                 if path.name != "_common.py"
                 for n, line in enumerate(path.read_text().splitlines(), start=1)
                 if ".add_row(" in line or "[/]" in line]
    assert offenders == []
