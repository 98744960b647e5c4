"""``pipekey check --replay``: observed reads the manifest would refuse (pipekey.replay)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import _emit, _lk, plural, say
from .audit import _file_sink, parse_since


def replay_command(ctx: click.Context, path: str | None, since: str | None,
                   as_json: bool) -> None:
    """Replay the audit file's observe events against the manifest; exit 1 on a refusal."""
    from ..audit import iter_events
    from ..errors import UsageError
    from ..replay import replay

    lk = _lk(ctx)
    manifest = lk.manifest
    if manifest is None or manifest.path is None:
        raise UsageError("check --replay needs a manifest (--config or ./pipekey.toml) to "
                         "replay against")
    file = Path(path) if path else _file_sink(lk)
    result = replay(manifest, iter_events(file), parse_since(since) if since else None)

    def text() -> None:
        for refusal in result.refusals:
            say(refusal.line())
        say(f"{plural(result.events, 'observed read')} replayed against {manifest.path}: "
            f"{len(result.refusals)} would be refused", err=True)

    _emit(as_json, {"refusals": [r.to_dict() for r in result.refusals],
                    "events": result.events, "allowed": result.allowed}, text)
    if result.refusals:
        ctx.exit(1)
