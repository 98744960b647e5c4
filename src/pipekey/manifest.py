"""The manifest, ``pipekey.toml``: backends, chain order, environments, pipelines.

It holds no secret values. Every problem is reported as one :class:`ManifestError` naming the
file and the field (``pipekey.toml: backends.ssm.type: unknown backend type 'aws_sm' ...``).

The schema is msgspec Structs (one schema, one library), converted from what tomllib parsed;
:mod:`pipekey._schema` words msgspec's errors.

Which manifest: the path given, else ``$PIPEKEY_CONFIG``, else ``./pipekey.toml`` if it
exists, else none (the local store alone). Which environment: the one given (``--env``), else
``$PIPEKEY_ENV``, else the manifest's ``env``, else ``dev``.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from msgspec import Meta, Struct

from ._compat import tomllib
from ._schema import convert as _convert
from .backends import BACKEND_TYPES, BackendConfig, BuildContext, backend_class
from .credentials import CREDENTIAL_TYPES, DYNAMIC, CredentialConfig
from .errors import InvalidKey, ManifestError, UsageError
from .keys import NAME as _NAME
from .keys import environment_problem, is_segment, validate_key
from .policy import (
    NO_PIPELINE,
    Ownership,
    fill_template,
    pipelines_reading,
    served_environments,
    template_fields,
)

__all__ = ["CONFIG_ENV", "ENV_ENV", "Manifest", "PipelineConfig", "TeamConfig",
           "find_manifest", "load_manifest"]

CONFIG_ENV = "PIPEKEY_CONFIG"
ENV_ENV = "PIPEKEY_ENV"
DEFAULT_NAME = "pipekey.toml"
_TEAM = re.compile(r"[A-Za-z0-9_-]{3,50}")  # `airflow teams create` accepts these


# The manifest's schema: msgspec Structs, converted from what tomllib parsed. msgspec builds a
# class's decoder when it first validates, so importing these costs almost nothing.
#: a duration in the manifest: a whole number and a unit (s, m, h, d, w), e.g. ``90d``
Duration = Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,5}[smhdw]$")]


class AwsRole(Struct, kw_only=True, forbid_unknown_fields=True):
    arn: str
    duration: Annotated[int, Meta(ge=900, le=43200)] = 900
    session_name: str | None = None
    external_id: str | None = None
    tags: dict[str, str] = {}
    region: str | None = None


class PipelineConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """``[pipelines.NAME]``: what one pipeline may read. Used by run contexts."""

    scope: str
    requires: list[str] = []
    optional: list[str] = []
    shared: list[str] = []
    connections: dict[str, str] = {}
    grants: list[str] = []
    dags: list[str] = []
    aws_role: AwsRole | None = None
    env: str | None = None
    env_vars: dict[str, str] = {}
    instances: list[dict[str, str]] = []
    dlt_destination: str | None = None
    dlt: dict[str, str] = {}
    description: str | None = None
    #: Airflow teams (multi-team) whose tasks this pipeline serves in broker mode
    teams: list[str] = []
    #: its keys are stale (``pipekey inventory``) when unchanged for longer: 90d, 12h, 2w
    rotate_after: Duration | None = None

    def parameters(self) -> set[str]:
        """Every parameter the pipeline's templates use (scope, grants, connection mappings),
        ``env`` excluded: it is always given."""
        templates = [self.scope, *self.grants, *self.stored_connections().values()]
        return {f for t in templates for f in template_fields(t)} - {"env"}

    def stored_connections(self) -> dict[str, str]:
        """Connection name -> key template, for the connections read from the stores."""
        return {c: t for c, t in self.connections.items() if not t.startswith(DYNAMIC)}

    def minted_connections(self) -> dict[str, str]:
        """Connection name -> ``[credentials.NAME]``, for the connections minted per run
        (mapped ``dynamic:NAME``)."""
        return {c: t[len(DYNAMIC):] for c, t in self.connections.items()
                if t.startswith(DYNAMIC)}


class TeamConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """``[teams.NAME]``: what the API server uses for one Airflow team's reads (broker mode)."""

    #: the read role the API server assumes for this team's AWS backends
    aws_role: AwsRole | None = None


class AuditSink(Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["file", "stderr", "dynamodb", "otel"]
    path: str | None = None
    max_bytes: Annotated[int, Meta(ge=1024)] = 10 * 1024 * 1024
    backups: Annotated[int, Meta(ge=0)] = 5
    table: str | None = None
    region: str | None = None
    endpoint_url: str | None = None


class AuditConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """``[audit]``: where audit events go, and whether an access needs them recorded."""

    required: bool = False
    sinks: list[AuditSink] = []


class _Document(Struct, kw_only=True, forbid_unknown_fields=True):
    """The top level. The named tables are validated one by one (parse_manifest), so that an
    error names its table: msgspec's paths do not carry dict keys."""

    env: str = "dev"
    audit: AuditConfig | None = None
    environments: list[str] | None = None
    chain: list[str] | None = None
    on_backend_error: Literal["fall_through", "raise"] = "fall_through"
    lookup: Literal["sequential", "parallel"] = "sequential"
    rotate_after: Duration | None = None
    backends: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, dict[str, Any]] = {}
    credentials: dict[str, dict[str, Any]] = {}
    teams: dict[str, dict[str, Any]] = {}


@dataclass
class Manifest:
    """A validated manifest. ``path`` is None for the built-in default (local store alone)."""

    path: Path | None
    env: str
    chain: list[str]
    backends: dict[str, BackendConfig]
    pipelines: dict[str, PipelineConfig] = field(default_factory=dict)
    environments: list[str] | None = None
    on_backend_error: str = "fall_through"
    lookup: str = "sequential"  # how the chain asks its backends (chain.Chain)
    #: True when the environment was chosen for this process (argument, --env, PIPEKEY_ENV)
    #: rather than taken from the manifest's default: it then beats a pipeline's own env.
    env_explicit: bool = False
    audit: AuditConfig | None = None
    #: ``[credentials.NAME]``: credentials minted per run (pipekey.credentials)
    credentials: dict[str, CredentialConfig] = field(default_factory=dict)
    #: ``[teams.NAME]`` tables (broker mode); a team named only by pipelines has none
    teams: dict[str, TeamConfig] = field(default_factory=dict)
    #: ``rotate_after``: keys unchanged for longer are stale (a pipeline may set its own)
    rotate_after: str | None = None

    def team_names(self) -> set[str]:
        """Every Airflow team some pipeline serves."""
        return {team for p in self.pipelines.values() for team in p.teams}

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def context(self) -> BuildContext:
        return BuildContext(base_dir=self.base_dir, env=self.env)

    def check_env(self, env: str) -> str:
        """``env`` if this manifest serves it: a valid environment name (one key segment)
        and, when the manifest lists ``environments``, one of them.

        Raises:
            UsageError: one line naming the environment (and the environments allowed).
        """
        if (problem := environment_problem(env)) is not None:
            raise UsageError(f"environment {problem}")
        if self.environments is not None and env not in self.environments:
            raise UsageError(f"environment {env!r} is not one of the environments "
                             f"{self.environments} listed in {self.path or 'the manifest'}")
        return env

    @classmethod
    def default(cls, env: str | None = None) -> "Manifest":
        local = backend_class("local").Config(type="local")
        chosen = env or os.environ.get(ENV_ENV)
        _check_env_name(None, chosen or "dev")
        return cls(path=None, env=chosen or "dev", chain=["local"], backends={"local": local},
                   env_explicit=bool(chosen))


def find_manifest(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The manifest to use, or None for the built-in default."""
    if path is not None:
        return Path(path)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    here = Path.cwd() / DEFAULT_NAME
    return here if here.is_file() else None


def load_manifest(path: str | os.PathLike[str] | None = None, env: str | None = None) -> Manifest:
    """Find, read and validate the manifest.

    Raises:
        ManifestError: naming the file and the field at fault.
    """
    found = find_manifest(path)
    if found is None:
        return Manifest.default(env)
    try:
        raw = tomllib.loads(found.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(found, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(found, None, f"cannot read ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(found, None, f"not valid TOML: {exc}") from None
    return parse_manifest(raw, found.resolve(), env)


def parse_manifest(raw: dict[str, Any], path: Path, env: str | None = None) -> Manifest:
    """Validate an already-parsed manifest document."""
    doc = _convert(path, raw, _Document, ())
    pipelines = {name: _convert(path, body, PipelineConfig, ("pipelines", name))
                 for name, body in doc.pipelines.items()}
    teams = {name: _convert(path, body, TeamConfig, ("teams", name))
             for name, body in doc.teams.items()}
    explicit = env or os.environ.get(ENV_ENV)
    chosen = explicit or doc.env
    for i, listed in enumerate(doc.environments or []):
        if (problem := environment_problem(listed)) is not None:
            raise ManifestError(path, f"environments[{i}]", problem)
    if doc.environments == []:
        raise ManifestError(path, "environments", "empty: list the environments served, or "
                                                  "leave it out to serve any")
    _check_env_name(path, chosen)
    if doc.environments is not None and chosen not in doc.environments:
        if explicit:  # the file is not at fault: say where the name came from
            origin = "--env" if env else f"${ENV_ENV}"
            raise UsageError(f"environment {chosen!r} (from {origin}) is not one of "
                             f"environments {doc.environments} in {path}")
        raise ManifestError(path, "env", f"{chosen!r} is not one of environments "
                                         f"{doc.environments}")
    for name, pipeline in pipelines.items():
        if doc.environments is not None and pipeline.env is not None \
                and pipeline.env not in doc.environments:
            raise ManifestError(path, f"pipelines.{name}.env", f"environment {pipeline.env!r} "
                                f"is not one of environments {doc.environments}")
    backends = {name: _backend_config(path, name, body) for name, body in doc.backends.items()}
    if not backends:
        backends = {"local": backend_class("local").Config(type="local")}
    for i, listed in enumerate(doc.environments or []):
        for name, cfg in backends.items():
            problem = backend_class(cfg.type).env_problem(listed, cfg)
            if problem is not None:
                raise ManifestError(path, f"environments[{i}]", f"environment {listed!r} cannot "
                                    f"be used with backend {name!r}: {problem}")
    chain = doc.chain if doc.chain is not None else list(backends)
    for i, name in enumerate(chain):
        if name not in backends:
            raise ManifestError(path, f"chain[{i}]", f"{name!r} is not a backend defined under "
                                                     f"[backends] (defined: {sorted(backends)})")
    if len(set(chain)) != len(chain):
        raise ManifestError(path, "chain", "names a backend twice")
    credentials = {name: _credential_config(path, name, body, backends)
                   for name, body in doc.credentials.items()}
    for name, pipeline in pipelines.items():
        _check_pipeline(path, name, pipeline, credentials)
    served = served_environments(doc.environments, chosen, pipelines.values())
    _check_admins_unreadable(path, credentials, pipelines, served)
    _check_teams(path, pipelines, teams)
    Ownership(pipelines, served, path)  # two teams may not own overlapping key prefixes
    for i, sink in enumerate(doc.audit.sinks if doc.audit else []):
        if sink.type == "dynamodb" and not sink.table:
            raise ManifestError(path, f"audit.sinks[{i}].table", "missing (a dynamodb sink "
                                                                  "names its table)")
    return Manifest(path=path, env=chosen, chain=list(chain), backends=backends,
                    pipelines=pipelines, environments=doc.environments,
                    on_backend_error=doc.on_backend_error, env_explicit=bool(explicit),
                    lookup=doc.lookup,
                    audit=doc.audit, credentials=credentials, teams=teams,
                    rotate_after=doc.rotate_after)


def _credential_config(path: Path, name: str, body: dict[str, Any],
                       backends: dict[str, BackendConfig]) -> CredentialConfig:
    where = f"credentials.{name}"
    if not _NAME.fullmatch(name):
        raise ManifestError(path, where, "a credential name is letters, digits, '_' and '-'")
    type_name = body.get("type")
    known = ", ".join(sorted(CREDENTIAL_TYPES))
    if type_name is None:
        raise ManifestError(path, f"{where}.type", f"missing; say what to mint (one of {known})")
    kind = CREDENTIAL_TYPES.get(type_name) if isinstance(type_name, str) else None
    if kind is None:
        raise ManifestError(path, f"{where}.type", f"unknown credential type {type_name!r} "
                                                   f"(known: {known})")
    credential = _convert(path, body, kind.config, ("credentials", name))
    _check_credential(path, where, credential, backends)
    return credential


def _check_credential(path: Path, where: str, credential: CredentialConfig,
                      backends: dict[str, BackendConfig]) -> None:
    """What every kind's definition is checked for; the kind says which fields (its
    :class:`~pipekey.credentials.CredentialConfig` methods)."""
    for field_name, template in credential.keys().items():
        _check_env_template(path, f"{where}.{field_name}", template)
    problem = credential.problem({n: b.type for n, b in backends.items()})
    if problem is not None:
        raise ManifestError(path, f"{where}.{problem[0]}", problem[1])


def _check_admins_unreadable(path: Path, credentials: Mapping[str, CredentialConfig],
                             pipelines: Mapping[str, PipelineConfig],
                             environments: tuple[str, ...]) -> None:
    """A definition's unreadable keys (a ``postgres_role`` admin connection may create roles):
    no run may read them. Refuse such a key under ``shared/`` (every run reads it) or one that
    some run of a pipeline, with any parameters, in any served environment, may read
    (pipekey.policy decides)."""
    for name, credential in credentials.items():
        for field_name in credential.unreadable():
            where, key = f"credentials.{name}.{field_name}", credential.keys()[field_name]
            if any(NO_PIPELINE.allows(fill_template(key, {"env": env}, where))
                   for env in environments):
                raise ManifestError(path, where, f"{key!r} is under shared/, which every run "
                                                 f"reads: keep the {field_name} connection "
                                                 "elsewhere")
            readers = pipelines_reading(key, pipelines, environments)
            if readers:
                raise ManifestError(path, where, f"{key!r} is readable by pipeline "
                                                 f"{readers[0]!r} (its scope, grants or "
                                                 f"connections): keep the {field_name} "
                                                 "connection where no run reads")


def _check_env_template(path: Path, where: str, template: str) -> None:
    """A definition's key: a key template whose only parameter is ``{env}`` (a definition
    is shared by every pipeline that maps it, so no scope parameter fills it)."""
    _check_template(path, where, template)
    extra = sorted(set(template_fields(template)) - {"env"})
    if extra:
        raise ManifestError(path, where, f"{template!r}: only {{env}} may appear in a "
                                         f"credential's key (found {{{extra[0]}}})")


def _check_pipeline(path: Path, name: str, pipeline: PipelineConfig,
                    credentials: Mapping[str, CredentialConfig]) -> None:
    where = f"pipelines.{name}"
    if not _NAME.fullmatch(name):
        raise ManifestError(path, where, "a pipeline name is letters, digits, '_' and '-'")
    _check_template(path, f"{where}.scope", pipeline.scope)
    for i, grant in enumerate(pipeline.grants):
        _check_template(path, f"{where}.grants[{i}]", grant.rstrip("/"))
    for conn, target in pipeline.connections.items():
        if target.startswith(DYNAMIC):
            if target[len(DYNAMIC):] not in credentials:
                raise ManifestError(path, f"{where}.connections.{conn}",
                                    f"{target!r} names no [credentials.*] definition "
                                    f"(defined: {sorted(credentials)})")
            continue
        _check_template(path, f"{where}.connections.{conn}", target)
    for list_name, names in (("requires", pipeline.requires), ("optional", pipeline.optional),
                             ("shared", pipeline.shared)):
        for i, secret in enumerate(names):
            if not is_segment(secret):
                raise ManifestError(path, f"{where}.{list_name}[{i}]",
                                    f"{secret!r} is not a secret name (one key segment; "
                                    "list a full key under grants)")
    if pipeline.env is not None:
        _check_env_name(path, pipeline.env)


def _check_teams(path: Path, pipelines: dict[str, PipelineConfig],
                 teams: dict[str, TeamConfig]) -> None:
    """Team names are names; a ``[teams.X]`` table serves a team some pipeline names; within
    one team a conn_id is mapped by one pipeline at most (else a lookup would be ambiguous)."""
    mapped: dict[tuple[str, str], str] = {}
    for name, pipeline in pipelines.items():
        for i, team in enumerate(pipeline.teams):
            if not _TEAM.fullmatch(team):
                raise ManifestError(path, f"pipelines.{name}.teams[{i}]",
                                    f"{team!r} is not an Airflow team name (3 to 50 letters, "
                                    "digits, '_', '-')")
        for team in dict.fromkeys(pipeline.teams):
            for conn in pipeline.connections:
                other = mapped.setdefault((team, conn), name)
                if other != name:
                    raise ManifestError(
                        path, f"pipelines.{name}.connections.{conn}",
                        f"team {team!r}: connection {conn!r} is mapped by both pipelines "
                        f"{other!r} and {name!r}, so a lookup of {conn!r} by that team is "
                        "ambiguous (rename one, or serve the team from one of them)")
    served = {team for p in pipelines.values() for team in p.teams}
    for team in teams:
        if not _TEAM.fullmatch(team):
            raise ManifestError(path, f"teams.{team}", "an Airflow team name is 3 to 50 "
                                                       "letters, digits, '_' and '-'")
        if team not in served:
            raise ManifestError(path, f"teams.{team}",
                                f"no pipeline serves team {team!r} (add it to a pipeline's "
                                "teams = [...])")


def _backend_config(path: Path, name: str, body: dict[str, Any]) -> BackendConfig:
    where = f"backends.{name}"
    if not _NAME.fullmatch(name):
        raise ManifestError(path, where, "a backend name is letters, digits, '_' and '-'")
    type_name = body.get("type")
    if type_name is None:
        raise ManifestError(path, f"{where}.type", "missing; say which store this is "
                                                   f"(one of {', '.join(sorted(BACKEND_TYPES))})")
    if not isinstance(type_name, str) or type_name not in BACKEND_TYPES:
        raise ManifestError(path, f"{where}.type", f"unknown backend type {type_name!r} "
                                                   f"(known: {', '.join(sorted(BACKEND_TYPES))})")
    if isinstance(body.get("cache"), bool):  # cache = true / false: every default, or none
        body = {**body, "cache": {"enabled": body["cache"]}}
    return _convert(path, body, backend_class(type_name).Config, ("backends", name))


def _check_template(path: Path, where: str, template: str) -> None:
    """A key template (scope, grant, connection mapping) is a valid key with any parameters:
    found when the manifest loads, not only when a run fills it."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise ManifestError(path, where, f"{template!r} has an unbalanced '{{' or '}}' (a "
                                         "parameter is written {name})") from None
    for _, name, spec, conversion in parsed:
        if name is not None and (not name.isidentifier() or spec or conversion):
            raise ManifestError(path, where, f"{template!r}: '{{{name}}}' is not a parameter "
                                             "(a parameter is written {name})")
    sample = "".join(text + ("p" if name is not None else "") for text, name, _, _ in parsed)
    try:
        validate_key(sample)
    except InvalidKey as exc:
        raise ManifestError(path, where, f"{template!r} is not a key: {exc.reason}") from None


def _check_env_name(path: Path | None, env: str) -> None:
    if (problem := environment_problem(env)) is not None:
        raise ManifestError(path or "environment", "env", problem)
