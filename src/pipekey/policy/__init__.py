"""The read policy: the one place that answers "may this reader read this key?".

Three kinds of reader ask it, and nothing else in pipekey decides:

* a **run** (:class:`RunPolicy`, built by :func:`run_policy`): one pipeline in one environment
  with its parameters. It may read its scope's subtree, ``shared/``, its grants, the keys its
  connections are mapped to, and at a parent level of its scope only ``<level>/<name>`` for the
  names it declares (:mod:`pipekey.scope` has the walk and why);
* a **DAG outside a run** (:func:`parameter_free_policy`): the part of its pipeline's policy
  that needs no scope parameter (``shared/``, parameter-free grants and connections);
* an **Airflow team** in broker mode (:class:`TeamPolicy`): the union of its pipelines'
  policies over every parameter value and every environment the deployment serves;
* an **Airflow caller** of the drop-in for Airflow's AWS backends (:func:`airflow_names`): the
  names Airflow's own backend would try for it, its team's name first.

Between teams, ownership is a prefix check, never a match against another team's templates
(:class:`Ownership`): a team owns the literal part, before the first ``{``, of each scope and
connection mapping of its pipelines, with ``{env}`` filled for every served environment. Two
teams whose owned prefixes overlap are a :class:`~pipekey.errors.ManifestError` naming both
(``data/{dataset}`` of one team and ``data/ledger_{env}`` of another: a parameter value of the
first would reach the second's keys); a key another team owns is refused to a team unless one of
its grants names it.

Templates are filled by :func:`fill_template` alone; keys are constructed from templates and
never parsed back to find an owner.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, TypeVar

from ..errors import UsageError
from ..keys import SEGMENT_PATTERN, is_under, segment_problem, validate_key

if TYPE_CHECKING:
    from ..manifest import PipelineConfig

__all__ = ["AIRFLOW_TEAM_SEP", "NO_PIPELINE", "NO_SUCH_PARAMETER", "NO_SUCH_PIPELINE", "SHARED",
           "Ownership", "RunPolicy", "TeamPolicy", "airflow_names", "check_parameters",
           "dag_pipeline", "declared_names", "declaring", "fill_fields", "fill_template",
           "parameter_free_policy", "pipelines_reading", "pipeline_entry", "run_policy",
           "served_environments", "template_fields"]

SHARED = "shared"


# -- templates ------------------------------------------------------------------------------
C = TypeVar("C")

#: the one wording of a pipeline the manifest does not define (every entry: a run, a brokered
#: run, a team's request, an Airflow task), and of a parameter a pipeline does not take
NO_SUCH_PIPELINE = "no pipeline {name!r} in {where} (defined: {defined})"
NO_SUCH_PARAMETER = "pipeline {name!r} has no parameter {param!r} (its parameters: {expected})"


def pipeline_entry(pipelines: Mapping[str, C], name: str, where: object = None) -> C:
    """The manifest entry of pipeline ``name`` (``where``: the manifest's path, if any).

    Raises:
        UsageError: the manifest defines no such pipeline (one line listing those it does).
    """
    if name not in pipelines:
        raise UsageError(NO_SUCH_PIPELINE.format(name=name, where=where or "no manifest",
                                                 defined=sorted(pipelines)))
    return pipelines[name]


def check_parameters(name: str, expected: Iterable[str], params: Iterable[str]) -> None:
    """Refuse a parameter pipeline ``name`` does not take (its scope's fields are
    ``expected``).

    Raises:
        UsageError: the first unknown parameter, and the parameters the pipeline takes.
    """
    known = set(expected)
    unknown = sorted(set(params) - known)
    if unknown:
        raise UsageError(NO_SUCH_PARAMETER.format(name=name, param=unknown[0],
                                                  expected=sorted(known) or "none"))


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names used in a template, in order."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as exc:
        raise UsageError(f"template {template!r} is malformed: {exc}") from None


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_fields(text: str, values: Mapping[str, str], what: str) -> str:
    """Fill the ``{field}``s of ``text`` that ``values`` names, each value a valid key segment.

    The one filler of templates: key templates (:func:`fill_template`) and ``{env}`` in a
    backend's prefixes and paths. Other text, braces included, is left as it is, and the
    message of an error names the field and what is wrong with its value, never the value
    (it may be a secret given by mistake) nor ``text`` (a backend's field may be anything).

    Raises:
        UsageError: a value is not a valid key segment (letters, digits, '_', '.', '-').
    """
    for name, value in values.items():
        if (problem := segment_problem(value)) is not None:  # never quote the value
            raise UsageError(f"{what}: parameter {name!r} is not a valid key segment "
                             f"({problem}; letters, digits, '_', '.', '-')")
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def fill_template(template: str, values: Mapping[str, str], what: str) -> str:
    """Fill ``{field}``s in a key template, checking each value is a valid key segment.

    Raises:
        UsageError: a field has no value, or a value is not a valid key segment.
    """
    for name in template_fields(template):
        if name not in values:
            raise UsageError(f"{what} needs parameter {name!r} (template {template!r})")
    return validate_key(fill_fields(template, values, what))


def _parameter_free(template: str) -> bool:
    return set(template_fields(template)) <= {"env"}


def declared_names(config: PipelineConfig) -> list[str]:
    """The names a pipeline declares for the scope walk: the only names read at parent
    levels (``requires``, ``optional``, and the ``secret:`` targets of its ``dlt`` table)."""
    mapped = [t[len("secret:"):] for t in config.dlt.values() if t.startswith("secret:")]
    return [*config.requires, *config.optional, *mapped]


# -- a run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPolicy:
    """What one run (or a DAG outside a run, ``prefix=None``) may read."""

    #: the filled scope; None for the parameter-free part of a pipeline's policy
    prefix: str | None
    grants: tuple[str, ...] = ()
    #: connection name -> the key it is mapped to (filled)
    connection_keys: Mapping[str, str] = field(default_factory=dict)
    names: frozenset[str] = frozenset()

    @property
    def parents(self) -> tuple[str, ...]:
        """The scope's parent levels, nearest first."""
        if self.prefix is None:
            return ()
        parts = self.prefix.split("/")
        return tuple("/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1))

    def allows_subtree(self, key: str) -> bool:
        """True if the reader may read everything below ``key`` too: what a document standing
        for that subtree (``Secret.document``) needs. A mapped connection's document is the
        connection; a declared name at a parent level is one key, never a subtree."""
        return ((self.prefix is not None and is_under(key, self.prefix))
                or is_under(key, SHARED) or key in self.connection_keys.values()
                or any(is_under(key, grant) for grant in self.grants))

    def allows(self, key: str) -> bool:
        """True if the reader may read ``key``."""
        if self.allows_subtree(key):
            return True
        parent, _, leaf = key.rpartition("/")
        return leaf in self.names and parent in self.parents


#: a reader with no pipeline (an operator's shell, a task of no pipeline's DAG): shared/ alone
NO_PIPELINE = RunPolicy(None)


def run_policy(pipeline: str, config: PipelineConfig, env: str,
               params: Mapping[str, str]) -> RunPolicy:
    """The policy of a run of ``pipeline`` in ``env`` with ``params``: every template of the
    pipeline filled once, here.

    Raises:
        UsageError: a parameter is missing or is not a key segment.
    """
    values = {**params, "env": env}
    what = f"pipeline {pipeline!r}"
    connections = {c: fill_template(t, values, f"{what} connection {c!r}")
                   for c, t in config.stored_connections().items()}
    grants = tuple(fill_template(g.rstrip("/"), values, f"{what} grant") for g in config.grants)
    scope = fill_template(config.scope, values, f"{what} scope")
    return RunPolicy(scope, grants, connections, frozenset(declared_names(config)))


def parameter_free_policy(pipeline: str, config: PipelineConfig, env: str) -> RunPolicy:
    """The part of a pipeline's policy that needs no scope parameter: ``shared/`` and the
    grants and connection mappings whose only field is ``{env}`` (a DAG's task outside a
    run)."""
    values = {"env": env}
    what = f"pipeline {pipeline!r}"
    connections = {c: fill_template(t, values, f"{what} connection {c!r}")
                   for c, t in config.stored_connections().items() if _parameter_free(t)}
    grants = tuple(fill_template(g.rstrip("/"), values, f"{what} grant")
                   for g in config.grants if _parameter_free(g))
    return RunPolicy(None, grants, connections)


def dag_pipeline(pipelines: Mapping[str, PipelineConfig], dag_id: str) -> str | None:
    """The first pipeline (in manifest order) whose ``dags`` patterns match ``dag_id``."""
    return next((n for n, c in pipelines.items()
                 if any(fnmatch.fnmatchcase(dag_id, p) for p in c.dags)), None)


# -- a team -----------------------------------------------------------------------------------
def served_environments(environments: Iterable[str] | None, default: str,
                        pipelines: Iterable[PipelineConfig]) -> tuple[str, ...]:
    """The environments a deployment serves: the manifest's ``environments`` list, else the
    default environment and those pipelines pin (``env = ...``)."""
    if environments:
        return tuple(sorted(set(environments)))
    return tuple(sorted({default} | {p.env for p in pipelines if p.env}))


@functools.lru_cache(maxsize=4096)  # loading a manifest asks for the same ones many times
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
    """A key template in one environment as regexes: the key, its subtree, its parent levels."""

    def __init__(self, template: str, env: str) -> None:
        self.env = env
        self.segments = template.rstrip("/").split("/")
        self.depth = len(self.segments)
        self.exact = re.compile(_regex(template, env))
        self.subtree = re.compile(_regex(template, env) + "(?:/.+)?")
        self.levels = [re.compile(_regex(template, env, d)) for d in range(1, self.depth)]

    def avoids(self, names: frozenset[str], bound: dict[str, str]) -> bool:
        """True if, with fields ``bound`` as given and the others free, no segment below the
        first is one of ``names`` (a segment with a free field can always avoid them)."""
        bound = {**bound, "env": self.env}
        for segment in self.segments[1:]:
            fields = template_fields(segment)
            if all(f in bound for f in fields) and fill_fields(segment, bound, "scope") in names:
                return False
        return True


class _Scope:
    """A pipeline's scope in one environment, with its declared names."""

    def __init__(self, config: PipelineConfig, env: str) -> None:
        self.template = _Template(config.scope, env)
        self.names = frozenset(declared_names(config))
        # a literal segment below the first that is a declared name: no run can open
        self.runnable = self.template.avoids(self.names, {})

    def holds(self, key: str) -> bool:
        """``key`` is in the subtree of some run of the scope (a run's scope never has one of
        its declared names as a segment below its first: pipekey.scope refuses it)."""
        return bool(self.template.subtree.fullmatch(key)) and \
            not self.names.intersection(key.split("/")[1:self.template.depth])

    def at_level(self, key: str) -> bool:
        """``key`` is ``<level>/<name>``: a declared name at a parent level of a run that can
        open (the level's fields bound, the scope's other fields free)."""
        level, _, leaf = key.rpartition("/")
        depth = level.count("/") + 1
        if not level or leaf not in self.names or depth >= self.template.depth:
            return False
        match = self.template.levels[depth - 1].fullmatch(level)
        return match is not None and self.template.avoids(self.names, match.groupdict())


class TeamPolicy:
    """What one Airflow team may read: the union of its pipelines' run policies over every
    parameter value and every served environment (see the module docstring)."""

    def __init__(self, team: str, pipelines: Mapping[str, PipelineConfig],
                 environments: Iterable[str]) -> None:
        self.team = team
        self.pipelines = dict(pipelines)
        self.environments = tuple(environments)
        self._scopes: list[_Scope] = []
        self._grants: list[_Template] = []
        self._mapped: list[_Template] = []
        for config in self.pipelines.values():
            for env in self.environments:
                scope = _Scope(config, env)
                if not scope.runnable:  # no run of it opens in this environment
                    continue
                self._scopes.append(scope)
                self._grants += [_Template(g, env) for g in config.grants]
                self._mapped += [_Template(t, env) for t in config.stored_connections().values()]

    def allows_subtree(self, key: str) -> bool:
        """True if the team may read everything below ``key`` (a document standing for it)."""
        return (is_under(key, SHARED)
                or any(s.holds(key) for s in self._scopes)
                or self.granted(key)
                or any(m.exact.fullmatch(key) for m in self._mapped))

    def allows(self, key: str) -> bool:
        """True if some run of the team's pipelines, with some parameters, in some served
        environment, may read ``key``."""
        return self.allows_subtree(key) or any(s.at_level(key) for s in self._scopes)

    def granted(self, key: str) -> bool:
        """True if one of the team's pipelines grants ``key`` (or a prefix of it)."""
        return any(g.subtree.fullmatch(key) for g in self._grants)

    def connection(self, conn_id: str) -> tuple[str, str] | None:
        """(pipeline, key template) of the team's mapping of ``conn_id``, if any (the
        manifest refuses a conn_id two of a team's pipelines map)."""
        for name, config in self.pipelines.items():
            if conn_id in config.connections:
                return name, config.connections[conn_id]
        return None


def pipelines_reading(key_template: str, pipelines: Mapping[str, PipelineConfig],
                      environments: Iterable[str]) -> list[str]:
    """The pipelines some run of which (any parameters, any served environment) may read the
    key ``key_template`` names in some served environment (its only field is ``{env}``)."""
    envs = tuple(environments)
    keys = {fill_template(key_template, {"env": env}, "key") for env in envs}
    readers = []
    for name, config in pipelines.items():
        if not any(_may_reach(config, key, env) for key in keys for env in envs):
            continue  # cheap and necessary: no template of it starts the key
        policy = TeamPolicy(name, {name: config}, envs)  # once per pipeline, not per key
        if any(policy.allows(key) for key in keys):
            readers.append(name)
    return readers


def declaring(key: str, pipelines: Mapping[str, PipelineConfig],
              environments: Iterable[str]) -> dict[str, str]:
    """pipeline -> how it declares ``key`` (for some parameters, in some served environment):
    ``requires NAME`` (or ``optional``, ``dlt``, ``shared``) where its scope walk looks for the
    name, ``connection C`` for a key a connection is mapped to, ``grant G`` for a key a grant
    names or holds. A pipeline that may read ``key`` without declaring it (an undeclared name
    in its scope's subtree) is not listed: the inventory calls such a read "grants sprawl"."""
    envs = tuple(environments)
    leaf = key.rpartition("/")[2]
    out: dict[str, str] = {}
    for name, config in pipelines.items():
        if not any(_may_reach(config, key, env) for env in envs) \
                and not (is_under(key, SHARED) and leaf in config.shared):
            continue
        lists = (("requires", config.requires), ("optional", config.optional),
                 ("dlt", declared_names(config)))
        how = None
        for env in envs:
            scope = _Scope(config, env)
            parent = key.rpartition("/")[0]
            for label, names in lists:
                if how is None and leaf in names and scope.runnable and (
                        parent == SHARED or scope.at_level(key)
                        or (scope.template.exact.fullmatch(parent) and scope.holds(key))):
                    how = f"{label} {leaf}"
            if how is None and parent == SHARED and leaf in config.shared:
                how = f"shared {leaf}"
            for conn, template in config.stored_connections().items():
                if how is None and _Template(template, env).exact.fullmatch(key):
                    how = f"connection {conn}"
            for grant in config.grants:
                if how is None and _Template(grant, env).subtree.fullmatch(key):
                    how = f"grant {grant}"
        if how is not None:
            out[name] = how
    return out


def _may_reach(config: PipelineConfig, key: str, env: str) -> bool:
    """False only if no run of the pipeline can read ``key``: the key starts with no literal
    prefix of its scope, grants or connections, and its last segment is no declared name (the
    one way to read a key outside those, at a parent level of the scope)."""
    if key.rpartition("/")[2] in declared_names(config):
        return True
    templates = [config.scope, *config.grants, *config.stored_connections().values()]
    return any(key.startswith(_literal_prefix(t, env)[0]) for t in templates)


# the teams' ownership and Airflow's team-scoped names live beside this module
from .airflow_names import AIRFLOW_TEAM_SEP, airflow_names  # noqa: E402
from .ownership import Ownership, _literal_prefix  # noqa: E402
