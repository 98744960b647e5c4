"""``pipekey copy`` and ``pipekey diff``: move secrets between stores, key by key.

A store is a backend of the manifest (by name) or an ad-hoc spec:

==============================  ============================================================
``file:secrets.toml``           a TOML/JSON/YAML/dotenv file or a folder (dlt's
                                ``sources.facebook.access_token`` is ``sources/facebook/
                                access_token``)
``env:PREFIX``                  environment variables under PREFIX (``env:SOURCES__``)
``airflow-connections:F.json``  the output of ``airflow connections export`` (JSON, YAML or
                                .env): each becomes ``airflow/connections/<conn_id>``, in
                                Airflow's JSON form (lossless, unlike the URI)
``local`` / ``local:PATH``      the local encrypted store
``ssm:/prefix``                 SSM Parameter Store under /prefix
``secretsmanager:prefix/``      Secrets Manager names under prefix/
``dynamodb:table``              a DynamoDB table
``vault:mount/prefix``          Vault KV v2 (``$VAULT_ADDR``, token from ``$VAULT_TOKEN``)
``gcp:project/prefix``          GCP Secret Manager (Application Default Credentials)
``azure:vault-name/prefix``     Azure Key Vault ``https://vault-name.vault.azure.net``
                                (DefaultAzureCredential)
==============================  ============================================================

Manifest backends take every option (layouts, auth methods, labels...); the ad-hoc specs use
each store's defaults.

A plan compares every source key with the destination: ``add``, ``change``, ``same``, or
``too_large`` for the destination (and ``split`` where it stores large values in chunks).
Nothing is truncated. Values are compared, never shown. Applying the plan writes ``add`` (and
``change`` with ``overwrite``) in key order and stops at the first failed write, reporting
what was copied, what failed and what was not attempted; running it again skips what is
already identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import redact
from .backends.base import Backend, Secret, Writable, read_only
from .client import Pipekey
from .connection import Connection
from .errors import PipekeyError, UsageError
from .keys import is_under, validate_key, validate_prefix

__all__ = ["CopyPlan", "CopyResult", "Item", "apply_plan", "diff", "open_store", "plan_copy"]


@dataclass
class Item:
    """One key of a plan. Holds sizes and states, never a value."""

    key: str
    action: str          # add | change | same | too_large | split
    size: int
    detail: str = ""


@dataclass
class CopyPlan:
    source: Backend
    dest: Backend
    items: list[Item]
    mapping: dict[str, str] = field(default_factory=dict)   # dest key -> source key

    def count(self, *actions: str) -> int:
        return sum(1 for i in self.items if i.action in actions)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source.name, "dest": self.dest.name,
                "items": [vars(i) for i in self.items],
                "summary": {a: self.count(a) for a in ("add", "change", "same", "too_large",
                                                       "split")}}


@dataclass
class CopyResult:
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_attempted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"copied": self.copied, "skipped": self.skipped, "failed": self.failed,
                "not_attempted": self.not_attempted}


# -- stores ----------------------------------------------------------------------------------
#: a bare SRC or DST with one of these suffixes is a file named without its ``file:``
_FILE_SUFFIXES = frozenset({".toml", ".json", ".yaml", ".yml", ".env"})


def open_store(spec: str, lk: Pipekey | None = None) -> Backend:
    """A backend from a manifest name or an ad-hoc spec (see the module docstring)."""
    if lk is not None and spec in lk.backends:
        return lk.backend(spec)
    kind, sep, arg = spec.partition(":")
    if kind == "file" and sep:
        from .backends.files import FilesBackend

        if not Path(arg).exists():  # not StoreCorrupt's "optional = true": no manifest here
            raise UsageError(f"{spec}: {arg} does not exist")
        return FilesBackend(spec, Path(arg))
    if kind == "env" and sep:
        from .backends.env import EnvBackend

        if not arg:
            raise UsageError("env: needs a prefix (env:SOURCES__), or it would copy the whole "
                             "environment")
        return EnvBackend(spec, prefix=arg)
    if kind == "airflow-connections" and sep:
        return AirflowExport(spec, Path(arg))
    if kind == "local":
        from .backends.local import DEFAULT_PATH, LocalBackend

        return LocalBackend(spec, Path(arg or DEFAULT_PATH))
    if kind in ("ssm", "secretsmanager", "dynamodb") and sep:
        return _aws_store(kind, spec, arg)
    if kind in ("vault", "gcp", "azure") and sep and arg.strip("/"):
        return _cloud_store(kind, spec, arg)
    if not sep and (Path(spec).exists() or Path(spec).suffix in _FILE_SUFFIXES):
        raise UsageError(f"unknown store {spec!r}: name a file or folder as file:{spec}")
    known = sorted(lk.backends) if lk else []
    raise UsageError(f"unknown store {spec!r}: name a backend of the manifest {known} or use "
                     "file:, env:, airflow-connections:, local[:PATH], ssm:, secretsmanager:, "
                     "dynamodb:, vault:MOUNT[/PREFIX], gcp:PROJECT[/PREFIX], "
                     "azure:VAULT[/PREFIX]")


def _aws_store(kind: str, spec: str, arg: str) -> Backend:
    if kind == "ssm":
        from .backends.aws_ssm import SsmBackend, SsmConfig

        return SsmBackend(spec, SsmConfig(type="aws_ssm", prefix=arg))
    if kind == "secretsmanager":
        from .backends.aws_secrets_manager import SecretsManagerBackend, SecretsManagerConfig

        return SecretsManagerBackend(spec, SecretsManagerConfig(type="aws_secrets_manager",
                                                                prefix=arg))
    from .backends.dynamodb import DynamoDbBackend, DynamoDbConfig

    return DynamoDbBackend(spec, DynamoDbConfig(type="dynamodb", table=arg))


def _cloud_store(kind: str, spec: str, arg: str) -> Backend:
    head, _, prefix = arg.strip("/").partition("/")
    if kind == "vault":
        from .backends.vault import VaultBackend, VaultConfig

        return VaultBackend.build(spec, VaultConfig(type="vault", mount=head, prefix=prefix))
    if kind == "gcp":
        from .backends.gcp_secret_manager import GcpSecretManagerBackend, GcpSecretManagerConfig

        return GcpSecretManagerBackend(spec, GcpSecretManagerConfig(
            type="gcp_secret_manager", project=head, prefix=prefix))
    from .backends.azure_key_vault import AzureKeyVaultBackend, AzureKeyVaultConfig

    return AzureKeyVaultBackend(spec, AzureKeyVaultConfig(
        type="azure_key_vault", url=f"https://{head}.vault.azure.net", prefix=prefix))


class AirflowExport(Backend):
    """A read-only view of ``airflow connections export`` output, as connection keys."""

    kind = "airflow-connections"

    def __init__(self, name: str, path: Path, prefix: str = "airflow/connections",
                 form: str = "json") -> None:
        super().__init__(name)
        self._values = {
            validate_key(f"{prefix}/{conn_id}"): conn.to_uri() if form == "uri" else conn.to_json()
            for conn_id, conn in _read_export(name, path).items()}

    def locate(self, key: str) -> str:
        return f"{self.name}#{key}"

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        return {k: self._secret(k, self._values[k]) for k in keys if k in self._values}

    def _list(self, prefix: str) -> Iterable[str]:
        return [k for k in self._values if is_under(k, prefix)]


def _read_export(name: str, path: Path) -> dict[str, Connection]:
    if not path.exists():
        raise UsageError(f"{name}: {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix == ".env":
        data = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{name}: {path} is not valid JSON (line {exc.lineno})") from None
    out = {}
    for conn_id, body in data.items():
        out[conn_id] = (Connection.from_value(body, conn_id) if isinstance(body, str)
                        else Connection.from_json(body, conn_id))
    return out


# -- plan and apply ----------------------------------------------------------------------------
def plan_copy(source: Backend, dest: Backend, prefix: str = "", dest_prefix: str = "",
              keys: Iterable[str] | None = None) -> tuple[CopyPlan, dict[str, str]]:
    """Compare ``source`` (keys at or below ``prefix``) with ``dest``.

    Returns the plan and the source values to write, keyed by destination key (kept apart
    from the plan, which is safe to print).
    """
    prefix = validate_prefix(prefix)
    dest_prefix = validate_prefix(dest_prefix)
    wanted = sorted(keys) if keys is not None else source.list_keys(prefix)
    values = {k: s.value for k, s in source.get_many(wanted).items()}
    for value in values.values():
        redact.register(value)  # masked in logs from here on, the writes' included
    mapping = {_retarget(k, prefix, dest_prefix): k for k in values}
    existing = dest.get_many(list(mapping))
    items, to_write = [], {}
    for dkey, skey in sorted(mapping.items()):
        value = values[skey]
        size = len(value.encode("utf-8"))
        action, detail = _action(dest, value, size, existing.get(dkey))
        items.append(Item(dkey, action, size, detail))
        if action in ("add", "change", "split"):
            to_write[dkey] = value
    return CopyPlan(source, dest, items, mapping), to_write


def _retarget(key: str, prefix: str, dest_prefix: str) -> str:
    rest = key[len(prefix):].lstrip("/") if prefix and is_under(key, prefix) else key
    return validate_key(f"{dest_prefix}/{rest}" if dest_prefix else rest)


def _action(dest: Backend, value: str, size: int, current: Secret | None) -> tuple[str, str]:
    if current is not None and current.value == value:
        return "same", ""
    limit = dest.max_value_bytes
    chunk = dest.chunk_bytes
    if limit is not None and size > limit:
        return "too_large", f"{size} bytes; {dest.name} holds {limit} ({dest.size_hint})"
    if chunk is not None and size > chunk:  # SSM with split = true
        return "split", f"{size} bytes, stored in chunks"
    return ("change", "") if current is not None else ("add", "")


def apply_plan(plan: CopyPlan, to_write: dict[str, str], overwrite: bool = False,
               progress: Callable[[str, int, int], None] | None = None) -> CopyResult:
    """Write the plan. ``change`` needs ``overwrite``; stops at the first failed write."""
    dest = plan.dest
    if not isinstance(dest, Writable):
        raise read_only(dest, "write")
    result = CopyResult()
    todo = [i for i in plan.items if i.key in to_write and (i.action != "change" or overwrite)]
    result.skipped = [i.key for i in plan.items if i.key not in {t.key for t in todo}]
    for n, item in enumerate(todo, start=1):
        try:
            dest.put(item.key, to_write[item.key])
        except PipekeyError as exc:
            result.failed[item.key] = str(exc)
            result.not_attempted = [t.key for t in todo[n:]]
            break
        result.copied.append(item.key)
        if progress:
            progress(item.key, n, len(todo))
    return result


def diff(a: Backend, b: Backend, prefix: str = "") -> list[dict[str, str | None]]:
    """Per key: only in a, only in b, differs or same (with versions). Never values."""
    prefix = validate_prefix(prefix)
    keys = sorted(set(a.list_keys(prefix)) | set(b.list_keys(prefix)))
    left, right = a.get_many(keys), b.get_many(keys)
    rows = []
    for key in keys:
        x, y = left.get(key), right.get(key)
        state = ("only_in_a" if y is None else "only_in_b" if x is None
                 else "same" if x.value == y.value else "differs")
        rows.append({"key": key, "state": state, "version_a": x.version if x else None,
                     "version_b": y.version if y else None})
    return rows
