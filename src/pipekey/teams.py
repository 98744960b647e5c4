"""Broker mode on the API server: each Airflow team's lookups answered within its policy.

A team's policy is the union of the policies of the pipelines that serve it (``teams = [...]``
in ``[pipelines.NAME]``), over every value of their scope parameters: a templated scope
``accounts/{account}`` allows ``accounts/<any segment>/...``. Concretely a team may read a key

* under a pipeline's scope (a ``{parameter}`` matches any one segment),
* ``<level>/<name>`` for a name the pipeline declares, at a parent level of its scope,
* that a pipeline maps a connection to, under a pipeline's grants, or under ``shared/``.

:class:`TeamBroker` answers lookups with that policy: a key pipekey holds outside it is
refused (:class:`~pipekey.errors.AccessDenied`, naming the team and the key, never a value);
a key it does not hold is None, so Airflow's other backends may answer. A team the manifest
does not know is refused. A lookup with no team reads ``shared/`` only (``no_team =
"shared_only"``) or nothing (``"deny"``). A run request (:mod:`pipekey.broker`) opens the run
for a pipeline that serves the team and answers with its values.

Reads for a team whose ``[teams.NAME]`` table names an ``aws_role`` go through a chain whose
AWS backends act as that role (RoleSessionName ``pipekey-team-NAME`` unless the table says),
assumed once per team and refreshed by botocore shortly before it expires.
"""

from __future__ import annotations

import re
import string
import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from . import redact
from .backends.aws_common import AwsConfig
from .backends.base import Secret
from .broker import encode_payload, parse_request
from .credentials.base import DYNAMIC
from .errors import AccessDenied, InvalidKey, PipekeyError, SecretNotFound, UsageError
from .keys import SEGMENT_PATTERN, is_under
from .run import Run, declared_names
from .scope import SHARED, fill_fields, fill_template, template_fields

if TYPE_CHECKING:
    from .backends.base import BackendConfig
    from .client import Pipekey
    from .manifest import AwsRole, PipelineConfig

__all__ = ["NO_TEAM", "TeamBroker", "TeamPolicy"]

NO_TEAM = ("shared_only", "deny")


def _regex(template: str, env: str, depth: int | None = None) -> str:
    """A regex for the first ``depth`` segments of a key template: ``{env}`` filled, any
    other field one segment, the same field the same text wherever it appears."""
    out, seen = [], set()
    for segment in template.rstrip("/").split("/")[:depth]:
        regex = ""
        for literal, name, _, _ in string.Formatter().parse(segment):
            regex += re.escape(literal)
            if name == "env":
                regex += re.escape(env)
            elif name is not None:
                regex += f"(?P={name})" if name in seen else f"(?P<{name}>{SEGMENT_PATTERN})"
                seen.add(name)
        out.append(regex)
    return "/".join(out)


class _Template:
    """A key template as regexes: the key itself, its subtree, and its parent levels."""

    def __init__(self, template: str, env: str) -> None:
        self.segments = fill_fields(template.rstrip("/"), {"env": env}, "environment").split("/")
        #: no field but {env}: names its keys itself, not through a parameter's value
        self.literal = not set(template_fields(template)) - {"env"}
        self.depth = len(self.segments)
        self.exact = re.compile(_regex(template, env))
        self.subtree = re.compile(_regex(template, env) + "(?:/.+)?")
        self.levels = [re.compile(_regex(template, env, d)) for d in range(1, self.depth)]

    def avoids(self, names: frozenset[str], bound: dict[str, str]) -> bool:
        """True if, with fields ``bound`` as given and the others free, no segment below the
        first is one of ``names`` (a segment with a free field can always avoid them)."""
        for segment in self.segments[1:]:
            fields = template_fields(segment)
            if all(f in bound for f in fields) and segment.format_map(bound) in names:
                return False
        return True


def _can_run(pipeline: PipelineConfig, env: str) -> bool:
    """False if no run of the pipeline can open: a literal segment of its scope below the
    first is one of its declared names (pipekey.scope refuses it whatever the parameters)."""
    return _Template(pipeline.scope, env).avoids(frozenset(declared_names(pipeline)), {})


def _in_scope(key: str, scope: _Template, names: frozenset[str]) -> bool:
    """``key`` is in the subtree of some run of ``scope`` that can open."""
    return bool(scope.subtree.fullmatch(key)) and \
        not names.intersection(key.split("/")[1:scope.depth])


def _at_level(key: str, scope: _Template, names: frozenset[str]) -> bool:
    """``key`` is ``<level>/<name>``: a declared name at a parent level of a run of ``scope``
    that can open (the level's fields bound, the scope's other fields free)."""
    level, _, leaf = key.rpartition("/")
    depth = level.count("/") + 1
    if not level or leaf not in names or depth >= scope.depth:
        return False
    match = scope.levels[depth - 1].fullmatch(level)
    return match is not None and scope.avoids(names, match.groupdict())


class TeamPolicy:
    """What one team may read: the union of its pipelines' policies over every parameter
    value (see the module docstring)."""

    def __init__(self, team: str, pipelines: dict[str, PipelineConfig], env: str) -> None:
        self.team = team
        self.env = env
        self.pipelines = pipelines
        runnable = [p for p in pipelines.values() if _can_run(p, env)]
        # each scope with the pipeline's declared names: no run's scope has one of them as a
        # segment below its first (pipekey.scope refuses such a run), so neither does the union
        self._scopes = [(_Template(p.scope, env), frozenset(declared_names(p)))
                        for p in runnable]
        self._grants = [_Template(g, env) for p in runnable for g in p.grants]
        self._mapped = [_Template(t, env) for p in runnable
                        for t in p.stored_connections().values()]

    def allows_subtree(self, key: str) -> bool:
        """True if the team may read everything below ``key`` (a document standing for it)."""
        return (is_under(key, SHARED)
                or any(_in_scope(key, scope, names) for scope, names in self._scopes)
                or any(g.subtree.fullmatch(key) for g in self._grants)
                or any(m.exact.fullmatch(key) for m in self._mapped))

    def allows(self, key: str) -> bool:
        """True if some run of the team's pipelines, with some parameters, may read ``key``."""
        if self.allows_subtree(key):
            return True
        return any(_at_level(key, scope, names) for scope, names in self._scopes)

    def claims(self, key: str) -> bool:
        """True if the team's pipelines name ``key`` without a parameter: under a scope or
        grant with no field but ``{env}``, a mapping with none, a declared name at a parent
        level with none (``shared/`` is everyone's, so no team claims it)."""
        if is_under(key, SHARED):
            return False
        level, _, leaf = key.rpartition("/")
        return (any(s.literal and _in_scope(key, s, n) for s, n in self._scopes)
                or any(g.literal and g.subtree.fullmatch(key) for g in self._grants)
                or any(m.literal and m.exact.fullmatch(key) for m in self._mapped)
                or any(leaf in n and level.count("/") + 1 < s.depth
                       and "/".join(s.segments[:level.count("/") + 1]) == level
                       and "{" not in level for s, n in self._scopes))

    def connection(self, conn_id: str) -> tuple[str, str] | None:
        """(pipeline, key template) of the team's mapping of ``conn_id``, if any (the
        manifest refuses a conn_id two of a team's pipelines map)."""
        for name, config in self.pipelines.items():
            if conn_id in config.connections:
                return name, config.connections[conn_id]
        return None


class TeamBroker:
    """Answers the lookups of Airflow's Execution API per team (``mode="broker"``).

    Args:
        lk: the API server's Pipekey (the manifest, and the chain of teams without a role).
        no_team: ``"shared_only"`` or ``"deny"``: what a lookup without a team may read.
        mask: registers a value with the integration's masker before it is returned.
    """

    def __init__(self, lk: Pipekey, no_team: str = "shared_only",
                 mask: Callable[[str], None] = lambda value: None) -> None:
        if no_team not in NO_TEAM:
            raise UsageError("no_team is 'shared_only' or 'deny'")
        self.lk = lk
        self.no_team = no_team
        self.mask = mask
        self._teams: dict[str, Pipekey] = {}
        self._policies: dict[str, TeamPolicy] = {}
        self._lock = threading.Lock()
        redact.install()  # what the broker resolves is masked in this process's logs

    # -- per team -------------------------------------------------------------------------
    def policy(self, team: str) -> TeamPolicy:
        """The policy of ``team``.

        Raises:
            AccessDenied: the manifest knows no such team.
        """
        policy = self._policies.get(team)
        if policy is not None:
            return policy
        manifest = self.lk.manifest
        served = {n: p for n, p in (manifest.pipelines if manifest else {}).items()
                  if team in p.teams}
        if not served:
            raise AccessDenied(f"Airflow team {team!r} is served by no pipekey pipeline "
                               f"(add it to a pipeline's teams = [...] in the manifest)")
        with self._lock:  # the manifest does not change: one policy per team
            return self._policies.setdefault(team, TeamPolicy(team, served, self.lk.env))

    def pipekey(self, team: str) -> Pipekey:
        """The Pipekey a team's reads go through: with its ``[teams.NAME] aws_role``, one
        whose AWS backends assume that role (built once per team), else the server's own."""
        manifest = self.lk.manifest
        table = manifest.teams.get(team) if manifest else None
        if manifest is None or table is None or table.aws_role is None:
            return self.lk
        with self._lock:
            if team not in self._teams:
                from .client import from_manifest

                backends = {name: _with_role(cfg, table.aws_role, team)
                            for name, cfg in manifest.backends.items()}
                self._teams[team] = from_manifest(replace(manifest, backends=backends))
            return self._teams[team]

    # -- lookups --------------------------------------------------------------------------
    def read(self, key: str, team: str | None, what: str) -> str | None:
        """The value of ``key`` for ``team`` (``what``: "variable 'x'", for messages)."""
        if team is None:
            if self.no_team == "shared_only" and is_under(key, SHARED):
                return self._read(self.lk, key, None)
            self._deny_if_held(self.lk, key, f"{what} ({key!r}) is not served to a lookup "
                                              "without an Airflow team (broker mode serves "
                                              + ("shared/ only)" if self.no_team == "shared_only"
                                                 else "nothing then)"), self._teams_key(key))
            return None
        policy = self.policy(team)
        lk = self.pipekey(team)
        if not policy.allows(key):
            self._deny_if_held(lk, key, f"Airflow team {team!r} may not read {what} ({key!r}): "
                                        "outside the policy of the team's pipekey pipelines "
                                        f"{sorted(policy.pipelines)}", self._teams_key(key))
            return None
        other = self.claimant(team, key)
        if other is not None:
            self._deny_if_held(lk, key, f"Airflow team {team!r} may not read {what} ({key!r}): "
                                        f"team {other!r}'s pipelines name it, {team!r}'s only "
                                        "through a template parameter", True)
            return None
        return self._read(lk, key, policy)

    def connection_key(self, conn_id: str, team: str | None, default: str | None) -> str | None:
        """The key a team's ``conn_id`` reads: its pipeline's mapping if parameter-free, else
        ``default`` (``<connections_prefix>/<conn_id>``)."""
        if team is None:
            return default
        mapping = self.policy(team).connection(conn_id)
        if mapping is None:
            return default
        pipeline, template = mapping
        if template.startswith(DYNAMIC):  # never a stored key: no other backend answers
            raise AccessDenied(f"Airflow team {team!r}: connection {conn_id!r} of pipeline "
                               f"{pipeline!r} is a login minted per run "
                               f"(credentials.{template[len(DYNAMIC):]}); open a run in "
                               "the task (task_run / @pipekey_task)")
        if set(template_fields(template)) - {"env"}:
            raise AccessDenied(f"Airflow team {team!r}: connection {conn_id!r} of pipeline "
                               f"{pipeline!r} depends on the scope's parameters; open a run "
                               "in the task (task_run / @pipekey_task)")
        return fill_template(template, {"env": self.lk.env}, f"connection {conn_id!r}")

    def run(self, request_key: str, team: str | None) -> str:
        """Open the requested run for ``team`` and return its payload.

        Raises:
            AccessDenied: no team, or the pipeline does not serve the team.
            UsageError, MissingSecrets, BackendError: as opening the run would.
        """
        request = parse_request(request_key)
        if team is None:
            raise AccessDenied(f"a run of pipekey pipeline {request.pipeline!r} is served only "
                               "to a task of an Airflow team (broker mode)")
        policy = self.policy(team)
        if request.pipeline not in policy.pipelines:
            raise AccessDenied(f"Airflow team {team!r} may not open pipekey pipeline "
                               f"{request.pipeline!r} (the team's pipelines: "
                               f"{sorted(policy.pipelines)})")
        config = policy.pipelines[request.pipeline]
        unknown = sorted(set(request.params) - config.parameters())
        if unknown:  # before the call: a parameter named env or run_name is no keyword
            raise UsageError(f"pipeline {request.pipeline!r} has no parameter {unknown[0]!r} "
                             f"(its parameters: {sorted(config.parameters()) or 'none'})")
        if request.env is not None and request.env not in self.environments(policy):
            raise AccessDenied(f"Airflow team {team!r} may not open pipekey pipeline "
                               f"{request.pipeline!r} in environment {request.env!r} (served: "
                               f"{sorted(self.environments(policy))})")
        lk = self.pipekey(team)
        # the run name is the task's word; the team is Airflow's: the audit says which is which
        label = f"{team}/{request.run_name or uuid.uuid4().hex[:12]}"
        with lk.pipeline(request.pipeline, env=request.env, run_name=label,
                         **dict(request.params)) as run:
            keys = _dlt_keys(run)
            for secret in [*run.resolved().values(), *keys.values()]:
                other = self.claimant(team, secret.key)
                if other is not None:
                    raise AccessDenied(
                        f"Airflow team {team!r}: the run of pipekey pipeline "
                        f"{request.pipeline!r} with {dict(request.params)} reads "
                        f"{secret.key!r}, which team {other!r}'s pipelines name (a parameter "
                        "value may not reach another team's keys)")
            return encode_payload(run, keys)

    def claimant(self, team: str, key: str) -> str | None:
        """Another team whose pipelines name ``key`` itself (:meth:`TeamPolicy.claims`) when
        ``team``'s do not: ``team`` reaches it only through a parameter's value
        (``connections/lake_{account}`` with account ``"finance"``), so it is refused."""
        manifest = self.lk.manifest
        if manifest is None or self.policy(team).claims(key):
            return None
        return next((other for other in sorted(manifest.team_names() - {team})
                     if self.policy(other).claims(key)), None)

    def environments(self, policy: TeamPolicy) -> set[str]:
        """The environments a team's run request may name: the manifest's ``environments``,
        else the server's own and those its pipelines pin (``env = ...``). Any other would
        fill ``{env}`` with text the team chose (``connections/wh_{env}`` with env
        ``"finance"`` is another team's key) and build a chain per name asked for."""
        manifest = self.lk.manifest
        if manifest is not None and manifest.environments:
            return set(manifest.environments)
        return {self.lk.env} | {p.env for p in policy.pipelines.values() if p.env}

    # -- internals ------------------------------------------------------------------------
    def _read(self, lk: Pipekey, key: str, policy: TeamPolicy | None) -> str | None:
        try:
            secret = lk.chain.get(key)
        except SecretNotFound:
            return None
        if secret.document and not (policy.allows_subtree(key) if policy
                                    else is_under(key, SHARED)):
            who = f"Airflow team {policy.team!r}" if policy else "a lookup without a team"
            raise AccessDenied(f"{who} may not read {key!r}: it is a document standing for a "
                               "subtree outside the team's pipelines' policy")
        self.mask(secret.value)
        return secret.value

    def _teams_key(self, key: str) -> bool:
        """True if some team's policy covers ``key`` (``shared/`` aside)."""
        manifest = self.lk.manifest
        return not is_under(key, SHARED) and manifest is not None and any(
            self.policy(team).allows(key) for team in sorted(manifest.team_names()))

    def _deny_if_held(self, lk: Pipekey, key: str, why: str, always: bool = False) -> None:
        """Refuse ``key`` if a store holds it, or ``always``: a key in a team's namespace is
        refused unasked, so a refusal does not tell another team which keys exist there."""
        if always:
            raise AccessDenied(why)
        try:
            held = lk.chain.resolve([key])[key].found
        except InvalidKey:
            held = False  # no store of pipekey's can hold it: Airflow's backends may answer
        except PipekeyError:
            held = True  # cannot tell: refuse rather than let another backend answer
        if held:
            raise AccessDenied(why)


def _dlt_keys(run: Run) -> dict[str, Secret]:
    """The ``key:`` targets of the run's dlt table that the store holds, read through the run
    (so its policy applies)."""
    values = {**run.params, "env": run.environment}
    out = {}
    for target in run.config.dlt.values():
        if not target.startswith("key:"):
            continue
        key = target[len("key:"):].format_map(values)
        try:
            value = run.get(key)
        except PipekeyError:
            continue  # absent or refused: the worker's run says so when dlt asks for it
        out[key] = Secret(key=key, value=value, backend="broker", path=key)
    return out


def _with_role(cfg: BackendConfig, role: AwsRole, team: str) -> BackendConfig:
    """An AWS backend's config acting as the team's read role (others unchanged)."""
    if not isinstance(cfg, AwsConfig):
        return cfg
    return cfg.model_copy(update={
        "role_arn": role.arn, "role_external_id": role.external_id,
        "role_session_name": role.session_name or f"pipekey-team-{team}",
        "role_duration": role.duration, "region": role.region or cfg.region})
