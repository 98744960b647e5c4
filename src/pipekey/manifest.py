"""The manifest, ``pipekey.toml``: backends, chain order, environments, pipelines.

It holds no secret values. Every problem is reported as one :class:`ManifestError` naming the
file and the field (``pipekey.toml: backends.ssm.type: unknown backend type 'aws_sm' ...``).

Which manifest: the path given, else ``$PIPEKEY_CONFIG``, else ``./pipekey.toml`` if it
exists, else none (the local store alone). Which environment: the one given (``--env``), else
``$PIPEKEY_ENV``, else the manifest's ``env``, else ``dev``.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._compat import tomllib
from .backends import BACKEND_TYPES, BackendConfig, BuildContext, backend_class
from .credentials.base import (
    DYNAMIC,
    CredentialConfig,
    PostgresRoleConfig,
    VaultDatabaseConfig,
)
from .errors import InvalidKey, ManifestError, UsageError
from .keys import NAME as _NAME
from .keys import is_segment, validate_key
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


# Every model defers its build (start-up cost): _Document builds the nested ones into its own
# validator when the first manifest is validated, not when pipekey is imported.
class AwsRole(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    arn: str
    duration: int = Field(900, ge=900, le=43200)
    session_name: str | None = None
    external_id: str | None = None
    tags: dict[str, str] = {}
    region: str | None = None


class PipelineConfig(BaseModel):
    """``[pipelines.NAME]``: what one pipeline may read. Used by run contexts."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
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


class TeamConfig(BaseModel):
    """``[teams.NAME]``: what the API server uses for one Airflow team's reads (broker mode)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    #: the read role the API server assumes for this team's AWS backends
    aws_role: AwsRole | None = None


class AuditSink(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    type: Literal["file", "stderr", "dynamodb", "otel"]
    path: str | None = None
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    backups: int = Field(5, ge=0)
    table: str | None = None
    region: str | None = None
    endpoint_url: str | None = None


class AuditConfig(BaseModel):
    """``[audit]``: where audit events go, and whether an access needs them recorded."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    required: bool = False
    sinks: list[AuditSink] = []


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    env: str = "dev"
    audit: AuditConfig | None = None
    environments: list[str] | None = None
    chain: list[str] | None = None
    on_backend_error: Literal["fall_through", "raise"] = "fall_through"
    lookup: Literal["sequential", "parallel"] = "sequential"
    backends: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, PipelineConfig] = {}
    credentials: dict[str, dict[str, Any]] = {}
    teams: dict[str, TeamConfig] = {}


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
        if not isinstance(env, str) or not is_segment(env):
            raise UsageError(f"environment {env!r} is not a valid environment name (one key "
                             "segment: letters, digits, '_', '.', '-')")
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
    try:
        doc = _Document.model_validate(raw)
    except ValidationError as exc:
        raise _manifest_error(path, exc, (), _Document) from None
    explicit = env or os.environ.get(ENV_ENV)
    chosen = explicit or doc.env
    for i, listed in enumerate(doc.environments or []):
        if not is_segment(listed):
            raise ManifestError(path, f"environments[{i}]", f"{listed!r} is not a valid "
                                "environment name (letters, digits, '_.-')")
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
    for name, pipeline in doc.pipelines.items():
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
    for name, pipeline in doc.pipelines.items():
        _check_pipeline(path, name, pipeline, credentials)
    served = served_environments(doc.environments, chosen, doc.pipelines.values())
    _check_admins_unreadable(path, credentials, doc.pipelines, served)
    _check_teams(path, doc.pipelines, doc.teams)
    Ownership(doc.pipelines, served, path)  # two teams may not own overlapping key prefixes
    for i, sink in enumerate(doc.audit.sinks if doc.audit else []):
        if sink.type == "dynamodb" and not sink.table:
            raise ManifestError(path, f"audit.sinks[{i}].table", "missing (a dynamodb sink "
                                                                  "names its table)")
    return Manifest(path=path, env=chosen, chain=list(chain), backends=backends,
                    pipelines=dict(doc.pipelines), environments=doc.environments,
                    on_backend_error=doc.on_backend_error, env_explicit=bool(explicit),
                    lookup=doc.lookup,
                    audit=doc.audit, credentials=credentials, teams=dict(doc.teams))


_CREDENTIAL_TYPES: dict[str, type[BaseModel]] = {"postgres_role": PostgresRoleConfig,
                                                 "vault_database": VaultDatabaseConfig}


def _credential_config(path: Path, name: str, body: dict[str, Any],
                       backends: dict[str, BackendConfig]) -> CredentialConfig:
    where = f"credentials.{name}"
    if not _NAME.fullmatch(name):
        raise ManifestError(path, where, "a credential name is letters, digits, '_' and '-'")
    type_name = body.get("type")
    known = ", ".join(sorted(_CREDENTIAL_TYPES))
    if type_name is None:
        raise ManifestError(path, f"{where}.type", f"missing; say what to mint (one of {known})")
    model = _CREDENTIAL_TYPES.get(type_name) if isinstance(type_name, str) else None
    if model is None:
        raise ManifestError(path, f"{where}.type", f"unknown credential type {type_name!r} "
                                                   f"(known: {known})")
    try:
        credential: CredentialConfig = model.model_validate(body)  # type: ignore[assignment]
    except ValidationError as exc:
        raise _manifest_error(path, exc, ("credentials", name), model) from None
    _check_credential(path, where, credential, backends)
    return credential


def _check_credential(path: Path, where: str, credential: CredentialConfig,
                      backends: dict[str, BackendConfig]) -> None:
    if credential.type == "postgres_role":
        _check_env_template(path, f"{where}.admin", credential.admin)
        for i, role in enumerate(credential.member_of):
            if not role or len(role.encode()) > 63 or "\x00" in role:
                raise ManifestError(path, f"{where}.member_of[{i}]",
                                    f"{role!r} is not a PostgreSQL role name")
    else:
        _check_env_template(path, f"{where}.connection", credential.connection)
        backend = backends.get(credential.backend)
        if backend is None or backend.type != "vault":
            vaults = sorted(n for n, b in backends.items() if b.type == "vault")
            raise ManifestError(path, f"{where}.backend", f"{credential.backend!r} is not a "
                                                          f"vault backend under [backends] "
                                                          f"(vault backends: {vaults})")


def _check_admins_unreadable(path: Path, credentials: Mapping[str, CredentialConfig],
                             pipelines: Mapping[str, PipelineConfig],
                             environments: tuple[str, ...]) -> None:
    """A ``postgres_role`` admin connection may create roles: no run may read it. Refuse an
    ``admin`` key under ``shared/`` (every run reads it) or one that some run of a pipeline,
    with any parameters, in any served environment, may read (pipekey.policy decides)."""
    for name, credential in credentials.items():
        if credential.type != "postgres_role":
            continue
        where, admin = f"credentials.{name}.admin", credential.admin
        if any(NO_PIPELINE.allows(fill_template(admin, {"env": env}, where))
               for env in environments):
            raise ManifestError(path, where, f"{admin!r} is under shared/, which every run "
                                             "reads: keep the admin connection elsewhere")
        readers = pipelines_reading(admin, pipelines, environments)
        if readers:
            raise ManifestError(path, where, f"{admin!r} is readable by pipeline {readers[0]!r} "
                                             "(its scope, grants or connections): keep "
                                             "the admin connection where no run reads")


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
    if type_name not in BACKEND_TYPES:
        raise ManifestError(path, f"{where}.type", f"unknown backend type {type_name!r} "
                                                   f"(known: {', '.join(sorted(BACKEND_TYPES))})")
    try:
        return backend_class(type_name).Config.model_validate(body)
    except ValidationError as exc:
        raise _manifest_error(path, exc, ("backends", name),
                              backend_class(type_name).Config) from None


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


_TYPE_WORDING = {
    "list_type": "must be a list",
    "string_type": "must be text (a quoted string)",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a table ([section] or { key = value })",
    "model_type": "must be a table ([section] or { key = value })",
    "model_attributes_type": "must be a table ([section] or { key = value })",
}


def _manifest_error(path: Path, exc: ValidationError, prefix: tuple[str, ...],
                    model: type[BaseModel]) -> ManifestError:
    """pydantic's first error in pipekey's words, naming the field by its full path. An unknown
    field comes first: it is the cause of the others (`members` for `member_of` leaves
    `member_of` missing); the others are named after it."""
    errors = sorted(exc.errors(include_url=False),
                    key=lambda e: e["type"] != "extra_forbidden")

    def where(error: Any) -> str:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                       for p in (*prefix, *error["loc"])).lstrip(".")

    others = [f"{where(e)}: {_wording(e, model)}" for e in errors[1:4]]
    more = (f" (and {len(errors) - 1} more: {'; '.join(others)}"
            f"{'; ...' if len(errors) > 4 else ''})" if others else "")
    return ManifestError(path, where(errors[0]) or None, _wording(errors[0], model) + more)


def _wording(error: Any, model: type[BaseModel]) -> str:
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        known = sorted(_fields_at(model, loc[:-1]))
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            return f"unknown field (did you mean {close[0]!r}?)"
        return f"unknown field (known: {', '.join(known)})" if known else "unknown field"
    if kind == "missing":
        return "missing"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?')}"
    if kind == "greater_than_equal":
        return f"must be at least {_number(ctx.get('ge'))} (got {value!r})"
    if kind == "greater_than":
        return f"must be more than {_number(ctx.get('gt'))} (got {value!r})"
    if kind == "less_than_equal":
        return f"must be at most {_number(ctx.get('le'))} (got {value!r})"
    if kind == "less_than":
        return f"must be less than {_number(ctx.get('lt'))} (got {value!r})"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind in _TYPE_WORDING:
        message = _TYPE_WORDING[kind]
        if kind == "list_type" and isinstance(value, str) and loc and len(value) <= 60:
            message += f", e.g. {loc[-1]} = [{_toml_string(value)}]"
        return f"{message} (got {_kind(value)})"
    return str(error["msg"])


def _number(bound: Any) -> Any:
    """A bound as the manifest would write it (``0``, not ``0.0``)."""
    return f"{bound:g}" if isinstance(bound, float) else bound


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kind(value: Any) -> str:
    names = {str: "text", bool: "true/false", int: "a number", float: "a number",
             list: "a list", dict: "a table"}
    return next((n for t, n in names.items() if type(value) is t), type(value).__name__)


def _fields_at(model: Any, loc: tuple[Any, ...]) -> set[str]:
    """The field names the model reached by ``loc`` accepts (empty if none is found)."""
    for part in loc:
        model = _unwrap(model)
        if isinstance(model, type) and issubclass(model, BaseModel):
            info = model.model_fields.get(str(part))
            if info is None:
                return set()
            model = info.annotation
        elif get_origin(model) in (dict, list):
            model = get_args(model)[-1]
        else:
            return set()
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return set(model.model_fields)
    return set()


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``; a union of several models is left as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _check_env_name(path: Path | None, env: str) -> None:
    if not is_segment(env):
        raise ManifestError(path or "environment", "env",
                            f"{env!r} is not a valid environment name (letters, digits, '_.-')")
