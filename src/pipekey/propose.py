"""``pipekey propose``: a draft ``[pipelines]`` manifest from observed reads, for review.

Input: the ``observe`` audit events (:mod:`pipekey.observe`), streamed; only reads served
(``outcome = ok``) by a task of a DAG that no pipeline of the current manifest claims.

* **Pipelines** group DAGs by team and by the first word of their id (``ads_report`` and
  ``ads_backfill`` become pipeline ``ads`` with ``dags = ["ads_*"]``); a word two teams share
  lists its DAG ids one by one instead, so no pattern reaches another team's DAG.
* **Scope**: keys that differ in one segment, below a common stem, become a templated scope
  (``accounts/acct_1/api_token`` and ``accounts/acct_2/api_token`` -> ``accounts/{account}``
  with ``requires = ["api_token"]``) when every such read came with a DAG run param naming
  that segment (the backend fills a scope from the DAG run's params outside a run); the
  param's name is the field. Otherwise the scope is a literal ``<pipeline name>`` (a place
  for the pipeline's own keys; nothing is read from it yet) and every key read is a grant.
* **Grants**: every other key read, exactly (a grant is a key or a prefix).
* **Teams**: the Airflow team of the reads, if any.

The output is deterministic (sorted) and loads as a manifest (``parse_manifest``).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .observe import EVENT
from .policy import dag_pipeline

if TYPE_CHECKING:
    from .manifest import PipelineConfig

__all__ = ["Proposal", "ProposedPipeline", "propose"]

_WORD = re.compile(r"[A-Za-z0-9]+")
_Params = tuple[tuple[str, str], ...]


@dataclass
class ProposedPipeline:
    name: str
    dags: list[str]
    scope: str
    requires: list[str] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)
    read_by: list[str] = field(default_factory=list)   # the DAG ids observed
    reads: int = 0
    covered: list[str] = field(default_factory=list)   # keys read under a templated scope

    def to_dict(self) -> dict[str, Any]:
        return {"dags": self.dags, "scope": self.scope, "requires": self.requires,
                "optional": self.optional, "grants": self.grants, "teams": self.teams,
                "read_by": self.read_by, "reads": self.reads}


@dataclass
class Proposal:
    pipelines: dict[str, ProposedPipeline]
    events: int = 0          #: observe events read
    used: int = 0            #: of those, reads that shaped the proposal
    #: DAGs an existing pipeline claims, with the keys enforcement would refuse them
    refused: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    first: str | None = None
    last: str | None = None
    #: DAGs observed with no pipeline that a pipeline of the manifest claims now
    claimed: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"pipelines": {n: p.to_dict() for n, p in self.pipelines.items()},
                "events": self.events, "used": self.used, "refused": self.refused,
                "first": self.first, "last": self.last, "claimed": sorted(self.claimed)}

    def to_toml(self) -> str:
        lines = [f"# Proposed by `pipekey propose` from {self.used} observed reads "
                 f"({self.first or '-'} .. {self.last or '-'}).",
                 "# Review every line: a grant is a key (and everything below it) the "
                 "pipeline may read.", ""]
        for name, p in self.pipelines.items():
            lines.append(f"[pipelines.{name}]")
            reads = f"{p.reads} read" + ("" if p.reads == 1 else "s")
            lines.append(f"# read by {', '.join(p.read_by)} ({reads})")
            lines.append(f"dags = {_list(p.dags)}")
            if "{" in p.scope:
                fields = re.findall(r"\{(\w+)\}", p.scope)
                lines.append(f"# outside a run the DAG run param {fields[0]!r} fills the scope")
            else:
                lines.append("# the scope: where the pipeline's own keys would go (none read "
                             "there yet)")
            lines.append(f"scope = {_str(p.scope)}")
            for what, values in (("requires", p.requires), ("optional", p.optional),
                                 ("grants", p.grants), ("teams", p.teams)):
                if values:
                    lines.append(f"{what} = {_list(values)}")
            lines.append("")
        for pipeline, keys in self.refused.items():
            lines.append(f"# pipelines.{pipeline} (in the manifest already) would refuse "
                         "what its DAGs read; to allow it, add to its grants:")
            lines.append(f"#   {_list(sorted(k for ks in keys.values() for k in ks))}")
        if self.claimed:
            lines.append(f"# observed before the manifest's pipelines claimed them (check "
                         f"them with `pipekey check --replay`): {', '.join(sorted(self.claimed))}")
        # a DAG id (or a time) may hold a newline: it must not end a comment, nor start a line
        return "\n".join(map(_escape_controls, lines)).rstrip("\n") + "\n"


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def _escape_controls(line: str) -> str:
    """``line`` with each control character written ``\\uXXXX``: TOML allows none in a
    comment (tab aside) nor raw in a string, where ``\\uXXXX`` is an escape (JSON leaves
    DEL raw); a lone surrogate (no character, no UTF-8) becomes U+FFFD."""
    line = _SURROGATES.sub("\ufffd", line)
    return _CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def _str(text: str) -> str:
    # a TOML basic string: JSON's escapes are TOML's, but for a surrogate pair (JSON's
    # spelling of a character outside the BMP), so non-ASCII text stays as it is
    return json.dumps(text, ensure_ascii=False)


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_str(v) for v in values) + "]"


@dataclass
class _Group:
    team: str | None
    word: str
    dags: dict[str, None] = field(default_factory=dict)
    #: key -> the distinct sets of DAG run params its reads came with (memory grows with
    #: distinct keys and param sets, not with reads)
    keys: dict[str, set[_Params]] = field(default_factory=lambda: defaultdict(set))
    reads: int = 0


def propose(events: Iterable[dict[str, Any]],
            existing: Mapping[str, PipelineConfig] | None = None,
            since: str | None = None) -> Proposal:
    """A proposal from audit ``events`` (streamed once); ``existing``: the manifest's
    pipelines (a DAG one of them claims gets no new pipeline, and a proposed name never
    repeats one); ``since``: an ISO time, events before it are skipped."""
    existing = existing or {}
    from datetime import datetime

    after = datetime.fromisoformat(since) if since else None
    groups: dict[tuple[str | None, str], _Group] = {}
    proposal = Proposal({})
    for event in events:
        if event.get("event") != EVENT:
            continue
        when = str(event.get("time") or "")
        if after is not None and when and datetime.fromisoformat(when) < after:
            continue
        proposal.events += 1
        dag, key = event.get("dag"), str(event.get("key"))
        if not dag or event.get("outcome") != "ok":
            continue
        if not event.get("pipeline") and dag_pipeline(existing, str(dag)):
            proposal.claimed.add(str(dag))  # claimed since: check --replay tells
            continue
        if event.get("pipeline"):  # a pipeline claims the DAG: refusals become advice
            if event.get("enforce") == "refuse":
                keys = proposal.refused.setdefault(str(event["pipeline"]), {})
                keys.setdefault(str(dag), [])
                if key not in keys[str(dag)]:
                    keys[str(dag)].append(key)
            continue
        proposal.used += 1
        proposal.first = min(proposal.first or when, when)
        proposal.last = max(proposal.last or when, when)
        words = _WORD.findall(str(dag)) or ["dag"]
        team = event.get("team") or None
        group = groups.setdefault((team, words[0].lower()), _Group(team, words[0].lower()))
        group.dags[str(dag)] = None
        group.keys[key].add(tuple(sorted((event.get("params") or {}).items())))
        group.reads += 1
    for keys in proposal.refused.values():
        for dag in keys:
            keys[dag].sort()
    proposal.refused = {p: dict(sorted(k.items())) for p, k in sorted(proposal.refused.items())}
    shared_words = {w for (t, w) in groups if sum(1 for (_, x) in groups if x == w) > 1}
    taken = set(existing)
    for (team, word), group in sorted(groups.items(), key=lambda i: (i[0][1], i[0][0] or "")):
        name = _name(word, team, word in shared_words, taken)
        taken.add(name)
        proposal.pipelines[name] = _pipeline(name, group, word in shared_words)
    _separate_teams(proposal)
    return proposal


def _name(word: str, team: str | None, shared: bool, taken: set[str]) -> str:
    base = f"{word}_{team}" if shared and team else word
    base = re.sub(r"[^a-z0-9_]", "_", base.lower())
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _dag_patterns(group: _Group, shared: bool) -> list[str]:
    dags = sorted(group.dags)
    if len(dags) == 1 or shared:
        return dags
    separators = {d[len(group.word)] for d in dags if len(d) > len(group.word)
                  and d[:len(group.word)].lower() == group.word}
    prefixes = {d[:len(group.word)] for d in dags}
    if len(separators) == 1 and len(prefixes) == 1 and all(len(d) > len(group.word)
                                                           for d in dags):
        return [f"{prefixes.pop()}{separators.pop()}*"]
    return dags


def _pipeline(name: str, group: _Group, shared: bool) -> ProposedPipeline:
    family = _family(group.keys)
    grants = sorted(group.keys)
    requires: list[str] = []
    optional: list[str] = []
    covered: list[str] = []
    scope = name
    if family is not None:
        stem, field_name, covered = family
        scope = f"{stem}/{{{field_name}}}"
        values: dict[str, set[str]] = defaultdict(set)  # leaf name -> values it was read for
        depth = stem.count("/") + 1
        for key in covered:
            parts = key.split("/")
            if len(parts) == depth + 2:
                values[parts[-1]].add(parts[depth])
        every = set.union(*values.values()) if values else set()
        requires = sorted(n for n, v in values.items() if v == every)
        optional = sorted(n for n, v in values.items() if v != every)
        grants = sorted(set(grants) - set(covered))
    return ProposedPipeline(name, _dag_patterns(group, shared), scope, requires, optional,
                            _collapse(grants), [group.team] if group.team else [],
                            sorted(group.dags), group.reads,
                            covered if family is not None else [])


def _family(keys: dict[str, set[_Params]]) -> tuple[str, str, list[str]] | None:
    """The best (stem, field, keys covered): keys under ``stem/<value>/...`` for two or more
    values, where every read came with one DAG run param (the same name) equal to the value.
    Most keys covered wins, then the longer stem, then the first stem in order."""
    candidates: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for key in sorted(keys):
        parts = key.split("/")
        for i in range(1, len(parts) - 1):
            candidates["/".join(parts[:i])][parts[i]].append(key)
    best: tuple[int, int, str, str, list[str]] | None = None
    for stem, by_value in sorted(candidates.items()):
        if len(by_value) < 2:
            continue
        names: set[str] | None = None
        for value, covered in by_value.items():
            for key in covered:
                for params in keys[key]:
                    found = {n for n, v in params if v == value}
                    names = found if names is None else names & found
        names = (names or set()) - {"env"}  # {env} is the environment, never a parameter
        if not names:
            continue
        covered_keys = sorted(k for ks in by_value.values() for k in ks)
        rank = (len(covered_keys), stem.count("/"))
        if best is None or rank > best[:2]:
            best = (*rank, stem, sorted(names)[0], covered_keys)
    return None if best is None else (best[2], best[3], best[4])


def _collapse(grants: list[str]) -> list[str]:
    """Grants without those another grant already covers (a grant is a prefix)."""
    out: list[str] = []
    for grant in sorted(grants):
        if not any(grant == g or grant.startswith(g + "/") for g in out):
            out.append(grant)
    return out


def _separate_teams(proposal: Proposal) -> None:
    """Two teams may not own overlapping prefixes (the manifest refuses it): a scope that
    overlaps another team's becomes a literal one (a templated scope's keys become grants),
    then, if that still overlaps, ``proposed/<pipeline>``."""
    owned: list[tuple[str, str]] = []  # (prefix owned, team)

    def prefix(scope: str) -> str:
        return scope.split("{", 1)[0] if "{" in scope else scope + "/"

    def clashes(scope: str, team: str) -> bool:
        mine = prefix(scope)
        return bool(team) and any(t and t != team and (mine.startswith(o) or o.startswith(mine))
                                  for o, t in owned)

    for name, p in proposal.pipelines.items():
        team = p.teams[0] if p.teams else ""
        if clashes(p.scope, team) and "{" in p.scope:
            p.grants = _collapse([*p.grants, *p.covered])
            p.scope, p.requires, p.optional, p.covered = name, [], [], []
        if clashes(p.scope, team):
            p.scope = f"proposed/{name}"
        owned.append((prefix(p.scope), team))
