"""What the audit log says about each key, read incrementally: the inventory's view of it.

:class:`AuditIndex` streams a file sink's JSON lines (rotated files included, oldest first)
one line at a time and keeps, per key, counts and a few names: last read, the runs and
pipelines that read it, reads per day, denials; and per (pipeline, key) the reads, for "read
by a run that did not declare it". It remembers how far it read each file: a later
:meth:`AuditIndex.refresh` reads only the lines appended since, and starts again when the
file was rotated or truncated. Memory grows with keys and days, never with events.
Events hold no values, and the index keeps no ``detail`` text.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["AuditIndex", "KeyReads"]

#: run names kept per key (the most recent)
RECENT_RUNS = 10


@dataclass
class KeyReads:
    """The audit's summary of one key. Holds no value."""

    reads: int = 0
    last_read: str | None = None
    last_pipeline: str | None = None
    #: (pipeline, run), most recent last, at most 10
    runs: list[tuple[str, str]] = field(default_factory=list)
    pipelines: Counter[str] = field(default_factory=Counter)
    per_day: Counter[str] = field(default_factory=Counter)   #: YYYY-MM-DD -> reads
    denials: int = 0
    denied_to: Counter[str] = field(default_factory=Counter)
    last_denied: str | None = None

    def seen_by(self, pipelines: set[str]) -> KeyReads:
        """What a viewer of only ``pipelines`` sees: other pipelines' names, runs and
        denials left out (the counts per day stay: they name no one)."""
        mine = Counter({p: n for p, n in self.pipelines.items() if p in pipelines})
        last = self.last_pipeline in pipelines
        return KeyReads(sum(mine.values()), self.last_read if last else None,
                        self.last_pipeline if last else None,
                        [(p, r) for p, r in self.runs if p in pipelines], mine,
                        Counter(self.per_day),
                        sum(n for p, n in self.denied_to.items() if p in pipelines),
                        Counter({p: n for p, n in self.denied_to.items() if p in pipelines}),
                        None)

    def to_dict(self) -> dict[str, Any]:
        return {"reads": self.reads, "last_read": self.last_read,
                "last_pipeline": self.last_pipeline,
                "runs": [{"pipeline": p, "run": r} for p, r in self.runs],
                "pipelines": dict(self.pipelines), "per_day": dict(sorted(self.per_day.items())),
                "denials": self.denials, "denied_to": dict(self.denied_to),
                "last_denied": self.last_denied}


class AuditIndex:
    """Per-key summaries of one audit file sink, brought up to date by :meth:`refresh`."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.keys: dict[str, KeyReads] = {}
        self.events = 0
        self.malformed = 0
        self._files: dict[Path, tuple[int, int]] = {}  # file -> (inode, offset read to)

    def refresh(self) -> AuditIndex:
        """Read what was appended since the last refresh (everything, the first time)."""
        if self.path is None:
            return self
        files = self._chain()
        known = {p: self._files.get(p) for p in files}
        rotated = any(state is not None and (_inode(p) != state[0] or p.stat().st_size < state[1])
                      for p, state in known.items())  # rotated, replaced or truncated
        if rotated or any(p not in files for p in self._files):
            self.keys, self.events, self.malformed, self._files = {}, 0, 0, {}
        for file in files:
            inode = _inode(file)
            _, offset = self._files.get(file, (inode, 0))
            self._files[file] = (inode, self._read(file, offset))
        return self

    def _chain(self) -> list[Path]:
        assert self.path is not None
        rotated = sorted((p for p in self.path.parent.glob(self.path.name + ".*")
                          if p.suffix[1:].isdigit()), key=lambda p: -int(p.suffix[1:]))
        return [p for p in [*rotated, self.path] if p.is_file()]

    def _read(self, file: Path, offset: int) -> int:
        with open(file, "rb") as f:
            f.seek(offset)
            for line in _lines(f):
                offset += len(line)
                if line.endswith(b"\n"):
                    self._add(line)
                else:  # a line being written: read it next time
                    offset -= len(line)
                    break
        return offset

    def _add(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            event = json.loads(line)
            kind, key = event["event"], event["key"]
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return
        self.events += 1
        if kind not in ("read", "deny"):
            return
        entry = self.keys.get(key)
        if entry is None:
            entry = self.keys[key] = KeyReads()
        pipeline = event.get("pipeline") or "-"
        when = str(event.get("time") or "")
        if kind == "deny" or event.get("outcome") == "denied":
            entry.denials += 1
            entry.denied_to[pipeline] += 1
            entry.last_denied = max(entry.last_denied or "", when) or None
            return
        if event.get("outcome") != "ok":
            return
        entry.reads += 1
        entry.pipelines[pipeline] += 1
        entry.per_day[when[:10]] += 1
        if entry.last_read is None or when >= entry.last_read:
            entry.last_read, entry.last_pipeline = when, pipeline
        run = event.get("run")
        if run:
            pair = (pipeline, str(run))
            if pair in entry.runs:
                entry.runs.remove(pair)
            entry.runs.append(pair)
            del entry.runs[:-RECENT_RUNS]


def _inode(path: Path) -> int:
    return os.stat(path).st_ino


def _lines(f: Any, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's lines from where it stands, read in 1 MiB blocks (never whole)."""
    rest = b""
    while True:
        block = f.read(size)
        if not block:
            if rest:
                yield rest
            return
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        for part in parts:
            yield part + b"\n"
