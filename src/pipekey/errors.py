"""Every exception pipekey raises, in one place.

The tree::

    PipekeyError                 exit code 1 unless noted
    ├── UsageError                exit code 2: the caller asked for something malformed
    │   ├── InvalidKey            a key that breaks the key rules (quotes the key)
    │   ├── ManifestError         pipekey.toml is invalid (names the file and the field)
    │   ├── ValueTooLarge         a value over the store's size limit, refused before writing
    │   └── RunClosed             a run context was used after it ended
    ├── SecretNotFound            no backend in the chain holds the key (lists every place tried)
    │   └── MissingSecrets        a pipeline's required secrets are missing (each, every place)
    ├── AccessDenied              a store, or a run's policy, refused the read (authoritative)
    ├── MissingDependency         an optional SDK is not installed (prints the pip line)
    ├── CredentialError           minting, renewing, revoking or sweeping a per-run credential
    │                             failed (names the definition and what the store said)
    └── BackendError              a store failed: names the backend, never a value
        ├── BackendUnavailable    the store could not be reached or answered with an error
        ├── ReadOnlyBackend       a write was sent to a backend that cannot write
        ├── NoMasterKey           the local store has no key to open it with
        ├── WrongMasterKey        the key given does not open the local store
        └── StoreCorrupt          a file or a row failed to parse or to authenticate

Messages name keys, backends, paths and fields. They never contain a secret value: keys are
not secret, values are. Third-party errors are translated at the boundary with
``raise ... from exc`` so the original stays in ``__cause__`` for debugging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "AccessDenied",
    "Attempt",
    "BackendError",
    "BackendUnavailable",
    "CredentialError",
    "InvalidKey",
    "PipekeyError",
    "ManifestError",
    "MissingDependency",
    "MissingSecrets",
    "NoMasterKey",
    "ReadOnlyBackend",
    "RunClosed",
    "SecretNotFound",
    "StoreCorrupt",
    "UsageError",
    "ValueTooLarge",
    "WrongMasterKey",
]


class PipekeyError(Exception):
    """Base of every pipekey error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(PipekeyError):
    """The caller asked for something malformed: a bad key, a bad manifest, a bad flag."""

    exit_code = 2


class InvalidKey(UsageError, ValueError):
    """A key breaks the key rules. The message quotes the key and says which rule."""

    def __init__(self, key: object, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid key {_quote(key)}: {reason}")


class ManifestError(UsageError):
    """The manifest is invalid. The message names the file and the field."""

    def __init__(self, path: object, field: str | None, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: {field}" if field else f"{path}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Attempt:
    """One place the chain looked for a key.

    Attributes:
        backend: the backend's name in the manifest.
        path: where in that store, in the store's own terms (an env var, a file, a row).
        outcome: ``"found"``, ``"absent"``, ``"error"`` or ``"denied"``.
        key: the key asked for at that place.
        level: the scope level this key came from (``"account"``, ``"shared"``...), if any.
        detail: for errors, the error's one-line text (never a value); for an absence, why
            the backend cannot hold the key at all, when that is the reason.
    """

    backend: str
    path: str
    outcome: str
    key: str = ""
    level: str | None = None
    detail: str | None = None

    def describe(self) -> str:
        level = f" [{self.level}]" if self.level else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.backend} {self.path}{level} -> {self.outcome}{detail}"


class SecretNotFound(PipekeyError, KeyError):
    """No backend holds the key. ``attempts`` lists every (backend, path) tried, in order."""

    def __init__(self, key: str, attempts: Sequence[Attempt] = ()) -> None:
        self.key = key
        self.attempts = tuple(attempts)
        tried = "; ".join(a.describe() for a in self.attempts) or "no backend configured"
        super().__init__(f"secret {_quote(key)} not found; tried: {tried}")

    def __str__(self) -> str:  # KeyError would quote the whole message again
        return str(self.args[0])


class ValueTooLarge(UsageError):
    """A value larger than the store holds. Raised before the store is called."""

    def __init__(self, backend: str, key: str, size: int, limit: int, hint: str = "") -> None:
        self.backend, self.key, self.size, self.limit = backend, key, size, limit
        super().__init__(f"backend {backend!r}: the value for {key!r} is {size} bytes; this "
                         f"store holds at most {limit}" + (f" ({hint})" if hint else ""))


class RunClosed(UsageError):
    """A run context was used after its ``with`` block ended; its values are gone."""


class MissingSecrets(SecretNotFound):
    """A pipeline's required secrets are missing. ``missing`` maps each name to the places
    looked, with the scope level of each."""

    def __init__(self, pipeline: str, run: str, missing: dict[str, Sequence[Attempt]]) -> None:
        self.pipeline = pipeline
        self.run = run
        self.missing = {name: tuple(attempts) for name, attempts in missing.items()}
        self.key = next(iter(missing), "")
        self.attempts = tuple(a for attempts in self.missing.values() for a in attempts)
        parts = [f"{name!r} (tried: {'; '.join(a.describe() for a in attempts)})"
                 for name, attempts in self.missing.items()]
        PipekeyError.__init__(
            self, f"pipeline {pipeline!r} (run {run!r}) is missing {len(parts)} required "
                  f"secret{'s' if len(parts) > 1 else ''}: " + "; ".join(parts))


class AccessDenied(PipekeyError, PermissionError):
    """A store refused the read, or a run's policy does not allow the key. Authoritative:
    the chain does not fall through to the next backend."""


class MissingDependency(PipekeyError, ImportError):
    """An optional SDK is missing. The message gives the pip line that installs it."""

    def __init__(self, what: str, extra: str) -> None:
        self.extra = extra
        super().__init__(f"{what} needs an optional dependency: pip install 'pipekey[{extra}]'")


class CredentialError(PipekeyError):
    """A per-run credential (``[credentials.NAME]``) could not be minted, renewed, revoked or
    swept. The message starts with ``credential 'NAME'`` and says what the store said,
    scrubbed of values; ``definition`` is NAME."""

    def __init__(self, definition: str, message: str) -> None:
        self.definition = definition
        super().__init__(f"credential {definition!r}: {message}")


class BackendError(PipekeyError):
    """A backend failed. The message starts with the backend's name.

    When the chain raises it for a key no backend could give, ``key`` is that key and
    ``attempts`` every place tried (as in ``SecretNotFound``).
    """

    key: str | None = None
    attempts: tuple[Attempt, ...] = ()

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"backend {backend!r}: {message}")


class BackendUnavailable(BackendError):
    """The store could not be reached, timed out, or answered with a server error."""


class ReadOnlyBackend(BackendError):
    """A write was sent to a backend that cannot write (env, files)."""


class NoMasterKey(BackendError):
    """The local store has no master key: neither ``PIPEKEY_MASTER_KEY`` nor a key file."""


class WrongMasterKey(BackendError):
    """The master key given does not open this local store."""


class StoreCorrupt(BackendError):
    """A file or a row could not be parsed, or failed authentication (tampered)."""


def _quote(key: object) -> str:
    # repr() shows control characters escaped, so a key with a newline stays one line.
    text = repr(key)
    return text if len(text) <= 600 else text[:600] + "...'"
