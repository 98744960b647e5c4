"""``pipekey audit``: which runs read which keys, from where."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import UsageError
from ._common import _emit, _lk, _print, _table, cli, json_option, plural, row, say

if TYPE_CHECKING:
    from ..client import Pipekey

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str) -> datetime:
    """``90s``, ``15m``, ``1h``, ``7d``, or an ISO time."""
    found = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if found:
        return datetime.now(timezone.utc) - timedelta(**{_UNITS[found[2]]: int(found[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r} is not a duration (90s, 15m, 1h, 7d) or an ISO "
                         "time") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@cli.command()
@click.option("-p", "--pipeline", help="Only this pipeline's runs.")
@click.option("-k", "--key", help="Only this key, or keys below it.")
@click.option("--since", help="Only events after this: 90s, 15m, 1h, 7d, or an ISO time.")
@click.option("--file", "path", type=click.Path(dir_okay=False),
              help="The audit file (default: the manifest's file sink).")
@json_option
@click.pass_context
def audit(ctx: click.Context, pipeline: str | None, key: str | None, since: str | None,
          path: str | None, as_json: bool) -> None:
    """Show audit events from the file sink: who read, wrote or was denied what, when, from
    which backend and version. Never values.

    \b
    pipekey audit --pipeline facebook_ads --since 1h
    pipekey audit --key marketing/facebook --json
    """
    from ..audit import read_events
    from ..keys import is_under

    file = Path(path) if path else _file_sink(_lk(ctx))
    after = parse_since(since) if since else None
    events = [e for e in read_events(file)
              if (not pipeline or e.get("pipeline") == pipeline)
              and (not key or is_under(e["key"], key.rstrip("/")))
              and (after is None or datetime.fromisoformat(e["time"]) >= after)]

    def text() -> None:
        table = _table("TIME", "EVENT", "PIPELINE", "RUN", "KEY", "BACKEND", "VERSION", "OUTCOME")
        for e in events:
            row(table, str(e["time"])[:19].replace("T", " "), str(e["event"]),
                str(e.get("pipeline") or "-"), str(e.get("run") or "-"), str(e["key"]),
                str(e.get("backend") or "-"), str(e.get("version") or "-"), str(e["outcome"]))
        _print(table)
        say(f"{plural(len(events), 'event')} from {file}", err=True)

    _emit(as_json, events, text)


def _file_sink(lk: Pipekey) -> Path:
    from ..audit import FileSink

    for sink in lk.audit.sinks:
        if isinstance(sink, FileSink):
            return sink.path
    raise UsageError("no audit file: add [audit] sinks = [{ type = \"file\" }] to the manifest "
                     "or pass --file")
