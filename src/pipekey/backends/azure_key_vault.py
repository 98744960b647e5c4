"""``azure_key_vault``: Azure Key Vault secrets, through azure-keyvault-secrets and
azure-identity.

Key Vault names allow only ``[0-9a-zA-Z-]``, at most 127 characters, compared without case.
A key is the secret ``<prefix>--<name>`` (the prefix is path-like, joined by one
``separator``, ``--``, as ``/`` is written; ``separator = ""`` joins raw), where ``<name>`` is
the key by this reversible
mapping: lowercase letters and digits stay; ``/`` becomes ``--``; every other character
(``_``, ``.``, ``-``, capitals) becomes ``-`` and two hex digits of its code (``_`` is
``-5f``, ``.`` is ``-2e``, ``-`` is ``-2d``, ``A`` is ``-41``). So
``marketing/facebook/acct_42/access_token`` is ``marketing--facebook--acct-5f42--access-5ftoken``,
two keys never share a name (not even without case), and ``list`` maps names back, skipping
secrets whose names are not such a mapping.

Reads get each key's current version (``GET /secrets/{name}``), concurrently, at most
``max_concurrency`` at once (Key Vault throttles per vault). Throttling (429, honouring
``Retry-After``) and 5xx are retried by azure-core's retry policy, ``max_attempts`` in all,
and counted. ``rm`` is Key Vault's soft delete; setting a key deleted that way recovers it
first (its versions come back) and then adds the new version.

Authentication (``auth = {method = ...}``): ``default`` (``DefaultAzureCredential``:
environment, workload identity, managed identity, Azure CLI...), ``managed_identity``
(optionally a user-assigned ``client_id``), or ``client_secret`` with the secret read from
``$client_secret_env``, never written in the manifest. One credential per backend, and
azure-identity caches its token until shortly before expiry.
"""

from __future__ import annotations

import os
import string
from typing import Any, Sequence, Union

import msgspec
from msgspec import Struct

from .._schema import field_problem
from .._sdk import azure_modules
from ..errors import BackendUnavailable, PipekeyError, UsageError
from ..keys import is_under
from .base import BackendConfig, Secret, VersionedBackend, VersionInfo, WritableBackend, prefix_head
from .remote import (
    Cause,
    ErrorRow,
    ErrorTable,
    EscapedNames,
    RemoteBackend,
    describe_keys,
)

__all__ = ["AzureKeyVaultBackend", "AzureKeyVaultConfig"]

LITERAL = string.ascii_lowercase + string.digits
MAX_NAME = 127
MAX_SIZE = 25 * 1024


class _Auth(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True, tag_field="method"):
    """A credential: ``auth = { method = "...", ... }``, a union tagged on ``method``."""

    @property
    def method(self) -> str:
        """The ``method`` this class is chosen by (its tag)."""
        return str(type(self).__struct_config__.tag)


class DefaultAuth(_Auth, tag="default", frozen=True):
    """azure-identity's DefaultAzureCredential chain."""

    def credential(self, identity: Any, **transport: Any) -> Any:
        return identity.DefaultAzureCredential(**transport)


class ManagedIdentityAuth(_Auth, tag="managed_identity", frozen=True):
    """A managed identity: system-assigned, or user-assigned by ``client_id``."""

    client_id: str | None = None

    def credential(self, identity: Any, **transport: Any) -> Any:
        return identity.ManagedIdentityCredential(client_id=self.client_id, **transport)


class ClientSecretAuth(_Auth, tag="client_secret", frozen=True):
    """A service principal; its secret from ``$client_secret_env``."""

    tenant_id: str
    client_id: str
    client_secret_env: str = "AZURE_CLIENT_SECRET"
    #: the identity platform's host; a sovereign cloud's, or a test server's
    authority: str | None = None
    disable_instance_discovery: bool = False

    def credential(self, identity: Any, **transport: Any) -> Any:
        secret = os.environ.get(self.client_secret_env, "")
        if not secret:
            raise UsageError(f"azure auth: no client secret: set ${self.client_secret_env}")
        extra = {"authority": self.authority} if self.authority else {}
        return identity.ClientSecretCredential(
            self.tenant_id, self.client_id, secret,
            disable_instance_discovery=self.disable_instance_discovery, **extra, **transport)


AzureAuth = Union[DefaultAuth, ManagedIdentityAuth, ClientSecretAuth]


class AzureKeyVaultConfig(BackendConfig):
    url: str | None = None              # https://NAME.vault.azure.net; default $AZURE_KEYVAULT_URL
    prefix: str = ""
    #: joins prefix and name: "--", how these names write a key's "/"; "" joins raw
    separator: str = "--"
    auth: AzureAuth = msgspec.field(default_factory=DefaultAuth)
    ca_bundle: str | None = None        # a CA file for TLS-inspecting proxies or test servers
    #: Key Vault's check that the auth challenge names a Key Vault domain; off only for
    #: private endpoints with other names (and test servers on an IP address)
    verify_challenge_resource: bool = True
    timeout: float = 10.0
    max_attempts: int = 5
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        for name, value in (("prefix", self.prefix), ("separator", self.separator)):
            bad = sorted({c for c in value
                          if c not in string.ascii_letters + string.digits + "-{}"})
            if bad:
                raise field_problem(name, "may hold only letters, digits and '-' "
                                          f"(found {bad[0]!r})")


class AzureKeyVaultBackend(EscapedNames, RemoteBackend, WritableBackend, VersionedBackend):
    """Secrets of one Key Vault under a name prefix."""

    kind = "azure_key_vault"
    Config = AzureKeyVaultConfig
    max_value_bytes = MAX_SIZE
    size_hint = "Key Vault's limit for one secret"
    name_literal, name_max, name_store, name_folds_case = LITERAL, MAX_NAME, "Key Vault", True

    def __init__(self, name: str, config: AzureKeyVaultConfig) -> None:
        super().__init__(name)
        self.config = config
        self.url = (config.url or os.environ.get("AZURE_KEYVAULT_URL") or "").rstrip("/")
        if not self.url:
            raise UsageError(f"backend {name!r}: no Key Vault URL: set url or "
                             "$AZURE_KEYVAULT_URL")
        self.prefix = prefix_head(config.prefix, config.separator).lower()
        self.max_concurrency = config.max_concurrency

    @classmethod
    def name_head(cls, config: BackendConfig) -> str | None:
        assert isinstance(config, AzureKeyVaultConfig)
        return prefix_head(config.prefix, config.separator).lower()

    @classmethod
    def env_problem(cls, env: str, config: BackendConfig) -> str | None:
        """Key Vault names fold case and hold only letters, digits and '-': ``Prod`` would
        be ``prod``'s."""
        bad = sorted({c for c in env if c not in LITERAL + "-"})
        if bad:
            return (f"{bad[0]!r} cannot appear in a Key Vault name (lower-case letters, digits "
                    "and '-'; names fold case)")
        return super().env_problem(env, config)

    # -- the client -----------------------------------------------------------------------
    def _make_client(self) -> Any:
        secrets, identity = azure_modules()
        transport: dict[str, Any] = {"connection_timeout": self.config.timeout,
                                     "read_timeout": self.config.timeout}
        if self.config.ca_bundle:
            transport["connection_verify"] = self.config.ca_bundle
        credential = self.config.auth.credential(identity, **transport)
        return secrets.SecretClient(
            self.url, credential, verify_challenge_resource=self.config.verify_challenge_resource,
            retry_total=max(0, self.config.max_attempts - 1), retry_backoff_factor=0.2,
            retry_backoff_max=10, per_retry_policies=[_counting_policy(self)], **transport)

    def azure(self, what: str, keys: Sequence[str], fn: Any, *args: Any,
              absent: bool = False, **kwargs: Any) -> Any:
        """Call ``fn`` counted; ResourceNotFoundError (404) is None when ``absent``."""
        from azure.core.exceptions import ResourceNotFoundError

        return self.counted(what, keys, fn, *args, **kwargs,
                            absent=lambda exc: absent and isinstance(exc, ResourceNotFoundError))

    def translate(self, exc: Exception, what: str, keys: Sequence[str]) -> PipekeyError:
        where = f"{what} for {describe_keys(keys)}" if keys else what
        return AZURE_ERRORS.translate(exc, self.name, where, self.config.max_attempts,
                                      auth=self.config.auth.method)

    def describe(self) -> str:
        return f"azure_key_vault ({self.url}, auth {self.config.auth.method})"

    def check(self) -> str:
        self.azure("list", [], lambda: next(iter(self.client.list_properties_of_secrets(
            max_page_size=1)), None))
        return "ok"

    # -- names (EscapedNames) -------------------------------------------------------------
    def name_location(self, name: str) -> str:
        return f"keyvault:{self.url}/secrets/{name}"

    # -- reads ----------------------------------------------------------------------------
    def _read(self, key: str, version: str | None = None) -> Secret | None:
        found = self.azure("read", [key], self.client.get_secret, self.escaped_name(key),
                           version, absent=True)
        if found is None or found.value is None:
            return None
        return self._secret(key, found.value, found.properties.version,
                            created_at=found.properties.created_on)

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        found = self.concurrently(self._read, keys)
        return {k: s for k, s in zip(keys, found) if s is not None}

    def _list(self, prefix: str) -> set[str]:
        names = self.azure("list", [prefix] if prefix else [],
                           lambda: [p.name for p in self.client.list_properties_of_secrets()])
        return {k for k in map(self.key_of, names) if k is not None and is_under(k, prefix)}

    # -- writes ---------------------------------------------------------------------------
    def _put(self, key: str, value: str) -> Secret:
        from azure.core.exceptions import ResourceExistsError

        name = self.escaped_name(key)
        try:
            written = self.azure("write", [key], self.client.set_secret, name, value)
        except BackendUnavailable as exc:
            if not isinstance(exc.__cause__, ResourceExistsError):
                raise
            # `rm` then `set`: the name is held by the soft-deleted secret; bring it back
            self.azure("recover", [key], lambda: self.client.begin_recover_deleted_secret(
                name).result())
            written = self.azure("write", [key], self.client.set_secret, name, value)
        return self._secret(key, value, written.properties.version,
                            created_at=written.properties.created_on)

    def _delete(self, key: str) -> bool:
        deleted = self.azure("delete", [key], lambda: self.client.begin_delete_secret(
            self.escaped_name(key)).result(), absent=True)
        return deleted is not None

    # -- versions -------------------------------------------------------------------------
    def _history(self, key: str) -> list[VersionInfo]:
        versions = self.azure("history", [key], lambda: list(
            self.client.list_properties_of_secret_versions(self.escaped_name(key))), absent=True)
        if not versions:
            return []
        current = None
        created = [p.created_on for p in versions]
        if len(set(created)) < len(created):  # Key Vault times are whole seconds: ask which
            latest = self._read(key)           # of the tied versions is the current one
            current = latest.version if latest else None
        versions.sort(key=lambda p: (p.created_on is None, p.created_on, p.version == current))
        return [VersionInfo(p.version, p.created_on, deleted=p.enabled is False)
                for p in versions]

    def _get_version(self, key: str, version: str) -> Secret | None:
        if not version or not all(c in string.hexdigits for c in version):
            return None
        return self._read(key, version)


def _counting_policy(backend: RemoteBackend) -> Any:
    """An azure-core per-retry policy counting retries and 429s into ``backend.stats``."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class Counting(SansIOHTTPPolicy[Any, Any]):
        def on_request(self, request: Any) -> None:
            attempt = request.context.get("pipekey_attempt", 0) + 1
            request.context["pipekey_attempt"] = attempt
            if attempt > 1:
                backend.count("retries")

        def on_response(self, request: Any, response: Any) -> None:
            if response.http_response.status_code == 429:
                backend.count("throttles")

    return Counting()


def _status(exc: Exception) -> int | None:
    status: int | None = getattr(exc, "status_code", None)
    return status


def _detail(exc: Exception) -> str:
    """The HTTP status and Key Vault's error code of an answer (``403 Forbidden``)."""
    code = getattr(getattr(exc, "error", None), "code", None) or ""
    return f"{_status(exc) or ''} {code}".strip()


def _azure_rows() -> Sequence[ErrorRow]:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    return (
        (lambda e: _status(e) in (401, 403), Cause.DENIED, None),
        (lambda e: _status(e) == 429, Cause.THROTTLED, None),
        (lambda e: isinstance(e, ClientAuthenticationError), Cause.NO_CREDENTIALS,  # no token
         "auth {auth}"),
        (lambda e: isinstance(e, HttpResponseError) and bool(_status(e)), Cause.FAILED, None),
    )


#: azure-core's errors as pipekey's, by HTTP status first, then by exception class
AZURE_ERRORS = ErrorTable("Key Vault", _azure_rows, _detail)
