"""``gcp_secret_manager``: Google Cloud Secret Manager, through google-cloud-secret-manager.

A key is the secret ``<prefix>--<name>`` in ``project`` (the prefix is path-like, joined by
one ``separator``, ``--``, as ``/`` is written; ``separator = ""`` joins raw), where ``<name>``
is the key written
in Secret Manager's alphabet (``[A-Za-z0-9_-]``, at most 255 characters) by a reversible
mapping: ``/`` becomes ``--``, and ``.`` and ``-`` become ``-2e`` and ``-2d`` (``-`` and two
hex digits); letters, digits and ``_`` stay. ``marketing/facebook/acct_42/access_token`` is
the secret ``marketing--facebook--acct_42--access_token``. Listing maps names back and skips
secrets whose names are not such a mapping.

Reads access version ``version`` (``"latest"`` or a pinned number) of each secret, one
request per key, issued concurrently (``max_concurrency`` at once); each payload's CRC32C is
checked. 429 (TooManyRequests), 500, 502, 503 and 504 are retried with backoff up to
``max_attempts`` attempts in all; the SDK's default policy retries only gRPC's
RESOURCE_EXHAUSTED and UNAVAILABLE, never HTTP 429 on the REST transport, and nothing on most
methods. Writes add a version (creating the secret with ``labels`` on first write). ``labels``
also filter ``list`` (and so ``ls`` and ``copy``).
"""

from __future__ import annotations

import base64
import os
import string
from typing import Any, Literal, Sequence

from .._schema import field_problem
from .._sdk import secretmanager_module
from ..errors import (
    BackendUnavailable,
    PipekeyError,
    StoreCorrupt,
    UsageError,
)
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

__all__ = ["GcpSecretManagerBackend", "GcpSecretManagerConfig"]

LITERAL = string.ascii_letters + string.digits + "_"
MAX_NAME = 255
MAX_SIZE = 65536


class GcpSecretManagerConfig(BackendConfig):
    project: str | None = None          # default: $GOOGLE_CLOUD_PROJECT
    prefix: str = ""
    #: joins prefix and name: "--", how these names write a key's "/"; "" joins raw
    separator: str = "--"
    labels: dict[str, str] = {}
    version: str = "latest"
    endpoint: str | None = None         # an emulator or private endpoint, http(s)://host:port
    transport: Literal["rest", "grpc"] = "rest"
    credentials: Literal["default", "anonymous"] = "default"
    credentials_file: str | None = None  # a service-account JSON file; default: ADC
    timeout: float = 10.0
    max_attempts: int = 5
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        for name, value in (("prefix", self.prefix), ("separator", self.separator)):
            bad = sorted({c for c in value if c not in LITERAL + "-{}"})
            if bad:
                raise field_problem(name, "may hold only letters, digits, '_' and '-' "
                                          f"(found {bad[0]!r})")
        if self.version != "latest" and not self.version.isdigit():
            raise field_problem("version", "is 'latest' or a version number")


class GcpSecretManagerBackend(EscapedNames, RemoteBackend, WritableBackend,
                              VersionedBackend):
    """Secrets of one GCP project under a name prefix."""

    kind = "gcp_secret_manager"
    Config = GcpSecretManagerConfig
    max_value_bytes = MAX_SIZE
    size_hint = "Secret Manager's limit for one secret version"
    name_literal, name_max, name_store = LITERAL, MAX_NAME, "Secret Manager"

    def __init__(self, name: str, config: GcpSecretManagerConfig) -> None:
        super().__init__(name)
        self.config = config
        self.project = config.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or ""
        if not self.project:
            raise UsageError(f"backend {name!r}: no GCP project: set project or "
                             "$GOOGLE_CLOUD_PROJECT")
        self.prefix = prefix_head(config.prefix, config.separator)  # "lk" -> "lk--"
        self.max_concurrency = config.max_concurrency

    @classmethod
    def name_head(cls, config: BackendConfig) -> str | None:
        assert isinstance(config, GcpSecretManagerConfig)
        return prefix_head(config.prefix, config.separator)

    @classmethod
    def env_problem(cls, env: str, config: BackendConfig) -> str | None:
        """The prefix is written as it is: a '.' cannot be in a secret's name."""
        bad = sorted({c for c in env if c not in LITERAL + "-"})
        if bad:
            return f"{bad[0]!r} cannot appear in a Secret Manager name"
        return super().env_problem(env, config)

    # -- the client -----------------------------------------------------------------------
    def _make_client(self) -> Any:
        secretmanager = secretmanager_module()
        from google.api_core.client_options import ClientOptions

        credentials: Any = None
        if self.config.credentials == "anonymous":
            from google.auth.credentials import AnonymousCredentials

            # google-auth leaves these two unannotated
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        elif self.config.credentials_file:
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                self.config.credentials_file,
                scopes=["https://www.googleapis.com/auth/cloud-platform"])
        options = ClientOptions(api_endpoint=self.config.endpoint) if self.config.endpoint else None
        return secretmanager.SecretManagerServiceClient(
            credentials=credentials, transport=self.config.transport, client_options=options)

    def _retry(self, writes: bool = False) -> Any:
        """A retry policy bounded by ``max_attempts``, counting retries and throttles."""
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry

        retried = (gexc.TooManyRequests, gexc.ServiceUnavailable) if writes else (
            gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway,
            gexc.ServiceUnavailable, gexc.GatewayTimeout)
        attempts = [1]

        def predicate(exc: Exception) -> bool:
            if not isinstance(exc, retried) or attempts[0] >= self.config.max_attempts:
                return False
            attempts[0] += 1
            self.count("retries")
            if isinstance(exc, gexc.TooManyRequests):
                self.count("throttles")
            return True

        return Retry(predicate=predicate, initial=0.1, maximum=5.0, multiplier=2.0,
                     timeout=self.config.timeout * self.config.max_attempts)

    def gcp(self, what: str, keys: Sequence[str], method: str, absent: bool = False,
            writes: bool = False, pages: bool = False, **request: Any) -> Any:
        """Call ``method`` on the client with pipekey's retry and timeout, counted.

        Returns None for NOT_FOUND when ``absent``; with ``pages``, every item of every page
        (the pager's further pages use the same retry and timeout).
        """
        secretmanager_module()  # without the gcp extra: the pip line, not a failed read
        from google.api_core import exceptions as gexc

        def call() -> Any:
            result = getattr(self.client, method)(request=request, retry=self._retry(writes),
                                                  timeout=self.config.timeout)
            if pages:
                return list(result)
            return True if result is None else result  # None means "absent" only (delete: Empty)

        return self.counted(what, keys, call,
                            absent=lambda exc: absent and isinstance(exc, gexc.NotFound))

    def translate(self, exc: Exception, what: str, keys: Sequence[str]) -> PipekeyError:
        where = f"{what} for {describe_keys(keys)}" if keys else what
        return GCP_ERRORS.translate(exc, self.name, where, self.config.max_attempts)

    def describe(self) -> str:
        where = self.config.endpoint or "secretmanager.googleapis.com"
        return f"gcp_secret_manager (project {self.project}, {where}, {self.config.transport})"

    def check(self) -> str:
        self.gcp("list_secrets", [], "list_secrets", parent=f"projects/{self.project}",
                 page_size=1)
        return f"ok (project {self.project})"

    # -- names (EscapedNames) -------------------------------------------------------------
    def secret_path(self, key: str) -> str:
        return f"projects/{self.project}/secrets/{self.escaped_name(key)}"

    def name_location(self, name: str) -> str:
        return f"gcp:projects/{self.project}/secrets/{name}"

    # -- reads ----------------------------------------------------------------------------
    def _access(self, key: str, version: str) -> Secret | None:
        found = self.gcp("read", [key], "access_secret_version", absent=True,
                         name=f"{self.secret_path(key)}/versions/{version}")
        if found is None:
            return None
        data = found.payload.data
        if found.payload.data_crc32c is not None and found.payload.data_crc32c != _crc32c(data):
            raise StoreCorrupt(self.name, f"the payload of {key!r} failed its CRC32C check")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            value = base64.b64encode(data).decode("ascii")  # binary secrets, as Secrets Manager
        return self._secret(key, value, found.name.rsplit("/", 1)[1])

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        found = self.concurrently(lambda k: self._access(k, self.config.version), keys)
        return {k: s for k, s in zip(keys, found) if s is not None}

    def _list(self, prefix: str) -> set[str]:
        terms = [f"name:{self.prefix}"] if self.prefix else []
        terms += [f"labels.{k}={v}" for k, v in sorted(self.config.labels.items())]
        secrets = self.gcp("list", [prefix] if prefix else [], "list_secrets", pages=True,
                           parent=f"projects/{self.project}", filter=" AND ".join(terms),
                           page_size=250)
        keys = set()
        for secret in secrets:
            key = self.key_of(secret.name.rsplit("/", 1)[1])
            if key is not None and is_under(key, prefix):  # the filter matched labels
                keys.add(key)
        return keys

    # -- writes ---------------------------------------------------------------------------
    def _put(self, key: str, value: str) -> Secret:
        data = value.encode("utf-8")
        payload = {"data": data, "data_crc32c": _crc32c(data)}
        added = self.gcp("write", [key], "add_secret_version", absent=True, writes=True,
                         parent=self.secret_path(key), payload=payload)
        if added is None:  # first write: create the secret, then add the version
            self._create(key)
            added = self.gcp("write", [key], "add_secret_version", writes=True,
                             parent=self.secret_path(key), payload=payload)
        return self._secret(key, value, added.name.rsplit("/", 1)[1])

    def _create(self, key: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.gcp("create", [key], "create_secret", writes=True,
                     parent=f"projects/{self.project}", secret_id=self.escaped_name(key),
                     secret={"replication": {"automatic": {}}, "labels": self.config.labels})
        except BackendUnavailable as exc:
            if not isinstance(exc.__cause__, gexc.AlreadyExists):  # another writer made it
                raise

    def _delete(self, key: str) -> bool:
        return self.gcp("delete", [key], "delete_secret", absent=True,
                        name=self.secret_path(key)) is not None

    # -- versions -------------------------------------------------------------------------
    def _history(self, key: str) -> list[VersionInfo]:
        versions = self.gcp("history", [key], "list_secret_versions", absent=True, pages=True,
                            parent=self.secret_path(key), page_size=250)
        if versions is None:
            return []
        out = [VersionInfo(v.name.rsplit("/", 1)[1], v.create_time or None,
                           deleted=v.state.name != "ENABLED") for v in versions]
        return sorted(out, key=lambda v: int(v.version))

    def _get_version(self, key: str, version: str) -> Secret | None:
        if not version.isdigit():
            return None
        from google.api_core import exceptions as gexc

        try:
            return self._access(key, version)
        except BackendUnavailable as exc:
            if isinstance(exc.__cause__, gexc.GoogleAPICallError) and \
                    _status(exc.__cause__) == "FAILED_PRECONDITION":  # disabled or destroyed
                return None
            raise


def _status(exc: Any) -> str:
    """Google's status name of an API error (``NOT_FOUND``, ``FAILED_PRECONDITION``...):
    the gRPC code, or on REST the ``error.status`` of the answer (HTTP 400 alone does not
    tell a destroyed version from a bad argument)."""
    code = getattr(exc, "grpc_status_code", None)
    if code is not None:
        name: str = code.name
        return name
    try:
        return str(exc.response.json()["error"]["status"])
    except Exception:  # no JSON answer: the exception's class says what HTTP said
        return type(exc).__name__


def _detail(exc: Exception) -> str:
    """The HTTP code and Google's status of an API error (``403 PERMISSION_DENIED``)."""
    code = getattr(exc, "code", None)
    return f"{code} {_status(exc)}" if code else _status(exc)


def _gcp_rows() -> Sequence[ErrorRow]:
    from google.api_core import exceptions as gexc

    return (
        (lambda e: isinstance(e, (gexc.Forbidden, gexc.Unauthorized)), Cause.DENIED, None),
        (lambda e: isinstance(e, gexc.TooManyRequests), Cause.THROTTLED, None),
        (lambda e: isinstance(e, gexc.GoogleAPICallError), Cause.FAILED, None),
        (lambda e: isinstance(e, gexc.RetryError), Cause.TIMED_OUT, "{type}"),
        (lambda e: type(e).__name__ == "DefaultCredentialsError", Cause.NO_CREDENTIALS,
         "set up Application Default Credentials"),
    )


#: google-api-core's errors as pipekey's (gRPC and REST alike), by exception class
GCP_ERRORS = ErrorTable("GCP", _gcp_rows, _detail)


def _crc32c(data: bytes) -> int:
    import google_crc32c

    checksum: int = google_crc32c.value(data)
    return checksum
