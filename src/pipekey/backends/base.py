"""The backend contract every secret store implements.

A backend is one secret store. Its contract:

* ``get_many(keys)`` is the read. It returns a dict holding a :class:`Secret` for every key
  the store holds; a key the store does not hold is simply missing from the dict ("absent").
  Every other outcome raises: a network failure, a permission error, a corrupt file, a bad
  reply. A failure is never reported as absence.
* ``list_keys(prefix)`` returns the keys at or below ``prefix`` (segment boundary: ``a/b``
  does not match ``a/bc``), sorted.
* One key, one stored item: ``store_name(key)`` names the item a key addresses, and two
  distinct keys never share one (the mapping is injective). A key the store cannot map
  reversibly (``unmappable(key)`` says why) is absent for reads and refused for writes.
* Errors raised are :class:`~pipekey.errors.PipekeyError` subclasses naming the backend;
  anything else escaping an implementation is wrapped in ``BackendUnavailable`` here.

Optional capabilities are small protocols, checked with ``isinstance``; a backend has the
methods of the capabilities it supports and no others:

* :class:`Writable`: ``put(key, value)`` and ``delete(key)``. A failed write leaves the store
  as it was. A backend without them is read-only (callers raise ``ReadOnlyBackend``).
* :class:`Versioned`: ``history(key)`` and ``get_version(key, version)``.
* :class:`VersionProbe`: ``versions(keys)``, the current version of each key without reading
  a value (a cache renews unchanged entries with it). The version and ``created_at`` it
  reports together change on any change of value, a delete and re-create included.
* :class:`Invalidates`: ``invalidate(keys)`` forgets what it holds for those keys (a cache).
* :class:`Initialisable`: ``init()`` sets the store up (``pipekey init``): the local store's
  file and key, a DynamoDB table.

A wrapper (the cache) has exactly the capabilities of what it wraps, forwarding each one
explicitly; nothing probes a backend with ``hasattr`` or ``getattr``, and nothing outside a
wrapper reaches behind it except through :meth:`Backend.origin`.

Subclasses implement the underscored methods; the public ones validate keys and translate
errors so that each store does not repeat it. :class:`WritableBackend` and
:class:`VersionedBackend` are the bases that add ``Writable`` and ``Versioned``.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import (
    Annotated,
    Callable,
    ClassVar,
    Iterable,
    Protocol,
    Sequence,
    TypeVar,
    runtime_checkable,
)

from msgspec import Meta, Struct

from .. import metrics
from ..errors import (
    BackendUnavailable,
    InvalidKey,
    PipekeyError,
    ReadOnlyBackend,
    UsageError,
    ValueTooLarge,
)
from ..keys import is_segment, validate_key, validate_prefix
from ..policy import fill_fields
from ..redact import MASK

__all__ = ["Backend", "BackendConfig", "BuildContext", "CacheConfig", "Initialisable",
           "Invalidates", "RateLimit",
           "Secret", "VersionInfo", "VersionProbe", "Versioned", "VersionedBackend", "Writable",
           "WritableBackend", "join_prefix", "prefix_head", "require_env", "split_prefix"]

T = TypeVar("T")


def join_prefix(prefix: str, name: str, separator: str = "/") -> str:
    """The store name of ``name`` under ``prefix``: the two joined by exactly one separator.

    Every backend's ``prefix`` is path-like: ``"bar/prod"`` and ``"bar/prod/"`` both put
    ``connections/warehouse`` at ``bar/prod/connections/warehouse``. A prefix made only of
    separators (SSM's ``"/"``) is the root: ``"/" + name``. An empty prefix adds nothing, an
    empty name gives the prefix itself, and an empty separator joins raw (``"lk-" + name``):
    the explicit opt-out for stores whose names were written that way.
    """
    if not prefix or not separator:
        return prefix + name
    base = prefix
    while base.endswith(separator):
        base = base[:-len(separator)]
    if not name:
        return base or separator
    return base + separator + name


def prefix_head(prefix: str, separator: str = "/") -> str:
    """What every store name under ``prefix`` starts with (``"bar/prod/"``; ``""`` for none)."""
    return join_prefix(prefix, "-", separator)[:-1]


def split_prefix(prefix: str, name: str, separator: str = "/") -> str | None:
    """The name under ``prefix`` of a store name (``join_prefix`` reversed), or None if the
    store name is not under ``prefix``."""
    head = prefix_head(prefix, separator)
    return name[len(head):] if name.startswith(head) and len(name) > len(head) else None


@dataclass(frozen=True)
class Secret:
    """A value found in a store, with where it came from. The value never shows in repr."""

    key: str
    value: str = field(repr=False)
    backend: str
    path: str
    version: str | None = None
    created_at: datetime | None = None
    #: served from pipekey's cache
    cached: bool = False
    #: set when the store failed and a cached value this many seconds old was served
    stale_seconds: float | None = None
    #: the value is a JSON document standing for the subtree ``key/...`` (a Secrets Manager
    #: secret whose fields are keys, a nested object): a run reads it only where the whole
    #: subtree is allowed
    document: bool = False

    def __repr__(self) -> str:
        stale = f", stale_seconds={self.stale_seconds}" if self.stale_seconds is not None else ""
        return (
            f"Secret(key={self.key!r}, backend={self.backend!r}, path={self.path!r}, "
            f"version={self.version!r}{stale}, value={MASK!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class VersionInfo:
    """One version of a key, as ``history`` reports it. Holds no value."""

    version: str
    created_at: datetime | None = None
    created_by: str | None = None
    deleted: bool = False


class CacheConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """``cache = {...}`` of a backend (see :mod:`pipekey.cache`); ``cache = false`` turns
    it off, ``cache = true`` is every default (the manifest reads a bool as ``enabled``)."""

    enabled: bool = True
    ttl: Annotated[float, Meta(gt=0)] = 300
    jitter: Annotated[float, Meta(ge=0, lt=1)] = 0.1
    negative_ttl: Annotated[float, Meta(ge=0)] = 30
    refresh_ahead: Annotated[float, Meta(ge=0, lt=1)] = 0.2
    max_stale: Annotated[float, Meta(ge=0)] = 0
    max_entries: Annotated[int, Meta(ge=1)] = 1000
    max_renewals: Annotated[int, Meta(ge=0)] = 11
    refresh_threads: Annotated[int, Meta(ge=1, le=32)] = 2


class RateLimit(Struct, kw_only=True, forbid_unknown_fields=True):
    """``rate_limit = {...}`` of a backend: a token bucket shared by the process."""

    rps: Annotated[float, Meta(gt=0)]
    burst: Annotated[int, Meta(ge=1)] = 10
    max_wait: Annotated[float, Meta(gt=0)] = 30


class BackendConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields every backend accepts in ``[backends.NAME]``. Subclasses add their own.

    ``cache`` and ``rate_limit`` (see :mod:`pipekey.cache`) put a process-wide cache and a
    token bucket in front of the backend. Remote stores are cached unless ``cache = false``;
    local ones (env, files, the local store) only when ``cache`` says so.

    A msgspec ``Struct``: the manifest's tables are converted with ``msgspec.convert``, and
    its decoder for a class is built when that class first validates, not at import.
    """

    type: str
    cache: CacheConfig | None = None
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class BuildContext:
    """What a backend needs from the manifest to build itself."""

    base_dir: Path
    env: str

    def path(self, value: str | Path) -> Path:
        """A path from the manifest, relative to the manifest's folder, ``{env}`` filled."""
        p = Path(self.text(str(value))).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def text(self, value: str) -> str:
        """``value`` with ``{env}`` filled (the environment checked as a key segment)."""
        return fill_fields(value, {"env": self.env}, "environment")


class Backend(abc.ABC):
    """One secret store. See the module docstring for the contract."""

    #: the backend type, as the manifest's ``type`` field names it (``"aws_ssm"``)
    kind: ClassVar[str] = ""
    #: True where ``history`` reads each version's value from the store (SSM's
    #: GetParameterHistory): pages showing metadata alone use ``versions`` there instead
    history_reads_values: ClassVar[bool] = False
    #: the msgspec Struct of this backend's manifest fields
    Config: ClassVar[type[BackendConfig]] = BackendConfig

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_config(cls, name: str, config: BackendConfig, ctx: BuildContext) -> "Backend":
        """Build the backend from its validated manifest section."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a manifest")

    # -- environments ---------------------------------------------------------------------
    @classmethod
    def name_head(cls, config: BackendConfig) -> str | None:
        """What every store name of this backend starts with, ``{env}`` left unfilled
        (``"/data-platform/{env}/"``), or None if no part of a store name comes from the
        configuration (a table, a file or a URL holding ``{env}`` is a place of its own).
        """
        return None

    @classmethod
    def env_problem(cls, env: str, config: BackendConfig) -> str | None:
        """Why ``env`` cannot fill ``{env}`` in this backend's configuration reversibly (one
        line), or None.

        An environment is a key segment, and where ``{env}`` is part of a store name
        (:meth:`name_head`), the text after it must end the environment unambiguously:
        ``PIPEKEY_{env}__`` cannot take ``prod__finance``, or ``prod__finance``'s
        ``ledger/api_key`` would be prod's ``finance/ledger/api_key``. Subclasses add their
        own segment rule (variable names fold case, Key Vault names too).
        """
        if not is_segment(env):
            return "it is not a key segment (letters, digits, '_', '.', '-')"
        head = cls.name_head(config)
        if head is None or "{env}" not in head:
            return None
        after = head.split("{env}")[1]
        if not after:
            return f"nothing separates {{env}} from the key in the store names {head!r}"
        if (env + after).find(after) != len(env):
            return (f"{after!r} follows {{env}} in the store names {head!r}, and the "
                    "environment would run into it")
        return None

    # -- limits ---------------------------------------------------------------------------
    #: the largest value (UTF-8 bytes) the store takes, or None; larger ones are refused
    #: before the store is called, with ``size_hint`` saying what to do instead
    max_value_bytes: int | None = None
    size_hint: str = ""
    #: values over this many bytes are stored in chunks (SSM with ``split = true``), or None
    chunk_bytes: int | None = None

    # -- the contract ---------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, Secret]:
        """Read many keys at once. Absent keys are missing from the result.

        Raises:
            InvalidKey: for a malformed key, before the store is called.
            BackendError: any failure of the store, naming this backend.
        """
        wanted = [k for k in dict.fromkeys(validate_key(k) for k in keys)
                  if self.unmappable(k) is None]
        if not wanted:
            return {}
        return self._guard("read", lambda: self._get_many(wanted))

    def get(self, key: str) -> Secret | None:
        """Read one key; ``None`` if absent."""
        return self.get_many([key]).get(key)

    def list_keys(self, prefix: str = "") -> list[str]:
        """Keys at or below ``prefix``, sorted."""
        clean = validate_prefix(prefix)
        return sorted(self._guard("list", lambda: self._list(clean)))

    def locate(self, key: str) -> str:
        """Where ``key`` lives in this store, in the store's own terms (for diagnostics)."""
        return key

    def store_name(self, key: str) -> str | None:
        """The name of the one stored item ``key`` addresses, or None if it cannot have one.

        Injective: two distinct keys never share a store name. Stores that name items by the
        key itself keep this default; others return their own name (a variable, a parameter,
        an escaped secret id).
        """
        return None if self.unmappable(key) is not None else key

    def unmappable(self, key: str) -> str | None:
        """Why this store cannot map ``key`` reversibly (one line, no value), or None.

        Such a key is absent for reads and refused for writes.
        """
        return None

    def check(self) -> str:
        """Probe the store cheaply; return a one-line status or raise BackendError."""
        self.list_keys("")
        return "ok"

    def close(self) -> None:
        """Release connections and files. The backend may be used again after."""

    def describe(self) -> str:
        """One line saying what this backend is (no secrets), for ``doctor``."""
        return self.kind

    def origin(self) -> "Backend":
        """The backend that talks to the store: this one, or the one a wrapper (a cache)
        stands in front of. For what only the store's own class knows (an env backend's
        variable prefix, a Vault backend's login); capabilities are asked with ``isinstance``
        of the wrapper itself."""
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- for subclasses -------------------------------------------------------------------
    @abc.abstractmethod
    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]: ...

    @abc.abstractmethod
    def _list(self, prefix: str) -> Iterable[str]: ...

    def _secret(self, key: str, value: str, version: str | None = None, **kw: object) -> Secret:
        return Secret(key=key, value=value, backend=self.name, path=self.locate(key),
                      version=version, **kw)  # type: ignore[arg-type]

    def _require_mappable(self, key: str) -> None:
        reason = self.unmappable(key)
        if reason is not None:
            raise InvalidKey(key, f"backend {self.name!r} cannot hold it: {reason}")

    def _guard(self, action: str, call: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return call()
        except PipekeyError:
            metrics.incr("backend_errors", backend=self.name, action=action)
            raise
        except Exception as exc:
            metrics.incr("backend_errors", backend=self.name, action=action)
            # Only the exception's type: third-party messages may quote file contents.
            raise BackendUnavailable(self.name, f"{action} failed ({type(exc).__name__})") from exc
        finally:
            metrics.incr("backend_calls", backend=self.name, action=action)
            metrics.observe("backend_latency_seconds", time.perf_counter() - start,
                            backend=self.name)


# -- optional capabilities ----------------------------------------------------------------------
@runtime_checkable
class Writable(Protocol):
    """A backend that writes: ``put`` and ``delete``. Without them a backend is read-only."""

    def put(self, key: str, value: str) -> Secret:
        """Write ``value`` as the newest version of ``key``; returns its metadata."""
        ...

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        ...


@runtime_checkable
class Versioned(Protocol):
    """A backend that keeps earlier versions: ``history`` and ``get_version``."""

    def history(self, key: str) -> list[VersionInfo]:
        """Every version of ``key``, oldest first; empty if the store never held it."""
        ...

    def get_version(self, key: str, version: str) -> Secret | None:
        """Read one past version of ``key``; None if absent."""
        ...


@runtime_checkable
class VersionProbe(Protocol):
    """A backend that tells the current version of keys without reading their values.

    A cache renews an entry when the probe's ``version`` and ``created_at`` both equal the
    cached :class:`Secret`'s, so the pair must change on any change of value, including a
    delete and re-create (SSM numbers a re-created parameter from 1 again: its
    ``LastModifiedDate`` is what tells the two apart).
    """

    def versions(self, keys: Sequence[str]) -> dict[str, VersionInfo]:
        """The current version of each key the store holds (absent or deleted keys are
        missing), with ``created_at`` as :meth:`Backend.get_many` reports it."""
        ...


@runtime_checkable
class Invalidates(Protocol):
    """A backend holding copies (a cache) that can forget them."""

    def invalidate(self, keys: Iterable[str] | None = None) -> None:
        """Forget what is held for these keys (all of them if None)."""
        ...


@runtime_checkable
class Initialisable(Protocol):
    """A backend that sets its store up for ``pipekey init`` (a file and key, a table)."""

    def init(self) -> dict[str, object]:
        """Create what is missing, keep what exists; returns what was done (no value)."""
        ...


class WritableBackend(Backend):
    """A backend that is :class:`Writable`: subclasses implement ``_put`` and ``_delete``."""

    def put(self, key: str, value: str) -> Secret:
        """Write ``value`` as the newest version of ``key``; returns its metadata.

        Raises:
            InvalidKey: a malformed key, or one this store cannot map.
            ValueTooLarge: the value is over the store's limit; nothing is written.
            BackendError: any failure of the store, naming this backend.
        """
        validate_key(key)
        if not isinstance(value, str):
            raise TypeError(f"a secret value is a str, not {type(value).__name__}")
        self._require_mappable(key)
        limit = self.max_value_bytes
        if limit is not None and len(value.encode("utf-8")) > limit:
            raise ValueTooLarge(self.name, key, len(value.encode("utf-8")), limit, self.size_hint)
        return self._guard("write", lambda: self._put(key, value))

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        validate_key(key)
        self._require_mappable(key)
        return self._guard("delete", lambda: self._delete(key))

    @abc.abstractmethod
    def _put(self, key: str, value: str) -> Secret: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> bool: ...


class VersionedBackend(Backend):
    """A backend that is :class:`Versioned`: subclasses implement ``_history`` and
    ``_get_version``."""

    def history(self, key: str) -> list[VersionInfo]:
        """Every version of ``key``, oldest first; empty if the store never held it."""
        validate_key(key)
        if self.unmappable(key) is not None:
            return []
        return self._guard("history", lambda: self._history(key))

    def get_version(self, key: str, version: str) -> Secret | None:
        """Read one past version of ``key``; None if absent."""
        validate_key(key)
        if self.unmappable(key) is not None:
            return None
        return self._guard("read", lambda: self._get_version(key, str(version)))

    @abc.abstractmethod
    def _history(self, key: str) -> list[VersionInfo]: ...

    @abc.abstractmethod
    def _get_version(self, key: str, version: str) -> Secret | None: ...


def require_env(cls: type[Backend], name: str, config: BackendConfig, env: str) -> None:
    """Refuse an environment backend ``name`` cannot map reversibly (one line naming both).

    Raises:
        UsageError: ``env`` would share store names with another environment's keys.
    """
    problem = cls.env_problem(env, config)
    if problem is not None:
        raise UsageError(f"environment {env!r} cannot be used with backend {name!r}: {problem}")


def read_only(backend: Backend, action: str) -> ReadOnlyBackend:
    """The error for a write asked of a backend that is not :class:`Writable` (one line)."""
    return ReadOnlyBackend(backend.name, f"cannot {action}: a {backend.kind} backend is read-only")
