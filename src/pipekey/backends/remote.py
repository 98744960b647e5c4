"""What every backend that talks to a remote store over the network shares.

* ``stats``: this backend's store calls, retries, throttles, errors and seconds spent: its
  share of the ``store_*`` metrics (:class:`pipekey.metrics.Tally`), counted once, by
  :func:`pipekey.metrics.incr`.
* ``concurrently``: a bounded thread pool per backend for stores without a batch read (or with
  a small one), made on first use, at most ``max_concurrency`` calls in flight.
* ``counted``: one counted store call; an SDK error meaning "no such thing" becomes None
  (absent), any other goes through ``translate`` into a pipekey error naming the backend.
* :class:`ErrorTable`: how one SDK family's exceptions become pipekey's, one table per family,
  most specific row first (httpx's ``map_httpcore_exceptions`` is the model); the words of
  each :class:`Cause` are written once, here, so every store says the same for the same cause.
* :func:`escape_name` / :func:`unescape_name`: the reversible mapping of key paths onto store
  names that cannot hold ``/``; :class:`EscapedNames` gives a backend of such a store (GCP
  Secret Manager, Azure Key Vault) its ``locate``, ``store_name``, ``unmappable`` and
  ``key_of`` from it.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Sequence, TypeVar

import msgspec

from .. import metrics, redact
from ..errors import AccessDenied, BackendUnavailable, InvalidKey, PipekeyError
from ..keys import validate_key
from .base import Backend, BackendConfig, BuildContext

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["Cause", "ErrorRow", "ErrorTable", "EscapedNames", "RemoteBackend", "describe_keys",
           "escape_name", "unescape_name"]

T = TypeVar("T")


class RemoteBackend(Backend):
    """Base of the network backends: counters, a bounded pool, counted calls."""

    max_concurrency: int = 8

    def __init__(self, name: str) -> None:
        super().__init__(name)
        redact.guard_sdk_logs()  # the SDK logs bodies at DEBUG: values, before we see them
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.stats = metrics.Tally("store_", ("calls", "retries", "throttles", "errors",
                                              "seconds"))

    @classmethod
    def from_config(cls, name: str, config: BackendConfig, ctx: BuildContext) -> "RemoteBackend":
        """Build from the manifest section, ``{env}`` filled in every text field."""
        filled = {k: ctx.text(v) for k, v in msgspec.structs.asdict(config).items()
                  if isinstance(v, str)}
        # replace() runs the Struct's __post_init__ checks again on the filled text
        return cls(name, msgspec.structs.replace(config, **filled))  # type: ignore[call-arg]

    @property
    def client(self) -> Any:
        """The SDK client, made by ``_make_client`` on first use (thread-safe)."""
        client = self.__dict__.get("_client")
        if client is None:
            with self._lock:
                client = self.__dict__.get("_client")
                if client is None:
                    client = self._client = self._make_client()
        return client

    def _make_client(self) -> Any:
        raise NotImplementedError

    def count(self, stat: str, n: float = 1) -> None:
        """Add ``n`` to the metric ``store_<stat>`` of this backend (and so to ``stats``)."""
        metrics.incr(f"store_{stat}", n, tally=self.stats, backend=self.name)

    def counted(self, what: str, keys: Sequence[str], fn: Callable[..., T], *args: Any,
                absent: Callable[[Exception], bool] | None = None, **kwargs: Any) -> T | None:
        """Run one store call ``fn(*args, **kwargs)``, counted.

        Returns None when ``absent(error)`` says the error means the thing does not exist;
        any other error is raised as ``translate`` words it.
        """
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except PipekeyError:
            raise
        except Exception as exc:
            if absent is not None and absent(exc):
                return None
            self.count("errors")
            raise self.translate(exc, what, keys) from exc
        finally:
            self.count("calls")
            self.count("seconds", time.perf_counter() - start)

    def translate(self, exc: Exception, what: str, keys: Sequence[str]) -> PipekeyError:
        """The SDK's error as a pipekey error naming this backend (subclasses refine it)."""
        where = f"{what} for {describe_keys(keys)}" if keys else what
        return BackendUnavailable(self.name, f"{where} failed ({type(exc).__name__})")

    def concurrently(self, fn: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
        """Run ``fn`` over ``items`` on this backend's pool (at most max_concurrency at once)."""
        items = list(items)
        if len(items) <= 1:
            return [fn(i) for i in items]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor  # only stores that use it

                    self._pool = ThreadPoolExecutor(self.max_concurrency,
                                                    thread_name_prefix=f"pipekey-{self.name}")
        return [f.result() for f in [self._pool.submit(fn, i) for i in items]]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


class Cause(enum.Enum):
    """Why a store call failed, as pipekey words it (``{detail}``: the SDK's code or status)."""

    #: AccessDenied, authoritative: a chain does not fall through it
    DENIED = "{store} denied {where} ({detail})"
    THROTTLED = "throttled by {store} on {where} after {attempts} attempts ({detail})"
    KEY_REFUSED = "the key service of {store} refused {where} ({detail})"
    NO_CREDENTIALS = "cannot authenticate to {store} for {where} ({detail})"
    TIMED_OUT = "{where}: retries timed out ({detail})"
    FAILED = "{where} failed ({detail})"
    UNREACHABLE = "cannot reach {store} for {where} ({detail})"


#: one row of a table: does the exception match, its cause, and the detail to show (None:
#: the table's ``detail`` of the exception; ``{auth}`` and ``{type}`` are filled)
ErrorRow = tuple[Callable[[Exception], bool], Cause, "str | None"]


@dataclass(frozen=True)
class ErrorTable:
    """One SDK family's exceptions as pipekey errors: the first matching row decides; an
    exception no row matches is ``UNREACHABLE`` (no answer from the store)."""

    #: the store as messages name it ("AWS", "Vault", "GCP", "Key Vault")
    store: str
    #: the rows, most specific first; a function, so that the SDK is imported on first use
    rows: Callable[[], Sequence[ErrorRow]]
    #: the code or status an exception carries (no value: SDK messages may quote one)
    detail: Callable[[Exception], str]

    def cause(self, exc: Exception) -> tuple[Cause, str]:
        """The cause of ``exc`` and the detail to show with it."""
        for matches, cause, detail in self.rows():
            if matches(exc):
                return cause, self.detail(exc) if detail is None else detail
        return Cause.UNREACHABLE, "{type}"

    def translate(self, exc: Exception, backend: str, where: str, attempts: int,
                  auth: str = "") -> PipekeyError:
        """``exc`` as the pipekey error of its cause, naming ``backend`` and ``where``."""
        cause, detail = self.cause(exc)
        detail = detail.format(auth=auth, type=type(exc).__name__)
        words = cause.value.format(store=self.store, where=where, attempts=attempts,
                                   detail=detail).replace(" ()", "")
        if cause is Cause.DENIED:
            return AccessDenied(f"backend {backend!r}: {words}")
        return BackendUnavailable(backend, words)


def describe_keys(keys: Sequence[str]) -> str:
    """The first keys of a batch, quoted, for an error message."""
    shown = ", ".join(repr(k) for k in list(keys)[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


_HEX = "0123456789abcdef"


def escape_name(key: str, literal: str, max_length: int, store: str, prefix: str = "") -> str:
    """``prefix`` + a key path as a store name made only of ``literal`` characters and ``-``.

    ``/`` becomes ``--``; every other character outside ``literal`` (``-`` included) becomes
    ``-`` and two lowercase hex digits of its code. Decoding reads ``-`` then either ``-`` or
    two hex digits, so the mapping is reversible and two keys never share a name.

    Raises:
        InvalidKey: the name would be longer than the store allows.
    """
    out = []
    for ch in key:
        if ch == "/":
            out.append("--")
        elif ch in literal:
            out.append(ch)
        else:
            out.append(f"-{ord(ch):02x}")
    name = prefix + "".join(out)
    if len(name) > max_length:
        raise InvalidKey(key, f"its {store} name would be {len(name)} characters "
                              f"(at most {max_length})")
    return name


def unescape_name(name: str, literal: str) -> str | None:
    """The key path a store name encodes, or None if ``name`` is not one pipekey wrote."""
    out, i = [], 0
    while i < len(name):
        ch = name[i]
        if ch != "-":
            if ch not in literal:
                return None
            out.append(ch)
            i += 1
        elif name[i + 1:i + 2] == "-":
            out.append("/")
            i += 2
        else:
            code = name[i + 1:i + 3]
            if len(code) != 2 or any(c not in _HEX for c in code):
                return None
            out.append(chr(int(code, 16)))
            i += 3
    key = "".join(out)
    try:
        validate_key(key)
    except InvalidKey:
        return None
    # one name per key: "-61" decodes to "a" but is not how "a" is written
    return key if escape_name(key, literal, 1 << 30, "") == name else None


class EscapedNames:
    """Key <-> name for a store whose names cannot hold ``/``: the backend's ``prefix``, then
    the key as :func:`escape_name` writes it. A key whose name would be too long has none:
    absent for reads, refused for writes. Put it before the Backend base class."""

    #: the characters a name holds as they are (any other is escaped)
    name_literal: ClassVar[str]
    #: the longest name the store takes
    name_max: ClassVar[int]
    #: the store as messages name it ("Key Vault", "Secret Manager")
    name_store: ClassVar[str]
    #: the store folds names to lower case, so a name read back is lowered first
    name_folds_case: ClassVar[bool] = False
    #: what every name of this backend starts with
    prefix: str

    def escaped_name(self, key: str) -> str:
        """The store's name for ``key``.

        Raises:
            InvalidKey: the name would be longer than the store allows.
        """
        return escape_name(key, self.name_literal, self.name_max, self.name_store, self.prefix)

    def name_location(self, name: str) -> str:
        """Where the item named ``name`` lives, in the store's own terms (for ``locate``)."""
        raise NotImplementedError

    def locate(self, key: str) -> str:
        return self.name_location(self.store_name(key) or "(no name for this key)")

    def store_name(self, key: str) -> str | None:
        return None if self.unmappable(key) is not None else self.escaped_name(key)

    def unmappable(self, key: str) -> str | None:
        try:
            self.escaped_name(key)
        except InvalidKey as exc:
            return exc.reason
        return None

    def key_of(self, name: str) -> str | None:
        """The key a store name encodes, or None if it is not one of this backend's."""
        if self.name_folds_case:
            name = name.lower()
        if not name.startswith(self.prefix):
            return None
        return unescape_name(name[len(self.prefix):], self.name_literal)
