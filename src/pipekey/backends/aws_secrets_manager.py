"""``aws_secrets_manager``: AWS Secrets Manager.

A key is the secret ``<prefix>/<key>``: the prefix is path-like, joined to the key by exactly one
``separator`` (``"/"``), so ``prefix = "bar/prod"`` (or ``"bar/prod/"``) puts
``connections/warehouse`` at ``bar/prod/connections/warehouse``. ``separator = ""`` joins raw
(``prefix = "lk-"`` reads ``lk-connections/warehouse``), for secrets named that way. A secret
holds one value, or a JSON document whose
fields are keys too: the secret ``connections/warehouse`` holding ``{"host": ..., "login":
..., "password": ...}`` answers ``connections/warehouse`` (the whole document, which
``Connection.from_value`` reads as Airflow's JSON form) and ``connections/warehouse/password``.
A secret of the key's own name wins over a document field. A secret read whole whose value is
a JSON object (or a field holding an object) is marked ``Secret.document``: it stands for the
subtree below its key, so a run reads it only where that whole subtree is allowed (a sibling
account's secret ``marketing/facebook/acct_43`` is acct_43's whole subtree).

Reads use ``BatchGetSecretValue`` (20 secrets a call, calls issued concurrently) for the
AWSCURRENT stage; another stage (``version_stage = "AWSPENDING"``) is read with one
``GetSecretValue`` per secret, concurrently, since the batch call cannot select a stage.
Binary secrets are returned base64-encoded. Writes store whole secrets (never a single field of
a document, which would race with other writers).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable, Sequence

from ..errors import AccessDenied, BackendUnavailable
from ..keys import is_under, validate_key
from .aws_common import DENIED_CODES, AwsBackend, AwsConfig
from .base import (
    BackendConfig,
    Secret,
    VersionedBackend,
    VersionInfo,
    WritableBackend,
    join_prefix,
    prefix_head,
    split_prefix,
)

__all__ = ["SecretsManagerBackend"]

BATCH = 20
MAX_SIZE = 65536
NOT_FOUND = ("ResourceNotFoundException",)


class SecretsManagerConfig(AwsConfig):
    prefix: str = ""
    #: joins prefix and key; "" concatenates them raw
    separator: str = "/"
    version_stage: str = "AWSCURRENT"
    documents: bool = True
    kms_key_id: str | None = None
    recovery_window_days: int = 7


class SecretsManagerBackend(AwsBackend[SecretsManagerConfig], WritableBackend, VersionedBackend):
    """Secrets Manager secrets under a name prefix."""

    kind = "aws_secrets_manager"
    service = "secretsmanager"
    Config = SecretsManagerConfig
    max_value_bytes = MAX_SIZE
    size_hint = "Secrets Manager's limit for one secret"

    def __init__(self, name: str, config: SecretsManagerConfig) -> None:
        super().__init__(name, config)
        self.prefix = config.prefix
        self.separator = config.separator

    @classmethod
    def name_head(cls, config: BackendConfig) -> str | None:
        assert isinstance(config, SecretsManagerConfig)
        return prefix_head(config.prefix, config.separator)

    def locate(self, key: str) -> str:
        return f"secretsmanager:{self.secret_id(key)}"

    def check(self) -> str:
        self.call("list_secrets", MaxResults=1)
        return f"ok (prefix {self.prefix or '(none)'})"

    def secret_id(self, key: str) -> str:
        """The exact secret name of ``key`` (or of a listing prefix; "" is every secret)."""
        return join_prefix(self.prefix, key, self.separator)

    def store_name(self, key: str) -> str:
        return self.secret_id(key)

    # -- reads ----------------------------------------------------------------------------
    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        wanted = list(keys)
        if self.config.documents:
            wanted += [k.rsplit("/", 1)[0] for k in keys if "/" in k]
        secrets = self._fetch(list(dict.fromkeys(self.secret_id(k) for k in wanted)), keys)
        out = {}
        for key in keys:
            own = secrets.get(self.secret_id(key))
            if own is not None:
                text = _text(own)
                out[key] = self._secret(key, text, own.get("VersionId"),
                                        created_at=own.get("CreatedDate"),
                                        document=self.config.documents and _is_object(text))
            elif self.config.documents and "/" in key:
                parent, field = key.rsplit("/", 1)
                document = secrets.get(self.secret_id(parent))
                value = _field(document, field) if document else None
                if document is not None and value is not None:
                    out[key] = self._secret(key, value, document.get("VersionId"),
                                            created_at=document.get("CreatedDate"),
                                            document=_is_object(value))
        return out

    def _fetch(self, ids: list[str], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.config.version_stage != "AWSCURRENT":
            def one_staged(secret_id: str) -> dict[str, Any] | None:
                return self.call("get_secret_value", keys, SecretId=secret_id,
                                 missing=(*NOT_FOUND, "InvalidRequestException"),
                                 VersionStage=self.config.version_stage)
            found = self.concurrently(one_staged, ids)
            return {s["Name"]: s for s in found if s is not None}

        def one_batch(batch: list[str]) -> list[dict[str, Any]]:
            response = self.call("batch_get_secret_value", keys, SecretIdList=batch)
            for error in response.get("Errors", []):
                self._raise_batch_error(error, keys)
            values: list[dict[str, Any]] = response.get("SecretValues", [])
            return values

        chunks = [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)]
        return {s["Name"]: s for batch in self.concurrently(one_batch, chunks) for s in batch}

    def _raise_batch_error(self, error: dict[str, Any], keys: Sequence[str]) -> None:
        code = error.get("ErrorCode", "")
        if code in NOT_FOUND or _scheduled_for_deletion(code, error.get("Message", "")):
            return
        where = error.get("SecretId", "?")
        if code in DENIED_CODES:
            raise AccessDenied(f"backend {self.name!r}: AWS denied reading {where!r} ({code})")
        raise BackendUnavailable(self.name, f"reading {where!r} failed ({code})")

    def _list(self, prefix: str) -> Iterable[str]:
        kwargs: dict[str, Any] = {"MaxResults": 100, "IncludePlannedDeletion": False}
        name = self.secret_id(prefix)
        if name:
            kwargs["Filters"] = [{"Key": "name", "Values": [name]}]
        keys: set[str] = set()
        token = None
        while True:
            if token:
                kwargs["NextToken"] = token
            page = self.call("list_secrets", [prefix], **kwargs)
            for entry in page.get("SecretList", []):
                key = self._key_of(entry["Name"])
                if key is not None and is_under(key, prefix):
                    keys.add(key)
            token = page.get("NextToken")
            if not token:
                return keys

    def _key_of(self, name: str) -> str | None:
        key = split_prefix(self.prefix, name, self.separator)
        if key is None:
            return None
        try:
            return validate_key(key)
        except ValueError:
            return None

    # -- writes ---------------------------------------------------------------------------
    def _put(self, key: str, value: str) -> Secret:
        sid = self.secret_id(key)
        described = self.call("describe_secret", [key], missing=NOT_FOUND, SecretId=sid)
        if described is None:
            kwargs: dict[str, Any] = {"Name": sid, "SecretString": value}
            if self.config.kms_key_id:
                kwargs["KmsKeyId"] = self.config.kms_key_id
            response = self.call("create_secret", [key], **kwargs)
        else:
            if described.get("DeletedDate"):  # `rm` then `set`: bring it back first
                self.call("restore_secret", [key], SecretId=sid)
            response = self.call("put_secret_value", [key], SecretId=sid, SecretString=value)
        return self._secret(key, value, response.get("VersionId"))

    def _delete(self, key: str) -> bool:
        kwargs: dict[str, Any] = {"SecretId": self.secret_id(key)}
        if self.config.recovery_window_days:
            kwargs["RecoveryWindowInDays"] = self.config.recovery_window_days
        else:
            kwargs["ForceDeleteWithoutRecovery"] = True
        try:
            return self.call("delete_secret", [key], missing=NOT_FOUND, **kwargs) is not None
        except BackendUnavailable as exc:
            if self._marked_deleted(exc):  # deleted already, waiting out its recovery window
                return False
            raise

    def _marked_deleted(self, exc: BackendUnavailable) -> bool:
        cause = exc.__cause__
        return cause is not None and _scheduled_for_deletion(self.error_code(cause), str(cause))

    # -- history --------------------------------------------------------------------------
    def _history(self, key: str) -> list[VersionInfo]:
        if self.call("describe_secret", [key], missing=NOT_FOUND,
                     SecretId=self.secret_id(key)) is None:
            return []
        response = self.call("list_secret_version_ids", [key], SecretId=self.secret_id(key),
                             IncludeDeprecated=True)
        versions = sorted(response.get("Versions", []), key=lambda v: v.get("CreatedDate"))
        return [VersionInfo(v["VersionId"], v.get("CreatedDate"),
                            ",".join(v.get("VersionStages", [])) or None) for v in versions]

    def _get_version(self, key: str, version: str) -> Secret | None:
        if not 32 <= len(version) <= 64:  # not a VersionId: no such version
            return None
        found = self.call("get_secret_value", [key],
                          missing=(*NOT_FOUND, "InvalidRequestException"),
                          SecretId=self.secret_id(key), VersionId=version)
        if found is None:
            return None
        return self._secret(key, _text(found), found.get("VersionId"),
                            created_at=found.get("CreatedDate"))


def _scheduled_for_deletion(code: str, message: str) -> bool:
    # AWS: "...because it was marked for deletion."; moto: "...currently marked deleted."
    return code == "InvalidRequestException" and "marked" in message.lower() \
        and "delet" in message.lower()


def _text(secret: dict[str, Any]) -> str:
    if secret.get("SecretString") is not None:
        text: str = secret["SecretString"]
        return text
    return base64.b64encode(secret.get("SecretBinary") or b"").decode("ascii")


def _is_object(text: str) -> bool:
    """True if ``text`` is a JSON object: with documents on, it stands for a subtree."""
    if not text.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _field(document: dict[str, Any], field: str) -> str | None:
    try:
        data = json.loads(_text(document))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or field not in data or data[field] is None:
        return None
    value = data[field]
    return value if isinstance(value, str) else json.dumps(value)
