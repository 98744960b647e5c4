"""pipekey: every pipeline run gets exactly the secrets it needs, from the stores you use.

    import pipekey
    lk = pipekey.load()                  # ./pipekey.toml, $PIPEKEY_CONFIG, or the local store
    lk.get("shared/slack_token")
    lk.explain("shared/slack_token")      # backend, path, version, every place looked
    with lk.pipeline("facebook_ads", account="acct_42") as run:
        run.secret("access_token")        # this run's own, found by the scope walk

Importing pipekey loads no cloud SDK; each is imported when a backend of its type is built.
The names that need the manifest's schema (msgspec), threads or a store (``load``,
``Pipekey``, ``Run``, ``current``, ``Backend``...; see ``_LAZY``) are imported on first use by
a module ``__getattr__``, so ``import pipekey`` stays cheap (no msgspec, click, rich,
cryptography or asyncio).
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    AccessDenied,
    Attempt,
    BackendError,
    BackendUnavailable,
    CredentialError,
    InvalidKey,
    ManifestError,
    MissingDependency,
    MissingSecrets,
    NoMasterKey,
    PipekeyError,
    ReadOnlyBackend,
    RunClosed,
    SecretNotFound,
    StoreCorrupt,
    UsageError,
    ValueTooLarge,
    WrongMasterKey,
)
from .keys import validate_key

if TYPE_CHECKING:
    from .backends import Backend, Secret, VersionInfo
    from .chain import Resolution
    from .client import Pipekey, load
    from .connection import Connection, InvalidConnection
    from .run import Run, current

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "Attempt",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "CredentialError",
    "Connection",
    "InvalidConnection",
    "InvalidKey",
    "Pipekey",
    "PipekeyError",
    "ManifestError",
    "MissingDependency",
    "MissingSecrets",
    "NoMasterKey",
    "ReadOnlyBackend",
    "Resolution",
    "Run",
    "RunClosed",
    "Secret",
    "SecretNotFound",
    "StoreCorrupt",
    "UsageError",
    "ValueTooLarge",
    "VersionInfo",
    "WrongMasterKey",
    "__version__",
    "current",
    "load",
    "validate_key",
]


#: public name -> the submodule defining it, imported on first access
_LAZY = {
    "Backend": "backends.base",
    "Secret": "backends.base",
    "VersionInfo": "backends.base",
    "Resolution": "chain",
    "Pipekey": "client",
    "load": "client",
    "Connection": "connection",
    "InvalidConnection": "connection",
    "Run": "run",
    "current": "run",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipekey' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
