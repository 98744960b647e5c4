"""``dynamodb``: a DynamoDB table of client-side encrypted values.

One item per key: the partition key ``key`` holds the key path, ``v`` the version, ``ct`` the
nonce and AES-256-GCM ciphertext (associated data: table, key and version), ``at``/``by``
when and by whom, ``hist`` the metadata of earlier versions. DynamoDB never sees a value.

Encryption (``encryption``):

* ``"local"``: pipekey's own key, as the local store's (``PIPEKEY_MASTER_KEY`` or a 0600
  key file);
* ``"kms"``: envelope encryption, a data key from KMS ``GenerateDataKey`` per write (stored
  encrypted in ``edk``, bound to the table and key by the encryption context), decrypted on
  read with ``Decrypt`` and cached for the process.

Writes are conditional on the version read, so two writers never lose an update: the loser
re-reads and writes the next version. Reads are ``BatchGetItem`` with 100 keys a call, the
calls concurrent, unprocessed keys retried with capped backoff.
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

from ..errors import BackendUnavailable, StoreCorrupt, UsageError
from ..keys import is_under
from .aws_common import AwsBackend, AwsConfig
from .base import (
    BackendConfig,
    BuildContext,
    Secret,
    VersionedBackend,
    VersionInfo,
    WritableBackend,
)
from .local_format import actor, load_aead

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["DynamoDbBackend"]

BATCH = 100
DATA_KEYS_CACHED = 1024
CONDITION_FAILED = ("ConditionalCheckFailedException",)
HISTORY_KEPT = 100
WRITE_ATTEMPTS = 20


class DynamoDbConfig(AwsConfig, kw_only=True):
    table: str
    encryption: Literal["local", "kms"] = "local"
    kms_key_id: str | None = None
    key_file: str = ".pipekey/master.key"
    consistent_read: bool = False
    unprocessed_retries: int = 8


class DynamoDbBackend(AwsBackend[DynamoDbConfig], WritableBackend, VersionedBackend):
    """Encrypted items in one DynamoDB table."""

    kind = "dynamodb"
    service = "dynamodb"
    Config = DynamoDbConfig
    max_value_bytes = 350_000  # an item holds 400 KB, with room for the history
    size_hint = "a DynamoDB item holds 400 KB"

    def __init__(self, name: str, config: DynamoDbConfig, master_key: str | None = None,
                 key_file: Path | None = None) -> None:
        super().__init__(name, config)
        if config.encryption == "kms" and not config.kms_key_id:
            raise UsageError(f"backend {name!r}: encryption = \"kms\" needs kms_key_id")
        self.table = config.table
        self._master_key = master_key
        self._key_file = key_file or Path(config.key_file)
        self._aead: AESGCM | None = None
        self._data_keys: dict[bytes, bytes] = {}
        self._keys_lock = threading.Lock()

    @classmethod
    def from_config(cls, name: str, config: BackendConfig, ctx: BuildContext) -> "DynamoDbBackend":
        backend = super().from_config(name, config, ctx)
        assert isinstance(backend, DynamoDbBackend)  # built by cls
        backend._key_file = ctx.path(backend.config.key_file)
        return backend

    def locate(self, key: str) -> str:
        return f"dynamodb:{self.table}#{key}"

    def check(self) -> str:
        table = self.call("describe_table", TableName=self.table)["Table"]
        return f"ok (table {self.table}, {table.get('ItemCount', '?')} items)"

    def init(self) -> dict[str, object]:
        """For ``pipekey init``: create the table if needed."""
        return {"table": self.table, "table_created": self.ensure_table(),
                "encryption": self.config.encryption}

    def ensure_table(self) -> bool:
        """Create the table (on-demand billing) if it does not exist; True if created."""
        if self.call("describe_table", missing=("ResourceNotFoundException",),
                     TableName=self.table) is not None:
            return False
        self.call("create_table", TableName=self.table, BillingMode="PAY_PER_REQUEST",
                  KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
                  AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}])
        self.client.get_waiter("table_exists").wait(TableName=self.table,
                                                    WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        return True

    # -- reads ----------------------------------------------------------------------------
    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        chunks = [list(keys[i:i + BATCH]) for i in range(0, len(keys), BATCH)]
        items = [item for batch in self.concurrently(self._batch_get, chunks) for item in batch]
        return {item["key"]["S"]: self._to_secret(item) for item in items}

    def _batch_get(self, keys: list[str]) -> list[dict[str, Any]]:
        request: dict[str, Any] = {self.table: {"Keys": [{"key": {"S": k}} for k in keys],
                                "ConsistentRead": self.config.consistent_read}}
        items: list[dict[str, Any]] = []
        for attempt in range(self.config.unprocessed_retries + 1):
            response = self.call("batch_get_item", keys, RequestItems=request)
            items += response.get("Responses", {}).get(self.table, [])
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return items
            time.sleep(min(1.0, 0.05 * 2 ** attempt))
        left = len(request.get(self.table, {}).get("Keys", []))
        raise BackendUnavailable(
            self.name, f"{left} keys still unprocessed after "
                       f"{self.config.unprocessed_retries} retries (throttled)")

    def _to_secret(self, item: dict[str, Any]) -> Secret:
        key, version = item["key"]["S"], int(item["v"]["N"])
        blob = item["ct"]["B"]
        edk = item.get("edk", {}).get("B")
        try:
            plain = self._cipher(key, edk).decrypt(blob[:12], blob[12:], self._ad(key, version))
        except Exception as exc:
            if exc.__class__.__name__ != "InvalidTag":
                raise
            raise StoreCorrupt(self.name, f"key {key!r} version {version} in table "
                                          f"{self.table} failed authentication (tampered, moved, "
                                          "or another master key)") from None
        return self._secret(key, plain.decode("utf-8"), str(version),
                            created_at=_time(item.get("at", {}).get("S")))

    def _list(self, prefix: str) -> Iterable[str]:
        kwargs: dict[str, Any] = {"TableName": self.table, "ProjectionExpression": "#k",
                                  "ExpressionAttributeNames": {"#k": "key"}}
        if prefix:
            kwargs["FilterExpression"] = "begins_with(#k, :p)"
            kwargs["ExpressionAttributeValues"] = {":p": {"S": prefix}}
        keys = []
        while True:
            page = self.call("scan", [prefix], **kwargs)
            keys += [i["key"]["S"] for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return [k for k in keys if is_under(k, prefix)]
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- writes ---------------------------------------------------------------------------
    def _put(self, key: str, value: str) -> Secret:
        for attempt in range(WRITE_ATTEMPTS):
            if attempt:  # another writer won: back off a little, with jitter, and re-read
                time.sleep(min(0.5, 0.01 * 2 ** attempt) * random.random())
            current = self.call("get_item", [key], TableName=self.table,
                                Key={"key": {"S": key}}, ConsistentRead=True).get("Item")
            version = int(current["v"]["N"]) + 1 if current else 1
            item = self._item(key, value, version, current)
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(#k)",
                                         "ExpressionAttributeNames": {"#k": "key"}}
            if current:
                condition = {"ConditionExpression": "#v = :v",
                             "ExpressionAttributeNames": {"#v": "v"},
                             "ExpressionAttributeValues": {":v": current["v"]}}
            if self.call("put_item", [key], missing=CONDITION_FAILED, TableName=self.table,
                         Item=item, **condition) is not None:
                return self._secret(key, value, str(version), created_at=_time(item["at"]["S"]))
        raise BackendUnavailable(self.name, f"{key!r}: {WRITE_ATTEMPTS} writes in a row lost to "
                                            "other writers; nothing was written")

    def _item(self, key: str, value: str, version: int,
              current: dict[str, Any] | None) -> dict[str, Any]:
        edk = self._new_data_key(key) if self.config.encryption == "kms" else None
        cipher = self._cipher(key, edk)
        nonce = os.urandom(12)
        blob = nonce + cipher.encrypt(nonce, value.encode("utf-8"), self._ad(key, version))
        now = datetime.now(timezone.utc).isoformat()
        history = (current or {}).get("hist", {}).get("L", [])
        if current:
            history = (history + [{"M": {"v": current["v"], "at": current["at"],
                                         "by": current["by"]}}])[-HISTORY_KEPT:]
        item = {"key": {"S": key}, "v": {"N": str(version)}, "ct": {"B": blob},
                "at": {"S": now}, "by": {"S": actor()}, "hist": {"L": history}}
        if edk is not None:
            item["edk"] = {"B": edk}
        return item

    def _delete(self, key: str) -> bool:
        return self.call("delete_item", [key], missing=CONDITION_FAILED, TableName=self.table,
                         Key={"key": {"S": key}}, ConditionExpression="attribute_exists(#k)",
                         ExpressionAttributeNames={"#k": "key"}) is not None

    # -- history --------------------------------------------------------------------------
    def _history(self, key: str) -> list[VersionInfo]:
        item = self.call("get_item", [key], TableName=self.table, Key={"key": {"S": key}},
                         ConsistentRead=True,  # metadata alone: not the ciphertext
                         ProjectionExpression="#v, #at, #by, #h",
                         ExpressionAttributeNames={"#v": "v", "#at": "at", "#by": "by",
                                                   "#h": "hist"}).get("Item")
        if not item:
            return []
        past = [entry["M"] for entry in item.get("hist", {}).get("L", [])]
        return [VersionInfo(e["v"]["N"], _time(e["at"]["S"]), e["by"]["S"])
                for e in [*past, item]]

    def _get_version(self, key: str, version: str) -> Secret | None:
        found = self.get_many([key]).get(key)  # only the newest value is kept
        return found if found is not None and found.version == version else None

    # -- encryption -----------------------------------------------------------------------
    def _ad(self, key: str, version: int) -> bytes:
        return b"\x00".join([b"pipekey/dynamodb/v1", self.table.encode(), key.encode(),
                             str(version).encode()])

    def _cipher(self, key: str, edk: bytes | None) -> AESGCM:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if self.config.encryption == "local":
            if self._aead is None:
                self._aead = load_aead(self.name, self._master_key, self._key_file,
                                       f"for table {self.table}")
            return self._aead
        if edk is None:
            raise StoreCorrupt(self.name, f"key {key!r} has no encrypted data key")
        with self._keys_lock:
            plain = self._data_keys.get(edk)
        if plain is None:
            plain = self.call("decrypt", [key], service="kms", CiphertextBlob=edk,
                              EncryptionContext=self._context(key))["Plaintext"]
            self._remember_key(edk, plain)
        return AESGCM(plain)

    def _remember_key(self, edk: bytes, plain: bytes) -> None:
        with self._keys_lock:
            self._data_keys[edk] = plain
            while len(self._data_keys) > DATA_KEYS_CACHED:
                self._data_keys.pop(next(iter(self._data_keys)))

    def _new_data_key(self, key: str) -> bytes:
        """A fresh data key from KMS; returns it encrypted, and caches the plaintext."""
        response = self.call("generate_data_key", [key], service="kms",
                             KeyId=self.config.kms_key_id, KeySpec="AES_256",
                             EncryptionContext=self._context(key))
        edk: bytes = response["CiphertextBlob"]
        self._remember_key(edk, response["Plaintext"])
        return edk

    def _context(self, key: str) -> dict[str, str]:
        return {"pipekey:table": self.table, "pipekey:key": key}


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
