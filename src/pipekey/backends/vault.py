"""``vault``: HashiCorp Vault's KV secrets engine (v2 or v1), through hvac.

Layouts (``layout = ...``):

* ``"key"`` (default): every key is one Vault secret at ``<prefix>/<key>`` holding the value
  in one field (``field = "value"``). One read per key, issued concurrently.
* ``"document"``: a key's last segment is a field of the Vault secret named by the rest:
  ``marketing/facebook/acct_42/access_token`` is field ``access_token`` of
  ``<prefix>/marketing/facebook/acct_42``. Keys of one document are read with one call, so a
  pipeline whose scope is one document opens with one read.

Authentication (``auth = {method = ...}``, see :mod:`.vault_auth`) is one small typed
object per method: ``token``, ``approle``, ``kubernetes``, ``aws`` (IAM). Every backend of
the process that talks to the same Vault with the same auth shares one login
(:class:`VaultLogin`): the token is renewed once two thirds of its TTL have passed (logged in
again when it cannot be renewed), and a 403 triggers exactly one new login before the
request is retried; a second 403 is :class:`~pipekey.errors.AccessDenied`. Secret material
for logins (the AppRole secret id, the token) is read from an environment variable or a file
the manifest names, never written in the manifest.

Writes on KV v2 use check-and-set (``options.cas`` = the version read): a writer that lost
the race re-reads and tries again, so concurrent writers to one document never lose an
update. KV v1 has no check-and-set, so document-layout writes are refused there.

GET and LIST requests answered 429 or 5xx are retried by urllib3 (``max_attempts`` in all,
honouring ``Retry-After``); writes are not retried blindly.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Literal, Sequence

import msgspec

from ..errors import BackendUnavailable, InvalidKey, UsageError
from ..keys import is_under, validate_key
from .base import (
    BackendConfig,
    BuildContext,
    Secret,
    VersionedBackend,
    VersionInfo,
    WritableBackend,
    join_prefix,
    prefix_head,
)
from .remote import RemoteBackend
from .vault_auth import (
    AppRoleAuth,
    AwsIamAuth,
    KubernetesAuth,
    TokenAuth,
    VaultAuth,
    VaultLogin,
    hvac_module,
)
from .vault_client import VaultClient

__all__ = ["AppRoleAuth", "AwsIamAuth", "KubernetesAuth", "TokenAuth", "VaultBackend",
           "VaultConfig", "VaultKV2Backend", "VaultLogin"]

class VaultConfig(BackendConfig):
    url: str | None = None              # default: $VAULT_ADDR
    namespace: str | None = None        # default: $VAULT_NAMESPACE
    mount: str = "secret"
    kv_version: Literal[1, 2] = 2
    prefix: str = ""
    layout: Literal["key", "document"] = "key"
    field: str = "value"
    auth: VaultAuth = msgspec.field(default_factory=TokenAuth)
    ca_bundle: str | None = None        # default: $VAULT_CACERT, else the system's CAs
    timeout: float = 10.0
    max_attempts: int = 4
    max_concurrency: int = 8
    cas_attempts: int = 8


# -- the backend ---------------------------------------------------------------------------------
class VaultBackend(VaultClient, WritableBackend):
    """Keys in a Vault KV mount under a path prefix.

    A KV v2 mount keeps versions: its backend is a :class:`VaultKV2Backend`, which is also
    ``Versioned``; a KV v1 backend is not. :meth:`build` (and the manifest) picks the class
    from ``kv_version``; constructing the other one for a mount raises ``TypeError``.
    """

    kind = "vault"
    Config = VaultConfig

    @classmethod
    def build(cls, name: str, config: VaultConfig) -> VaultBackend:
        """The backend for ``config``'s mount: a :class:`VaultKV2Backend` on KV v2, a
        :class:`VaultBackend` on KV v1."""
        return (VaultKV2Backend if config.kv_version == 2 else VaultBackend)(name, config)

    @classmethod
    def from_config(cls, name: str, config: BackendConfig, ctx: BuildContext) -> RemoteBackend:
        assert isinstance(config, VaultConfig)
        if cls is VaultBackend and config.kv_version == 2:
            return VaultKV2Backend.from_config(name, config, ctx)
        return super().from_config(name, config, ctx)

    def __init__(self, name: str, config: VaultConfig) -> None:
        if (config.kv_version == 2) != isinstance(self, VersionedBackend):
            raise TypeError(f"backend {name!r}: a KV v{config.kv_version} mount is not a "
                            f"{type(self).__name__}: build it with VaultBackend.build()")
        super().__init__(name)
        self.config = config
        self.url = (config.url or os.environ.get("VAULT_ADDR") or "").rstrip("/")
        if not self.url:
            raise UsageError(f"backend {name!r}: no Vault address: set url or $VAULT_ADDR")
        self.namespace = config.namespace or os.environ.get("VAULT_NAMESPACE") or None
        self.prefix = config.prefix.strip("/")
        self.mount = config.mount.strip("/")
        self.max_concurrency = config.max_concurrency
        self._login: VaultLogin | None = None
        self._session: Any = None
        self._local = threading.local()

    def describe(self) -> str:
        return (f"vault ({self.url}, KV v{self.config.kv_version} mount {self.mount!r}, "
                f"{self.config.layout} layout, auth {self.config.auth.method})")

    def check(self) -> str:
        self.vault("login", [], lambda client: None)
        return f"ok (logged in by {self.config.auth.method})"

    # -- paths ----------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The Vault path of ``key`` (key layout) or of its document (document layout)."""
        if self.config.layout == "document":
            key = self.document_of(key)[0]
        return join_prefix(self.prefix, key)

    def document_of(self, key: str) -> tuple[str, str]:
        """(document key, field) of ``key`` in the document layout."""
        parent, _, field = key.rpartition("/")
        if not parent and not self.prefix:
            raise InvalidKey(key, f"backend {self.name!r} keeps keys as fields of documents: a "
                                  "key needs a parent segment (or set prefix)")
        return parent, field

    def field_of(self, key: str) -> str:
        """The field of its Vault secret that holds ``key``'s value."""
        return self.document_of(key)[1] if self.config.layout == "document" else self.config.field

    @classmethod
    def name_head(cls, config: BackendConfig) -> str | None:
        assert isinstance(config, VaultConfig)
        return f"{config.mount.strip('/')}/" + prefix_head(config.prefix.strip("/"))

    def locate(self, key: str) -> str:
        return f"vault:{self.store_name(key) or self.mount + '/(no path for this key)'}"

    def store_name(self, key: str) -> str | None:
        if self.unmappable(key) is not None:
            return None
        return f"{self.mount}/{self.path(key)}#{self.field_of(key)}"

    def unmappable(self, key: str) -> str | None:
        try:
            self.field_of(key)
        except InvalidKey as exc:
            return exc.reason
        return None

    # -- reads ----------------------------------------------------------------------------
    def _read(self, path: str, keys: Sequence[str],
              version: int | None = None) -> dict[str, Any] | None:
        """{"data": fields, "version", "created"} of one Vault secret, or None if absent."""
        if self.config.kv_version == 1:
            found = self.vault("read", keys, lambda c: c.secrets.kv.v1.read_secret(
                path, mount_point=self.mount))
            return None if found is None else {"data": found.get("data") or {}, "version": None,
                                               "created": None}
        found = self.vault("read", keys, lambda c: c.secrets.kv.v2.read_secret_version(
            path, version=version, mount_point=self.mount, raise_on_deleted_version=True))
        if found is None or not found.get("data") or found["data"].get("data") is None:
            return None
        meta = found["data"].get("metadata") or {}
        return {"data": found["data"]["data"], "version": meta.get("version"),
                "created": _time(meta.get("created_time"))}

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        by_path: dict[str, list[str]] = {}
        for key in keys:
            by_path.setdefault(self.path(key), []).append(key)
        paths = list(by_path)
        documents = dict(zip(paths, self.concurrently(
            lambda p: self._read(p, by_path[p]), paths)))
        out = {}
        for path, wanted in by_path.items():
            document = documents[path]
            for key in wanted:
                secret = self._secret_from(key, document)
                if secret is not None:
                    out[key] = secret
        return out

    def _secret_from(self, key: str, document: dict[str, Any] | None) -> Secret | None:
        if document is None:
            return None
        value = document["data"].get(self.field_of(key))
        if value is None:
            return None
        nested = isinstance(value, dict)  # a field holding an object: a subtree's worth
        if not isinstance(value, str):
            value = json.dumps(value)
        version = None if document["version"] is None else str(document["version"])
        return self._secret(key, value, version, created_at=document["created"],
                            document=nested)

    def _list_folder(self, path: str, keys: Sequence[str]) -> list[str]:
        """The names LIST gives for one folder (sub-folders end in ``/``)."""
        def listing(client: Any) -> Any:
            engine = client.secrets.kv.v2 if self.config.kv_version == 2 else client.secrets.kv.v1
            return engine.list_secrets(path, mount_point=self.mount)

        found = self.vault("list", keys, listing)
        return ((found or {}).get("data") or {}).get("keys") or []

    def _list_paths(self, path: str, keys: Sequence[str]) -> list[str]:
        """Every secret path at or below ``path``: the tree level by level, each level's
        folders listed concurrently from this thread (a pool task waiting on tasks of its own
        pool would deadlock once the tree is wider than the pool)."""
        leaves: list[str] = []
        level = [path]
        while level:
            folders = []
            for folder, names in zip(level, self.concurrently(
                    lambda f: self._list_folder(f, keys), level)):
                base = f"{folder}/" if folder else ""
                leaves += [base + n for n in names if not n.endswith("/")]
                folders += [base + n.rstrip("/") for n in names if n.endswith("/")]
            level = folders
        return leaves

    def _list(self, prefix: str) -> Iterable[str]:
        if self.config.layout == "document":
            return self._list_documents(prefix)
        start = "/".join(p for p in (self.prefix, prefix) if p)
        listed = {k for k in map(self._key_of, self._list_paths(start, [prefix]))
                  if k and is_under(k, prefix)}
        if self.config.kv_version == 1:
            if prefix and self._read(start, [prefix]) is not None:
                listed.add(prefix)  # the prefix may be a key itself
            return listed
        if prefix:
            listed.add(prefix)
        # soft-deleted keys still list on KV v2: keep the live ones
        keys = sorted(listed)
        return {k for k, live in zip(keys, self.concurrently(self._is_live, keys)) if live}

    def _is_live(self, key: str) -> bool:
        meta = self._metadata(self.path(key), [key])
        if meta is None:
            return False
        current = meta["versions"].get(str(meta["current_version"])) or {}
        return not current.get("deletion_time") and not current.get("destroyed")

    def _list_documents(self, prefix: str) -> set[str]:
        start = "/".join(p for p in (self.prefix, prefix) if p)
        paths = set(self._list_paths(start, [prefix]))
        parts = prefix.split("/") if prefix else []
        # the prefix, or one of its parents, may itself be a document holding the keys
        paths |= {"/".join(p for p in (self.prefix, *parts[:i]) if p)
                  for i in range(len(parts) + 1)}
        paths.discard("")
        docs = sorted(paths)
        keys = set()
        for path, document in zip(docs, self.concurrently(lambda p: self._read(p, [prefix]), docs)):
            doc_key = self._key_of(path, allow_root=True)
            if document is None or doc_key is None:
                continue
            for field in document["data"]:
                key = f"{doc_key}/{field}" if doc_key else field
                try:
                    if is_under(validate_key(key), prefix):
                        keys.add(key)
                except InvalidKey:
                    continue  # a field name that is not a key segment: not pipekey's
        return keys

    def _key_of(self, path: str, allow_root: bool = False) -> str | None:
        if self.prefix:
            if path == self.prefix:
                return "" if allow_root else None
            if not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix) + 1:]
        try:
            return validate_key(path)
        except InvalidKey:
            return None

    # -- writes ---------------------------------------------------------------------------
    def _put(self, key: str, value: str) -> Secret:
        field = self.field_of(key)
        written = self._update(key, lambda data: {**data, field: value})
        return self._secret(key, value, written)

    def _delete(self, key: str) -> bool:
        path = self.path(key)
        if self.config.layout == "document":
            field = self.document_of(key)[1]
            existed = []

            def drop(data: dict[str, Any]) -> dict[str, Any] | None:
                existed.append(field in data)
                return {k: v for k, v in data.items() if k != field} if field in data else None

            self._update(key, drop)
            return bool(existed and existed[-1])
        if self.config.kv_version == 1:
            if self._read(path, [key]) is None:
                return False
            self.vault("delete", [key], lambda c: c.secrets.kv.v1.delete_secret(
                path, mount_point=self.mount), absent=False)
        else:
            if not self._is_live(key):  # metadata only: the value need not travel
                return False
            self.vault("delete", [key], lambda c: c.secrets.kv.v2.delete_latest_version_of_secret(
                path, mount_point=self.mount), absent=False)
        return True

    def _update(self, key: str,
                change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> str | None:
        """Read-change-write one Vault secret with check-and-set; returns the new version.

        ``change`` returns the new fields, or None for "nothing to write". A document left
        with no field is deleted.
        """
        path = self.path(key)
        if self.config.kv_version == 1:
            if self.config.layout == "document":
                raise UsageError(f"backend {self.name!r}: KV v1 has no check-and-set, so "
                                 "document-layout writes could lose concurrent updates; use KV v2")
            new = change({})
            if new is not None:
                self.vault("write", [key], lambda c: c.secrets.kv.v1.create_or_update_secret(
                    path, new, mount_point=self.mount), absent=False)
            return None
        hvac = hvac_module()
        for attempt in range(self.config.cas_attempts):
            live = self._read(path, [key])
            if live is not None:
                current = int(live["version"])
            else:  # absent or soft-deleted; the version to check against is in the metadata,
                meta = self._metadata(path, [key])  # and one written since must be read
                current = int(meta["current_version"]) if meta else 0
                live = self._read(path, [key], version=current) if current else None
            new = change(dict(live["data"]) if live else {})
            if new is None:
                return None
            try:
                if not new:
                    self.vault("delete", [key], lambda c: c.secrets.kv.v2.
                               delete_latest_version_of_secret(path, mount_point=self.mount),
                               absent=False)
                    return None
                written = self.vault("write", [key], lambda c: c.secrets.kv.v2.
                                     create_or_update_secret(path, new, cas=current,  # noqa: B023
                                                             mount_point=self.mount), absent=False)
                return str(written["data"]["version"])
            except BackendUnavailable as exc:
                if not _cas_mismatch(exc, hvac):
                    raise
                time.sleep(random.uniform(0, 0.02 * 2 ** attempt))  # another writer won
        raise BackendUnavailable(self.name, f"writing {key!r}: other writers kept changing "
                                            f"{path!r} ({self.config.cas_attempts} attempts)")

    # -- versions -------------------------------------------------------------------------
    def _metadata(self, path: str, keys: Sequence[str]) -> dict[str, Any] | None:
        found = self.vault("metadata", keys, lambda c: c.secrets.kv.v2.read_secret_metadata(
            path, mount_point=self.mount))
        return None if found is None else found["data"]

    def _history(self, key: str) -> list[VersionInfo]:
        meta = self._metadata(self.path(key), [key])
        if meta is None:
            return []
        return [VersionInfo(number, _time(v.get("created_time")),
                            deleted=bool(v.get("deletion_time")) or bool(v.get("destroyed")))
                for number, v in sorted(meta["versions"].items(), key=lambda kv: int(kv[0]))]

    def _get_version(self, key: str, version: str) -> Secret | None:
        if not version.isdigit() or int(version) < 1:
            return None
        return self._secret_from(key, self._read(self.path(key), [key], version=int(version)))


def _cas_mismatch(exc: BackendUnavailable, hvac: Any) -> bool:
    cause = exc.__cause__
    return isinstance(cause, hvac.exceptions.InvalidRequest) and "check-and-set" in str(cause)


def _time(text: str | None) -> datetime | None:
    """Vault's RFC 3339 times (nanoseconds) as datetimes."""
    if not text:
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
    except ValueError:
        return None


class VaultKV2Backend(VaultBackend, VersionedBackend):
    """A :class:`VaultBackend` on a KV v2 mount: ``history`` and ``get_version`` work."""
