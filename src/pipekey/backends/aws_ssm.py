"""``aws_ssm``: AWS Systems Manager Parameter Store.

A key is a parameter under ``prefix``: with ``prefix = "/data-platform/{env}"`` the key
``marketing/facebook/acct_42/access_token`` is ``/data-platform/prod/marketing/facebook/
acct_42/access_token``. Reads are ``GetParameters`` with ten names a call, the calls of one
batch issued concurrently, SecureStrings decrypted; ``get_tree`` reads a whole prefix with
``GetParametersByPath`` (recursive, paginated). Writes are SecureString (with ``kms_key_id``
if set) and keep SSM's version history.

Size: a Standard parameter holds 4 KB, an Advanced one 8 KB; SSM rejects larger values, and
moto does not, so pipekey checks before calling AWS. With ``split = true`` a larger value is
stored as numbered chunks under ``<name>/__pipekey_chunks/<digest>/`` and a small header in
the parameter itself; reads reassemble it and check its SHA-256. Chunks of a new value are
written before its header, and the old chunks removed after, so a failed write leaves the
previous value readable.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Literal, Sequence

from ..errors import StoreCorrupt, UsageError
from ..keys import is_under, validate_key
from .aws_common import AwsBackend, AwsConfig
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

__all__ = ["SsmBackend"]

TIER_LIMITS = {"Standard": 4096, "Advanced": 8192, "Intelligent-Tiering": 8192}
CHUNKS = "__pipekey_chunks"
HEADER = "pipekey-chunks:v1:"
BATCH = 10


class SsmConfig(AwsConfig):
    prefix: str = "/pipekey"
    kms_key_id: str | None = None
    tier: Literal["Standard", "Advanced", "Intelligent-Tiering"] = "Standard"
    split: bool = False


class SsmBackend(AwsBackend[SsmConfig], WritableBackend, VersionedBackend):
    """Parameter Store under a path prefix."""

    kind = "aws_ssm"
    service = "ssm"
    Config = SsmConfig
    history_reads_values = True  # GetParameterHistory returns each version's value

    def __init__(self, name: str, config: SsmConfig) -> None:
        super().__init__(name, config)
        prefix = config.prefix.rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise UsageError(f"backend {name!r}: an SSM prefix starts with '/' ({prefix!r})")
        self.prefix = prefix
        self.limit = TIER_LIMITS[config.tier]
        self.max_value_bytes = None if config.split else self.limit
        self.chunk_bytes = self.limit if config.split else None
        self.size_hint = ("set tier = \"Advanced\" for 8 KB, or split = true to store it in "
                          "chunks") if config.tier == "Standard" else "set split = true"

    @classmethod
    def name_head(cls, config: BackendConfig) -> str | None:
        assert isinstance(config, SsmConfig)
        return prefix_head(config.prefix.rstrip("/") or "/")

    def locate(self, key: str) -> str:
        return f"ssm:{self.param(key)}"

    def check(self) -> str:
        self.call("get_parameters_by_path", Path=self.prefix or "/", Recursive=True,
                  MaxResults=1, WithDecryption=False)
        return f"ok (prefix {self.prefix or '/'})"

    def param(self, key: str) -> str:
        return join_prefix(self.prefix or "/", key)

    def store_name(self, key: str) -> str | None:
        return None if self.unmappable(key) is not None else self.param(key)

    def unmappable(self, key: str) -> str | None:
        if CHUNKS in key.split("/"):  # would read or overwrite a chunk of another key's value
            return f"a segment named {CHUNKS!r} is where split values keep their chunks"
        return None

    def key_of(self, name: str) -> str | None:
        key = split_prefix(self.prefix or "/", name)
        if key is None:
            return None
        if CHUNKS in key.split("/"):
            return None
        try:
            return validate_key(key)
        except ValueError:
            return None

    # -- reads ----------------------------------------------------------------------------
    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        found = self._fetch([self.param(k) for k in keys], keys)
        out = {}
        for key in keys:
            param = found.get(self.param(key))
            if param is not None:
                out[key] = self._to_secret(key, param)
        return out

    def _fetch(self, names: Sequence[str], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """GetParameters in calls of ten, concurrently; {name: parameter} for those found."""
        chunks = [list(names[i:i + BATCH]) for i in range(0, len(names), BATCH)]

        def one(batch: list[str]) -> list[dict[str, Any]]:
            params: list[dict[str, Any]] = self.call("get_parameters", keys, Names=batch,
                                                     WithDecryption=True)["Parameters"]
            return params

        return {p["Name"]: p for batch in self.concurrently(one, chunks) for p in batch}

    def _to_secret(self, key: str, param: dict[str, Any]) -> Secret:
        value = param["Value"]
        if value.startswith(HEADER):
            value = self._reassemble(key, value)
        return self._secret(key, value, str(param.get("Version")),
                            created_at=param.get("LastModifiedDate"))

    def _reassemble(self, key: str, header: str) -> str:
        count, digest, tag = _parse_header(self.name, key, header)
        names = [self._chunk_name(key, tag, i) for i in range(count)]
        found = self._fetch(names, [key])
        if len(found) != count:
            raise StoreCorrupt(self.name, f"{key!r}: {count - len(found)} of {count} chunks "
                                          "are missing")
        value = "".join(found[n]["Value"] for n in names)
        if hashlib.sha256(value.encode()).hexdigest() != digest:
            raise StoreCorrupt(self.name, f"{key!r}: the reassembled chunks fail their "
                                          "SHA-256 check")
        return value

    def _list(self, prefix: str) -> Iterable[str]:
        """Names only, by ``DescribeParameters`` with a recursive Path filter: metadata, no
        value (``GetParametersByPath`` would return String values and SecureString
        ciphertext)."""
        path = self.param(prefix) if prefix else (self.prefix or "/")
        found = self._describe([{"Key": "Path", "Option": "Recursive", "Values": [path]}],
                               [prefix])
        keys = {k for meta in found
                if (k := self.key_of(meta["Name"])) is not None and is_under(k, prefix)}
        if prefix and self.versions([prefix]):
            keys.add(prefix)  # a Path filter lists what is below a path, not the path
        return keys

    def _describe(self, filters: list[dict[str, Any]],
                  keys: Sequence[str]) -> list[dict[str, Any]]:
        """``DescribeParameters`` pages (metadata only: no value, no KMS decrypt)."""
        kwargs: dict[str, Any] = {"ParameterFilters": filters, "MaxResults": 50}
        out: list[dict[str, Any]] = []
        while True:
            page = self.call("describe_parameters", keys, **kwargs)
            out += page.get("Parameters", [])
            if not page.get("NextToken"):
                return out
            kwargs["NextToken"] = page["NextToken"]

    def _by_path(self, path: str, decrypt: bool) -> list[dict[str, Any]]:
        params: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"Path": path, "Recursive": True,
                                      "WithDecryption": decrypt, "MaxResults": 10}
            if token:
                kwargs["NextToken"] = token
            page = self.call("get_parameters_by_path", [path], **kwargs)
            params.extend(page["Parameters"])
            token = page.get("NextToken")
            if not token:
                return params

    def get_tree(self, prefix: str) -> dict[str, Secret]:
        """Every key at or below ``prefix`` with its value, by GetParametersByPath."""
        path = self.param(prefix) if prefix else (self.prefix or "/")

        def read() -> dict[str, Secret]:
            pairs = [(self.key_of(p["Name"]), p) for p in self._by_path(path, decrypt=True)]
            return {k: self._to_secret(k, p) for k, p in pairs
                    if k is not None and is_under(k, prefix)}

        return self._guard("read", read)

    def versions(self, keys: Sequence[str]) -> dict[str, VersionInfo]:
        """Current versions by ``DescribeParameters`` (metadata only: no value, no KMS
        decrypt), 50 names a call: the cache's cheap probe.

        With ``LastModifiedDate``: a parameter deleted and put again is numbered from 1
        again, so the version alone would call a re-created value unchanged.
        """
        names = [self.param(k) for k in keys]
        found: dict[str, VersionInfo] = {}
        for i in range(0, len(names), 50):
            filters = [{"Key": "Name", "Option": "Equals", "Values": names[i:i + 50]}]
            for meta in self._describe(filters, keys):
                key = self.key_of(meta["Name"])
                if key is not None:
                    found[key] = VersionInfo(str(meta.get("Version")),
                                             meta.get("LastModifiedDate"))
        return found

    # -- writes ---------------------------------------------------------------------------
    def _put(self, key: str, value: str) -> Secret:
        size = len(value.encode("utf-8"))
        old = self._fetch([self.param(key)], [key]).get(self.param(key))
        if size <= self.limit:
            version = self._put_param(self.param(key), value, key)
        else:  # larger values reach here only with split = true (see Backend.put)
            version = self._put_split(key, value)
        if old is not None and old["Value"].startswith(HEADER):
            self._delete_chunks(key, old["Value"])
        return self._secret(key, value, str(version))

    def _put_param(self, name: str, value: str, key: str) -> int:
        kwargs: dict[str, Any] = {"Name": name, "Value": value, "Type": "SecureString",
                                  "Overwrite": True, "Tier": self.config.tier}
        if self.config.kms_key_id:
            kwargs["KeyId"] = self.config.kms_key_id
        version: int = self.call("put_parameter", [key], **kwargs)["Version"]
        return version

    def _put_split(self, key: str, value: str) -> int:
        digest = hashlib.sha256(value.encode()).hexdigest()
        tag = digest[:12]
        pieces = _split_utf8(value, self.limit)
        written = []
        try:
            for i, piece in enumerate(pieces):
                self._put_param(self._chunk_name(key, tag, i), piece, key)
                written.append(self._chunk_name(key, tag, i))
            return self._put_param(self.param(key), f"{HEADER}{len(pieces)}:{digest}:{tag}", key)
        except Exception:
            for name in written:  # best effort: the old header still points at old chunks
                self._delete_quietly(name)
            raise

    def _chunk_name(self, key: str, tag: str, index: int) -> str:
        return f"{self.param(key)}/{CHUNKS}/{tag}/{index:04d}"

    def _delete_chunks(self, key: str, header: str) -> None:
        count, _, tag = _parse_header(self.name, key, header)
        for i in range(count):
            self._delete_quietly(self._chunk_name(key, tag, i))

    def _delete_quietly(self, name: str) -> None:
        try:
            self.call("delete_parameter", [name], Name=name, missing=("ParameterNotFound",))
        except Exception:  # cleanup of orphaned chunks; the value itself is consistent
            pass

    def _delete(self, key: str) -> bool:
        old = self._fetch([self.param(key)], [key]).get(self.param(key))
        if old is None:
            return False
        self.call("delete_parameter", [key], Name=self.param(key), missing=("ParameterNotFound",))
        if old["Value"].startswith(HEADER):
            self._delete_chunks(key, old["Value"])
        return True

    # -- history --------------------------------------------------------------------------
    def _history(self, key: str) -> list[VersionInfo]:
        versions: list[VersionInfo] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"Name": self.param(key), "WithDecryption": False,
                                      "MaxResults": 50}
            if token:
                kwargs["NextToken"] = token
            page = self.call("get_parameter_history", [key], missing=("ParameterNotFound",),
                             **kwargs)
            if page is None:
                return versions
            versions += [VersionInfo(str(p["Version"]), p.get("LastModifiedDate"),
                                     p.get("LastModifiedUser")) for p in page["Parameters"]]
            token = page.get("NextToken")
            if not token:
                return sorted(versions, key=lambda v: int(v.version))

    def _get_version(self, key: str, version: str) -> Secret | None:
        found = self.call("get_parameter", [key], Name=f"{self.param(key)}:{version}",
                          WithDecryption=True,
                          missing=("ParameterNotFound", "ParameterVersionNotFound"))
        return None if found is None else self._to_secret(key, found["Parameter"])


def _parse_header(backend: str, key: str, header: str) -> tuple[int, str, str]:
    try:
        count, digest, tag = header[len(HEADER):].split(":")
        return int(count), digest, tag
    except ValueError:
        raise StoreCorrupt(backend, f"{key!r}: a malformed chunk header") from None


def _split_utf8(value: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` bytes each, never cutting a character in two."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    pieces.append("".join(current))
    return pieces
