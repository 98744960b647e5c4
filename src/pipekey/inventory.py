"""The secrets inventory: every key the manifest refers to, where it resolves, who reads it.

For each environment, :func:`build` collects:

* every key the manifest refers to: each pipeline's ``requires``, ``optional``, ``shared`` and
  ``dlt`` names (at the level of its scope walk that holds them, else its scope), its mapped
  connections, the keys under its grants, and the admin key of each ``[credentials.*]``;
  pipelines that take parameters are filled with each of their ``instances`` (without
  instances, their keys are shown as templates);
* every key the chain's backends list, with where it resolves: the first backend holding it,
  the exact store name, its version and when it last changed; copies in later backends are
  "shadowed". Only listings and version metadata are asked (``list_keys``, ``versions``,
  ``history``): no value is fetched, none is held;
* from the audit file sink (:class:`pipekey.audit_index.AuditIndex`, read incrementally):
  last read, by which runs and pipelines (and so which DAGs and teams), reads per day,
  denials.

Then the findings, one line each with its fix: ``missing`` (declared, stored nowhere),
``orphan`` (stored, declared by no pipeline), ``stale`` (unchanged for longer than
``rotate_after``), ``sprawl`` (read by a pipeline that does not declare it) and ``shadowed``.
Which pipelines declare or may read a key is :mod:`pipekey.policy`'s answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .audit_index import AuditIndex, KeyReads
from .backends.base import Backend, Versioned, VersionInfo, VersionProbe
from .errors import PipekeyError
from .keys import is_under
from .policy import SHARED, declaring, fill_template, pipelines_reading, run_policy
from .scope import Scope

if TYPE_CHECKING:
    from .client import Pipekey
    from .manifest import PipelineConfig

__all__ = ["EnvInventory", "Finding", "Inventory", "KeyEntry", "Place", "build",
           "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

#: states of a key in one environment, worst first (the matrix's colours)
STATES = ("missing", "stale", "shadowed", "orphan", "ok", "optional", "template")


def parse_duration(text: str) -> timedelta:
    """``90d`` -> 90 days (the manifest's ``rotate_after``; validated when it loads)."""
    found = re.fullmatch(r"(\d+)([smhdw])", text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration (90d, 12h, 2w)")
    return timedelta(seconds=int(found[1]) * _UNITS[found[2]])


@dataclass
class Place:
    """A backend holding a key. Holds no value."""

    backend: str
    store_name: str
    version: str | None = None
    changed: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "store_name": self.store_name,
                "version": self.version,
                "changed": self.changed.isoformat() if self.changed else None}


@dataclass
class Use:
    """A pipeline (or a credential definition) referring to a key."""

    pipeline: str
    how: str           #: "requires token", "connection warehouse", "grant x/", "admin of pg"
    required: bool


@dataclass
class KeyEntry:
    key: str
    places: list[Place] = field(default_factory=list)   #: chain order: [0] resolves
    uses: list[Use] = field(default_factory=list)
    teams: set[str] = field(default_factory=set)
    rotate_after: str | None = None
    template: bool = False    #: a key of a pipeline with parameters and no instances
    state: str = "ok"
    reads: KeyReads | None = None

    @property
    def pipelines(self) -> list[str]:
        return sorted({u.pipeline for u in self.uses if not u.pipeline.startswith("credential:")})

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "state": self.state, "template": self.template,
                "resolves": self.places[0].to_dict() if self.places else None,
                "shadowed": [p.to_dict() for p in self.places[1:]],
                "used_by": [{"pipeline": u.pipeline, "how": u.how, "required": u.required}
                            for u in self.uses],
                "teams": sorted(self.teams), "rotate_after": self.rotate_after,
                "audit": self.reads.to_dict() if self.reads else None}


@dataclass
class Finding:
    """One line: what is wrong with a key, and the fix. Holds no value."""

    kind: str      #: missing | orphan | stale | sprawl | shadowed
    env: str
    key: str
    message: str
    fix: str
    pipeline: str | None = None

    def line(self) -> str:
        return f"{self.kind}: [{self.env}] {self.key}: {self.message}; fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "env": self.env, "key": self.key, "pipeline": self.pipeline,
                "message": self.message, "fix": self.fix}


@dataclass
class EnvInventory:
    env: str
    chain: list[str]
    keys: dict[str, KeyEntry] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   #: backends that failed to list

    def pipeline_keys(self, pipeline: str) -> list[KeyEntry]:
        return [e for e in self.keys.values() if pipeline in {u.pipeline for u in e.uses}]

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "chain": self.chain,
                "keys": [e.to_dict() for e in self.keys.values()],
                "findings": [f.to_dict() for f in self.findings], "errors": self.errors}


@dataclass
class Inventory:
    envs: list[EnvInventory]
    pipelines: dict[str, PipelineConfig]
    audit_file: str | None
    audit_events: int
    generated: str

    def to_dict(self) -> dict[str, Any]:
        return {"generated": self.generated, "audit_file": self.audit_file,
                "audit_events": self.audit_events,
                "pipelines": {n: {"dags": list(c.dags), "teams": list(c.teams),
                                  "scope": c.scope} for n, c in self.pipelines.items()},
                "environments": [e.to_dict() for e in self.envs]}

    @property
    def findings(self) -> list[Finding]:
        return [f for e in self.envs for f in e.findings]


def audit_path(lk: Pipekey) -> Path | None:
    """The manifest's audit file sink, or None."""
    from .audit import FileSink

    return next((s.path for s in lk.audit.sinks if isinstance(s, FileSink)), None)


def build(lk: Pipekey, envs: Iterable[str] | None = None, audit: AuditIndex | None = None,
          now: datetime | None = None) -> Inventory:
    """The inventory of ``envs`` (default: every environment the manifest serves)."""
    from .policy import served_environments

    manifest = lk.manifest
    pipelines = dict(manifest.pipelines) if manifest else {}
    if envs is None:
        envs = served_environments(manifest.environments if manifest else None, lk.env,
                                   pipelines.values())
    index = (audit or AuditIndex(audit_path(lk))).refresh()
    now = now or datetime.now(timezone.utc)
    built = [_build_env(lk, env, pipelines, index, now) for env in envs]
    return Inventory(built, pipelines, str(index.path) if index.path else None, index.events,
                     now.isoformat(timespec="seconds"))


# -- one environment ----------------------------------------------------------------------------
def _build_env(lk: Pipekey, env: str, pipelines: dict[str, PipelineConfig],
               index: AuditIndex, now: datetime) -> EnvInventory:
    chain = list(lk.chain_for(lk.check_env(env)))
    out = EnvInventory(env, [b.name for b in chain])
    listed: dict[str, list[Backend]] = {}
    for b in chain:
        try:
            for key in b.list_keys(""):
                listed.setdefault(key, []).append(b)
        except PipekeyError as exc:
            out.errors.append(f"backend {b.name!r} could not be listed: {exc}")
    meta = _metadata(chain, listed, out.errors)
    rotate = lk.manifest.rotate_after if lk.manifest else None

    def entry(key: str) -> KeyEntry:
        found = out.keys.get(key)
        if found is None:
            found = out.keys[key] = KeyEntry(key, rotate_after=rotate)
            found.places = [meta.get((b.name, key)) or Place(b.name, key)
                            for b in listed.get(key, [])]
            found.reads = index.keys.get(key)
        return found

    for name, config in sorted(pipelines.items()):
        for key, how, required, template in _references(name, config, env, listed):
            e = entry(key)
            e.template = e.template or template
            e.uses.append(Use(name, how, required))
            e.teams.update(config.teams)
            if config.rotate_after and (e.rotate_after is None or parse_duration(
                    config.rotate_after) < parse_duration(e.rotate_after)):
                e.rotate_after = config.rotate_after
    for name, key in _admin_keys(lk, env):
        entry(key).uses.append(Use(f"credential:{name}", f"admin of credential {name}", True))
    for key in listed:
        entry(key)
    _findings(out, pipelines, env, now)
    out.keys = dict(sorted(out.keys.items()))
    return out


def _metadata(chain: list[Backend], listed: dict[str, list[Backend]],
              errors: list[str]) -> dict[tuple[str, str], Place]:
    """(backend, key) -> where and which version, from metadata calls alone."""
    out: dict[tuple[str, str], Place] = {}
    for b in chain:
        keys = [k for k, holders in listed.items() if b in holders]
        if not keys:
            continue
        store = b.origin()
        infos: dict[str, VersionInfo] = {}
        try:
            if isinstance(b, VersionProbe):
                infos = b.versions(keys)
            elif isinstance(store, VersionProbe):
                infos = store.versions(keys)
            elif isinstance(b, Versioned):
                for key in keys:
                    history = [v for v in b.history(key) if not v.deleted]
                    if history:
                        infos[key] = history[-1]
        except PipekeyError as exc:
            errors.append(f"backend {b.name!r}: no version metadata ({exc})")
        for key in keys:
            info = infos.get(key)
            out[(b.name, key)] = Place(b.name, b.store_name(key) or b.locate(key),
                                       info.version if info else None,
                                       info.created_at if info else None)
    return out


def _references(name: str, config: PipelineConfig, env: str,
                listed: dict[str, list[Backend]]) -> list[tuple[str, str, bool, bool]]:
    """(key, how, required, is_template) for each key pipeline ``name`` refers to in ``env``."""
    out: list[tuple[str, str, bool, bool]] = []
    needed = config.parameters()
    instances = [dict(i) for i in config.instances] or [{}]
    names = [("requires", n, True) for n in config.requires] + \
        [("optional", n, False) for n in config.optional] + \
        [("dlt", t[len("secret:"):], False) for t in config.dlt.values()
         if t.startswith("secret:")]
    for params in instances:
        if not needed <= set(params):  # no instance fills it: show the templates
            values = {"env": env}
            scope = _partial(config.scope, values)
            out += [(f"{scope}/{n}", f"{label} {n}", req, True) for label, n, req in names]
            out += [(_partial(t, values), f"connection {c}", True, True)
                    for c, t in config.stored_connections().items()]
            out += [(_partial(g.rstrip("/"), values), f"grant {g}", False, True)
                    for g in config.grants]
            out += [(f"{SHARED}/{n}", f"shared {n}", True, False) for n in config.shared]
            return out
        policy = run_policy(name, config, env, params)
        assert policy.prefix is not None
        walk = Scope(policy.prefix, policy.names)
        for label, n, req in names:
            candidates = [k for _, k in walk.walk(n)]
            key = next((k for k in candidates if k in listed), candidates[0])
            out.append((key, f"{label} {n}", req, False))
        out += [(k, f"connection {c}", True, False) for c, k in policy.connection_keys.items()]
        for grant in policy.grants:
            under = [k for k in listed if is_under(k, grant)]
            out += [(k, f"grant {grant}", False, False) for k in under or [grant]]
        out += [(f"{SHARED}/{n}", f"shared {n}", True, False) for n in config.shared]
    return list(dict.fromkeys(out))


def _partial(template: str, values: dict[str, str]) -> str:
    """A template with ``{env}`` filled and its other fields left as they are."""
    return re.sub(r"\{env\}", values["env"], template)


def _admin_keys(lk: Pipekey, env: str) -> list[tuple[str, str]]:
    """(credential, key) for the key each ``[credentials.*]`` mints from."""
    out = []
    for name, definition in (lk.manifest.credentials if lk.manifest else {}).items():
        for part, template in definition.keys().items():
            out.append((name, fill_template(template, {"env": env},
                                            f"credentials.{name}.{part}")))
    return out


# -- findings -----------------------------------------------------------------------------------
def _findings(out: EnvInventory, pipelines: dict[str, PipelineConfig], env: str,
              now: datetime) -> None:
    cmd = f"pipekey --env {env}"
    declared_cache: dict[str, dict[str, str]] = {}
    for key, e in out.keys.items():
        if e.template:
            e.state = "template"
            continue
        if not e.places:
            required = [u.pipeline for u in e.uses if u.required]
            e.state = "missing" if required else "optional"
            if required and not all(u.how.startswith("grant ") for u in e.uses):
                # one per declaring pipeline: each team sees its own, none sees the others'
                out.findings += [Finding("missing", env, key, f"declared by {p} and stored "
                                         "in no backend", f"{cmd} set {key}", p)
                                 for p in sorted(set(required))]
            continue
        if len(e.places) > 1:
            e.state = "shadowed"
            first, later = e.places[0].backend, ", ".join(p.backend for p in e.places[1:])
            out.findings.append(Finding(
                "shadowed", env, key, f"resolves from {first}; the copy in {later} is never "
                "read", f"{cmd} rm --backend {e.places[1].backend} {key} (or reorder chain)"))
        changed = e.places[0].changed
        if e.rotate_after and changed is not None:
            age = now - (changed if changed.tzinfo else changed.replace(tzinfo=timezone.utc))
            if age > parse_duration(e.rotate_after):
                e.state = "stale"
                out.findings.append(Finding(
                    "stale", env, key, f"unchanged for {_age(age)} (rotate_after = "
                    f"{e.rotate_after})", f"rotate it: {cmd} set {key}"))
        if not e.uses and not is_under(key, SHARED):
            declared_cache[key] = declaring(key, pipelines, [env])
            if not declared_cache[key]:
                e.state = "orphan" if e.state == "ok" else e.state
                readers = pipelines_reading(key, pipelines, [env])
                why = (f"readable by {', '.join(readers)} but declared by none" if readers
                       else "no pipeline may read it")
                out.findings.append(Finding(
                    "orphan", env, key, f"stored in {e.places[0].backend}, {why}",
                    f"{cmd} rm {key} (or declare it in a pipeline)"))
        _sprawl(out, e, pipelines, env, declared_cache)


def _age(age: timedelta) -> str:
    """``12 days``, ``5 h``, ``3 min``, ``2 s``."""
    seconds = int(age.total_seconds())
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _sprawl(out: EnvInventory, e: KeyEntry, pipelines: dict[str, PipelineConfig], env: str,
            cache: dict[str, dict[str, str]]) -> None:
    """A pipeline whose runs read ``e.key`` without declaring it."""
    if e.reads is None:
        return
    users = {u.pipeline for u in e.uses}
    readers = [p for p in e.reads.pipelines if p not in users and p in pipelines]
    if not readers:
        return
    if e.key not in cache:
        cache[e.key] = declaring(e.key, pipelines, [env])
    for pipeline in readers:
        if pipeline in cache[e.key]:
            continue
        leaf = e.key.rpartition("/")[2]
        out.findings.append(Finding(
            "sprawl", env, e.key, f"read {e.reads.pipelines[pipeline]} time(s) by runs of "
            f"{pipeline}, which does not declare it",
            f"add {leaf!r} to pipelines.{pipeline}.requires (or a grant), or stop reading it",
            pipeline))
