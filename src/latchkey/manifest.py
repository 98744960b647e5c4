"""The manifest, ``latchkey.toml``: backends, chain order, environments, pipelines.

It holds no secret values. Every problem is reported as one :class:`ManifestError` naming the
file and the field (``latchkey.toml: backends.ssm.type: unknown backend type 'aws_sm' ...``).

Which manifest: the path given, else ``$LATCHKEY_CONFIG``, else ``./latchkey.toml`` if it
exists, else none (the local store alone). Which environment: the one given (``--env``), else
``$LATCHKEY_ENV``, else the manifest's ``env``, else ``dev``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._compat import tomllib
from .backends import BACKEND_TYPES, BackendConfig, BuildContext, backend_class
from .errors import ManifestError

__all__ = ["CONFIG_ENV", "ENV_ENV", "Manifest", "PipelineConfig", "find_manifest", "load_manifest"]

CONFIG_ENV = "LATCHKEY_CONFIG"
ENV_ENV = "LATCHKEY_ENV"
DEFAULT_NAME = "latchkey.toml"
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class AwsRole(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arn: str
    duration: int = Field(900, ge=900, le=43200)
    session_name: str | None = None
    external_id: str | None = None
    tags: dict[str, str] = {}
    region: str | None = None


class PipelineConfig(BaseModel):
    """``[pipelines.NAME]``: what one pipeline may read. Used by run contexts."""

    model_config = ConfigDict(extra="forbid")
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


class AuditSink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["file", "stderr", "dynamodb", "otel"]
    path: str | None = None
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    backups: int = Field(5, ge=0)
    table: str | None = None
    region: str | None = None
    endpoint_url: str | None = None


class AuditConfig(BaseModel):
    """``[audit]``: where audit events go, and whether an access needs them recorded."""

    model_config = ConfigDict(extra="forbid")
    required: bool = False
    sinks: list[AuditSink] = []


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env: str = "dev"
    audit: AuditConfig | None = None
    environments: list[str] | None = None
    chain: list[str] | None = None
    on_backend_error: Literal["fall_through", "raise"] = "fall_through"
    backends: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, PipelineConfig] = {}


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
    #: True when the environment was chosen for this process (argument, --env, LATCHKEY_ENV)
    #: rather than taken from the manifest's default: it then beats a pipeline's own env.
    env_explicit: bool = False
    audit: AuditConfig | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def context(self) -> BuildContext:
        return BuildContext(base_dir=self.base_dir, env=self.env)

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
        raise _manifest_error(path, exc, ()) from None
    explicit = env or os.environ.get(ENV_ENV)
    chosen = explicit or doc.env
    _check_env_name(path, chosen)
    if doc.environments is not None and chosen not in doc.environments:
        raise ManifestError(path, "env", f"{chosen!r} is not one of environments "
                                         f"{doc.environments}")
    backends = {name: _backend_config(path, name, body) for name, body in doc.backends.items()}
    if not backends:
        backends = {"local": backend_class("local").Config(type="local")}
    chain = doc.chain if doc.chain is not None else list(backends)
    for i, name in enumerate(chain):
        if name not in backends:
            raise ManifestError(path, f"chain[{i}]", f"{name!r} is not a backend defined under "
                                                     f"[backends] (defined: {sorted(backends)})")
    if len(set(chain)) != len(chain):
        raise ManifestError(path, "chain", "names a backend twice")
    for name, pipeline in doc.pipelines.items():
        _check_pipeline(path, name, pipeline)
    for i, sink in enumerate(doc.audit.sinks if doc.audit else []):
        if sink.type == "dynamodb" and not sink.table:
            raise ManifestError(path, f"audit.sinks[{i}].table", "missing (a dynamodb sink "
                                                                  "names its table)")
    return Manifest(path=path, env=chosen, chain=list(chain), backends=backends,
                    pipelines=dict(doc.pipelines), environments=doc.environments,
                    on_backend_error=doc.on_backend_error, env_explicit=bool(explicit),
                    audit=doc.audit)


def _check_pipeline(path: Path, name: str, pipeline: PipelineConfig) -> None:
    where = f"pipelines.{name}"
    if not _NAME.fullmatch(name):
        raise ManifestError(path, where, "a pipeline name is letters, digits, '_' and '-'")
    for list_name, names in (("requires", pipeline.requires), ("optional", pipeline.optional),
                             ("shared", pipeline.shared)):
        for i, secret in enumerate(names):
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", secret) or secret in (".", ".."):
                raise ManifestError(path, f"{where}.{list_name}[{i}]",
                                    f"{secret!r} is not a secret name (one key segment; "
                                    "list a full key under grants)")
    if pipeline.env is not None:
        _check_env_name(path, pipeline.env)


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
        raise _manifest_error(path, exc, ("backends", name)) from None


def _manifest_error(path: Path, exc: ValidationError, prefix: tuple[str, ...]) -> ManifestError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = ".".join(str(p) for p in (*prefix, *first["loc"])) or None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "missing"
    return ManifestError(path, loc, message + more)


def _check_env_name(path: Path | None, env: str) -> None:
    if not _ENV_NAME.fullmatch(env) or env in (".", ".."):
        raise ManifestError(path or "environment", "env",
                            f"{env!r} is not a valid environment name (letters, digits, '_.-')")
