"""``pipekey check --replay``: observed reads replayed against a manifest.

Each ``observe`` audit event (:mod:`pipekey.observe`) that was served is asked again, of the
manifest given, as the Airflow backend would ask it when enforcing: the reader is the DAG's
task outside a run (:func:`pipekey.policy.tasks.task_reader`, with the DAG run's params the
event recorded), a mapped connection reads its mapping, and the decision is the policy's. With
an Airflow team on the event and pipelines serving teams (broker mode), the team's policy must
allow the key too. What would be refused is listed once per (reader, lookup, key), with how
often it happened and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .observe import EVENT
from .policy import NO_PIPELINE, TeamPolicy, served_environments
from .policy.tasks import TaskReader, task_reader

if TYPE_CHECKING:
    from .manifest import Manifest

__all__ = ["Refusal", "Replayer", "replay"]


@dataclass
class Refusal:
    dag: str | None
    task: str | None
    team: str | None
    pipeline: str | None
    lookup: str
    key: str
    why: str
    fix: str
    count: int = 1
    last: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def line(self) -> str:
        who = f"DAG {self.dag!r} task {self.task!r}" if self.dag else "outside any task"
        if self.team:
            who += f" (team {self.team!r})"
        return (f"refused: {who}: {self.lookup.replace(':', ' ', 1)} -> {self.key} "
                f"({self.why}; {self.count}x); fix: {self.fix}")


@dataclass
class Replayed:
    refusals: list[Refusal]
    events: int = 0
    allowed: int = 0


class Replayer:
    """The decisions of one manifest, read after read: :meth:`decide` says what enforcement
    would refuse of one observed read (``pipekey check --replay``, and the drop-in's observe
    mode as it reads). The readers and team policies it builds are kept."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.teams: dict[str, TeamPolicy] = {}
        self.readers: dict[tuple[Any, ...], TaskReader] = {}
        self.envs = served_environments(manifest.environments, manifest.env,
                                        manifest.pipelines.values())
        self.brokered = bool(manifest.team_names())

    def decide(self, event: Mapping[str, Any]) -> Refusal | None:
        """The refusal enforcement would give the read ``event`` records (its ``dag``,
        ``task``, ``team``, ``env``, ``params``, ``lookup``, ``key``), None if it allows it.

        Raises:
            UsageError: a DAG run param is not a key segment.
        """
        return _decide(self.manifest, event, self.teams, self.envs, self.brokered,
                       self.readers)


def replay(manifest: Manifest, events: Iterable[dict[str, Any]],
           since: datetime | None = None) -> Replayed:
    """The observed reads in ``events`` (streamed) that ``manifest`` would refuse."""
    found: dict[tuple[Any, ...], Refusal] = {}
    out = Replayed([])
    replayer = Replayer(manifest)
    for event in events:
        if event.get("event") != EVENT or event.get("outcome") != "ok":
            continue
        if since is not None and datetime.fromisoformat(str(event["time"])) < since:
            continue
        out.events += 1
        refusal = replayer.decide(event)
        if refusal is None:
            out.allowed += 1
            continue
        ident = (refusal.dag, refusal.task, refusal.team, refusal.lookup, refusal.key)
        if ident in found:
            found[ident].count += 1
            found[ident].last = refusal.last
        else:
            found[ident] = refusal
    out.refusals = [found[k] for k in sorted(found, key=lambda k: tuple(str(x) for x in k))]
    return out


def _decide(manifest: Manifest, event: Mapping[str, Any], teams: dict[str, TeamPolicy],
            envs: tuple[str, ...], brokered: bool,
            readers: dict[tuple[Any, ...], TaskReader]) -> Refusal | None:
    dag, task, team = event.get("dag"), event.get("task"), event.get("team")
    lookup, key = str(event.get("lookup") or "variable:?"), str(event["key"])
    kind, _, name = lookup.partition(":")

    def refuse(pipeline: str | None, why: str, fix: str) -> Refusal:
        return Refusal(dag, task, team, pipeline, lookup, key, why, fix,
                       last=event.get("time"))

    if not dag:
        if NO_PIPELINE.allows(key):
            return None
        return refuse(None, "read outside any task", "move the read into a task of a "
                      "pipeline's DAG, or keep outside_pipelines = \"allow\" for it")
    env = str(event.get("env") or manifest.env)
    params = event.get("params") or {}
    ident = (str(dag), env, tuple(sorted(params.items())))
    if ident not in readers:  # one per (DAG, env, params), not per read
        if len(readers) > 4096:
            readers.clear()
        readers[ident] = task_reader(manifest.pipelines, str(dag), env, params)
    reader = readers[ident]
    p = reader.pipeline
    if p is None:
        if NO_PIPELINE.allows(key):
            return None
        return refuse(None, "the DAG matches no pipeline",
                      f"add {dag!r} to a pipeline's dags = [...]")
    if kind == "connection" and name in reader.minted:
        return refuse(p, "a login minted per run", "read it inside task_run(...)")
    if kind == "connection" and name in reader.pending:
        return refuse(p, f"its mapping needs parameters {list(reader.missing)}",
                      "give them as DAG run params, or read it inside task_run(...)")
    if kind == "connection":
        key = reader.policy.connection_keys.get(name, key)
    if not reader.policy.allows(key):
        if reader.missing:
            return refuse(p, f"outside the parameter-free part of pipelines.{p} (DAG run "
                          f"params {list(reader.missing)} missing)",
                          f"give DAG run params {list(reader.missing)}, read it inside "
                          f"task_run(...), or add {key!r} to pipelines.{p}.grants")
        return refuse(p, f"outside pipelines.{p}'s scope, grants and shared/",
                      f"add {key!r} to pipelines.{p}.grants")
    if brokered and team:
        if team not in teams:
            teams[team] = TeamPolicy(team, {n: c for n, c in manifest.pipelines.items()
                                            if team in c.teams}, envs)
        if not teams[team].allows(key):
            return refuse(p, f"outside the pipelines of team {team!r} (broker mode)",
                          f"add {team!r} to pipelines.{p}.teams, or grant {key!r} to one of "
                          "the team's pipelines")
    return None
